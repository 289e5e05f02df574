// safetensors reader: 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}),
// then the data buffer. The file is memory-mapped (or read when mapping is
// not possible); float32 tensors are views of the mapping, float16/bfloat16/
// float64 ones are converted to float32 one tensor at a time, when loaded.
//
// Everything in the header is validated before any tensor is touched: header
// length against the file size and the 100 MB limit, strict JSON, known dtype,
// rank <= 8, non-negative dims whose product does not overflow, byte length ==
// numel * dtype size, and ranges that tile the data buffer exactly (no
// overlap, no gap, no trailing bytes), as the reference implementation
// requires. Every failure is Error(ErrorCode::Weights).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace fovea::io {

enum class SafetensorsDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E4M3, F8_E5M2 };

// The header's spelling ("F32", "BF16", ...).
const char * safetensors_dtype_name(SafetensorsDType dtype);
size_t safetensors_dtype_size(SafetensorsDType dtype);

constexpr uint64_t kSafetensorsMaxHeaderBytes = 100000000;
constexpr size_t kSafetensorsMaxRank = 8;

struct SafetensorsEntry {
    std::string name;
    SafetensorsDType dtype = SafetensorsDType::F32;
    Shape shape;
    // Byte range [begin, end) inside the data buffer.
    uint64_t begin = 0;
    uint64_t end = 0;
};

class SafetensorsFile {
  public:
    enum class Mode {
        MapOrRead,  // mmap the file; read it into memory if mapping fails
        Read,       // always read it into memory
    };

    // The mapping (or buffer) lives as long as any tensor loaded from it.
    // Mapped pages are private copy-on-write, so writing into a loaded tensor
    // never changes the file. A file truncated by someone else while mapped
    // raises SIGBUS on access, as with any mapping.
    static SafetensorsFile open(const std::string & path, Mode mode = Mode::MapOrRead);
    // A whole file already in memory; the storage keeps the bytes alive.
    static SafetensorsFile parse(std::shared_ptr<Storage> bytes);

    bool mapped() const { return mapped_; }
    // Ordered by offset in the file.
    const std::vector<SafetensorsEntry> & tensors() const { return tensors_; }
    const std::map<std::string, std::string> & metadata() const { return metadata_; }
    // nullptr when absent.
    const SafetensorsEntry * find(const std::string & name) const;

    // F32: a view of the file's bytes (a copy only if they are misaligned).
    // F16, BF16, F64: a new float32 tensor. U8, I32, I64: views with that
    // dtype. Other dtypes: Error(Weights).
    Tensor load(const std::string & name) const;
    // `entry` must be one of this file's tensors().
    Tensor load(const SafetensorsEntry & entry) const;

  private:
    SafetensorsFile() = default;

    std::shared_ptr<Storage> bytes_;
    uint64_t data_offset_ = 0;
    bool mapped_ = false;
    std::vector<SafetensorsEntry> tensors_;
    std::unordered_map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

// Bit-exact conversions to float32 (exposed for tests).
float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);

}  // namespace fovea::io
