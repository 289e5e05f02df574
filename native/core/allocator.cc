#include "core/allocator.h"

#include <cstdlib>
#include <new>
#include <string>

#include "core/error.h"

namespace fovea {

CachingAllocator::CachingAllocator(size_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}

CachingAllocator::~CachingAllocator() {
    empty_cache();
    // Blocks still live belong to tensors that outlive the allocator (static
    // destruction order); leave them to the OS.
}

size_t CachingAllocator::size_class(size_t bytes) {
    if (bytes <= 4096) {
        return (bytes + kAlignment - 1) / kAlignment * kAlignment;
    }
    // Four classes per power of two: at most 25% waste, and good reuse of the
    // slightly different sizes a pyramid produces.
    size_t pow2 = 4096;
    while (pow2 * 2 < bytes) pow2 *= 2;
    size_t step = pow2 / 4;
    return (bytes + step - 1) / step * step;
}

void * CachingAllocator::allocate(size_t bytes) {
    if (bytes == 0) bytes = 1;
    FOVEA_CHECK(bytes <= (size_t(1) << 46), ErrorCode::OutOfMemory,
                "cannot allocate " << bytes << " bytes of host memory");
    size_t cls = size_class(bytes);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.allocations++;
        auto it = free_blocks_.find(cls);
        if (it != free_blocks_.end()) {
            void * ptr = it->second;
            free_blocks_.erase(it);
            stats_.bytes_cached -= cls;
            stats_.cache_hits++;
            live_blocks_[ptr] = cls;
            stats_.bytes_in_use += cls;
            if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
            return ptr;
        }
    }
    void * ptr = std::aligned_alloc(kAlignment, cls);
    if (ptr == nullptr) {
        empty_cache();
        ptr = std::aligned_alloc(kAlignment, cls);
    }
    FOVEA_CHECK(ptr != nullptr, ErrorCode::OutOfMemory,
                "out of host memory allocating " << cls << " bytes; use smaller images or fewer scales");
    std::lock_guard<std::mutex> lock(mutex_);
    live_blocks_[ptr] = cls;
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
    return ptr;
}

void CachingAllocator::release(void * ptr) noexcept {
    if (ptr == nullptr) return;
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = live_blocks_.find(ptr);
    // release() runs inside tensor destructors, so it must not throw; a
    // pointer it does not own is a bug that the ASan build reports as a leak.
    if (it == live_blocks_.end()) return;
    size_t cls = it->second;
    live_blocks_.erase(it);
    stats_.bytes_in_use -= cls;
    if (stats_.bytes_cached + cls <= max_cached_bytes_) {
        free_blocks_.emplace(cls, ptr);
        stats_.bytes_cached += cls;
        return;
    }
    lock.unlock();
    std::free(ptr);
}

void CachingAllocator::empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto & entry : free_blocks_) std::free(entry.second);
    free_blocks_.clear();
    stats_.bytes_cached = 0;
}

AllocatorStats CachingAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

CachingAllocator & cpu_allocator() {
    static CachingAllocator * allocator = [] {
        size_t mb = 1024;
        if (const char * env = std::getenv("FOVEA_CPU_CACHE_MB")) mb = std::strtoull(env, nullptr, 10);
        // Never destroyed: tensors held in static storage may be released late.
        return new CachingAllocator(mb << 20);
    }();
    return *allocator;
}

}  // namespace fovea
