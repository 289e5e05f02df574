// MultiPathNet against the PyTorch reference goldens (test/fixtures/golden,
// tools/reference/multipathnet.py), the released models' sizes from the
// tensor tables (shared/spec/multipathnet.md 1.2, 2.3; the numbers
// tools/reference/test_reference.py asserts), and bad input.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "io/safetensors.h"
#include "models/model_weights.h"
#include "models/multipathnet.h"
#include "test/fixtures.h"
#include "test/harness.h"

using namespace fovea;
using namespace fovea::models;

namespace {

constexpr double kRelTol = 1e-4;

struct Golden {
    io::SafetensorsFile io;
    Tensor image;  // [1, 3, H, W]
    Tensor rois;   // [K, 4]: the io file's [K, 5] without the batch column (all 0)
};

Golden load_golden(const std::string & name) {
    Golden g{io::SafetensorsFile::open(test::golden_path(name + "-io.safetensors")), {}, {}};
    g.image = g.io.load("input.image");
    Tensor rois5 = g.io.load("input.rois");
    EXPECT_EQ(rois5.ndim(), 2);
    EXPECT_EQ(rois5.dim(1), int64_t(5));
    g.rois = Tensor::empty({rois5.dim(0), 4});
    for (int64_t i = 0; i < rois5.dim(0); i++) {
        EXPECT_EQ(rois5.f32()[5 * i], 0.0f);
        std::memcpy(g.rois.f32() + 4 * i, rois5.f32() + 5 * i + 1, 4 * sizeof(float));
    }
    return g;
}

double max_abs(const Tensor & t) {
    double m = 0;
    for (int64_t i = 0; i < t.numel(); i++) m = std::max(m, std::fabs(double(t.f32()[i])));
    return m;
}

// max|ours - golden| <= 1e-4 * max(1, max|golden|) (test/fixtures/golden/README.md).
void expect_close(const std::string & what, const Tensor & ours, const Tensor & golden) {
    EXPECT_TRUE(ours.defined());
    if (ours.shape() != golden.shape()) {
        throw test::Failure(what + ": shape " + shape_str(ours.shape()) + ", golden " + shape_str(golden.shape()));
    }
    double err = test::max_abs_diff(ours, golden);
    double bound = kRelTol * std::max(1.0, max_abs(golden));
    std::printf("     %-34s max|diff| %.3g (bound %.3g, %.2g of it)\n", what.c_str(), err, bound, err / bound);
    if (!(err <= bound)) {
        throw test::Failure(what + ": max|diff| " + std::to_string(err) + " > " + std::to_string(bound));
    }
}

// Probabilities (~0.01) elementwise: |ours - golden| <= 1e-4 * golden + 1e-7.
void expect_close_prob(const std::string & what, const Tensor & ours, const Tensor & golden) {
    EXPECT_TRUE(ours.defined());
    EXPECT_TRUE(ours.shape() == golden.shape());
    double worst = 0, err = 0;
    for (int64_t i = 0; i < golden.numel(); i++) {
        double g = golden.f32()[i], d = std::fabs(double(ours.f32()[i]) - g);
        double ratio = d / (kRelTol * std::fabs(g) + 1e-7);
        if (!(ratio <= worst)) worst = ratio;  // NaN sticks
        err = std::max(err, d);
    }
    std::printf("     %-34s max|diff| %.3g (elementwise, %.2g of the bound)\n", what.c_str(), err, worst);
    if (!(worst <= 1.0)) throw test::Failure(what + ": an element exceeds 1e-4 * golden + 1e-7");
}

void check_outputs(const Golden & g, const MultiPathNetOutput & o, const std::string & tag) {
    expect_close_prob(tag + "cls_prob", o.cls_prob, g.io.load("output.cls_prob"));
    expect_close(tag + "bbox_deltas", o.bbox_deltas, g.io.load("output.bbox_deltas"));
    expect_close(tag + "cls_logits", o.cls_logits, g.io.load("output.cls_logits"));
    expect_close(tag + "bbox_raw", o.bbox_raw, g.io.load("output.bbox_raw"));
}

std::vector<float> values(const Tensor & t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

// --- writing modified weight files ------------------------------------------

std::string json_string(const std::string & s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += char(ch);
        } else if (ch < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else {
            out += char(ch);
        }
    }
    return out + "\"";
}

// A safetensors file of F32 tensors plus one metadata entry.
void write_weights(const std::string & path, const std::vector<std::pair<std::string, Tensor>> & tensors,
                   const std::string & config) {
    std::string header = "{";
    std::string data;
    for (const auto & [name, t] : tensors) {
        header += json_string(name) + ":{\"dtype\":\"F32\",\"shape\":[";
        for (int d = 0; d < t.ndim(); d++) header += (d ? "," : "") + std::to_string(t.dim(d));
        header += "],\"data_offsets\":[" + std::to_string(data.size()) + ",";
        data.append(static_cast<const char *>(t.raw()), t.nbytes());
        header += std::to_string(data.size()) + "]},";
    }
    header += "\"__metadata__\":{\"fovea.config\":" + json_string(config) + "}}";
    header.append((8 - header.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary);
    uint64_t n = header.size();
    char len[8];
    std::memcpy(len, &n, 8);
    out.write(len, 8);
    out.write(header.data(), std::streamsize(header.size()));
    out.write(data.data(), std::streamsize(data.size()));
    if (!out) throw test::Failure("cannot write " + path);
}

// Temporary directory removed on scope exit.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        path = std::filesystem::temp_directory_path() / ("fovea-mpn-" + std::to_string(::getpid()));
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string file(const std::string & name) const { return (path / name).string(); }
};

// --- released configurations ------------------------------------------------

const char * kReleasedResNet =
    R"({"architecture":"multipathnet","variant":"resnet18_integral","num_classes":81,"integral_heads":6,)"
    R"("roi_pool":[14,14],"roi_pool_version":2,"roi_scale":0.0625,"feature_dim":512,"base_width":64,)"
    R"("conv_bias":false,"shortcut_affine":true,"prefold_layer1":true})";

const char * kReleasedVgg =
    R"({"architecture":"multipathnet","variant":"vgg16_multipath","num_classes":81,"integral_heads":6,)"
    R"("roi_pool":[7,7],"roi_pool_version":2,"stage_widths":[64,128,256,512,512],"pool_ceil":true,)"
    R"("tap_scales":{"conv3":0.25,"conv4":0.125,"conv5":0.0625},"conv345_norm":true,"norm_eps":1e-10,)"
    R"("norm_scale":1000.0,"mix_channels":512,"fc_dim":4096,"model_het":true})";

int64_t learned_with_prefix(const MultiPathNetConfig & c, const std::string & prefix) {
    int64_t n = 0;
    for (const TensorSpec & s : multipathnet_tensor_specs(c)) {
        if (s.role == TensorRole::Learned && s.name.compare(0, prefix.size(), prefix) == 0) n += shape_numel(s.shape);
    }
    return n;
}

}  // namespace

FOVEA_TEST(multipathnet_resnet18_matches_golden) {
    Golden g = load_golden("multipathnet-resnet18-d16");
    // From a temporary: the model keeps its tensors (and their file mapping) alive.
    MultiPathNet net(ModelWeights::open(test::golden_path("multipathnet-resnet18-d16.safetensors")), cpu_backend());
    EXPECT_TRUE(net.config().variant == MultiPathNetVariant::ResNet18Integral);
    // One pass, and chunks of 3 (8 ROIs: 3 + 3 + 2) as the chunked forward does.
    for (int64_t chunk : {int64_t(500), int64_t(3)}) {
        MultiPathNetOptions opt;
        opt.roi_chunk = chunk;
        opt.keep_intermediates = true;
        MultiPathNetOutput o = net.forward(g.image, g.rois, opt);
        std::string tag = "chunk " + std::to_string(chunk) + ": ";
        check_outputs(g, o, tag);
        expect_close(tag + "pooled", o.pooled, g.io.load("output.pooled"));
        expect_close(tag + "feature", o.feature, g.io.load("output.feature"));
        EXPECT_TRUE(o.foveal_rois.defined() == false && o.towers.empty());
    }
    // Without intermediates: the same two outputs, nothing else.
    MultiPathNetOutput plain = net.forward(g.image, g.rois);
    expect_close_prob("plain: cls_prob", plain.cls_prob, g.io.load("output.cls_prob"));
    expect_close("plain: bbox_deltas", plain.bbox_deltas, g.io.load("output.bbox_deltas"));
    EXPECT_TRUE(!plain.cls_logits.defined() && !plain.pooled.defined());
}

FOVEA_TEST(multipathnet_vgg16_matches_golden) {
    Golden g = load_golden("multipathnet-vgg16-d16");
    ModelWeights w = ModelWeights::open(test::golden_path("multipathnet-vgg16-d16.safetensors"));
    MultiPathNet net(w, cpu_backend());
    EXPECT_TRUE(net.config().variant == MultiPathNetVariant::Vgg16MultiPath);
    for (int64_t chunk : {int64_t(500), int64_t(3)}) {
        MultiPathNetOptions opt;
        opt.roi_chunk = chunk;
        opt.keep_intermediates = true;
        MultiPathNetOutput o = net.forward(g.image, g.rois, opt);
        std::string tag = "chunk " + std::to_string(chunk) + ": ";
        check_outputs(g, o, tag);
        expect_close(tag + "foveal_rois", o.foveal_rois, g.io.load("output.foveal_rois"));
        EXPECT_EQ(o.towers.size(), net.config().towers.size());
        for (size_t t = 0; t < o.towers.size(); t++) {
            const std::string & name = net.config().towers[t].name;
            expect_close(tag + "tower_" + name, o.towers[t], g.io.load("output.tower_" + name));
        }
    }
}

FOVEA_TEST(multipathnet_golden_files_match_their_tensor_tables) {
    // The table of each d16 config lists exactly the file's tensors, in file order.
    for (const char * name : {"multipathnet-resnet18-d16", "multipathnet-vgg16-d16"}) {
        ModelWeights w = ModelWeights::open(test::golden_path(std::string(name) + ".safetensors"));
        MultiPathNetConfig c = MultiPathNetConfig::parse(w.config());
        std::vector<TensorSpec> specs = multipathnet_tensor_specs(c);
        std::vector<std::string> names = w.names();
        EXPECT_EQ(specs.size(), names.size());
        for (size_t i = 0; i < specs.size(); i++) {
            EXPECT_EQ(specs[i].name, names[i]);
            EXPECT_TRUE(specs[i].shape == w.shape(names[i]));
        }
        EXPECT_EQ(multipathnet_checkpoint_size(c).stored, w.parameter_count());
    }
}

FOVEA_TEST(multipathnet_released_parameter_counts_match_the_spec) {
    // spec 1.2: 11,582,762 weights + biases (bias-free convs, the 320 biases of
    // the build-time-folded conv1 + layer1, heads 6 x 41,553 + 166,212) and
    // 8,960 ConstAffine constants (4,480 channels).
    MultiPathNetConfig r = MultiPathNetConfig::parse(Config::parse(kReleasedResNet, "released resnet18"));
    CheckpointSize rs = multipathnet_checkpoint_size(r);
    std::printf("     resnet18_integral: learned %lld, fixed %lld, exported floats %lld\n", (long long)rs.learned,
                (long long)rs.fixed, (long long)rs.stored);
    EXPECT_EQ(rs.learned, int64_t(11582762));
    EXPECT_EQ(rs.fixed, int64_t(8960));
    EXPECT_EQ(learned_with_prefix(r, "cls.") + learned_with_prefix(r, "bbox."), int64_t(415530));
    // The export folds each affine's shift into a bias (4,480) and adds BBoxNorm (8).
    EXPECT_EQ(rs.stored, int64_t(11582762 + 4480 + 8));
    // fb.resnet.torch #49 layout (convs with bias, no BN on the projection): 11,587,242 and 7,168.
    std::string alt = kReleasedResNet;
    alt.replace(alt.find("\"conv_bias\":false"), 17, "\"conv_bias\":true");
    alt.replace(alt.find("\"shortcut_affine\":true"), 22, "\"shortcut_affine\":false");
    CheckpointSize as = multipathnet_checkpoint_size(MultiPathNetConfig::parse(Config::parse(alt, "alt")));
    EXPECT_EQ(as.learned, int64_t(11587242));
    EXPECT_EQ(as.fixed, int64_t(7168));

    // spec 2.3: ~624M = trunk 14.7M + 5 towers 600M + heads 9.3M.
    MultiPathNetConfig v = MultiPathNetConfig::parse(Config::parse(kReleasedVgg, "released vgg16"));
    CheckpointSize vs = multipathnet_checkpoint_size(v);
    std::printf("     vgg16_multipath: learned %lld (trunk %lld, towers %lld, heads %lld)\n", (long long)vs.learned,
                (long long)learned_with_prefix(v, "trunk."), (long long)learned_with_prefix(v, "towers."),
                (long long)(learned_with_prefix(v, "cls.") + learned_with_prefix(v, "bbox.")));
    EXPECT_EQ(learned_with_prefix(v, "trunk."), int64_t(14714688));
    EXPECT_EQ(learned_with_prefix(v, "towers."), int64_t(600353280));
    EXPECT_EQ(learned_with_prefix(v, "cls.") + learned_with_prefix(v, "bbox."), int64_t(9290538));
    EXPECT_EQ(vs.learned, int64_t(624358506));
    EXPECT_EQ(vs.fixed, int64_t(0));
    EXPECT_EQ(vs.stored, vs.learned + 8);
}

FOVEA_TEST(multipathnet_empty_and_bad_rois) {
    ModelWeights w = ModelWeights::open(test::golden_path("multipathnet-resnet18-d16.safetensors"));
    MultiPathNet net(w, cpu_backend());
    Golden g = load_golden("multipathnet-resnet18-d16");

    MultiPathNetOptions keep;
    keep.keep_intermediates = true;
    MultiPathNetOutput o = net.forward(g.image, Tensor::empty({0, 4}), keep);
    EXPECT_TRUE((o.cls_prob.shape() == Shape{0, 81}));
    EXPECT_TRUE((o.bbox_deltas.shape() == Shape{0, 324}));
    EXPECT_TRUE((o.cls_logits.shape() == Shape{6, 0, 81}));
    EXPECT_TRUE((o.pooled.shape() == Shape{0, 16, 14, 14}));
    EXPECT_TRUE((o.feature.shape() == Shape{0, 32}));

    Tensor bad = g.rois.clone();
    bad.f32()[4 * 5 + 2] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROWS_CODE(net.forward(g.image, bad), ErrorCode::Input);
    bad.f32()[4 * 5 + 2] = std::numeric_limits<float>::infinity();
    EXPECT_THROWS_CODE(net.forward(g.image, bad), ErrorCode::Input);
    EXPECT_THROWS_CODE(net.forward(g.image, Tensor::zeros({3, 5})), ErrorCode::Input);
    EXPECT_THROWS_CODE(net.forward(g.image.reshape({3, 100, 132, 1}), g.rois), ErrorCode::Input);
    EXPECT_THROWS_CODE(net.forward(Tensor(), g.rois), ErrorCode::Input);
    MultiPathNetOptions zero;
    zero.roi_chunk = 0;
    EXPECT_THROWS_CODE(net.forward(g.image, g.rois, zero), ErrorCode::Options);

    // The VGG variant checks its foveal boxes the same way.
    ModelWeights wv = ModelWeights::open(test::golden_path("multipathnet-vgg16-d16.safetensors"));
    MultiPathNet vgg(wv, cpu_backend());
    MultiPathNetOutput ov = vgg.forward(g.image, Tensor::empty({0, 4}), keep);
    EXPECT_TRUE((ov.cls_prob.shape() == Shape{0, 81}));
    EXPECT_TRUE((ov.foveal_rois.shape() == Shape{4, 0, 5}));
    EXPECT_EQ(ov.towers.size(), size_t(5));
    bad.f32()[4 * 5 + 2] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROWS_CODE(vgg.forward(g.image, bad), ErrorCode::Input);
}

FOVEA_TEST(multipathnet_rejects_bad_weight_files) {
    const std::string src = test::golden_path("multipathnet-resnet18-d16.safetensors");
    io::SafetensorsFile f = io::SafetensorsFile::open(src);
    const std::string config = f.metadata().at(ModelWeights::kConfigKey);
    std::vector<std::pair<std::string, Tensor>> all;
    for (const auto & e : f.tensors()) all.emplace_back(e.name, f.load(e));
    TempDir tmp;

    // The unmodified copy loads (so the writer is not what fails below).
    write_weights(tmp.file("same.safetensors"), all, config);
    MultiPathNet(ModelWeights::open(tmp.file("same.safetensors")), cpu_backend());

    auto expect_rejected = [&](const std::string & file, const std::string & needle) {
        try {
            MultiPathNet(ModelWeights::open(tmp.file(file)), cpu_backend());
        } catch (const Error & e) {
            if (e.code() != ErrorCode::Weights) {
                throw test::Failure(file + ": " + error_code_name(e.code()) + ": " + e.what());
            }
            if (std::string(e.what()).find(needle) == std::string::npos) {
                throw test::Failure(file + ": \"" + e.what() + "\" does not mention " + needle);
            }
            return;
        }
        throw test::Failure(file + " was accepted");
    };

    auto missing = all;
    missing.erase(missing.begin() + 20);  // trunk.layer3.0.conv1.weight
    write_weights(tmp.file("missing.safetensors"), missing, config);
    expect_rejected("missing.safetensors", all[20].first);

    auto misshapen = all;
    for (auto & [name, t] : misshapen) {
        if (name == "tower.layer4.1.conv2.weight") t = t.reshape({32, 32, 9, 1});
    }
    write_weights(tmp.file("shape.safetensors"), misshapen, config);
    expect_rejected("shape.safetensors", "tower.layer4.1.conv2.weight");

    auto extra = all;
    extra.emplace_back("cls.6.weight", all[all.size() - 6].second);
    write_weights(tmp.file("extra.safetensors"), extra, config);
    expect_rejected("extra.safetensors", "cls.6.weight");

    // A config that disagrees with the tensors (twice the widths).
    std::string wide = config;
    wide.replace(wide.find("\"feature_dim\":32"), 16, "\"feature_dim\":64");
    wide.replace(wide.find("\"base_width\":4"), 14, "\"base_width\":8");
    write_weights(tmp.file("wide.safetensors"), all, wide);
    expect_rejected("wide.safetensors", "trunk.conv1.weight");

    std::string variant = config;
    variant.replace(variant.find("resnet18_integral"), 17, "resnet34_integral");
    write_weights(tmp.file("variant.safetensors"), all, variant);
    expect_rejected("variant.safetensors", "resnet34_integral");

    // Another model's file.
    EXPECT_THROWS_CODE(MultiPathNet(ModelWeights::open(test::golden_path("deepmask-resnet18-d16.safetensors")),
                                    cpu_backend()),
                       ErrorCode::Weights);
}

FOVEA_TEST(multipathnet_decode_boxes) {
    // Proposal (10, 20) - (30, 60): w 20, h 40, centre (20, 40); 2 classes.
    Tensor boxes = Tensor::from_vector({1, 4}, {10, 20, 30, 60});
    float l2 = std::log(2.0f);
    Tensor deltas = Tensor::from_vector({1, 8}, {0, 0, 0, 0, 0.5f, -0.25f, l2, -l2});
    Tensor out = decode_multipathnet_boxes(boxes, deltas, 100, 80);
    std::vector<float> v = values(out);
    // class 0: the proposal itself; class 1: centre (30, 30), size 40 x 20.
    std::vector<float> want = {10, 20, 30, 60, 10, 20, 50, 40};
    for (size_t i = 0; i < want.size(); i++) EXPECT_NEAR(v[i], want[i], 1e-4);

    // Clamped to x in [0, W-1], y in [0, H-1] (the released [1, W] on 1-based boxes).
    Tensor grow = Tensor::from_vector({1, 4}, {1.0f, 0.0f, 0.0f, 10.0f});
    Tensor edge = decode_multipathnet_boxes(boxes, grow, 40, 50);
    EXPECT_NEAR(edge.f32()[0], 30.0, 1e-4);   // cx 40 - w' 20 / 2
    EXPECT_NEAR(edge.f32()[2], 39.0, 1e-4);   // W - 1
    EXPECT_NEAR(edge.f32()[1], 0.0, 1e-4);
    EXPECT_NEAR(edge.f32()[3], 49.0, 1e-4);   // H - 1
    // An overflowing exp on a zero-width proposal stays finite.
    Tensor flat = Tensor::from_vector({1, 4}, {5, 5, 5, 9});
    Tensor huge = Tensor::from_vector({1, 4}, {0, 0, 1000, 0});
    Tensor f = decode_multipathnet_boxes(flat, huge, 20, 20);
    for (float x : values(f)) EXPECT_TRUE(std::isfinite(x));
    EXPECT_EQ(decode_multipathnet_boxes(Tensor::empty({0, 4}), Tensor::empty({0, 324}), 10, 10).numel(), int64_t(0));

    Tensor nan_box = Tensor::from_vector({1, 4}, {0, std::numeric_limits<float>::quiet_NaN(), 1, 1});
    EXPECT_THROWS_CODE(decode_multipathnet_boxes(nan_box, grow, 10, 10), ErrorCode::Input);
    EXPECT_THROWS_CODE(decode_multipathnet_boxes(boxes, Tensor::empty({1, 6}), 10, 10), ErrorCode::Input);
    EXPECT_THROWS_CODE(decode_multipathnet_boxes(boxes, grow, 0, 10), ErrorCode::Input);
}
