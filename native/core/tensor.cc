#include "core/tensor.h"

#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/error.h"

namespace fovea {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::F32: return 4;
        case DType::F16: return 2;
        case DType::BF16: return 2;
        case DType::U8: return 1;
        case DType::I32: return 4;
        case DType::I64: return 8;
    }
    return 0;
}

const char * dtype_name(DType dtype) {
    switch (dtype) {
        case DType::F32: return "float32";
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        case DType::U8: return "uint8";
        case DType::I32: return "int32";
        case DType::I64: return "int64";
    }
    return "?";
}

std::string Device::str() const {
    if (type == DeviceType::CPU) return "cpu";
    return "cuda:" + std::to_string(index);
}

std::string shape_str(const Shape & shape) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < shape.size(); i++) os << (i ? ", " : "") << shape[i];
    os << "]";
    return os.str();
}

int64_t shape_numel(const Shape & shape) {
    int64_t n = 1;
    for (int64_t d : shape) {
        FOVEA_CHECK_INPUT(d >= 0, "negative dimension in shape " << shape_str(shape));
        FOVEA_CHECK_INPUT(d == 0 || n <= (int64_t(1) << 62) / d, "shape " << shape_str(shape) << " is too large");
        n *= d;
    }
    return n;
}

Storage::~Storage() {
    derived_.clear();
    if (deleter_) deleter_(data_, ctx_);
}

std::shared_ptr<const void> Storage::derived(const std::string & key,
                                             const std::function<std::shared_ptr<const void>()> & make) {
    FOVEA_CHECK(constant(), ErrorCode::Internal, "derived data requested for a storage not marked constant");
    // Made under the lock: a second caller with the same key waits for the
    // first instead of packing the same weights again.
    std::lock_guard<std::mutex> lock(derived_mutex_);
    for (const auto & [k, v] : derived_) {
        if (k == key) return v;
    }
    std::shared_ptr<const void> v = make();
    derived_.emplace_back(key, v);
    return v;
}

static void release_to_cpu_allocator(void * ptr, void *) { cpu_allocator().release(ptr); }

Tensor Tensor::empty(const Shape & shape, DType dtype) {
    int64_t n = shape_numel(shape);
    FOVEA_CHECK(n <= (int64_t(1) << 46) / int64_t(dtype_size(dtype)), ErrorCode::OutOfMemory,
                "tensor of shape " << shape_str(shape) << " is too large to allocate");
    size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
    void * ptr = cpu_allocator().allocate(bytes);
    Tensor t;
    t.storage_ = std::make_shared<Storage>(ptr, bytes, Device{}, release_to_cpu_allocator, nullptr);
    t.shape_ = shape;
    t.numel_ = n;
    t.dtype_ = dtype;
    return t;
}

Tensor Tensor::zeros(const Shape & shape, DType dtype) {
    Tensor t = empty(shape, dtype);
    std::memset(t.raw(), 0, t.nbytes());
    return t;
}

Tensor Tensor::full(const Shape & shape, float value) {
    Tensor t = empty(shape, DType::F32);
    float * p = t.f32();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = value;
    return t;
}

Tensor Tensor::from_vector(const Shape & shape, const std::vector<float> & values) {
    Tensor t = empty(shape, DType::F32);
    FOVEA_CHECK_INPUT(static_cast<int64_t>(values.size()) == t.numel(),
                      "from_vector: " << values.size() << " values for shape " << shape_str(shape));
    if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
    return t;
}

Tensor Tensor::wrap(void * data, const Shape & shape, DType dtype, Device device) {
    Tensor t;
    t.shape_ = shape;
    t.numel_ = shape_numel(shape);
    t.dtype_ = dtype;
    t.storage_ = std::make_shared<Storage>(data, t.nbytes(), device, nullptr, nullptr);
    return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape & shape,
                            DType dtype) {
    Tensor t;
    t.shape_ = shape;
    t.numel_ = shape_numel(shape);
    t.dtype_ = dtype;
    FOVEA_CHECK(storage && byte_offset <= storage->bytes() && t.nbytes() <= storage->bytes() - byte_offset,
                ErrorCode::Internal, "tensor of shape " << shape_str(shape) << " does not fit its storage");
    t.storage_ = std::move(storage);
    t.byte_offset_ = byte_offset;
    return t;
}

void Tensor::mark_constant() const {
    if (storage_) storage_->mark_constant();
}

std::shared_ptr<const void> Tensor::derived(const std::string & key,
                                            const std::function<std::shared_ptr<const void>()> & make) const {
    FOVEA_CHECK(storage_, ErrorCode::Internal, "derived data requested for an undefined tensor");
    return storage_->derived(key + "@" + std::to_string(byte_offset_) + ":" + shape_str(shape_) + ":" +
                                 dtype_name(dtype_),
                             make);
}

int64_t Tensor::dim(int i) const {
    int n = ndim();
    if (i < 0) i += n;
    FOVEA_CHECK(i >= 0 && i < n, ErrorCode::Internal, "dim " << i << " out of range for shape " << shape_str(shape_));
    return shape_[i];
}

void * Tensor::raw() const {
    if (!storage_) return nullptr;
    return static_cast<char *>(storage_->data()) + byte_offset_;
}

float * Tensor::f32() const {
    FOVEA_CHECK(dtype_ == DType::F32, ErrorCode::Internal, "expected a float32 tensor, got " << dtype_name(dtype_));
    return data<float>();
}

Tensor Tensor::reshape(const Shape & shape) const {
    FOVEA_CHECK_INPUT(shape_numel(shape) == numel_,
                      "cannot reshape " << shape_str(shape_) << " to " << shape_str(shape));
    Tensor t = *this;
    t.shape_ = shape;
    return t;
}

Tensor Tensor::clone() const {
    FOVEA_CHECK(device().type == DeviceType::CPU, ErrorCode::Internal, "clone() of a device tensor");
    Tensor t = empty(shape_, dtype_);
    if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
    return t;
}

}  // namespace fovea
