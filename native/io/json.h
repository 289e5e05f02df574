// A small strict pull parser for the JSON subset weight-file headers use:
// objects, arrays, strings (with every JSON escape) and integers. Anything
// else (true/false/null, fractions, exponents, invalid UTF-8, lone surrogates,
// trailing commas, nesting deeper than max_depth) is an Error(Weights) naming
// the byte offset. Pull rather than a DOM: the caller checks structure as it
// reads, so a hostile header cannot make it build a huge tree first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fovea::io {

class JsonReader {
  public:
    enum class Type { Object, Array, String, Integer };

    // `what` names the document in error messages ("safetensors header");
    // offsets in them are base_offset + the position in `text` (file offsets).
    JsonReader(std::string_view text, std::string what, size_t base_offset = 0, int max_depth = 32);

    // Type of the next value (skips whitespace); fails on anything else.
    Type peek();

    // Objects: begin_object(), then while (next_key(key)) { read the value }.
    // next_key() returns false after consuming the closing '}'.
    void begin_object();
    bool next_key(std::string & key);

    // Arrays: begin_array(), then while (next_element()) { read the value }.
    void begin_array();
    bool next_element();

    std::string read_string();
    int64_t read_integer();
    // Consumes one value of any allowed type (for keys the caller ignores).
    void skip_value();
    // Only whitespace may follow the top-level value.
    void finish();

    // Position in `text` (not counting base_offset).
    size_t offset() const { return pos_; }
    [[noreturn]] void fail(const std::string & message) const;
    // `offset` is a position in `text`, as offset() returns.
    [[noreturn]] void fail_at(size_t offset, const std::string & message) const;

  private:
    void skip_ws();
    void expect_char(char c);
    void open(char c);
    void append_utf8(std::string & out, uint32_t cp) const;
    uint32_t read_hex4();
    void copy_utf8_sequence(std::string & out);

    std::string_view text_;
    std::string what_;
    size_t base_offset_;
    int max_depth_;
    size_t pos_ = 0;
    // One entry per open container: has it produced an element yet?
    std::vector<bool> first_;
};

}  // namespace fovea::io
