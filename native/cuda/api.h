// CUDA-specific controls beyond the Backend interface, for tests, the bench
// and the pipeline. Plain C++; only linked in builds with FOVEA_HAVE_CUDA
// (core/ops.h's cuda_backend() and core/device.h's to_device/to_host are the
// build-independent entry points).
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "cuda/allocator.h"

namespace fovea::cuda {

// Arithmetic of conv2d / gemm / linear. Every other op is fp32 always.
enum class Precision : int32_t {
    FP32,  // SIMT fp32 FMA: matches the CPU backend to fp32 rounding
    TF32,  // tensor cores (WMMA m16n16k8): operands rounded to tf32, fp32 accumulation
};

const char * precision_name(Precision p);

// Default: FOVEA_CUDA_PRECISION=fp32|tf32 when set, else tf32 on sm_80 and
// newer (issue 6), fp32 before. Setting TF32 on a device without tensor-core
// tf32 throws Error(Options). Both throw Error(Device) when the device is
// unavailable. The setting applies to ops enqueued after the call.
Precision precision(int device);
void set_precision(int device, Precision p);

// A device's theoretical peaks at its maximum clocks, for benchmarks' "% of
// peak": fp32 FMA and dense tf32 tensor-core FLOP/s (SMs x clock x the
// per-SM rate of the architecture; 0 where fovea does not know the rate)
// and DRAM bandwidth (memory clock x bus width x 2).
struct DevicePeak {
    double fp32_flops = 0, tf32_flops = 0, dram_bytes_per_s = 0;
    double sm_clock_mhz = 0;
};
DevicePeak device_peak(int device);

// The caching allocator of a device (created with its backend).
DeviceAllocator & allocator(int device);

// The allocator counters of every device in use (whose context exists; none
// is created), by device index.
std::vector<std::pair<int, DeviceAllocatorStats>> allocator_stats();

// Waits for every op enqueued on the device's stream; throws Error(Device)
// (or OutOfMemory) for an error a kernel raised.
void synchronize(int device);

// Device time of `fn` (which enqueues ops on the device's backend), in ms,
// once per repeat: CUDA events recorded on the device's stream around each
// call. Waits for the device at the end.
std::vector<float> time_on_stream(int device, int repeats, const std::function<void()> & fn);

// What core/backends.cc's cuda_backend(), to_device() and to_host() call
// once cuda_status() said a device exists.
Backend & backend(int device);
Tensor to_device(const Tensor & t, int device);
Tensor to_host(const Tensor & t);

}  // namespace fovea::cuda
