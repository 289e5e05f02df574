// Caching device allocator, one per CUDA device. Freed blocks go back to size
// classes (as core/allocator.h's host CachingAllocator) and are handed out
// again, so a pipeline in its steady state calls cudaMalloc never.
//
// Stream semantics: every op of a device runs on that device's one stream
// (cuda/context.h), so a block released on the host while a queued kernel
// still uses it is safe to hand out at once: whatever the next owner
// enqueues runs after that kernel. Plain C++: .cc files (tests) include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "core/tensor.h"

namespace fovea::cuda {

struct DeviceAllocatorStats {
    size_t bytes_in_use = 0;       // handed out and not yet released
    size_t bytes_cached = 0;       // held in the free lists
    size_t peak_bytes_in_use = 0;
    uint64_t allocations = 0;      // calls to allocate()
    uint64_t cache_hits = 0;       // allocate() served from the cache
    uint64_t device_mallocs = 0;   // cudaMalloc calls (0 more in a steady state)
};

class DeviceAllocator {
  public:
    // cudaMalloc returns 256-byte aligned blocks; classes keep that alignment.
    static constexpr size_t kAlignment = 256;

    DeviceAllocator(int device, size_t max_cached_bytes);
    ~DeviceAllocator();
    DeviceAllocator(const DeviceAllocator &) = delete;
    DeviceAllocator & operator=(const DeviceAllocator &) = delete;

    // Throws Error(OutOfMemory) when the device refuses even after the cache
    // was emptied, Error(Device) on any other CUDA error.
    void * allocate(size_t bytes);
    void release(void * ptr) noexcept;
    // Returns every cached block to the driver (cudaFree synchronises).
    void empty_cache();
    DeviceAllocatorStats stats() const;
    void reset_peak();

    // Size class a request is rounded up to; exposed for tests.
    static size_t size_class(size_t bytes);

    // An uninitialised float32 (or other dtype) tensor on this device whose
    // storage returns its block here when the last reference dies.
    Tensor empty(const Shape & shape, DType dtype = DType::F32);

  private:
    void free_cached_locked();

    int device_;
    mutable std::mutex mutex_;
    size_t max_cached_bytes_;
    std::multimap<size_t, void *> free_blocks_;  // size class -> block
    std::map<void *, size_t> live_blocks_;       // block -> size class
    DeviceAllocatorStats stats_;
};

}  // namespace fovea::cuda
