#include <cuda_runtime.h>

#include "core/allocator.h"
#include "cuda/context.h"

namespace fovea::cuda {

DeviceAllocator::DeviceAllocator(int device, size_t max_cached_bytes)
    : device_(device), max_cached_bytes_(max_cached_bytes) {}

DeviceAllocator::~DeviceAllocator() {
    std::lock_guard<std::mutex> lock(mutex_);
    free_cached_locked();
}

size_t DeviceAllocator::size_class(size_t bytes) {
    if (bytes <= 4096) return (bytes + kAlignment - 1) / kAlignment * kAlignment;
    // The host allocator's classes (four per power of two, at most 25% waste)
    // are multiples of 1024 above 4 KiB, so they keep the 256-byte alignment.
    return CachingAllocator::size_class(bytes);
}

void * DeviceAllocator::allocate(size_t bytes) {
    if (bytes == 0) bytes = 1;
    FOVEA_CHECK(bytes <= (size_t(1) << 46), ErrorCode::OutOfMemory,
                "cannot allocate " << bytes << " bytes of memory on cuda:" << device_);
    const size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocations++;
    void * ptr = nullptr;
    auto it = free_blocks_.find(cls);
    if (it != free_blocks_.end()) {
        ptr = it->second;
        free_blocks_.erase(it);
        stats_.bytes_cached -= cls;
        stats_.cache_hits++;
    } else {
        check(cudaSetDevice(device_), "cudaSetDevice");
        cudaError_t err = cudaMalloc(&ptr, cls);
        if (err == cudaErrorMemoryAllocation && !free_blocks_.empty()) {
            // Cached blocks of other classes may be what the device lacks.
            cudaGetLastError();
            free_cached_locked();
            err = cudaMalloc(&ptr, cls);
        }
        if (err == cudaErrorMemoryAllocation) {
            cudaGetLastError();  // not sticky: later calls must not see it
            throw_error(ErrorCode::OutOfMemory, "out of memory on cuda:" + std::to_string(device_) + " allocating " +
                                                    std::to_string(cls) + " bytes (" +
                                                    std::to_string(stats_.bytes_in_use) +
                                                    " in use); use smaller images or fewer scales");
        }
        check(err, "cudaMalloc");
        stats_.device_mallocs++;
    }
    live_blocks_[ptr] = cls;
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
    return ptr;
}

void DeviceAllocator::release(void * ptr) noexcept {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_blocks_.find(ptr);
    if (it == live_blocks_.end()) return;  // runs in destructors: never throws
    const size_t cls = it->second;
    live_blocks_.erase(it);
    stats_.bytes_in_use -= cls;
    if (stats_.bytes_cached + cls <= max_cached_bytes_) {
        free_blocks_.emplace(cls, ptr);
        stats_.bytes_cached += cls;
        return;
    }
    // Over the cache bound: cudaFree waits for the device, so work queued
    // on the block finishes first.
    if (cudaSetDevice(device_) == cudaSuccess) cudaFree(ptr);
    cudaGetLastError();
}

void DeviceAllocator::free_cached_locked() {
    if (cudaSetDevice(device_) == cudaSuccess) {
        for (auto & entry : free_blocks_) cudaFree(entry.second);
    }
    cudaGetLastError();
    free_blocks_.clear();
    stats_.bytes_cached = 0;
}

void DeviceAllocator::empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    free_cached_locked();
}

DeviceAllocatorStats DeviceAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

void DeviceAllocator::reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

namespace {

void release_block(void * ptr, void * ctx) { static_cast<DeviceAllocator *>(ctx)->release(ptr); }

}  // namespace

Tensor DeviceAllocator::empty(const Shape & shape, DType dtype) {
    const int64_t n = shape_numel(shape);
    FOVEA_CHECK(n <= (int64_t(1) << 46) / int64_t(dtype_size(dtype)), ErrorCode::OutOfMemory,
                "tensor of shape " << shape_str(shape) << " is too large to allocate on cuda:" << device_);
    const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
    void * ptr = allocate(bytes);
    std::shared_ptr<Storage> storage;
    try {
        storage = std::make_shared<Storage>(ptr, bytes, Device{DeviceType::CUDA, device_}, release_block, this);
    } catch (...) {
        release(ptr);
        throw;
    }
    return Tensor::from_storage(std::move(storage), 0, shape, dtype);
}

}  // namespace fovea::cuda
