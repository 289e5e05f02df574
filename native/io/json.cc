#include "io/json.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "core/error.h"

namespace fovea::io {

JsonReader::JsonReader(std::string_view text, std::string what, size_t base_offset, int max_depth,
                       JsonGrammar grammar)
    : text_(text), what_(std::move(what)), base_offset_(base_offset), max_depth_(max_depth), grammar_(grammar) {}

void JsonReader::fail(const std::string & message) const { fail_at(pos_, message); }

void JsonReader::fail_at(size_t offset, const std::string & message) const {
    throw Error(ErrorCode::Weights,
                what_ + ": invalid JSON: " + message + " at byte " + std::to_string(base_offset_ + offset));
}

void JsonReader::skip_ws() {
    while (pos_ < text_.size()) {
        char c = text_[pos_];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        pos_++;
    }
}

void JsonReader::expect_char(char c) {
    skip_ws();
    if (pos_ >= text_.size()) fail(std::string("expected '") + c + "', found the end");
    if (text_[pos_] != c) fail(std::string("expected '") + c + "'");
    pos_++;
}

JsonReader::Type JsonReader::peek() {
    skip_ws();
    if (pos_ >= text_.size()) fail("unexpected end");
    char c = text_[pos_];
    if (c == '{') return Type::Object;
    if (c == '[') return Type::Array;
    if (c == '"') return Type::String;
    if (grammar_ == JsonGrammar::HeaderSubset) {
        if (c == '-' || (c >= '0' && c <= '9')) return Type::Integer;
        fail("unexpected character (only objects, arrays, strings and integers are allowed)");
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        bool integral = false;
        scan_number(integral);
        return integral ? Type::Integer : Type::Number;
    }
    if (c == 't' || c == 'f') return Type::Bool;
    if (c == 'n') return Type::Null;
    fail("unexpected character");
}

size_t JsonReader::scan_number(bool & integral) {
    auto digit = [&](size_t i) { return i < text_.size() && text_[i] >= '0' && text_[i] <= '9'; };
    size_t i = pos_;
    if (i < text_.size() && text_[i] == '-') i++;
    if (!digit(i)) fail_at(pos_, "invalid number");
    if (text_[i] == '0' && digit(i + 1)) fail_at(pos_, "leading zero");
    while (digit(i)) i++;
    integral = true;
    if (i < text_.size() && text_[i] == '.') {
        integral = false;
        if (!digit(++i)) fail_at(i, "invalid number: no digit after '.'");
        while (digit(i)) i++;
    }
    if (i < text_.size() && (text_[i] == 'e' || text_[i] == 'E')) {
        integral = false;
        i++;
        if (i < text_.size() && (text_[i] == '+' || text_[i] == '-')) i++;
        if (!digit(i)) fail_at(i, "invalid number: no digit in the exponent");
        while (digit(i)) i++;
    }
    return i - pos_;
}

JsonReader::Number JsonReader::read_number() {
    if (grammar_ != JsonGrammar::Full) fail("only integers are allowed");
    skip_ws();
    bool integral = false;
    const size_t len = scan_number(integral);
    const char * first = text_.data() + pos_;
    const char * last = first + len;
    Number n;
    // from_chars: locale-independent and correctly rounded.
    auto res = std::from_chars(first, last, n.value);
    if (res.ec != std::errc() || res.ptr != last || !std::isfinite(n.value)) fail("number out of range");
    if (integral) {
        auto ires = std::from_chars(first, last, n.integer);
        n.exact_integer = ires.ec == std::errc() && ires.ptr == last;
    }
    pos_ += len;
    return n;
}

void JsonReader::expect_word(const char * word) {
    const std::string_view w(word);
    if (text_.substr(pos_, w.size()) != w) fail("unexpected character");
    pos_ += w.size();
}

bool JsonReader::read_bool() {
    if (peek() != Type::Bool) fail("expected true or false");
    const bool v = text_[pos_] == 't';
    expect_word(v ? "true" : "false");
    return v;
}

void JsonReader::read_null() {
    if (peek() != Type::Null) fail("expected null");
    expect_word("null");
}

void JsonReader::open(char c) {
    if (static_cast<int>(first_.size()) >= max_depth_) fail("nesting deeper than " + std::to_string(max_depth_));
    expect_char(c);
    first_.push_back(true);
}

void JsonReader::begin_object() { open('{'); }
void JsonReader::begin_array() { open('['); }

// Shared by objects and arrays: consumes the closing bracket (returning
// false) or the comma before every member but the first.
bool JsonReader::next_member(char close) {
    skip_ws();
    if (pos_ < text_.size() && text_[pos_] == close) {
        pos_++;
        first_.pop_back();
        return false;
    }
    if (!first_.back()) {
        expect_char(',');
        skip_ws();
        if (pos_ < text_.size() && text_[pos_] == close) fail("trailing comma");
    }
    first_.back() = false;
    return true;
}

bool JsonReader::next_key(std::string & key) {
    if (!next_member('}')) return false;
    if (peek() != Type::String) fail("expected a string key");
    key = read_string();
    expect_char(':');
    return true;
}

bool JsonReader::next_element() { return next_member(']'); }

uint32_t JsonReader::read_hex4() {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = text_[pos_++];
        uint32_t d;
        if (c >= '0' && c <= '9') d = uint32_t(c - '0');
        else if (c >= 'a' && c <= 'f') d = uint32_t(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = uint32_t(c - 'A' + 10);
        else fail_at(pos_ - 1, "invalid hex digit in \\u escape");
        v = v * 16 + d;
    }
    return v;
}

void JsonReader::append_utf8(std::string & out, uint32_t cp) const {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Copies one multi-byte UTF-8 sequence, rejecting overlong forms, surrogates
// and code points past U+10FFFF (the rules of RFC 3629).
void JsonReader::copy_utf8_sequence(std::string & out) {
    size_t start = pos_;
    auto byte = [&](size_t i) { return static_cast<unsigned char>(text_[i]); };
    unsigned char b0 = byte(pos_);
    size_t len;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        cp = b0 & 0x07;
    } else {
        fail("invalid UTF-8");
    }
    if (text_.size() - pos_ < len) fail("truncated UTF-8 sequence");
    for (size_t i = 1; i < len; i++) {
        unsigned char b = byte(pos_ + i);
        if ((b & 0xC0) != 0x80) fail_at(pos_ + i, "invalid UTF-8");
        cp = (cp << 6) | (b & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        fail("invalid UTF-8");
    }
    out.append(text_.data() + start, len);
    pos_ += len;
}

std::string JsonReader::read_string() {
    skip_ws();
    if (pos_ >= text_.size() || text_[pos_] != '"') fail("expected a string");
    size_t start = pos_;
    pos_++;
    std::string out;
    for (;;) {
        if (pos_ >= text_.size()) fail_at(start, "unterminated string");
        unsigned char c = static_cast<unsigned char>(text_[pos_]);
        if (c == '"') {
            pos_++;
            return out;
        }
        if (c < 0x20) fail("control character in string");
        if (c >= 0x80) {
            copy_utf8_sequence(out);
            continue;
        }
        if (c != '\\') {
            out += char(c);
            pos_++;
            continue;
        }
        if (++pos_ >= text_.size()) fail_at(start, "unterminated string");
        char e = text_[pos_++];
        switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                size_t at = pos_ - 2;
                uint32_t cp = read_hex4();
                if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(at, "lone low surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (text_.size() - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
                        fail_at(at, "lone high surrogate");
                    }
                    pos_ += 2;
                    uint32_t lo = read_hex4();
                    if (lo < 0xDC00 || lo > 0xDFFF) fail_at(at, "lone high surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                append_utf8(out, cp);
                break;
            }
            default: fail_at(pos_ - 2, "invalid escape");
        }
    }
}

int64_t JsonReader::read_integer() {
    skip_ws();
    size_t start = pos_;
    bool negative = pos_ < text_.size() && text_[pos_] == '-';
    if (negative) pos_++;
    if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9') fail_at(start, "expected an integer");
    if (text_[pos_] == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' && text_[pos_ + 1] <= '9') {
        fail_at(start, "leading zero");
    }
    // Accumulate as a negative number so that INT64_MIN fits.
    int64_t v = 0;
    const int64_t min = std::numeric_limits<int64_t>::min();
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        int d = text_[pos_] - '0';
        if (v < (min + d) / 10) fail_at(start, "integer out of range");
        v = v * 10 - d;
        pos_++;
    }
    if (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
        fail_at(start, "only integers are allowed");
    }
    if (negative) return v;
    if (v == min) fail_at(start, "integer out of range");
    return -v;
}

void JsonReader::skip_value() {
    std::string key;
    switch (peek()) {
        case Type::Object:
            begin_object();
            while (next_key(key)) skip_value();
            break;
        case Type::Array:
            begin_array();
            while (next_element()) skip_value();
            break;
        case Type::String: read_string(); break;
        // The full grammar also accepts integers past int64 (as doubles).
        case Type::Integer: grammar_ == JsonGrammar::Full ? void(read_number()) : void(read_integer()); break;
        case Type::Number: read_number(); break;
        case Type::Bool: read_bool(); break;
        case Type::Null: read_null(); break;
    }
}

void JsonReader::finish() {
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected data after the JSON value");
}

// ---------------------------------------------------------------------------
// JsonValue

struct JsonValue::Builder {
    JsonReader reader;
    size_t max_values;
    size_t count = 0;

    JsonValue value() {
        if (++count > max_values) {
            reader.fail("more than " + std::to_string(max_values) + " values");
        }
        JsonValue v;
        switch (reader.peek()) {
            case JsonReader::Type::Object: {
                v.kind_ = Kind::Object;
                reader.begin_object();
                std::unordered_set<std::string> seen;
                std::string key;
                for (size_t at = reader.offset(); reader.next_key(key); at = reader.offset()) {
                    if (!seen.insert(key).second) reader.fail_at(at, "duplicate key \"" + key + "\"");
                    v.keys_.push_back(key);
                    v.items_.push_back(value());
                }
                break;
            }
            case JsonReader::Type::Array:
                v.kind_ = Kind::Array;
                reader.begin_array();
                while (reader.next_element()) v.items_.push_back(value());
                break;
            case JsonReader::Type::String:
                v.kind_ = Kind::String;
                v.string_ = reader.read_string();
                break;
            case JsonReader::Type::Integer:
            case JsonReader::Type::Number: {
                // Integers past int64 are still valid JSON numbers: they stay doubles.
                const JsonReader::Number n = reader.read_number();
                v.kind_ = Kind::Number;
                v.number_ = n.value;
                v.integral_ = n.exact_integer;
                v.integer_ = n.integer;
                break;
            }
            case JsonReader::Type::Bool:
                v.kind_ = Kind::Bool;
                v.bool_ = reader.read_bool();
                break;
            case JsonReader::Type::Null: reader.read_null(); break;
        }
        return v;
    }
};

JsonValue JsonValue::parse(std::string_view text, const std::string & what, size_t base_offset,
                           const JsonLimits & limits) {
    Builder b{JsonReader(text, what, base_offset, limits.max_depth, JsonGrammar::Full), limits.max_values};
    JsonValue v = b.value();
    b.reader.finish();
    return v;
}

namespace {
[[noreturn]] void wrong_kind(JsonValue::Kind have, const char * want) {
    throw Error(ErrorCode::Internal,
                std::string("JSON value is ") + JsonValue::kind_name(have) + ", not " + want);
}
}  // namespace

const char * JsonValue::kind_name(Kind kind) {
    switch (kind) {
        case Kind::Null: return "null";
        case Kind::Bool: return "a boolean";
        case Kind::Number: return "a number";
        case Kind::String: return "a string";
        case Kind::Array: return "an array";
        case Kind::Object: return "an object";
    }
    return "?";
}

bool JsonValue::as_bool() const {
    if (kind_ != Kind::Bool) wrong_kind(kind_, "a boolean");
    return bool_;
}

double JsonValue::as_number() const {
    if (kind_ != Kind::Number) wrong_kind(kind_, "a number");
    return number_;
}

int64_t JsonValue::as_integer() const {
    if (!is_integer()) wrong_kind(kind_, "an integer");
    return integer_;
}

const std::string & JsonValue::as_string() const {
    if (kind_ != Kind::String) wrong_kind(kind_, "a string");
    return string_;
}

const std::vector<JsonValue> & JsonValue::items() const {
    if (kind_ != Kind::Array && kind_ != Kind::Object) wrong_kind(kind_, "an array or an object");
    return items_;
}

const std::vector<std::string> & JsonValue::keys() const {
    if (kind_ != Kind::Object) wrong_kind(kind_, "an object");
    return keys_;
}

const JsonValue * JsonValue::find(std::string_view key) const {
    if (kind_ != Kind::Object) wrong_kind(kind_, "an object");
    for (size_t i = 0; i < keys_.size(); i++) {
        if (keys_[i] == key) return &items_[i];
    }
    return nullptr;
}

}  // namespace fovea::io
