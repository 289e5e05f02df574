// Tests of native/models: the weights API (ModelWeights, Config, the JSON
// DOM under it), DeepMask and SharpMask against the PyTorch reference's
// golden outputs (test/fixtures/golden), the parameter counts of the released
// configs, and the rejection of bad weight files.
//
// Golden comparison, per output tensor: max|ours - golden| <= 1e-4 ·
// max(1, max|golden|) (test/fixtures/golden/README.md).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "io/json.h"
#include "io/safetensors.h"
#include "models/deepmask.h"
#include "models/model_weights.h"
#include "models/sharpmask.h"
#include "test/fixtures.h"
#include "test/harness.h"

using namespace fovea;
using namespace fovea::models;

namespace {

constexpr double kRelTol = 1e-4;

// Compares one output with its golden tensor (same element count; ours is
// viewed in the golden's shape). Prints the error.
void compare(const std::string & what, const Tensor & ours, const Tensor & golden) {
    if (ours.numel() != golden.numel()) {
        throw test::Failure(what + ": " + shape_str(ours.shape()) + " vs golden " + shape_str(golden.shape()));
    }
    const Tensor a = ours.reshape(golden.shape());
    double peak = 0;
    for (int64_t i = 0; i < golden.numel(); i++) peak = std::max(peak, double(std::fabs(golden.f32()[i])));
    const double err = test::max_abs_diff(a, golden);
    const double tol = kRelTol * std::max(1.0, peak);
    std::printf("     %-34s %-16s max|diff| %.3e  (%.2e of max(1,max|golden|) = %.3g)\n", what.c_str(),
                shape_str(golden.shape()).c_str(), err, err / std::max(1.0, peak), std::max(1.0, peak));
    if (!(err <= tol)) {
        throw test::Failure(what + ": max|diff| " + std::to_string(err) + " over the tolerance " + std::to_string(tol));
    }
}

ModelWeights open_golden(const std::string & file) { return ModelWeights::open(test::golden_path(file)); }

std::vector<GridCell> read_cells(const io::SafetensorsFile & io) {
    const Tensor loc = io.load("input.locations");
    EXPECT_TRUE(loc.dtype() == DType::I64 && loc.ndim() == 2 && loc.dim(1) == 3);
    std::vector<GridCell> cells;
    for (int64_t k = 0; k < loc.dim(0); k++) {
        const int64_t * p = loc.data<int64_t>() + 3 * k;
        EXPECT_EQ(p[0], int64_t(0));  // one image
        cells.push_back({p[1], p[2]});
    }
    return cells;
}

// Runs one DeepMask golden: patch mode and whole-image mode.
void run_deepmask_golden(const std::string & name) {
    const ModelWeights w = open_golden(name + ".safetensors");
    const io::SafetensorsFile io = io::SafetensorsFile::open(test::golden_path(name + "-io.safetensors"));
    const DeepMask dm = DeepMask::load(w);

    const DeepMaskPatchOutput p = dm.forward_patch(io.load("input.patch"));
    compare("patch.mask_logits", p.mask_logits, io.load("output.patch.mask_logits"));
    compare("patch.score_logits", p.score_logits, io.load("output.patch.score_logits"));
    compare("patch.embedding", p.embedding, io.load("output.patch.embedding"));

    const Tensor image = io.load("input.image");
    const DeepMaskDense d = dm.dense(image);
    const auto grid = dm.grid_size(image.dim(2), image.dim(3));
    EXPECT_EQ(d.score_logits.dim(0), grid.first);
    EXPECT_EQ(d.score_logits.dim(1), grid.second);
    compare("image.score_logits", d.score_logits, io.load("output.image.score_logits"));
    compare("image.embedding", d.embedding, io.load("output.image.embedding"));
    compare("image.masks", dm.masks_at(d, read_cells(io)), io.load("output.image.masks"));
}

void run_sharpmask_golden(const std::string & name) {
    const ModelWeights w = open_golden(name + ".safetensors");
    const io::SafetensorsFile io = io::SafetensorsFile::open(test::golden_path(name + "-io.safetensors"));
    const SharpMask sm = SharpMask::load(w);

    const Tensor patch = io.load("input.patch");
    const SharpMaskPatchOutput p = sm.forward_patch(patch);
    compare("patch.mask_logits", p.mask_logits, io.load("output.patch.mask_logits"));
    compare("patch.dm_mask_logits", p.dm_mask_logits, io.load("output.patch.dm_mask_logits"));
    compare("patch.score_logits", p.score_logits, io.load("output.patch.score_logits"));
    compare("patch.embedding", p.embedding, io.load("output.patch.embedding"));

    const SharpMaskDense d = sm.dense(io.load("input.image"));
    const std::vector<GridCell> cells = read_cells(io);
    compare("image.score_logits", d.deepmask.score_logits, io.load("output.image.score_logits"));
    compare("image.embedding", d.deepmask.embedding, io.load("output.image.embedding"));
    compare("image.masks", sm.masks_at(d, cells), io.load("output.image.masks"));
    compare("image.dm_masks", sm.deepmask().masks_at(d.deepmask, cells), io.load("output.image.dm_masks"));
    for (int i = 1; i <= 3; i++) {
        const std::string key = "image.h" + std::to_string(i) + "_map";
        compare(key, d.h_maps[size_t(i - 1)], io.load("output." + key));
    }

    // The SharpMask file is self-contained and also runs as its DeepMask.
    const DeepMask dm = DeepMask::load(w);
    const DeepMaskPatchOutput q = dm.forward_patch(patch);
    compare("as DeepMask: patch.mask_logits", q.mask_logits, io.load("output.patch.dm_mask_logits"));
}

// ---------------------------------------------------------------------------
// writing small weight files

std::string json_escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

struct NamedTensor {
    std::string name;
    Tensor tensor;  // float32, or int64 (written as I64)
};

// A safetensors file: header (config in __metadata__ unless null) padded to
// 8 bytes, data in the given order.
void write_safetensors(const std::string & path, const std::vector<NamedTensor> & tensors, const char * config) {
    std::string header = "{";
    if (config) header += "\"__metadata__\":{\"fovea.config\":\"" + json_escape(config) + "\"}";
    std::string data;
    for (const NamedTensor & t : tensors) {
        if (header.size() > 1) header += ",";
        const char * dtype = t.tensor.dtype() == DType::I64 ? "I64" : "F32";
        header += "\"" + t.name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[";
        for (int d = 0; d < t.tensor.ndim(); d++) header += (d ? "," : "") + std::to_string(t.tensor.dim(d));
        const size_t begin = data.size();
        data.append(static_cast<const char *>(t.tensor.raw()), t.tensor.nbytes());
        header += "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
    }
    header += "}";
    while (header.size() % 8) header += ' ';
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char *>(&n), 8);
    out << header << data;
    if (!out) throw test::Failure("cannot write " + path);
}

// A temporary file removed at the end of the scope.
struct TempFile {
    std::string path;
    TempFile() {
        const char * dir = std::getenv("TMPDIR");
        std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/fovea-test-XXXXXX";
        const int fd = mkstemp(&tmpl[0]);
        if (fd < 0) throw test::Failure("mkstemp failed");
        ::close(fd);
        path = tmpl;
    }
    ~TempFile() { std::remove(path.c_str()); }
};

// Every tensor of a golden weight file and its config text.
struct Contents {
    std::vector<NamedTensor> tensors;
    std::string config;
};

Contents read_contents(const std::string & file) {
    const io::SafetensorsFile f = io::SafetensorsFile::open(test::golden_path(file));
    Contents c;
    for (const auto & e : f.tensors()) c.tensors.push_back({e.name, f.load(e)});
    c.config = f.metadata().at("fovea.config");
    return c;
}

std::string replaced(std::string s, const std::string & from, const std::string & to) {
    const size_t at = s.find(from);
    if (at == std::string::npos) throw test::Failure("no \"" + from + "\" in the config");
    return s.replace(at, from.size(), to);
}

// `fn` must throw Error(Weights) whose message contains every needle.
void expect_weights_error(const std::function<void()> & fn, const std::vector<std::string> & needles) {
    try {
        fn();
    } catch (const Error & e) {
        if (e.code() != ErrorCode::Weights) {
            throw test::Failure(std::string("expected ERR_WEIGHTS, got ") + error_code_name(e.code()) + ": " +
                                e.what());
        }
        for (const std::string & n : needles) {
            if (std::strstr(e.what(), n.c_str()) == nullptr) {
                throw test::Failure(std::string("message \"") + e.what() + "\" lacks \"" + n + "\"");
            }
        }
        return;
    }
    throw test::Failure("no error (expected one mentioning \"" + needles.front() + "\")");
}

int64_t count(const std::vector<WeightSpec> & specs, const std::function<bool(const std::string &)> & pick) {
    int64_t n = 0;
    for (const WeightSpec & s : specs) {
        if (pick(s.name)) n += shape_numel(s.shape);
    }
    return n;
}

bool all(const std::string &) { return true; }
bool starts(const std::string & s, const char * prefix) { return s.compare(0, std::strlen(prefix), prefix) == 0; }
bool contains(const std::string & s, const char * part) { return s.find(part) != std::string::npos; }

// The released configs (tools/reference deepmask_config / sharpmask_config,
// width_div 1), as the converter writes them.
const char * const kReleasedResNet50 =
    R"({"architecture":"deepmask","format_version":1,"trunk":"resnet50","trunk_layers":3,"base_width":64,)"
    R"("block_layout":"post_add","conv_bias":true,"pad_mode":"symmetric","wSz":192,"iSz":160,"fSz":10,)"
    R"("oSz":56,"trunk_crop":1,"stride":16,"proj_channels":128,"embed_dim":512,"head":"C","score_hidden":1024})";
const char * const kSharpMaskKeys =
    R"("km":32,"ks":32,"nhu2":[64,64,64,32],"skip_taps":["layer3","layer2","layer1","conv1"],)"
    R"("skip_crops":[0,2,4,8],"skpos":[8,6,5,3],"gSz":160)";
const char * const kReleasedVggA =
    R"({"architecture":"deepmask","format_version":1,"trunk":"vgg_a","stage_widths":[64,128,256,512,512],)"
    R"("pool_ceil":false,"pad_mode":"zero","wSz":224,"iSz":224,"fSz":14,"trunk_crop":0,"stride":16,)"
    R"("mask_conv":512,"embed_dim":512,"head":"paper","oSz":56,"score_fc1":512,"score_hidden":1024})";

Config released(const std::string & json) { return Config::parse(json, "released config"); }

std::string sharpmask_json(std::string deepmask_json) {
    deepmask_json = replaced(deepmask_json, "\"architecture\":\"deepmask\"", "\"architecture\":\"sharpmask\"");
    deepmask_json.back() = ',';
    return deepmask_json + kSharpMaskKeys + "}";
}

}  // namespace

// ---------------------------------------------------------------------------
// JSON DOM and Config

FOVEA_TEST(deepmask_json_dom_full_grammar) {
    using io::JsonValue;
    const JsonValue v = JsonValue::parse(
        R"( {"i": -42, "f": 0.5, "e": -1.25E+2, "z": 0e0, "big": 123456789012345678901, "t": true, "n": null,)"
        R"( "a": [1, "x", false, {"k": []}], "s": "\u00e9\ud83d\ude00"} )",
        "test");
    EXPECT_TRUE(v.kind() == JsonValue::Kind::Object);
    EXPECT_EQ(v.keys().size(), size_t(9));
    EXPECT_EQ(v.keys()[0], std::string("i"));  // document order
    EXPECT_TRUE(v.find("i")->is_integer());
    EXPECT_EQ(v.find("i")->as_integer(), int64_t(-42));
    EXPECT_EQ(v.find("f")->as_number(), 0.5);
    EXPECT_EQ(v.find("e")->as_number(), -125.0);
    EXPECT_TRUE(!v.find("e")->is_integer());
    EXPECT_EQ(v.find("z")->as_number(), 0.0);
    EXPECT_TRUE(!v.find("big")->is_integer());  // past int64: a double
    EXPECT_NEAR(v.find("big")->as_number(), 1.2345678901234568e20, 1e5);
    EXPECT_TRUE(v.find("t")->as_bool());
    EXPECT_TRUE(v.find("n")->is_null());
    EXPECT_EQ(v.find("a")->items().size(), size_t(4));
    EXPECT_EQ(v.find("a")->items()[3].find("k")->items().size(), size_t(0));
    EXPECT_EQ(v.find("s")->as_string(), std::string("\xc3\xa9\xf0\x9f\x98\x80"));
    EXPECT_TRUE(v.find("missing") == nullptr);
    EXPECT_THROWS_CODE(v.find("f")->as_string(), ErrorCode::Internal);
    EXPECT_EQ(JsonValue::parse("0.1", "t").as_number(), 0.1);
    EXPECT_EQ(JsonValue::parse("1e-300", "t").as_number(), 1e-300);
    EXPECT_EQ(JsonValue::parse("-9223372036854775808", "t").as_integer(), INT64_MIN);

    const std::pair<const char *, const char *> bad[] = {
        {"01", "leading zero"},      {"1.", "no digit after '.'"}, {".5", "unexpected character"},
        {"1e", "no digit in the exponent"}, {"-", "invalid number"}, {"+1", "unexpected character"},
        {"NaN", "unexpected character"}, {"1e999", "number out of range"}, {"tru", "unexpected character"},
        {"nul", "unexpected character"}, {"[1,]", "trailing comma"}, {"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
        {"[1] 2", "unexpected data after the JSON value"}, {"", "unexpected end"}, {"{\"a\" 1}", "expected ':'"},
        {"\"\\x\"", "invalid escape"}, {"[true false]", "expected ','"},
    };
    for (const auto & b : bad) {
        expect_weights_error([&] { JsonValue::parse(b.first, "doc", 100); },
                             {"doc: invalid JSON", b.second, "at byte 10"});
    }
    // Depth and size limits.
    expect_weights_error([] { JsonValue::parse(std::string(40, '[') + std::string(40, ']'), "doc"); },
                         {"nesting deeper than 32"});
    io::JsonLimits small;
    small.max_values = 5;
    expect_weights_error([&] { JsonValue::parse("[1,2,3,4,5]", "doc", 0, small); }, {"more than 5 values"});
    EXPECT_EQ(JsonValue::parse("[1,2,3,4]", "doc", 0, small).items().size(), size_t(4));
}

FOVEA_TEST(deepmask_json_header_subset_unchanged) {
    // The safetensors header grammar stays integers-only.
    io::JsonReader r("[1.5]", "hdr");
    r.begin_array();
    EXPECT_TRUE(r.next_element());
    expect_weights_error([&] { r.read_integer(); }, {"only integers"});
    io::JsonReader t("true", "hdr");
    expect_weights_error([&] { t.peek(); }, {"only objects, arrays, strings and integers"});
    // The full grammar through the pull API.
    io::JsonReader f(R"([2.5, 7, null, false])", "doc", 0, 32, io::JsonGrammar::Full);
    f.begin_array();
    EXPECT_TRUE(f.next_element());
    EXPECT_TRUE(f.peek() == io::JsonReader::Type::Number);
    EXPECT_EQ(f.read_number().value, 2.5);
    EXPECT_TRUE(f.next_element());
    EXPECT_TRUE(f.peek() == io::JsonReader::Type::Integer);
    EXPECT_EQ(f.read_integer(), int64_t(7));
    EXPECT_TRUE(f.next_element());
    f.skip_value();
    EXPECT_TRUE(f.next_element());
    EXPECT_TRUE(!f.read_bool());
    EXPECT_TRUE(!f.next_element());
    f.finish();
}

FOVEA_TEST(deepmask_config_accessors) {
    const Config c = Config::parse(
        R"({"n": 2.5, "i": 7, "fi": 3.0, "b": false, "s": "x", "ns": [1, 2.5], "is": [1, 2], "ss": ["a", "b"],)"
        R"( "o": {"k": 1, "deep": {"q": "r"}}, "os": [{"a": 1}, {"a": 2}], "nul": null})",
        "m.safetensors: fovea.config");
    EXPECT_TRUE(c.has("n") && !c.has("nope") && !c.has("nul"));
    EXPECT_EQ(c.number("n"), 2.5);
    EXPECT_EQ(c.number("i"), 7.0);
    EXPECT_EQ(c.integer("i"), int64_t(7));
    EXPECT_EQ(c.integer("fi"), int64_t(3));
    EXPECT_TRUE(!c.boolean("b"));
    EXPECT_EQ(c.string("s"), std::string("x"));
    EXPECT_TRUE(c.numbers("ns") == std::vector<double>({1.0, 2.5}));
    EXPECT_TRUE(c.integers("is") == std::vector<int64_t>({1, 2}));
    EXPECT_TRUE(c.strings("ss") == std::vector<std::string>({"a", "b"}));
    EXPECT_EQ(c.object("o").integer("k"), int64_t(1));
    EXPECT_EQ(c.object("o").object("deep").string("q"), std::string("r"));
    EXPECT_EQ(c.objects("os").size(), size_t(2));
    EXPECT_EQ(c.objects("os")[1].integer("a"), int64_t(2));
    EXPECT_TRUE(!Config().has("x"));

    const std::string where = "m.safetensors: fovea.config: key ";
    expect_weights_error([&] { c.number("nope"); }, {where + "\"nope\": missing"});
    expect_weights_error([&] { c.integer("nul"); }, {where + "\"nul\": missing"});
    expect_weights_error([&] { c.integer("n"); }, {"\"n\": expected an integer, found 2.5"});
    expect_weights_error([&] { c.integer("s"); }, {"\"s\": expected an integer, found a string"});
    expect_weights_error([&] { c.string("i"); }, {"\"i\": expected a string, found a number"});
    expect_weights_error([&] { c.boolean("s"); }, {"expected a boolean, found a string"});
    expect_weights_error([&] { c.integers("ns"); }, {"\"ns\": element 1 is not an integer"});
    expect_weights_error([&] { c.strings("is"); }, {"element 0 is a number, not a string"});
    expect_weights_error([&] { c.numbers("o"); }, {"expected an array, found an object"});
    expect_weights_error([&] { c.object("o").object("deep").integer("q"); },
                         {where + "\"o.deep.q\": expected an integer"});
    expect_weights_error([&] { c.objects("os")[1].string("a"); }, {"\"os[1].a\""});
    expect_weights_error([&] { c.objects("ss"); }, {"element 0 is a string, not an object"});
    expect_weights_error([&] { c.fail("k", "bad value"); }, {where + "\"k\": bad value"});
    expect_weights_error([] { Config::parse("[1]", "cfg"); }, {"cfg: the config is an array, not a JSON object"});
}

// ---------------------------------------------------------------------------
// goldens

FOVEA_TEST(deepmask_golden_resnet50_d16) { run_deepmask_golden("deepmask-resnet50-d16"); }
FOVEA_TEST(deepmask_golden_resnet18_d16) { run_deepmask_golden("deepmask-resnet18-d16"); }
FOVEA_TEST(deepmask_sharpmask_golden_resnet50_d16) { run_sharpmask_golden("sharpmask-resnet50-d16"); }
FOVEA_TEST(deepmask_sharpmask_golden_resnet18_d16) { run_sharpmask_golden("sharpmask-resnet18-d16"); }

// VGG-A has no committed golden (make_golden.py --only deepmask-vgga-d16
// --out DIR writes one; run with FOVEA_FIXTURES=DIR holding it).
FOVEA_TEST(deepmask_golden_vgga_d16) {
    if (!std::filesystem::exists(test::golden_path("deepmask-vgga-d16.safetensors"))) {
        std::printf("     skipped: deepmask-vgga-d16 is not in %s (not committed)\n", test::golden_dir().c_str());
        return;
    }
    run_deepmask_golden("deepmask-vgga-d16");
}

// ---------------------------------------------------------------------------
// parameter counts (spec deepmask-sharpmask.md 1.1, 1.2, 2, 3; the reference's
// test_reference.py and export.py --describe)

FOVEA_TEST(deepmask_parameter_counts_of_released_configs) {
    const DeepMaskConfig r50 = DeepMaskConfig::from(released(kReleasedResNet50));
    const std::vector<WeightSpec> dm = deepmask_tensor_specs(r50);
    auto trunk_conv = [](const std::string & n) {
        return starts(n, "trunk.") && !starts(n, "trunk.proj.") && !starts(n, "trunk.embed.") &&
               !contains(n, "post_affine");
    };
    const int64_t resnet_weights =
        count(dm, [&](const std::string & n) { return trunk_conv(n) && contains(n, ".weight"); });
    const int64_t resnet_all = count(dm, trunk_conv);
    const int64_t extra =
        count(dm, [](const std::string & n) { return starts(n, "trunk.proj.") || starts(n, "trunk.embed."); });
    const int64_t mask = count(dm, [](const std::string & n) { return starts(n, "mask."); });
    const int64_t score = count(dm, [](const std::string & n) { return starts(n, "score."); });
    const int64_t fixed = count(dm, [](const std::string & n) { return contains(n, "post_affine"); });
    std::printf("     resnet50 DeepMask: ResNet part %lld (bias-free) / %lld (with conv biases), extra %lld,"
                " trunk %lld, mask %lld, score %lld, post_affine constants %lld, file total %lld\n",
                (long long)resnet_weights, (long long)resnet_all, (long long)extra, (long long)(resnet_weights + extra),
                (long long)mask, (long long)score, (long long)fixed, (long long)count(dm, all));
    EXPECT_EQ(resnet_weights, int64_t(8512704));     // spec: 8.51M
    EXPECT_EQ(resnet_all, int64_t(8528000));         // spec: 8.53M with conv biases (the released file)
    EXPECT_EQ(extra, int64_t(6685312));              // spec: 6.69M
    EXPECT_EQ(resnet_weights + extra, int64_t(15198016));  // spec: trunk 15.20M
    EXPECT_EQ(mask, int64_t(1608768));               // spec: 1.61M
    EXPECT_EQ(score, int64_t(526337));               // spec: 0.53M
    EXPECT_EQ(resnet_weights + extra + mask + score, int64_t(17333121));  // spec: DeepMask 17.33M
    EXPECT_EQ(resnet_all + extra + mask + score, int64_t(17348417));      // reference: released, conv biases
    EXPECT_EQ(fixed, int64_t(14336));  // 10 identity-shortcut blocks: not parameters, fixed affines
    EXPECT_EQ(dm.size(), size_t(116));  // export.py --describe deepmask-resnet50
    EXPECT_EQ(resnet_all + extra + mask + score + fixed, int64_t(17362753));

    const SharpMaskConfig s50 = SharpMaskConfig::from(released(sharpmask_json(kReleasedResNet50)));
    const std::vector<WeightSpec> sm = sharpmask_tensor_specs(s50);
    const int64_t refine = count(sm, [](const std::string & n) { return starts(n, "refine."); });
    const int64_t v0 = count(sm, [](const std::string & n) { return starts(n, "refine.v0."); });
    const int64_t final_conv = count(sm, [](const std::string & n) { return starts(n, "refine.final."); });
    std::printf("     resnet50 SharpMask: refinement %lld (v0 %lld, final %lld), file total %lld\n", (long long)refine,
                (long long)v0, (long long)final_conv, (long long)count(sm, all));
    EXPECT_EQ(refine, int64_t(2750535));               // spec: 2.75M
    EXPECT_EQ(v0, int64_t(1641600));                   // spec: 1.64M in refs[0]
    EXPECT_EQ(refine - final_conv, int64_t(2750516));  // what SharpMask.lua prints
    EXPECT_EQ(sm.size(), size_t(160));
    EXPECT_EQ(count(sm, all), int64_t(20113288));

    // The lighter trunk (export.py --describe deepmask-resnet18 / sharpmask-resnet18).
    const std::string r18 =
        replaced(replaced(kReleasedResNet50, "\"resnet50\"", "\"resnet18\""), "\"post_add\"", "\"standard\"");
    const std::vector<WeightSpec> dm18 = deepmask_tensor_specs(DeepMaskConfig::from(released(r18)));
    EXPECT_EQ(dm18.size(), size_t(40));
    EXPECT_EQ(count(dm18, all), int64_t(11502657));
    const std::vector<WeightSpec> sm18 = sharpmask_tensor_specs(SharpMaskConfig::from(released(sharpmask_json(r18))));
    EXPECT_EQ(sm18.size(), size_t(84));
    EXPECT_EQ(count(sm18, all), int64_t(13479048));

    // VGG-A (spec 1.2, the paper's "about 75M").
    const std::vector<WeightSpec> vgg = deepmask_tensor_specs(DeepMaskConfig::from(released(kReleasedVggA)));
    const int64_t vgg_total = count(vgg, all);
    std::printf("     vgg_a DeepMask: %lld\n", (long long)vgg_total);
    EXPECT_EQ(vgg.size(), size_t(28));
    EXPECT_EQ(vgg_total, int64_t(75844545));
}

// ---------------------------------------------------------------------------
// bad weights

FOVEA_TEST(deepmask_bad_weights_are_rejected) {
    const Contents good = read_contents("deepmask-resnet18-d16.safetensors");
    TempFile tmp;
    auto write = [&](const std::vector<NamedTensor> & t, const std::string & config) {
        write_safetensors(tmp.path, t, config.c_str());
    };
    auto load = [&] { DeepMask::load(ModelWeights::open(tmp.path)); };

    // The file as is loads.
    write(good.tensors, good.config);
    load();

    // A missing tensor.
    std::vector<NamedTensor> t = good.tensors;
    t.erase(t.begin() + 3);
    write(t, good.config);
    expect_weights_error(load, {tmp.path, "missing tensor \"" + good.tensors[3].name + "\""});

    // A wrong shape: score.fc2.weight [1,64] written as [64,1].
    t = good.tensors;
    for (NamedTensor & n : t) {
        if (n.name == "score.fc2.weight") n.tensor = n.tensor.reshape({n.tensor.dim(1), n.tensor.dim(0)});
    }
    write(t, good.config);
    expect_weights_error(load, {"tensor \"score.fc2.weight\" has shape [64, 1], the config gives [1, 64]"});

    // A tensor no layer reads (naming drift).
    t = good.tensors;
    t.push_back({"trunk.layer4.0.conv1.weight", Tensor::zeros({2, 2})});
    write(t, good.config);
    expect_weights_error(load, {"1 tensor(s) that the deepmask config does not describe",
                                "\"trunk.layer4.0.conv1.weight\""});

    // A non-float tensor.
    {
        write({{"x", Tensor::zeros({2}, DType::I64)}}, good.config);
        const ModelWeights w = ModelWeights::open(tmp.path);
        expect_weights_error([&] { w.get("x"); }, {"tensor \"x\" is I64"});
        expect_weights_error([&] { w.get("y"); }, {"missing tensor \"y\""});
    }

    // check_all_used names what no layer took.
    {
        write({{"a", Tensor::zeros({2})}, {"b", Tensor::zeros({3})}}, good.config);
        const ModelWeights w = ModelWeights::open(tmp.path);
        EXPECT_EQ(w.parameter_count(), int64_t(5));
        EXPECT_TRUE(w.names() == std::vector<std::string>({"a", "b"}));
        w.get("a", {2});
        expect_weights_error([&] { w.get("b", {4}); }, {"tensor \"b\" has shape [3], the model expects [4]"});
        expect_weights_error([&] { w.check_all_used(); }, {"1 tensor(s) not used", "\"b\""});
        w.get("b");
        w.check_all_used();
    }

    // Unreadable files.
    expect_weights_error([] { ModelWeights::open("/nonexistent/m.safetensors"); },
                         {"cannot open /nonexistent/m.safetensors"});
    {
        std::ofstream(tmp.path, std::ios::binary) << "abc";
    }
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {tmp.path, "too short"});

    // Config problems.
    const std::vector<NamedTensor> one = {{"a", Tensor::zeros({2})}};
    write(one, R"({"architecture":"deepmask_v9","format_version":1})");
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"unknown architecture \"deepmask_v9\""});
    write(one, "{\"architecture\": deepmask}");
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"fovea.config: invalid JSON", "at byte"});
    write(one, "not json");
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"fovea.config: invalid JSON"});
    write_safetensors(tmp.path, one, nullptr);
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"no model config"});
    write(one, R"({"architecture":"deepmask","format_version":2})");
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"format_version 2 is not supported"});
    write(one, R"({"architecture":"deepmask"})");
    expect_weights_error([&] { ModelWeights::open(tmp.path); }, {"key \"format_version\": missing"});
    write(one, R"({"architecture":7,"format_version":1})");
    expect_weights_error([&] { ModelWeights::open(tmp.path); },
                         {"key \"architecture\": expected a string, found a number"});
    write(good.tensors, replaced(good.config, "\"trunk\":\"resnet18\"", "\"trunk\":\"resnet101\""));
    expect_weights_error(load, {"key \"trunk\": unknown trunk \"resnet101\""});
    write(good.tensors, replaced(good.config, "\"trunk\":\"resnet18\"", "\"trunk\":18"));
    expect_weights_error(load, {"key \"trunk\": expected a string, found a number"});
    write(good.tensors, replaced(good.config, "\"fSz\":10", "\"fSz\":11"));
    expect_weights_error(load, {"key \"fSz\": 11 is not the cropped layer3 side of a 192 patch"});
    write(good.tensors, replaced(good.config, "\"oSz\":56", "\"oSz\":-56"));
    expect_weights_error(load, {"key \"oSz\": -56 is outside [1, 1024]"});
    write(good.tensors, replaced(good.config, "\"block_layout\":\"standard\"", "\"block_layout\":\"post_add\""));
    expect_weights_error(load, {"key \"block_layout\": \"post_add\" is not a block layout of resnet18"});
    // A whole file whose base width disagrees with the tensors.
    write(good.tensors, replaced(good.config, "\"base_width\":4", "\"base_width\":8"));
    expect_weights_error(load, {"tensor \"trunk.conv1.weight\" has shape [4, 3, 7, 7], the config gives [8, 3, 7, 7]"});

    // Models of another architecture.
    expect_weights_error([] { DeepMask::load(open_golden("multipathnet-resnet18-d16.safetensors")); },
                         {"architecture \"multipathnet\" is not a DeepMask"});
    expect_weights_error([] { SharpMask::load(open_golden("deepmask-resnet18-d16.safetensors")); },
                         {"architecture \"deepmask\" is not a SharpMask"});
    // A SharpMask file with a refinement tensor gone still runs as its DeepMask, not as a SharpMask.
    const Contents sharp = read_contents("sharpmask-resnet18-d16.safetensors");
    t = sharp.tensors;
    t.pop_back();
    write(t, sharp.config);
    DeepMask::load(ModelWeights::open(tmp.path));
    expect_weights_error([&] { SharpMask::load(ModelWeights::open(tmp.path)); },
                         {"missing tensor \"refine.final.bias\""});
    write(sharp.tensors, replaced(sharp.config, "\"skip_crops\":[0,2,4,8]", "\"skip_crops\":[0,2,4,7]"));
    expect_weights_error([&] { SharpMask::load(ModelWeights::open(tmp.path)); },
                         {"key \"skip_crops\": crop 7 of conv1 (side 96) does not give 80"});
}

FOVEA_TEST(deepmask_bad_inputs_are_rejected) {
    const ModelWeights w = open_golden("sharpmask-resnet18-d16.safetensors");
    const SharpMask sm = SharpMask::load(w);
    const DeepMask & dm = sm.deepmask();
    EXPECT_THROWS_CODE(dm.forward_patch(Tensor::zeros({1, 3, 160, 160})), ErrorCode::Input);
    EXPECT_THROWS_CODE(dm.forward_patch(Tensor::zeros({1, 4, 192, 192})), ErrorCode::Input);
    EXPECT_THROWS_CODE(dm.forward_patch(Tensor::zeros({3, 192, 192})), ErrorCode::Input);
    EXPECT_THROWS_CODE(dm.dense(Tensor::zeros({1, 3, 100, 300})), ErrorCode::Input);  // no grid row
    EXPECT_THROWS_CODE(dm.dense(Tensor::zeros({2, 3, 160, 160})), ErrorCode::Input);
    EXPECT_EQ(dm.grid_size(181, 205).first, int64_t(3));
    EXPECT_EQ(dm.grid_size(181, 205).second, int64_t(4));
    EXPECT_EQ(dm.grid_size(100, 300).first, int64_t(0));

    const SharpMaskDense d = sm.dense(Tensor::zeros({1, 3, 160, 176}));  // a 1x2 grid
    EXPECT_EQ(d.deepmask.score_logits.dim(0), int64_t(1));
    EXPECT_EQ(d.deepmask.score_logits.dim(1), int64_t(2));
    EXPECT_THROWS_CODE(sm.masks_at(d, {{1, 0}}), ErrorCode::Input);
    EXPECT_THROWS_CODE(sm.masks_at(d, {{0, -1}}), ErrorCode::Input);
    EXPECT_THROWS_CODE(dm.masks_at(d.deepmask, {{0, 2}}), ErrorCode::Input);
    EXPECT_EQ(sm.masks_at(d, {}).dim(0), int64_t(0));
    EXPECT_EQ(sm.masks_at(d, {{0, 1}, {0, 0}}).dim(0), int64_t(2));
    EXPECT_EQ(dm.masks_at(d.deepmask, {}).dim(1), int64_t(56));
}
