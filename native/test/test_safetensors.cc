// Tests of native/io: the safetensors reader and its JSON parser.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "io/json.h"
#include "io/safetensors.h"
#include "test/harness.h"

using namespace fovea;
using namespace fovea::io;

namespace {

// test/fixtures/ of this checkout: found from this source file's path (CMake
// compiles with absolute paths), else relative to the working directory.
std::string fixture(const std::string & name) {
    std::string here = __FILE__;
    size_t at = here.rfind("native/test/");
    std::string path = (at == std::string::npos ? std::string() : here.substr(0, at)) + "test/fixtures/" + name;
    struct stat st;
    if (stat(path.c_str(), &st) == 0) return path;
    return "test/fixtures/" + name;
}

std::string read_all(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw test::Failure("cannot read " + path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file in memory: 8-byte length, header text, data. No checks, no padding.
std::string make_file(const std::string & header, const std::string & data = std::string()) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    std::memcpy(&out[0], &n, 8);
    return out + header + data;
}

// Parses bytes held by the caller (the storage borrows them).
SafetensorsFile parse_bytes(const std::string & bytes) {
    auto storage = std::make_shared<Storage>(const_cast<char *>(bytes.data()), bytes.size(), Device{}, nullptr, nullptr);
    return SafetensorsFile::parse(storage);
}

// Parses an exact-size heap copy, so that AddressSanitizer sees any read past
// the end (a std::string has a terminator and often spare capacity); then
// loads every tensor. Returns false when the file was rejected with Weights.
bool parse_exact_and_load(const std::string & bytes) {
    std::unique_ptr<char[]> copy(new char[bytes.size()]);
    if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
    try {
        auto storage = std::make_shared<Storage>(copy.get(), bytes.size(), Device{}, nullptr, nullptr);
        SafetensorsFile f = SafetensorsFile::parse(storage);
        for (const auto & e : f.tensors()) {
            bool loadable = e.dtype == SafetensorsDType::F32 || e.dtype == SafetensorsDType::F16 ||
                            e.dtype == SafetensorsDType::BF16 || e.dtype == SafetensorsDType::F64 ||
                            e.dtype == SafetensorsDType::U8 || e.dtype == SafetensorsDType::I32 ||
                            e.dtype == SafetensorsDType::I64;
            if (loadable) f.load(e).clone();
        }
        return true;
    } catch (const Error & e) {
        if (e.code() != ErrorCode::Weights) throw test::Failure(std::string("not a Weights error: ") + e.what());
        return false;
    }
}

std::vector<float> values(const Tensor & t) {
    EXPECT_TRUE(t.dtype() == DType::F32);
    return std::vector<float>(t.f32(), t.f32() + t.numel());
}

bool same_floats(const std::vector<float> & a, const std::vector<float> & b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) {
        if (std::memcmp(&a[i], &b[i], 4) != 0) return false;  // bitwise: -0, inf
    }
    return true;
}

// The call must throw Error(Weights) whose message contains `needle`.
template <typename F> void expect_weights(F && fn, const std::string & needle) {
    try {
        fn();
    } catch (const Error & e) {
        if (e.code() != ErrorCode::Weights) {
            throw test::Failure(std::string("expected Weights, got ") + error_code_name(e.code()) + ": " + e.what());
        }
        if (std::string(e.what()).find(needle) == std::string::npos) {
            throw test::Failure("error \"" + std::string(e.what()) + "\" does not mention \"" + needle + "\"");
        }
        return;
    }
    throw test::Failure("expected an Error(Weights) mentioning \"" + needle + "\", nothing was thrown");
}

const std::string kEntry = R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})";

void check_tiny(const SafetensorsFile & f) {
    // Written by lib/safetensors.ts (test/safetensors.test.ts: tinyFile()).
    EXPECT_EQ(f.metadata().size(), size_t(2));
    EXPECT_EQ(f.metadata().at("format"), std::string("pt"));
    EXPECT_EQ(f.metadata().at("fovea.config"),
              std::string(R"({"architecture":"deepmask","trunk":"resnet-50","iSz":160,"classes":["person","dog"],)"
                          R"("note":"tiny test file, )"
                          "\xC3\xBCn\xC3\xAF\x63\xC3\xB6\x64\xC3\xA9"
                          R"( \"quoted\""})"));
    std::vector<std::string> names;
    for (const auto & e : f.tensors()) names.push_back(e.name);
    EXPECT_TRUE((names == std::vector<std::string>{"conv.weight", "empty", "scalar", "brain", "half"}));

    Tensor w = f.load("conv.weight");
    EXPECT_TRUE((w.shape() == Shape{2, 1, 2, 2}));
    EXPECT_TRUE(same_floats(values(w), {0.5f, -1.25f, 3.0f, 1.0f / 3.0f, -0.0f, 1e-8f, 65504.0f, -2.5f}));
    EXPECT_TRUE(same_floats(values(f.load("half")),
                            {1.0f, 0.333251953125f, -std::numeric_limits<float>::infinity(), std::ldexp(1.0f, -24)}));
    Tensor b = f.load("brain");
    EXPECT_TRUE((b.shape() == Shape{2, 2}));
    EXPECT_TRUE(same_floats(values(b), {1.0f, 0.333984375f, 1.0f, 1.015625f}));
    Tensor s = f.load("scalar");
    EXPECT_EQ(s.ndim(), 0);
    EXPECT_TRUE(same_floats(values(s), {42.0f}));
    Tensor e = f.load("empty");
    EXPECT_TRUE((e.shape() == Shape{0, 3}));
    EXPECT_EQ(e.numel(), int64_t(0));
    EXPECT_TRUE(f.find("missing") == nullptr);
    expect_weights([&] { f.load("missing"); }, "no tensor named \"missing\"");
}

}  // namespace

FOVEA_TEST(safetensors_reads_the_ts_written_fixture_mapped_and_read) {
    std::string path = fixture("safetensors/tiny.safetensors");
    SafetensorsFile mapped = SafetensorsFile::open(path);
    EXPECT_TRUE(mapped.mapped());
    check_tiny(mapped);
    SafetensorsFile read = SafetensorsFile::open(path, SafetensorsFile::Mode::Read);
    EXPECT_TRUE(!read.mapped());
    check_tiny(read);
    check_tiny(parse_bytes(read_all(path)));
}

FOVEA_TEST(safetensors_f32_is_a_view_that_outlives_the_file_object) {
    std::string bytes = read_all(fixture("safetensors/tiny.safetensors"));
    Tensor w;
    {
        SafetensorsFile f = parse_bytes(bytes);
        w = f.load("conv.weight");
    }
    const char * data_start = bytes.data() + bytes.size() - 52;  // the data buffer is the last 52 bytes
    EXPECT_TRUE(static_cast<const char *>(w.raw()) == data_start);

    Tensor mapped;
    {
        SafetensorsFile f = SafetensorsFile::open(fixture("safetensors/tiny.safetensors"));
        mapped = f.load("conv.weight");
    }
    // The mapping is still there; writing goes to a private copy of the page.
    EXPECT_EQ(mapped.f32()[2], 3.0f);
    mapped.f32()[2] = 7.0f;
    EXPECT_EQ(SafetensorsFile::open(fixture("safetensors/tiny.safetensors")).load("conv.weight").f32()[2], 3.0f);
}

FOVEA_TEST(safetensors_reads_the_python_written_fixture) {
    SafetensorsFile f = SafetensorsFile::open(fixture("safetensors/python.safetensors"));
    EXPECT_EQ(f.metadata().at("format"), std::string("np"));
    std::vector<float> expect_f32;
    for (int i = 0; i < 12; i++) expect_f32.push_back(static_cast<float>(i / 7.0));
    EXPECT_TRUE(same_floats(values(f.load("f32")), expect_f32));
    // numpy rounded f16_src to float16: each value must lie within half a
    // float16 ulp of its source, and overflow and NaN must be as IEEE says.
    std::vector<float> src = values(f.load("f16_src"));
    std::vector<float> half = values(f.load("f16"));
    EXPECT_EQ(half.size(), src.size());
    for (size_t i = 0; i < src.size(); i++) {
        float x = src[i], h = half[i];
        if (std::isnan(x)) {
            EXPECT_TRUE(std::isnan(h));
        } else if (std::fabs(x) >= 65520.0f) {
            EXPECT_TRUE(std::isinf(h) && std::signbit(h) == std::signbit(x));
        } else {
            int e;
            std::frexp(std::max(std::fabs(x), std::ldexp(1.0f, -14)), &e);
            EXPECT_TRUE(std::fabs(double(x) - double(h)) <= std::ldexp(1.0, e - 12));
        }
    }
    std::vector<float> bsrc = values(f.load("bf16_src"));
    std::vector<float> bf = values(f.load("bf16"));
    EXPECT_EQ(bf[3], 1.0f);        // 1 + 2^-8: a tie, to even
    EXPECT_EQ(bf[4], 1.015625f);   // 1 + 3 * 2^-8: a tie, to even
    EXPECT_TRUE(std::isinf(bf[6]));  // FLT_MAX rounds past the largest bfloat16
    EXPECT_TRUE(std::isnan(bf[9]));
    EXPECT_TRUE(same_floats(values(f.load("f64")), {0.1f, -1e-3f}));
    Tensor i64 = f.load("i64");
    EXPECT_TRUE(i64.dtype() == DType::I64);
    EXPECT_EQ(i64.data<int64_t>()[0], -(int64_t(1) << 40));
    EXPECT_EQ(i64.data<int64_t>()[2], int64_t(7));
    Tensor u8 = f.load("u8");
    EXPECT_TRUE(u8.dtype() == DType::U8);
    EXPECT_EQ(int(u8.data<uint8_t>()[1]), 255);
    EXPECT_EQ(f.load("scalar").ndim(), 0);
    EXPECT_EQ(f.load("scalar").f32()[0], 2.5f);
    EXPECT_TRUE((f.load("empty").shape() == Shape{0, 4}));
}

FOVEA_TEST(safetensors_half_conversions_are_exact) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = uint16_t(i);
        int exp = (h >> 10) & 0x1F;
        int mant = h & 0x3FF;
        double expected;
        if (exp == 0x1F) {
            expected = mant ? std::nan("") : std::numeric_limits<double>::infinity();
        } else if (exp == 0) {
            expected = std::ldexp(double(mant), -24);
        } else {
            expected = std::ldexp(1.0 + mant / 1024.0, exp - 15);
        }
        if (h & 0x8000) expected = -expected;
        float got = f16_to_f32(h);
        if (std::isnan(expected)) {
            EXPECT_TRUE(std::isnan(got));
        } else if (!(double(got) == expected && std::signbit(got) == std::signbit(expected))) {
            throw test::Failure("f16 bits " + std::to_string(i) + " gave " + std::to_string(got));
        }
        uint32_t bits = i << 16;
        float want;
        std::memcpy(&want, &bits, 4);
        float b = bf16_to_f32(h);
        EXPECT_TRUE(std::memcmp(&b, &want, 4) == 0);
    }
}

FOVEA_TEST(safetensors_misaligned_f32_is_copied) {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";  // 54 bytes: data at 62
    float v[2] = {1.5f, -2.0f};
    std::string bytes = make_file(header, std::string(reinterpret_cast<const char *>(v), 8));
    Tensor t = parse_bytes(bytes).load("a");
    EXPECT_TRUE(reinterpret_cast<uintptr_t>(t.raw()) % 4 == 0);
    EXPECT_TRUE(same_floats(values(t), {1.5f, -2.0f}));
}

FOVEA_TEST(safetensors_rejects_lying_lengths_and_bad_ranges) {
    expect_weights([] { parse_bytes(std::string(7, '\0')); }, "too short");
    std::string huge(16, '\0');
    uint64_t n = ~uint64_t(0);
    std::memcpy(&huge[0], &n, 8);
    expect_weights([&] { parse_bytes(huge); }, "over the 100000000-byte limit");
    n = 100000001;
    std::memcpy(&huge[0], &n, 8);
    expect_weights([&] { parse_bytes(huge); }, "over the 100000000-byte limit");
    n = 9;
    std::memcpy(&huge[0], &n, 8);
    expect_weights([&] { parse_bytes(huge); }, "runs past the end of the 16-byte file");

    auto one = [](const std::string & offsets, size_t data) {
        return make_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":)" + offsets + "}}", std::string(data, 'x'));
    };
    expect_weights([&] { parse_bytes(one("[0,3]", 2)); }, "outside the 2-byte data buffer");
    expect_weights([&] { parse_bytes(one("[2,0]", 2)); }, "outside");
    expect_weights([&] { parse_bytes(one("[0,1]", 2)); }, "needs 2 bytes, data_offsets give 1");
    expect_weights([&] { parse_bytes(one("[0,2,4]", 2)); }, "more than 2 values");
    expect_weights([&] { parse_bytes(one("[0]", 2)); }, "[begin, end]");
    expect_weights([&] { parse_bytes(one("[-1,1]", 2)); }, "negative offset");
    expect_weights([&] { parse_bytes(one("[0,2]", 3)); }, "bytes [2, 3) of the data buffer belong to no tensor");
    // A claim of 2^40 floats against a 2-byte buffer: rejected, nothing allocated.
    expect_weights([&] {
        parse_bytes(make_file(R"({"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})", "xx"));
    }, "outside");

    auto two = [](const std::string & b, size_t data) {
        return make_file("{" + kEntry + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":)" + b + "}}",
                         std::string(data, 'x'));
    };
    expect_weights([&] { parse_bytes(two("[1,3]", 3)); }, "\"b\" overlaps");
    expect_weights([&] { parse_bytes(two("[0,2]", 2)); }, "overlaps");
    expect_weights([&] { parse_bytes(two("[3,5]", 5)); }, "bytes [2, 3) of the data buffer belong to no tensor");
    EXPECT_EQ(parse_bytes(two("[2,4]", 4)).tensors().size(), size_t(2));
    EXPECT_EQ(parse_bytes(make_file("{}")).tensors().size(), size_t(0));
}

FOVEA_TEST(safetensors_rejects_bad_shapes_dtypes_and_json) {
    struct Case {
        const char * header;
        const char * needle;
    };
    const Case cases[] = {
        {R"({"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,2]}})", "invalid JSON: unexpected character"},
        {R"({"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})", "only integers"},
        {R"({"a":{"dtype":"U8","shape":[2e0],"data_offsets":[0,2]}})", "only integers"},
        {R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", "negative dimension -2"},
        {R"({"a":{"dtype":"U8","shape":[02],"data_offsets":[0,2]}})", "leading zero"},
        {R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,2]}})", "rank is over 8"},
        {R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,2]}})", "overflows"},
        {R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,2]}})", "overflows"},
        {R"({"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,2]}})", "integer out of range"},
        {R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,2]}})", "unknown dtype \"F31\""},
        {R"({"a":{"dtype":8,"shape":[2],"data_offsets":[0,2]}})", "\"dtype\" is not a string"},
        {R"({"a":{"shape":[2],"data_offsets":[0,2]}})", "needs \"dtype\", \"shape\" and \"data_offsets\""},
        {R"({"a":{"dtype":"U8","shape":2,"data_offsets":[0,2]}})", "\"shape\" is not an array"},
        {R"({"a":[1]})", "entry is not an object"},
        {R"({"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "duplicate \"dtype\""},
        {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
         "duplicate tensor name \"a\""},
        {R"({"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
         "value of \"k\" is not a string"},
        {R"({"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
         "duplicate __metadata__ key \"k\""},
        {R"({"__metadata__":[],"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "is not an object"},
        {R"([])", "header is not a JSON object"},
        {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":true}})", "unexpected character"},
        {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},})", "trailing comma"},
        {R"({"a":{"dtype":"U8","shape":[2,],"data_offsets":[0,2]}})", "trailing comma"},
        {R"({"a":{"dtype":"U8","shape":[2] "data_offsets":[0,2]}})", "expected ','"},
        {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}} x)", "unexpected data after the JSON value"},
        {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})", "expected ','"},
        {"{\"a\":{\"dtype\":\"U8\x01\",\"shape\":[2],\"data_offsets\":[0,2]}}", "control character"},
        {R"({"a":{"dtype":"U8)", "unterminated string at byte 22"},
        {R"({"a\q":{}})", "invalid escape"},
        {R"({"a\ud800":{}})", "lone high surrogate"},
        {R"({"a\ud800\u0041":{}})", "lone high surrogate"},
        {R"({"a\udc00":{}})", "lone low surrogate"},
        {R"({"a\u12":{}})", "invalid hex digit"},
        {"{\"a\xFF\":{}}", "invalid UTF-8"},
        {"{\"a\xC0\x80\":{}}", "invalid UTF-8"},          // overlong NUL
        {"{\"a\xED\xA0\x80\":{}}", "invalid UTF-8"},      // encoded surrogate
        {"{\"a\xF4\x90\x80\x80\":{}}", "invalid UTF-8"},  // past U+10FFFF
        {"{\"a\xE2\x82", "truncated UTF-8"},
        {"", "unexpected end"},
    };
    for (const Case & c : cases) expect_weights([&] { parse_bytes(make_file(c.header, "xx")); }, c.needle);

    // Unknown keys are skipped (values in the strict subset), as the reference implementation does.
    auto f = parse_bytes(make_file(R"({"a":{"x":[1,{"y":"z"}],"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xx"));
    EXPECT_TRUE((f.tensors()[0].shape == Shape{2}));
    // Escapes and raw UTF-8 decode: "\u00e9", a surrogate pair, "\n", and raw "é".
    auto g = parse_bytes(make_file("{\"\\u00e9\\ud83d\\ude00\\n\xC3\xA9\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", "x"));
    EXPECT_EQ(g.tensors()[0].name, std::string("\xC3\xA9\xF0\x9F\x98\x80\n\xC3\xA9"));
}

FOVEA_TEST(safetensors_rejects_deep_nesting_without_recursing_far) {
    std::string deep = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":)" + std::string(100, '[') +
                       std::string(100, ']') + "}}";
    expect_weights([&] { parse_bytes(make_file(deep, "xx")); }, "nesting deeper than 32");
    expect_weights([&] { parse_bytes(make_file(R"({"a":{"x":)" + std::string(1000000, '['))); }, "nesting deeper than 32");
    // 32 levels are fine.
    std::string ok = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":)" + std::string(30, '[') +
                     std::string(30, ']') + "}}";
    EXPECT_EQ(parse_bytes(make_file(ok, "xx")).tensors().size(), size_t(1));
}

FOVEA_TEST(safetensors_truncation_at_every_byte) {
    std::string bytes = read_all(fixture("safetensors/tiny.safetensors"));
    EXPECT_TRUE(parse_exact_and_load(bytes));
    for (size_t n = 0; n < bytes.size(); n++) {
        if (parse_exact_and_load(bytes.substr(0, n))) throw test::Failure("a copy cut at byte " + std::to_string(n) + " parsed");
    }
}

FOVEA_TEST(safetensors_random_corruption_is_rejected_or_read_in_bounds) {
    std::string original = read_all(fixture("safetensors/tiny.safetensors"));
    uint64_t s = 42;
    auto next = [&s](uint64_t n) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return (s >> 33) % n;
    };
    int accepted = 0;
    for (int i = 0; i < 5000; i++) {
        std::string bytes = original;
        // Mostly the header, where the structure is.
        size_t span = next(4) == 0 ? bytes.size() : size_t(8 + 480);
        for (uint64_t k = 0, m = 1 + next(3); k < m; k++) bytes[next(span)] = char(next(256));
        accepted += parse_exact_and_load(bytes);
    }
    EXPECT_TRUE(accepted > 0);  // changes inside the data (or whitespace) still parse
}

FOVEA_TEST(safetensors_loads_only_what_fovea_handles) {
    std::string bytes = make_file(R"({"a":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}})", "xx");
    SafetensorsFile f = parse_bytes(bytes);
    EXPECT_EQ(std::string(safetensors_dtype_name(f.tensors()[0].dtype)), std::string("I16"));
    EXPECT_EQ(safetensors_dtype_size(f.tensors()[0].dtype), size_t(2));
    expect_weights([&] { f.load("a"); }, "is I16, which fovea cannot load");
}

FOVEA_TEST(safetensors_open_errors) {
    expect_weights([] { SafetensorsFile::open("/nonexistent/fovea.safetensors"); }, "cannot open");
    expect_weights([] { SafetensorsFile::open("/"); }, "not a regular file");
    char path[] = "/tmp/fovea_safetensors_XXXXXX";
    int fd = mkstemp(path);
    EXPECT_TRUE(fd >= 0);
    EXPECT_EQ(write(fd, "abc", 3), ssize_t(3));
    close(fd);
    expect_weights([&] { SafetensorsFile::open(path); }, "too short");
    std::string junk = make_file(R"({"a":1})", "");
    std::FILE * out = std::fopen(path, "wb");
    std::fwrite(junk.data(), 1, junk.size(), out);
    std::fclose(out);
    expect_weights([&] { SafetensorsFile::open(path); }, "entry is not an object");
    expect_weights([&] { SafetensorsFile::open(path, SafetensorsFile::Mode::Read); }, "entry is not an object");
    std::remove(path);
}
