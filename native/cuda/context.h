// Per-device state of the CUDA backend and the helpers every kernel file
// shares. CUDA header: included from .cu files only.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "cuda/allocator.h"
#include "cuda/api.h"

namespace fovea::cuda {

// Maps a CUDA error to fovea's codes and clears the (non-sticky) error state
// so the backend stays usable: cudaErrorMemoryAllocation -> OutOfMemory,
// anything else -> Device with the CUDA name and text.
[[noreturn]] void throw_cuda_error(cudaError_t err, const std::string & what);

inline void check(cudaError_t err, const char * what) {
    if (err != cudaSuccess) throw_cuda_error(err, what);
}

// After a kernel launch: reports a bad configuration (or an earlier
// asynchronous fault) under the op's name.
inline void check_launch(const char * op) { check(cudaGetLastError(), op); }

// One device: its stream, allocator and settings. Created on first use,
// never destroyed (tensors in static storage may release blocks at exit).
struct Context {
    int device = 0;
    int cc_major = 0, cc_minor = 0;
    int multiprocessors = 1;  // sizes the split of small matrix products (gemm.cu)
    cudaStream_t stream = nullptr;
    DeviceAllocator * alloc = nullptr;
    std::atomic<Precision> precision{Precision::FP32};

    // Pinned staging for host<->device copies; guarded by staging_mutex,
    // reused only after the copy that last read it has finished.
    std::mutex staging_mutex;
    void * staging = nullptr;
    size_t staging_bytes = 0;
    cudaEvent_t staging_done = nullptr;

    Tensor empty(const Shape & shape, DType dtype = DType::F32) { return alloc->empty(shape, dtype); }
    // Host -> device copy of a small table (ROI geometry, sort orders).
    Tensor upload(const void * host, const Shape & shape, DType dtype);
    // Device -> host copy; waits for the stream.
    void download(const Tensor & t, void * host);
};

// Throws Error(Device) when the index names no usable device.
Context & context(int device);

// Makes `ctx.device` current for the calling thread (cheap when it is).
void bind(const Context & ctx);

// Throws Error(Input) unless t is undefined or lives on ctx's device.
void check_on_device(const Context & ctx, const Tensor & t, const char * op);

// Grid for a grid-stride loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    // Grid-stride loops cover the rest; 2^20 blocks keep every SM busy.
    if (blocks > (int64_t(1) << 20)) blocks = int64_t(1) << 20;
    return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// ---- ops (one file per family, as native/cpu/) -----------------------------
Tensor relu(Context & ctx, const Tensor & x);                                       // activation.cu
Tensor sigmoid(Context & ctx, const Tensor & x);                                    // activation.cu
Tensor softmax(Context & ctx, const Tensor & x, int axis);                          // activation.cu
Tensor add(Context & ctx, const Tensor & a, const Tensor & b, Activation act);      // elementwise.cu
Tensor concat(Context & ctx, const std::vector<Tensor> & xs, int axis);             // elementwise.cu
Tensor pad2d(Context & ctx, const Tensor & x, const Pad2dParams & p);               // elementwise.cu
Tensor max_pool2d(Context & ctx, const Tensor & x, const Pool2dParams & p);         // pool.cu
Tensor avg_pool2d(Context & ctx, const Tensor & x, const Pool2dParams & p);         // pool.cu
Tensor resize_bilinear(Context & ctx, const Tensor & x, const ResizeParams & p);    // resize.cu
Tensor image_scale(Context & ctx, const Tensor & x, int64_t out_h, int64_t out_w);  // resize.cu
Tensor upsample_nearest(Context & ctx, const Tensor & x, int factor);               // resize.cu
Tensor batch_norm(Context & ctx, const Tensor & x, const Tensor & scale, const Tensor & bias,
                  const Tensor & mean, const Tensor & var, float epsilon);          // batchnorm.cu
Tensor roi_max_pool(Context & ctx, const Tensor & x, const Tensor & rois, const RoiPoolParams & p);  // roi.cu
Tensor roi_align(Context & ctx, const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                 const RoiAlignParams & p);                                         // roi.cu
std::vector<int64_t> nms(Context & ctx, const Tensor & boxes, const Tensor & scores,
                         const NmsParams & p);                                      // nms.cu
Tensor conv2d(Context & ctx, const Tensor & x, const Tensor & w, const Tensor & bias,
              const Conv2dParams & p);                                              // conv.cu
Tensor gemm(Context & ctx, const Tensor & a, const Tensor & b, const Tensor & c,
            const GemmParams & p);                                                  // gemm.cu
Tensor linear(Context & ctx, const Tensor & x, const Tensor & w, const Tensor & bias,
              Activation act);                                                      // gemm.cu

}  // namespace fovea::cuda
