// A small strict JSON pull parser. By default it accepts only the subset
// weight-file headers use: objects, arrays, strings (with every JSON escape)
// and integers; anything else (true/false/null, fractions, exponents, invalid
// UTF-8, lone surrogates, trailing commas, nesting deeper than max_depth) is an
// Error(Weights) naming the byte offset. Pull rather than a DOM: the caller
// checks structure as it reads, so a hostile header cannot make it build a
// huge tree first.
//
// JsonGrammar::Full adds the rest of RFC 8259 (numbers with fractions and
// exponents, true, false, null) with the same strictness; JsonValue::parse
// builds a bounded DOM with it for the model config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fovea::io {

enum class JsonGrammar {
    HeaderSubset,  // objects, arrays, strings, integers
    Full,          // all of JSON
};

class JsonReader {
  public:
    // Integer: a number literal without fraction or exponent. Number, Bool and
    // Null are only produced with JsonGrammar::Full.
    enum class Type { Object, Array, String, Integer, Number, Bool, Null };

    // `what` names the document in error messages ("safetensors header");
    // offsets in them are base_offset + the position in `text` (file offsets).
    JsonReader(std::string_view text, std::string what, size_t base_offset = 0, int max_depth = 32,
               JsonGrammar grammar = JsonGrammar::HeaderSubset);

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
    // Full grammar only: any number literal (Integer or Number) as the
    // nearest double (a literal out of the double range fails); an integral
    // literal that fits int64 is also returned exactly.
    struct Number {
        double value = 0.0;
        bool exact_integer = false;
        int64_t integer = 0;
    };
    Number read_number();
    bool read_bool();
    void read_null();
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
    bool next_member(char close);
    void append_utf8(std::string & out, uint32_t cp) const;
    uint32_t read_hex4();
    void copy_utf8_sequence(std::string & out);
    // Length of the number literal at pos_ (strict JSON syntax); sets `integral`
    // when it has neither fraction nor exponent.
    size_t scan_number(bool & integral);
    void expect_word(const char * word);

    std::string_view text_;
    std::string what_;
    size_t base_offset_;
    int max_depth_;
    JsonGrammar grammar_;
    size_t pos_ = 0;
    // One entry per open container: has it produced an element yet?
    std::vector<bool> first_;
};

// Bounds on what JsonValue::parse builds.
struct JsonLimits {
    int max_depth = 32;
    size_t max_values = 100000;  // every value counts, containers included
};

// An immutable JSON document tree (the full grammar). Object keys are unique
// (a duplicate is an error) and kept in document order.
class JsonValue {
  public:
    enum class Kind { Null, Bool, Number, String, Array, Object };

    // Parses a whole document; every failure is Error(Weights) with `what` and
    // the byte offset (base_offset + position in `text`).
    static JsonValue parse(std::string_view text, const std::string & what, size_t base_offset = 0,
                           const JsonLimits & limits = JsonLimits());

    JsonValue() = default;  // null

    Kind kind() const { return kind_; }
    bool is_null() const { return kind_ == Kind::Null; }
    // Integral numbers written without fraction or exponent that fit int64
    // are kept exactly (a double would round past 2^53).
    bool is_integer() const { return kind_ == Kind::Number && integral_; }

    // Accessors of the wrong kind throw Error(Internal): callers check kind()
    // first and report their own, better, message.
    bool as_bool() const;
    double as_number() const;
    int64_t as_integer() const;
    const std::string & as_string() const;
    // Array elements, or object values (in the order of keys()).
    const std::vector<JsonValue> & items() const;
    // Object keys.
    const std::vector<std::string> & keys() const;
    // Object member or nullptr.
    const JsonValue * find(std::string_view key) const;

    // The kind in words ("a number", "an object") for error messages.
    static const char * kind_name(Kind kind);

  private:
    struct Builder;

    Kind kind_ = Kind::Null;
    bool bool_ = false;
    bool integral_ = false;
    double number_ = 0.0;
    int64_t integer_ = 0;
    std::string string_;
    std::vector<std::string> keys_;
    std::vector<JsonValue> items_;
};

}  // namespace fovea::io
