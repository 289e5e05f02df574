// Tensor: a shape, a dtype, a device and a reference-counted buffer.
// Always contiguous, row-major (NCHW for images). Views share the buffer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace fovea {

enum class DType : int32_t { F32, F16, BF16, U8, I32, I64 };

size_t dtype_size(DType dtype);
const char * dtype_name(DType dtype);

enum class DeviceType : int32_t { CPU, CUDA };

struct Device {
    DeviceType type = DeviceType::CPU;
    int index = 0;
    bool operator==(const Device & o) const { return type == o.type && index == o.index; }
    bool operator!=(const Device & o) const { return !(*this == o); }
    std::string str() const;
};

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape & shape);
// Product of dims; throws Error(Input) on negative dims or overflow past 2^62.
int64_t shape_numel(const Shape & shape);

// Memory owned by an allocator (or borrowed from the caller).
class Storage {
  public:
    using Deleter = void (*)(void * ptr, void * ctx);
    Storage(void * data, size_t bytes, Device device, Deleter deleter, void * ctx)
        : data_(data), bytes_(bytes), device_(device), deleter_(deleter), ctx_(ctx) {}
    ~Storage();
    Storage(const Storage &) = delete;
    Storage & operator=(const Storage &) = delete;
    void * data() const { return data_; }
    size_t bytes() const { return bytes_; }
    Device device() const { return device_; }

    // Contents that never change again (model weights once loaded). Only
    // such storages keep derived data, so it can never go stale.
    void mark_constant() { constant_.store(true); }
    bool constant() const { return constant_.load(); }
    // Data computed from the contents (a backend's packed copy of a weight),
    // made by `make` on the first request for `key` and freed with the
    // storage. Error(Internal) unless constant.
    std::shared_ptr<const void> derived(const std::string & key,
                                        const std::function<std::shared_ptr<const void>()> & make);

  private:
    void * data_;
    size_t bytes_;
    Device device_;
    Deleter deleter_;
    void * ctx_;
    std::atomic<bool> constant_{false};
    std::mutex derived_mutex_;
    std::vector<std::pair<std::string, std::shared_ptr<const void>>> derived_;
};

class Tensor {
  public:
    Tensor() = default;

    // Uninitialised host tensor from the caching CPU allocator.
    static Tensor empty(const Shape & shape, DType dtype = DType::F32);
    static Tensor zeros(const Shape & shape, DType dtype = DType::F32);
    static Tensor full(const Shape & shape, float value);
    static Tensor from_vector(const Shape & shape, const std::vector<float> & values);
    // Borrow caller memory: the caller keeps it alive for the tensor's life.
    static Tensor wrap(void * data, const Shape & shape, DType dtype = DType::F32, Device device = {});
    // Adopt a storage (used by other backends' allocators and by file mappings).
    static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape & shape,
                               DType dtype);

    bool defined() const { return storage_ != nullptr; }
    const Shape & shape() const { return shape_; }
    int ndim() const { return static_cast<int>(shape_.size()); }
    // dim(-1) is the last dimension.
    int64_t dim(int i) const;
    int64_t numel() const { return numel_; }
    DType dtype() const { return dtype_; }
    Device device() const { return storage_ ? storage_->device() : Device{}; }
    size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

    void * raw() const;
    template <typename T> T * data() const { return static_cast<T *>(raw()); }
    // Checked float32 access: throws Error(Internal) on other dtypes.
    float * f32() const;

    // Same buffer, new shape with the same element count.
    Tensor reshape(const Shape & shape) const;
    // Deep copy on the host.
    Tensor clone() const;

    // Declares the buffer's contents final (see Storage::mark_constant).
    void mark_constant() const;
    bool is_constant() const { return storage_ && storage_->constant(); }
    // Storage::derived for this tensor's part of the buffer: the key is
    // extended with its offset, shape and dtype, so tensors sharing one
    // buffer (a weights file) keep their derived data apart.
    std::shared_ptr<const void> derived(const std::string & key,
                                        const std::function<std::shared_ptr<const void>()> & make) const;

  private:
    std::shared_ptr<Storage> storage_;
    size_t byte_offset_ = 0;
    Shape shape_;
    int64_t numel_ = 0;
    DType dtype_ = DType::F32;
};

}  // namespace fovea
