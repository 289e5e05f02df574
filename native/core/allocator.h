// Caching host allocator: freed blocks are kept in size classes and handed out
// again, so the steady state of a pipeline does no malloc/free of large buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace fovea {

struct AllocatorStats {
    size_t bytes_in_use = 0;      // handed out and not yet released
    size_t bytes_cached = 0;      // held in the free lists
    size_t peak_bytes_in_use = 0;
    uint64_t allocations = 0;     // calls to allocate()
    uint64_t cache_hits = 0;      // allocate() served from the cache
};

class CachingAllocator {
  public:
    // Blocks are aligned to 64 bytes (one cache line, one AVX-512 register).
    static constexpr size_t kAlignment = 64;

    explicit CachingAllocator(size_t max_cached_bytes);
    ~CachingAllocator();
    CachingAllocator(const CachingAllocator &) = delete;
    CachingAllocator & operator=(const CachingAllocator &) = delete;

    // Throws Error(OutOfMemory) when the system refuses.
    void * allocate(size_t bytes);
    void release(void * ptr) noexcept;
    void empty_cache();
    AllocatorStats stats() const;

    // Size class a request is rounded up to; exposed for tests.
    static size_t size_class(size_t bytes);

  private:
    mutable std::mutex mutex_;
    size_t max_cached_bytes_;
    std::multimap<size_t, void *> free_blocks_;   // size class -> block
    std::map<void *, size_t> live_blocks_;        // block -> size class
    AllocatorStats stats_;
};

// Process-wide host allocator (cache bounded by FOVEA_CPU_CACHE_MB, default 1024).
CachingAllocator & cpu_allocator();

}  // namespace fovea
