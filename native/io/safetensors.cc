#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/allocator.h"
#include "core/error.h"
#include "io/json.h"

// The data buffer is little-endian and loaded tensors are views of it.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader needs a little-endian host"
#endif

namespace fovea::io {

namespace {

struct DTypeInfo {
    SafetensorsDType dtype;
    const char * name;
    size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {SafetensorsDType::F64, "F64", 8},         {SafetensorsDType::F32, "F32", 4},
    {SafetensorsDType::F16, "F16", 2},         {SafetensorsDType::BF16, "BF16", 2},
    {SafetensorsDType::I64, "I64", 8},         {SafetensorsDType::I32, "I32", 4},
    {SafetensorsDType::I16, "I16", 2},         {SafetensorsDType::I8, "I8", 1},
    {SafetensorsDType::U8, "U8", 1},           {SafetensorsDType::BOOL, "BOOL", 1},
    {SafetensorsDType::U16, "U16", 2},         {SafetensorsDType::U32, "U32", 4},
    {SafetensorsDType::U64, "U64", 8},         {SafetensorsDType::F8_E4M3, "F8_E4M3", 1},
    {SafetensorsDType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeInfo & info(SafetensorsDType dtype) {
    for (const auto & d : kDTypes) {
        if (d.dtype == dtype) return d;
    }
    throw Error(ErrorCode::Internal, "safetensors: unhandled dtype");
}

[[noreturn]] void fail(const std::string & message) { throw Error(ErrorCode::Weights, "safetensors: " + message); }

std::string quoted(const std::string & name) { return "\"" + name + "\""; }

SafetensorsEntry read_entry(JsonReader & r, const std::string & name, uint64_t data_size) {
    const std::string what = "tensor " + quoted(name);
    if (r.peek() != JsonReader::Type::Object) fail(what + ": entry is not an object");
    SafetensorsEntry e;
    e.name = name;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    std::string key;
    r.begin_object();
    while (r.next_key(key)) {
        if (key == "dtype") {
            if (has_dtype) fail(what + ": duplicate \"dtype\"");
            has_dtype = true;
            if (r.peek() != JsonReader::Type::String) fail(what + ": \"dtype\" is not a string");
            std::string s = r.read_string();
            const DTypeInfo * found = nullptr;
            for (const auto & d : kDTypes) {
                if (s == d.name) found = &d;
            }
            if (!found) fail(what + ": unknown dtype " + quoted(s));
            e.dtype = found->dtype;
        } else if (key == "shape") {
            if (has_shape) fail(what + ": duplicate \"shape\"");
            has_shape = true;
            if (r.peek() != JsonReader::Type::Array) fail(what + ": \"shape\" is not an array");
            r.begin_array();
            while (r.next_element()) {
                if (e.shape.size() == kSafetensorsMaxRank) {
                    fail(what + ": rank is over " + std::to_string(kSafetensorsMaxRank));
                }
                if (r.peek() != JsonReader::Type::Integer) fail(what + ": a dimension is not an integer");
                int64_t d = r.read_integer();
                if (d < 0) fail(what + ": negative dimension " + std::to_string(d));
                e.shape.push_back(d);
            }
        } else if (key == "data_offsets") {
            if (has_offsets) fail(what + ": duplicate \"data_offsets\"");
            has_offsets = true;
            if (r.peek() != JsonReader::Type::Array) fail(what + ": \"data_offsets\" is not an array");
            r.begin_array();
            int64_t v[2];
            int n = 0;
            while (r.next_element()) {
                if (n == 2) fail(what + ": \"data_offsets\" has more than 2 values");
                if (r.peek() != JsonReader::Type::Integer) fail(what + ": an offset is not an integer");
                v[n] = r.read_integer();
                if (v[n] < 0) fail(what + ": negative offset " + std::to_string(v[n]));
                n++;
            }
            if (n != 2) fail(what + ": \"data_offsets\" must be [begin, end]");
            e.begin = uint64_t(v[0]);
            e.end = uint64_t(v[1]);
        } else {
            // Unknown keys are ignored, as the reference implementation does.
            r.skip_value();
        }
    }
    if (!has_dtype || !has_shape || !has_offsets) fail(what + ": needs \"dtype\", \"shape\" and \"data_offsets\"");

    uint64_t numel = 1;
    for (int64_t d : e.shape) {
        if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / uint64_t(d)) {
            fail(what + ": shape " + shape_str(e.shape) + " overflows");
        }
        numel *= uint64_t(d);
    }
    size_t size = info(e.dtype).size;
    if (numel > std::numeric_limits<uint64_t>::max() / size) fail(what + ": shape " + shape_str(e.shape) + " overflows");
    if (e.begin > e.end || e.end > data_size) {
        fail(what + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
             "] are outside the " + std::to_string(data_size) + "-byte data buffer");
    }
    if (e.end - e.begin != numel * size) {
        fail(what + ": " + info(e.dtype).name + " shape " + shape_str(e.shape) + " needs " +
             std::to_string(numel * size) + " bytes, data_offsets give " + std::to_string(e.end - e.begin));
    }
    return e;
}

void unmap(void * ptr, void * ctx) { munmap(ptr, reinterpret_cast<uintptr_t>(ctx)); }
void release(void * ptr, void *) { cpu_allocator().release(ptr); }

struct Fd {
    int fd;
    ~Fd() { ::close(fd); }
};

}  // namespace

const char * safetensors_dtype_name(SafetensorsDType dtype) { return info(dtype).name; }
size_t safetensors_dtype_size(SafetensorsDType dtype) { return info(dtype).size; }

float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        // Subnormal half: shift the mantissa up to an implicit leading 1.
        uint32_t e = 113;
        while ((mant & 0x400) == 0) {
            mant <<= 1;
            e--;
        }
        bits = sign | (e << 23) | ((mant & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

SafetensorsFile SafetensorsFile::parse(std::shared_ptr<Storage> bytes) {
    FOVEA_CHECK(bytes && bytes->device().type == DeviceType::CPU, ErrorCode::Internal,
                "safetensors: parse() needs host memory");
    const auto * base = static_cast<const unsigned char *>(bytes->data());
    const uint64_t size = bytes->bytes();
    if (size < 8) fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
    uint64_t n;
    std::memcpy(&n, base, 8);
    if (n > kSafetensorsMaxHeaderBytes) {
        fail("header length " + std::to_string(n) + " is over the " + std::to_string(kSafetensorsMaxHeaderBytes) +
             "-byte limit");
    }
    if (n > size - 8) {
        fail("header length " + std::to_string(n) + " runs past the end of the " + std::to_string(size) + "-byte file");
    }
    const uint64_t data_size = size - 8 - n;

    SafetensorsFile f;
    JsonReader r(std::string_view(reinterpret_cast<const char *>(base) + 8, size_t(n)), "safetensors header", 8);
    if (r.peek() != JsonReader::Type::Object) fail("header is not a JSON object");
    r.begin_object();
    std::string key;
    bool has_metadata = false;
    while (r.next_key(key)) {
        if (key == "__metadata__") {
            if (has_metadata) fail("duplicate \"__metadata__\"");
            has_metadata = true;
            if (r.peek() != JsonReader::Type::Object) fail("\"__metadata__\" is not an object");
            r.begin_object();
            std::string k;
            while (r.next_key(k)) {
                if (r.peek() != JsonReader::Type::String) fail("__metadata__ value of " + quoted(k) + " is not a string");
                if (!f.metadata_.emplace(k, r.read_string()).second) fail("duplicate __metadata__ key " + quoted(k));
            }
            continue;
        }
        if (!f.index_.emplace(key, f.tensors_.size()).second) fail("duplicate tensor name " + quoted(key));
        f.tensors_.push_back(read_entry(r, key, data_size));
    }
    r.finish();

    std::sort(f.tensors_.begin(), f.tensors_.end(), [](const SafetensorsEntry & a, const SafetensorsEntry & b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t at = 0;
    for (const auto & e : f.tensors_) {
        if (e.begin < at) fail("tensor " + quoted(e.name) + " overlaps the previous tensor");
        if (e.begin > at) {
            fail("bytes [" + std::to_string(at) + ", " + std::to_string(e.begin) + ") of the data buffer belong to no tensor");
        }
        at = e.end;
    }
    if (at != data_size) {
        fail("bytes [" + std::to_string(at) + ", " + std::to_string(data_size) + ") of the data buffer belong to no tensor");
    }
    for (size_t i = 0; i < f.tensors_.size(); i++) f.index_[f.tensors_[i].name] = i;
    f.bytes_ = std::move(bytes);
    f.data_offset_ = 8 + n;
    return f;
}

SafetensorsFile SafetensorsFile::open(const std::string & path, Mode mode) {
    Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (fd.fd < 0) fail("cannot open " + path + ": " + std::strerror(errno));
    struct stat st;
    if (fstat(fd.fd, &st) != 0) fail("cannot stat " + path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail(path + " is not a regular file");
    const size_t size = size_t(st.st_size);
    if (size < 8) fail(path + " is " + std::to_string(size) + " bytes, too short for the 8-byte header length");

    if (mode == Mode::MapOrRead) {
        // Writable private pages: a caller that modifies a loaded tensor in
        // place gets its own copy of the page instead of a crash.
        void * p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
        if (p != MAP_FAILED) {
            auto storage = std::make_shared<Storage>(p, size, Device{}, unmap, reinterpret_cast<void *>(uintptr_t(size)));
            SafetensorsFile f = parse(std::move(storage));
            f.mapped_ = true;
            return f;
        }
    }

    void * buf = cpu_allocator().allocate(size);
    auto storage = std::make_shared<Storage>(buf, size, Device{}, release, nullptr);
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(fd.fd, static_cast<char *>(buf) + got, size - got, off_t(got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) fail("cannot read " + path + ": " + std::strerror(errno));
        if (k == 0) fail(path + " shrank while being read");
        got += size_t(k);
    }
    return parse(std::move(storage));
}

const SafetensorsEntry * SafetensorsFile::find(const std::string & name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsFile::load(const std::string & name) const {
    const SafetensorsEntry * e = find(name);
    if (!e) fail("no tensor named " + quoted(name));
    return load(*e);
}

Tensor SafetensorsFile::load(const SafetensorsEntry & e) const {
    const size_t offset = size_t(data_offset_ + e.begin);
    const auto * src = static_cast<const unsigned char *>(bytes_->data()) + offset;
    const size_t nbytes = size_t(e.end - e.begin);

    auto view = [&](DType dtype) {
        if (offset % dtype_size(dtype) == 0) return Tensor::from_storage(bytes_, offset, e.shape, dtype);
        // Misaligned data (a foreign writer that does not pad): copy it.
        Tensor t = Tensor::empty(e.shape, dtype);
        if (nbytes) std::memcpy(t.raw(), src, nbytes);
        return t;
    };
    auto convert = [&](auto element_to_f32, size_t element_size) {
        Tensor t = Tensor::empty(e.shape, DType::F32);
        float * out = t.f32();
        for (int64_t i = 0; i < t.numel(); i++) out[i] = element_to_f32(src + size_t(i) * element_size);
        return t;
    };

    switch (e.dtype) {
        case SafetensorsDType::F32: return view(DType::F32);
        case SafetensorsDType::U8: return view(DType::U8);
        case SafetensorsDType::I32: return view(DType::I32);
        case SafetensorsDType::I64: return view(DType::I64);
        case SafetensorsDType::F16:
            return convert(
                [](const unsigned char * p) {
                    uint16_t h;
                    std::memcpy(&h, p, 2);
                    return f16_to_f32(h);
                },
                2);
        case SafetensorsDType::BF16:
            return convert(
                [](const unsigned char * p) {
                    uint16_t h;
                    std::memcpy(&h, p, 2);
                    return bf16_to_f32(h);
                },
                2);
        case SafetensorsDType::F64:
            return convert(
                [](const unsigned char * p) {
                    double d;
                    std::memcpy(&d, p, 8);
                    return static_cast<float>(d);
                },
                8);
        default:
            fail("tensor " + quoted(e.name) + " is " + info(e.dtype).name +
                 ", which fovea cannot load (it loads F32, F16, BF16, F64, U8, I32 and I64)");
    }
}

}  // namespace fovea::io
