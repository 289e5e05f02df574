// The CUDA backend: per-device contexts (stream, allocator, precision), the
// op table over the kernels of this folder, and host<->device transfers.
//
// Stream semantics: each device has one non-blocking stream. Every op of the
// backend validates its arguments on the host (core/op_shapes.h, the same
// functions as the CPU backend), allocates its output from the device's
// caching allocator and enqueues its kernels on that stream, returning
// without waiting. to_device() enqueues the upload (through pinned staging)
// and returns; to_host() waits for the stream, so a result read on the host
// reflects every op enqueued before it. Ops that must return host data (nms)
// or validate data held on the device (roi_max_pool / roi_align ROI values,
// batch_norm variances) copy those small inputs to the host and wait.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

// Copies up to this size go through the pinned staging buffer (true async
// uploads); larger ones use pageable memory directly.
constexpr size_t kMaxStagingBytes = size_t(64) << 20;

Precision default_precision(int cc_major) {
    if (const char * env = std::getenv("FOVEA_CUDA_PRECISION")) {
        const std::string v = env;
        if (v == "fp32") return Precision::FP32;
        if (v == "tf32") {
            FOVEA_CHECK_OPTIONS(cc_major >= 8, "FOVEA_CUDA_PRECISION=tf32 needs a GPU of compute capability 8.0 or "
                                               "newer (tensor-core tf32)");
            return Precision::TF32;
        }
        throw_error(ErrorCode::Options, "FOVEA_CUDA_PRECISION must be 'fp32' or 'tf32', got '" + v + "'");
    }
    return cc_major >= 8 ? Precision::TF32 : Precision::FP32;
}

Context * create_context(int device) {
    auto ctx = std::make_unique<Context>();
    ctx->device = device;
    check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop;
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    ctx->cc_major = prop.major;
    ctx->cc_minor = prop.minor;
    ctx->multiprocessors = prop.multiProcessorCount;
    ctx->precision = default_precision(prop.major);
    check(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&ctx->staging_done, cudaEventDisableTiming), "cudaEventCreate");
    size_t cache = SIZE_MAX;
    if (const char * env = std::getenv("FOVEA_CUDA_CACHE_MB")) cache = size_t(std::strtoull(env, nullptr, 10)) << 20;
    ctx->alloc = new DeviceAllocator(device, cache);
    return ctx.release();
}

// Copies between host memory and device memory on ctx's stream. to_device:
// returns once the host buffer may be reused. Otherwise waits for the copy.
void copy(Context & ctx, void * dst, const void * src, size_t bytes, bool to_device) {
    if (bytes == 0) return;
    bind(ctx);
    std::unique_lock<std::mutex> lock(ctx.staging_mutex);
    if (bytes <= kMaxStagingBytes) {
        // The previous copy through the buffer must have finished.
        check(cudaEventSynchronize(ctx.staging_done), "cudaEventSynchronize");
        if (ctx.staging_bytes < bytes) {
            if (ctx.staging) cudaFreeHost(ctx.staging);
            ctx.staging = nullptr;
            ctx.staging_bytes = 0;
            const size_t want = std::max<size_t>(bytes, size_t(1) << 20);
            if (cudaMallocHost(&ctx.staging, want) == cudaSuccess) {
                ctx.staging_bytes = want;
            } else {
                cudaGetLastError();  // no pinned memory: pageable copies below
                ctx.staging = nullptr;
            }
        }
    }
    const bool staged = bytes <= kMaxStagingBytes && ctx.staging != nullptr;
    if (to_device) {
        if (staged) {
            std::memcpy(ctx.staging, src, bytes);
            check(cudaMemcpyAsync(dst, ctx.staging, bytes, cudaMemcpyHostToDevice, ctx.stream), "cudaMemcpyAsync");
            check(cudaEventRecord(ctx.staging_done, ctx.stream), "cudaEventRecord");
        } else {
            // Pageable source: cudaMemcpyAsync has copied it out on return.
            check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream), "cudaMemcpyAsync");
        }
        return;
    }
    if (staged) {
        check(cudaMemcpyAsync(ctx.staging, src, bytes, cudaMemcpyDeviceToHost, ctx.stream), "cudaMemcpyAsync");
        check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
        std::memcpy(dst, ctx.staging, bytes);
    } else {
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream), "cudaMemcpyAsync");
        check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    }
}

class CudaBackend final : public Backend {
  public:
    explicit CudaBackend(Context & ctx) : ctx_(ctx) {}
    const char * name() const override { return "cuda"; }
    Device device() const override { return Device{DeviceType::CUDA, ctx_.device}; }

    Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) override {
        bind(ctx_);
        return cuda::conv2d(ctx_, x, w, bias, p);
    }
    Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) override {
        bind(ctx_);
        return cuda::gemm(ctx_, a, b, c, p);
    }
    Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) override {
        bind(ctx_);
        return cuda::linear(ctx_, x, w, bias, act);
    }
    Tensor max_pool2d(const Tensor & x, const Pool2dParams & p) override {
        bind(ctx_);
        return cuda::max_pool2d(ctx_, x, p);
    }
    Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p) override {
        bind(ctx_);
        return cuda::avg_pool2d(ctx_, x, p);
    }
    Tensor relu(const Tensor & x) override {
        bind(ctx_);
        return cuda::relu(ctx_, x);
    }
    Tensor sigmoid(const Tensor & x) override {
        bind(ctx_);
        return cuda::sigmoid(ctx_, x);
    }
    Tensor softmax(const Tensor & x, int axis) override {
        bind(ctx_);
        return cuda::softmax(ctx_, x, axis);
    }
    Tensor resize_bilinear(const Tensor & x, const ResizeParams & p) override {
        bind(ctx_);
        return cuda::resize_bilinear(ctx_, x, p);
    }
    Tensor image_scale(const Tensor & x, int64_t out_h, int64_t out_w) override {
        bind(ctx_);
        return cuda::image_scale(ctx_, x, out_h, out_w);
    }
    Tensor upsample_nearest(const Tensor & x, int factor) override {
        bind(ctx_);
        return cuda::upsample_nearest(ctx_, x, factor);
    }
    Tensor pad2d(const Tensor & x, const Pad2dParams & p) override {
        bind(ctx_);
        return cuda::pad2d(ctx_, x, p);
    }
    Tensor concat(const std::vector<Tensor> & xs, int axis) override {
        bind(ctx_);
        return cuda::concat(ctx_, xs, axis);
    }
    Tensor add(const Tensor & a, const Tensor & b, Activation act) override {
        bind(ctx_);
        return cuda::add(ctx_, a, b, act);
    }
    Tensor batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                      const Tensor & var, float epsilon) override {
        bind(ctx_);
        return cuda::batch_norm(ctx_, x, scale, bias, mean, var, epsilon);
    }
    Tensor roi_max_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) override {
        bind(ctx_);
        return cuda::roi_max_pool(ctx_, x, rois, p);
    }
    Tensor roi_align(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                     const RoiAlignParams & p) override {
        bind(ctx_);
        return cuda::roi_align(ctx_, x, rois, batch_indices, p);
    }
    std::vector<int64_t> nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p) override {
        bind(ctx_);
        return cuda::nms(ctx_, boxes, scores, p);
    }

  private:
    Context & ctx_;
};

struct Registry {
    std::mutex mutex;
    std::vector<Context *> contexts;
    std::vector<CudaBackend *> backends;
};

Registry & registry() {
    // Never destroyed: device tensors in static storage release blocks late.
    static Registry * r = new Registry;
    return *r;
}

}  // namespace

[[noreturn]] void throw_cuda_error(cudaError_t err, const std::string & what) {
    // Reading the error resets it unless the context is corrupted (sticky
    // errors, e.g. an illegal address), which no later call can recover from.
    cudaGetLastError();
    const std::string text = what + " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
    if (err == cudaErrorMemoryAllocation) throw_error(ErrorCode::OutOfMemory, text);
    throw_error(ErrorCode::Device, text);
}

Context & context(int device) {
    const CudaStatus & status = cuda_status();
    FOVEA_CHECK(status.available, ErrorCode::Device, "CUDA is not available: " << status.reason);
    FOVEA_CHECK(device >= 0 && device < int(status.devices.size()), ErrorCode::Device,
                "no CUDA device " << device << "; this machine has " << status.devices.size());
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.contexts.empty()) {
        r.contexts.assign(status.devices.size(), nullptr);
        r.backends.assign(status.devices.size(), nullptr);
    }
    if (r.contexts[size_t(device)] == nullptr) {
        Context * ctx = create_context(device);
        r.contexts[size_t(device)] = ctx;
        r.backends[size_t(device)] = new CudaBackend(*ctx);
    }
    return *r.contexts[size_t(device)];
}

void bind(const Context & ctx) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != ctx.device) check(cudaSetDevice(ctx.device), "cudaSetDevice");
}

void check_on_device(const Context & ctx, const Tensor & t, const char * op) {
    const Device want{DeviceType::CUDA, ctx.device};
    FOVEA_CHECK_INPUT(!t.defined() || t.device() == want,
                      op << ": tensor on " << t.device().str() << " passed to the CUDA backend on " << want.str());
}

Tensor Context::upload(const void * host, const Shape & shape, DType dtype) {
    Tensor t = empty(shape, dtype);
    copy(*this, t.raw(), host, t.nbytes(), true);
    return t;
}

void Context::download(const Tensor & t, void * host) {
    check_on_device(*this, t, "download");
    copy(*this, host, t.raw(), t.nbytes(), false);
}

const char * precision_name(Precision p) { return p == Precision::TF32 ? "tf32" : "fp32"; }

Precision precision(int device) { return context(device).precision.load(); }

void set_precision(int device, Precision p) {
    Context & ctx = context(device);
    FOVEA_CHECK_OPTIONS(p == Precision::FP32 || ctx.cc_major >= 8,
                        "tf32 needs a GPU of compute capability 8.0 or newer; cuda:"
                            << device << " is " << ctx.cc_major << "." << ctx.cc_minor);
    ctx.precision.store(p);
}

DeviceAllocator & allocator(int device) { return *context(device).alloc; }

std::vector<std::pair<int, DeviceAllocatorStats>> allocator_stats() {
    std::vector<std::pair<int, DeviceAllocatorStats>> out;
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    for (size_t i = 0; i < r.contexts.size(); i++) {
        if (r.contexts[i] != nullptr) out.emplace_back(int(i), r.contexts[i]->alloc->stats());
    }
    return out;
}

DevicePeak device_peak(int device) {
    Context & ctx = context(device);
    const int sms = ctx.multiprocessors;
    int clock_khz = 0, mem_khz = 0, bus_bits = 0;
    check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device), "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device), "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device), "cudaDeviceGetAttribute");
    // FLOP per clock per SM (an FMA is two): fp32 SIMT, and dense tf32 on the
    // tensor cores of the data-centre parts (A100: 156 TFLOP/s, H100 SXM: 495
    // at their boost clocks).
    const int cc = ctx.cc_major * 10 + ctx.cc_minor;
    const double fp32_per_clock = cc == 80 ? 128 : cc >= 86 ? 256 : 0;
    const double tf32_per_clock = cc == 80 ? 1024 : cc == 90 ? 2048 : 0;
    DevicePeak p;
    p.sm_clock_mhz = clock_khz / 1e3;
    p.fp32_flops = sms * (clock_khz * 1e3) * fp32_per_clock;
    p.tf32_flops = sms * (clock_khz * 1e3) * tf32_per_clock;
    p.dram_bytes_per_s = (mem_khz * 1e3) * (bus_bits / 8.0) * 2;
    return p;
}

void synchronize(int device) {
    Context & ctx = context(device);
    bind(ctx);
    check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
}

std::vector<float> time_on_stream(int device, int repeats, const std::function<void()> & fn) {
    Context & ctx = context(device);
    bind(ctx);
    std::vector<cudaEvent_t> events(size_t(repeats) + 1, nullptr);
    auto destroy = [&] {
        for (cudaEvent_t e : events) {
            if (e) cudaEventDestroy(e);
        }
    };
    std::vector<float> ms;
    try {
        for (cudaEvent_t & e : events) check(cudaEventCreate(&e), "cudaEventCreate");
        check(cudaEventRecord(events[0], ctx.stream), "cudaEventRecord");
        for (int r = 0; r < repeats; r++) {
            fn();
            check(cudaEventRecord(events[size_t(r) + 1], ctx.stream), "cudaEventRecord");
        }
        check(cudaEventSynchronize(events.back()), "cudaEventSynchronize");
        for (int r = 0; r < repeats; r++) {
            float t = 0;
            check(cudaEventElapsedTime(&t, events[size_t(r)], events[size_t(r) + 1]), "cudaEventElapsedTime");
            ms.push_back(t);
        }
    } catch (...) {
        destroy();
        throw;
    }
    destroy();
    return ms;
}

Backend & backend(int device) {
    context(device);
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    return *r.backends[size_t(device)];
}

Tensor to_device(const Tensor & t, int device) {
    FOVEA_CHECK_INPUT(t.defined(), "to_device: undefined tensor");
    const Device want{DeviceType::CUDA, device};
    if (t.device() == want) return t;
    Context & ctx = context(device);
    if (t.device().type == DeviceType::CUDA) return cuda::to_device(cuda::to_host(t), device);
    return ctx.upload(t.raw(), t.shape(), t.dtype());
}

Tensor to_host(const Tensor & t) {
    FOVEA_CHECK_INPUT(t.defined(), "to_host: undefined tensor");
    if (t.device().type == DeviceType::CPU) return t;
    Context & ctx = context(t.device().index);
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    ctx.download(t, h.raw());
    return h;
}

}  // namespace fovea::cuda
