// libFuzzer target: the JSON pull parser (header grammar, walked the way a
// generic reader would) and JsonValue::parse (full grammar).
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_common.h"
#include "io/json.h"

using namespace fovea;

namespace {

// Reads one value of any type through the pull API, recursively (the reader
// bounds the depth, so the recursion is bounded too).
void walk(io::JsonReader & r) {
    switch (r.peek()) {
    case io::JsonReader::Type::Object: {
        r.begin_object();
        std::string key;
        while (r.next_key(key)) walk(r);
        break;
    }
    case io::JsonReader::Type::Array:
        r.begin_array();
        while (r.next_element()) walk(r);
        break;
    case io::JsonReader::Type::String: (void)r.read_string(); break;
    case io::JsonReader::Type::Integer: (void)r.read_integer(); break;
    case io::JsonReader::Type::Number: (void)r.read_number(); break;
    case io::JsonReader::Type::Bool: (void)r.read_bool(); break;
    case io::JsonReader::Type::Null: r.read_null(); break;
    }
}

void walk_dom(const io::JsonValue & v) {
    switch (v.kind()) {
    case io::JsonValue::Kind::Null: break;
    case io::JsonValue::Kind::Bool: (void)v.as_bool(); break;
    case io::JsonValue::Kind::Number:
        (void)v.as_number();
        if (v.is_integer()) (void)v.as_integer();
        break;
    case io::JsonValue::Kind::String: (void)v.as_string(); break;
    case io::JsonValue::Kind::Array:
        for (const io::JsonValue & item : v.items()) walk_dom(item);
        break;
    case io::JsonValue::Kind::Object: {
        const auto & keys = v.keys();
        const auto & items = v.items();
        if (keys.size() != items.size()) std::abort();
        for (size_t i = 0; i < keys.size(); ++i) {
            if (v.find(keys[i]) != &items[i]) std::abort();  // keys are unique
            walk_dom(items[i]);
        }
        break;
    }
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    fuzz::init_env();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::string_view text(reinterpret_cast<const char *>(data), size);
    for (io::JsonGrammar grammar : {io::JsonGrammar::HeaderSubset, io::JsonGrammar::Full}) {
        try {
            io::JsonReader r(text, "fuzz", 0, 32, grammar);
            walk(r);
            r.finish();
        } catch (const Error & e) {
            fuzz::check_error(e);
        }
        try {
            io::JsonReader r(text, "fuzz", 0, 32, grammar);
            r.skip_value();
            r.finish();
        } catch (const Error & e) {
            fuzz::check_error(e);
        }
    }
    try {
        walk_dom(io::JsonValue::parse(text, "fuzz"));
    } catch (const Error & e) {
        fuzz::check_error(e);
    }
    return 0;
}
