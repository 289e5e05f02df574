// Host emulation of the CUDA runtime and of kernel execution, so that the
// CUDA backend's kernels run on a CPU (tools/device/emu/run.sh): a check of
// their logic where no GPU is at hand, not a substitute for running on one
// (no real concurrency between warps, no asynchrony, no memory model).
// Device memory is malloc'd and poisoned with 0xFF bytes (NaN floats), so
// an output element a kernel never writes fails the comparison; built with
// AddressSanitizer, reads and writes past an allocation are reported.
#pragma once
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;

struct EmuBarrier {
    std::mutex m;
    std::condition_variable cv;
    unsigned count = 0, waiting = 0, generation = 0;
    void wait() {
        std::unique_lock<std::mutex> l(m);
        unsigned gen = generation;
        if (++waiting == count) {
            waiting = 0;
            generation++;
            cv.notify_all();
        } else {
            cv.wait(l, [&] { return gen != generation; });
        }
    }
};
inline EmuBarrier emu_barrier;
inline void __syncthreads() { emu_barrier.wait(); }
[[noreturn]] inline void __trap() { std::abort(); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

// One std::thread per CUDA thread of a block; each walks every block of the
// grid in order, with a barrier between blocks (so a block's shared memory,
// a static array here, is not reused before all its threads are done).
template <class F> void emu_launch(dim3 grid, dim3 block, F && f) {
    gridDim = grid;
    blockDim = block;
    const unsigned nt = block.x * block.y * block.z;
    emu_barrier.count = nt;
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < nt; t++) {
        ts.emplace_back([&, t] {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            for (unsigned bz = 0; bz < grid.z; bz++)
                for (unsigned by = 0; by < grid.y; by++)
                    for (unsigned bx = 0; bx < grid.x; bx++) {
                        blockIdx = dim3(bx, by, bz);
                        f();
                        emu_barrier.wait();
                    }
        });
    }
    for (auto & th : ts) th.join();
}

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
inline cudaError_t & emu_last_error() {
    static cudaError_t e = cudaSuccess;
    return e;
}
inline cudaError_t emu_ret(cudaError_t e) {
    if (e != cudaSuccess) emu_last_error() = e;
    return e;
}
inline const char * cudaGetErrorName(cudaError_t e) {
    return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorInvalidValue";
}
inline const char * cudaGetErrorString(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "out of memory" : "error"; }
inline cudaError_t cudaGetLastError() {
    cudaError_t e = emu_last_error();
    emu_last_error() = cudaSuccess;
    return e;
}
inline cudaError_t cudaRuntimeGetVersion(int * v) { *v = 13000; return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int * v) { *v = 13000; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int * n) { *n = 1; return cudaSuccess; }
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
};
// Compute capability 8.0, so the tf32 path (emulated WMMA, mma.h) runs too.
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp * p, int) {
    std::strcpy(p->name, "host emulation");
    p->major = 8;
    p->minor = 0;
    p->totalGlobalMem = size_t(8) << 30;
    p->multiProcessorCount = 4;
    return cudaSuccess;
}
enum cudaDeviceAttr {
    cudaDevAttrClockRate,
    cudaDevAttrMemoryClockRate,
    cudaDevAttrGlobalMemoryBusWidth,
};
// An A100-like part: 4 SMs (as above) at 1.41 GHz, 1.2 GHz x 5120-bit memory.
inline cudaError_t cudaDeviceGetAttribute(int * v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrClockRate ? 1410000 : a == cudaDevAttrMemoryClockRate ? 1215000 : 5120;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int * d) { *d = 0; return cudaSuccess; }
// An 8 GiB "device": larger requests fail as cudaMalloc would.
inline cudaError_t cudaMalloc(void ** p, size_t bytes) {
    if (bytes > (size_t(8) << 30)) return emu_ret(cudaErrorMemoryAllocation);
    *p = std::malloc(bytes);
    if (!*p) return emu_ret(cudaErrorMemoryAllocation);
    std::memset(*p, 0xFF, bytes);  // poison: NaN floats, -1 integers
    return cudaSuccess;
}
inline cudaError_t cudaFree(void * p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMallocHost(void ** p, size_t bytes) { *p = std::malloc(bytes); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFreeHost(void * p) { std::free(p); return cudaSuccess; }
typedef void * cudaStream_t;
typedef void * cudaEvent_t;
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t * s, unsigned) { *s = reinterpret_cast<void *>(1); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t * e) { *e = new int(0); return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t * e, unsigned) { *e = new int(0); return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float * ms, cudaEvent_t, cudaEvent_t) { *ms = 1.0f; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete static_cast<int *>(e); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void * d, const void * s, size_t n, cudaMemcpyKind, cudaStream_t) {
    std::memcpy(d, s, n);
    return cudaSuccess;
}
