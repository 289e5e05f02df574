// The pipeline's own steps (image.scale, mask pasting, RLE) against hand
// computed values and pycocotools' strings, and the whole pipeline against
// the independent PyTorch reference (tools/reference/pipeline.py) on the
// golden weights; then (tests named cuda_*) the models and the pipeline on
// the CUDA backend against the CPU backend and the reference.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "core/device.h"
#include "core/ops.h"
#include "cpu/ops.h"
#ifdef FOVEA_HAVE_CUDA
#include "cuda/api.h"
#endif
#include "models/model_weights.h"
#include "io/json.h"
#include "pipeline/masks.h"
#include "pipeline/pipeline.h"
#include "test/fixtures.h"
#include "test/harness.h"

namespace fovea::test {

namespace {

std::string read_text(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Failure("cannot read " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

io::JsonValue read_json(const std::string & path) {
    io::JsonLimits limits;
    limits.max_values = size_t(1) << 24;
    return io::JsonValue::parse(read_text(path), path, 0, limits);
}

std::vector<float> scale_1d(const std::vector<float> & in, int64_t out) {
    Tensor x = Tensor::from_vector({1, 1, 1, int64_t(in.size())}, in);
    Tensor y = cpu_backend().image_scale(x, 1, out);
    return std::vector<float>(y.f32(), y.f32() + out);
}

// Column-major runs of a row-major bitmap (pycocotools' encode).
std::vector<uint32_t> runs_of(const std::vector<uint8_t> & mask, int64_t h, int64_t w) {
    std::vector<uint32_t> counts;
    uint8_t current = 0;
    uint32_t run = 0;
    for (int64_t x = 0; x < w; x++) {
        for (int64_t y = 0; y < h; y++) {
            const uint8_t v = mask[size_t(y * w + x)] ? 1 : 0;
            if (v != current) {
                counts.push_back(run);
                current = v;
                run = 0;
            }
            run++;
        }
    }
    counts.push_back(run);
    return counts;
}


// pycocotools' rleFrString: the compressed counts string back to runs.
std::vector<uint32_t> runs_from_string(const std::string & s) {
    std::vector<uint32_t> counts;
    size_t p = 0;
    while (p < s.size()) {
        int64_t x = 0;
        int k = 0;
        bool more = true;
        while (more) {
            const int64_t c = int64_t(s[p]) - 48;
            x |= (c & 0x1f) << (5 * k);
            more = (c & 0x20) != 0;
            p++;
            k++;
            if (!more && (c & 0x10)) x -= int64_t(1) << (5 * k);  // sign-extend
        }
        if (counts.size() > 2) x += int64_t(counts[counts.size() - 2]);
        counts.push_back(uint32_t(x));
    }
    return counts;
}

std::vector<uint8_t> bits_of(const std::vector<uint32_t> & runs, size_t n) {
    std::vector<uint8_t> bits;
    uint8_t v = 0;
    for (uint32_t r : runs) {
        bits.insert(bits.end(), r, v);
        v ^= 1;
    }
    if (bits.size() != n) throw Failure("RLE covers " + std::to_string(bits.size()) + " pixels, expected " + std::to_string(n));
    return bits;
}

double mask_iou(const std::string & a, const std::string & b, size_t n) {
    const std::vector<uint8_t> x = bits_of(runs_from_string(a), n), y = bits_of(runs_from_string(b), n);
    size_t inter = 0, uni = 0;
    for (size_t i = 0; i < n; i++) {
        inter += x[i] & y[i];
        uni += x[i] | y[i];
    }
    return uni == 0 ? 1.0 : double(inter) / double(uni);
}

std::vector<uint8_t> base64_decode(const std::string & in) {
    std::vector<uint8_t> out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else continue;
        acc = (acc << 6) | uint32_t(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(uint8_t(acc >> bits));
        }
    }
    return out;
}

const io::JsonValue & member(const io::JsonValue & v, const char * key) {
    const io::JsonValue * m = v.find(key);
    if (!m) throw Failure(std::string("pipeline-golden.json: missing key ") + key);
    return *m;
}

// One case of pipeline-golden.json, ready to run.
struct GoldenCase {
    std::string name, proposals, classifier;  // paths; classifier "" for none
    std::vector<uint8_t> rgb;
    int64_t width = 0, height = 0;
    pipeline::Options options;
    const io::JsonValue * json = nullptr;     // the case in the document
};

std::vector<GoldenCase> golden_cases(const io::JsonValue & doc) {
    const io::JsonValue & models = member(doc, "models");
    const io::JsonValue & images = member(doc, "images");
    std::vector<GoldenCase> out;
    for (const io::JsonValue & c : member(doc, "cases").items()) {
        GoldenCase g;
        g.json = &c;
        g.name = member(c, "name").as_string();
        g.proposals = golden_path(member(models, member(c, "proposal_model").as_string().c_str()).as_string());
        const io::JsonValue & cls = member(c, "classifier");
        g.classifier = cls.is_null() ? "" : golden_path(member(models, cls.as_string().c_str()).as_string());
        const io::JsonValue & img = member(images, member(c, "image").as_string().c_str());
        g.rgb = base64_decode(member(img, "rgb_base64").as_string());
        g.height = member(img, "height").as_integer();
        g.width = member(img, "width").as_integer();
        EXPECT_EQ(int64_t(g.rgb.size()), g.height * g.width * 3);
        const io::JsonValue & o = member(c, "options");
        pipeline::Options & opt = g.options;
        opt.mode = member(o, "mode").as_string() == "proposals" ? pipeline::Mode::Proposals : pipeline::Mode::Instances;
        opt.max_proposals = member(o, "max_proposals").as_integer();
        opt.max_detections = member(o, "max_detections").as_integer();
        opt.score_threshold = float(member(o, "score_threshold").as_number());
        opt.nms_threshold = float(member(o, "nms_threshold").as_number());
        opt.mask_threshold = float(member(o, "mask_threshold").as_number());
        opt.max_side = member(o, "max_side").as_integer();
        if (!member(o, "scales").is_null()) {
            for (const io::JsonValue & v : member(o, "scales").items()) opt.scales.push_back(v.as_number());
        }
        out.push_back(std::move(g));
    }
    return out;
}

// The reference's instances against `r` (matched by proposal cell and
// class): scores within 1e-4 relative, objectness 1e-4, boxes 0.05 px, mask
// IoU >= 0.99, areas within 1% (or 2 px). Returns the instances compared.
size_t check_against_reference(const GoldenCase & c, const pipeline::Result & r) {
    const auto & ref_props = member(*c.json, "proposals").items();
    const auto & ref = member(*c.json, "instances").items();
    const std::string where = c.name + ": ";
    if (r.instances.size() != ref.size()) {
        throw Failure(where + std::to_string(r.instances.size()) + " instances, the reference has " +
                      std::to_string(ref.size()));
    }
    EXPECT_EQ(r.proposals, member(*c.json, "num_proposals").as_integer());
    size_t compared = 0;
    for (const io::JsonValue & e : ref) {
        const io::JsonValue & prop = ref_props[size_t(member(e, "proposal").as_integer())];
        const int64_t si = member(prop, "scale_index").as_integer(), row = member(prop, "row").as_integer(),
                      col = member(prop, "col").as_integer(), ci = member(e, "class_index").as_integer();
        const pipeline::Instance * mine = nullptr;
        for (const pipeline::Instance & i : r.instances) {
            if (i.scale_index == si && i.row == row && i.col == col && i.class_index == ci) mine = &i;
        }
        if (!mine) {
            throw Failure(where + "no instance at scale " + std::to_string(si) + " cell (" + std::to_string(row) +
                          ", " + std::to_string(col) + ") class " + std::to_string(ci));
        }
        const double score = member(e, "score").as_number();
        if (std::fabs(mine->score - score) > 1e-4 * std::max(1.0, std::fabs(score))) {
            throw Failure(where + "score " + std::to_string(mine->score) + " vs " + std::to_string(score));
        }
        EXPECT_NEAR(mine->objectness, member(e, "objectness").as_number(), 1e-4);
        const auto & box = member(e, "box").items();
        for (int k = 0; k < 4; k++) EXPECT_NEAR(mine->box[k], box[size_t(k)].as_number(), 0.05);
        const double iou = mask_iou(mine->rle, member(e, "rle").as_string(), size_t(c.height * c.width));
        if (iou < 0.99) throw Failure(where + "mask IoU " + std::to_string(iou) + " < 0.99");
        EXPECT_TRUE(std::abs(mine->area - member(e, "area").as_integer()) <= std::max<int64_t>(2, mine->area / 100));
        compared++;
    }
    return compared;
}

// Two runs of the same input (another backend, or a repeat): the same number
// of instances and proposals, each instance of `b` in `a` at the same cell
// and class with the same score (1e-4 relative), objectness (1e-4), box
// (0.05 px) and a mask of IoU >= 0.99.
void check_same_instances(const std::string & where, const pipeline::Result & a, const pipeline::Result & b,
                          size_t pixels) {
    if (a.instances.size() != b.instances.size() || a.proposals != b.proposals) {
        throw Failure(where + std::to_string(a.instances.size()) + " instances from " + std::to_string(a.proposals) +
                      " proposals, expected " + std::to_string(b.instances.size()) + " from " +
                      std::to_string(b.proposals));
    }
    for (const pipeline::Instance & e : b.instances) {
        const pipeline::Instance * m = nullptr;
        for (const pipeline::Instance & i : a.instances) {
            if (i.scale_index == e.scale_index && i.row == e.row && i.col == e.col && i.class_index == e.class_index) {
                m = &i;
            }
        }
        if (!m) {
            throw Failure(where + "no instance at scale " + std::to_string(e.scale_index) + " cell (" +
                          std::to_string(e.row) + ", " + std::to_string(e.col) + ") class " +
                          std::to_string(e.class_index));
        }
        if (std::fabs(m->score - e.score) > 1e-4 * std::max(1.0f, std::fabs(e.score))) {
            throw Failure(where + "score " + std::to_string(m->score) + " vs " + std::to_string(e.score));
        }
        EXPECT_NEAR(m->objectness, e.objectness, 1e-4);
        for (int k = 0; k < 4; k++) EXPECT_NEAR(m->box[k], e.box[k], 0.05);
        EXPECT_EQ(m->label, e.label);
        const double iou = mask_iou(m->rle, e.rle, pixels);
        if (iou < 0.99) throw Failure(where + "mask IoU " + std::to_string(iou) + " < 0.99");
    }
}
}  // namespace

FOVEA_TEST(image_scale_grows_with_align_corners_and_copies_the_last_sample) {
    // torch image.scale: 3 -> 5 samples at 0, .5, 1, 1.5 and the last copied.
    const std::vector<float> out = scale_1d({1, 2, 4}, 5);
    const float expected[5] = {1, 1.5f, 2, 3, 4};
    for (int i = 0; i < 5; i++) EXPECT_NEAR(out[size_t(i)], expected[i], 1e-6);
    // One sample grows to a constant.
    for (float v : scale_1d({7}, 4)) EXPECT_NEAR(v, 7, 0);
}

FOVEA_TEST(image_scale_shrinks_by_area_with_fractional_edges) {
    // 5 -> 2: windows [0, 2.5) and [2.5, 5) with half weights at the split.
    const std::vector<float> out = scale_1d({1, 2, 3, 4, 5}, 2);
    EXPECT_NEAR(out[0], (1 + 2 + 0.5 * 3) / 2.5, 1e-6);
    EXPECT_NEAR(out[1], (0.5 * 3 + 4 + 5) / 2.5, 1e-6);
    // 4 -> 1: the mean.
    EXPECT_NEAR(scale_1d({1, 2, 3, 6}, 1)[0], 3, 1e-6);
    // Equal size: a copy.
    const std::vector<float> same = scale_1d({3, -1, 2}, 3);
    EXPECT_EQ(same[1], -1.0f);
}

FOVEA_TEST(image_scale_is_separable_per_axis) {
    // A 2-D scale equals the 1-D scale of the rows, then of the columns.
    const int64_t h = 4, w = 7, oh = 9, ow = 3;
    Tensor x = random_tensor({1, 2, h, w}, 5);
    Tensor y = cpu_backend().image_scale(x, oh, ow);
    EXPECT_EQ(y.dim(1), 2);
    for (int64_t p = 0; p < 2; p++) {
        std::vector<std::vector<float>> rows;
        for (int64_t r = 0; r < h; r++) {
            rows.push_back(scale_1d(std::vector<float>(x.f32() + (p * h + r) * w, x.f32() + (p * h + r + 1) * w), ow));
        }
        for (int64_t c = 0; c < ow; c++) {
            std::vector<float> column;
            for (int64_t r = 0; r < h; r++) column.push_back(rows[size_t(r)][size_t(c)]);
            const std::vector<float> scaled = scale_1d(column, oh);
            for (int64_t r = 0; r < oh; r++) EXPECT_NEAR(y.f32()[(p * oh + r) * ow + c], scaled[size_t(r)], 1e-5);
        }
    }
    EXPECT_THROWS_CODE(cpu_backend().image_scale(x, 0, 3), ErrorCode::Options);
}

FOVEA_TEST(paste_mask_equals_scale_then_crop_then_threshold) {
    const int64_t n = 12, H = 37, W = 29;
    Tensor logits = random_tensor({1, 1, n, n}, 11, -2, 2);
    struct Case {
        pipeline::MaskWindow win;
    };
    const Case cases[] = {
        {{5, 3, 20, 20}},      // inside
        {{-7, -4, 30, 25}},    // over the top-left corner
        {{25, 20, 40, 33}},    // over the bottom-right corner
        {{-50, -50, 200, 210}},// larger than the image
        {{40, 0, 10, 10}},     // below the image: empty
        {{3, 3, 0, 5}},        // zero size: empty
    };
    for (const Case & c : cases) {
        const pipeline::RleMask m = pipeline::paste_mask(logits.f32(), n, n, c.win, H, W, 0.1f);
        std::vector<uint8_t> expected(size_t(H * W), 0);
        if (c.win.height > 0 && c.win.width > 0) {
            Tensor full = cpu_backend().image_scale(logits, c.win.height, c.win.width);
            for (int64_t y = 0; y < H; y++) {
                for (int64_t x = 0; x < W; x++) {
                    const int64_t wy = y - c.win.top, wx = x - c.win.left;
                    if (wy < 0 || wx < 0 || wy >= c.win.height || wx >= c.win.width) continue;
                    expected[size_t(y * W + x)] = full.f32()[wy * c.win.width + wx] > 0.1f;
                }
            }
        }
        const std::vector<uint32_t> runs = runs_of(expected, H, W);
        EXPECT_EQ(m.counts.size(), runs.size());
        for (size_t i = 0; i < runs.size(); i++) EXPECT_EQ(m.counts[i], runs[i]);
        int64_t area = 0, x0 = W, y0 = H, x1 = -1, y1 = -1;
        for (int64_t y = 0; y < H; y++) {
            for (int64_t x = 0; x < W; x++) {
                if (!expected[size_t(y * W + x)]) continue;
                area++;
                x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
            }
        }
        EXPECT_EQ(m.area, area);
        if (area > 0) {
            EXPECT_EQ(m.x0, x0);
            EXPECT_EQ(m.y0, y0);
            EXPECT_EQ(m.x1, x1);
            EXPECT_EQ(m.y1, y1);
        }
    }
}

FOVEA_TEST(rle_strings_equal_pycocotools) {
    // test/fixtures/rle-golden.json: masks encoded by pycocotools.
    const io::JsonValue doc = read_json(golden_dir() + "/../rle-golden.json");
    const io::JsonValue * cases = doc.find("cases");
    EXPECT_TRUE(cases && cases->items().size() >= 30);
    for (const io::JsonValue & c : cases->items()) {
        const int64_t h = c.find("height")->as_integer(), w = c.find("width")->as_integer();
        std::vector<uint8_t> mask;
        for (const io::JsonValue & v : c.find("mask")->items()) mask.push_back(uint8_t(v.as_integer()));
        EXPECT_EQ(pipeline::rle_to_string(runs_of(mask, h, w)), c.find("counts")->as_string());
    }
}

FOVEA_TEST(pipeline_checks_options_and_cancels) {
    const auto p = pipeline::Pipeline::load(golden_path("sharpmask-resnet18-d16.safetensors"), "", cpu_backend());
    EXPECT_TRUE(!p->has_classifier());
    std::vector<uint8_t> pixels(size_t(40 * 30 * 3), 100);
    pipeline::ImageView img{pixels.data(), 40, 30};
    pipeline::Options o;
    o.scales = {0.5, 1.0};
    EXPECT_THROWS_CODE(p->run(img, o), ErrorCode::Options);  // instances without a classifier
    o.mode = pipeline::Mode::Proposals;
    o.score_threshold = 0;
    o.max_proposals = 4;
    o.nms_threshold = 1;  // the proposals default (no NMS)
    EXPECT_EQ(p->run(img, o).instances.size(), size_t(4));
    std::atomic<bool> cancelled{true};
    pipeline::RunControl control;
    control.cancelled = &cancelled;
    EXPECT_THROWS_CODE(p->run(img, o, control), ErrorCode::Aborted);
    pipeline::ImageView empty{pixels.data(), 0, 30};
    EXPECT_THROWS_CODE(p->run(empty, o), ErrorCode::Input);
    EXPECT_THROWS_CODE(pipeline::Pipeline::load(golden_path("multipathnet-resnet18-d16.safetensors"), "", cpu_backend()),
                       ErrorCode::Options);
}

FOVEA_TEST(pipeline_load_rejects_truncated_and_non_finite_weights) {
    // A real weights file cut at every 4 KiB boundary (and one byte short) is
    // Error(Weights), never a crash or a read past the end.
    const std::string whole = read_text(golden_path("sharpmask-resnet18-d16.safetensors"));
    const std::string path = "fovea-test-truncated.safetensors";
    std::vector<size_t> cuts;
    for (size_t n = 0; n < whole.size(); n += 4096) cuts.push_back(n);
    cuts.push_back(whole.size() - 1);
    for (size_t n : cuts) {
        std::ofstream(path, std::ios::binary).write(whole.data(), std::streamsize(n));
        EXPECT_THROWS_CODE(pipeline::Pipeline::load(path, "", cpu_backend()), ErrorCode::Weights);
    }
    // A NaN and an infinity in the last tensor's data (the file ends with tensor data).
    for (const char * bits : {"\x00\x00\xc0\x7f", "\x00\x00\x80\x7f"}) {
        std::string bad = whole;
        bad.replace(bad.size() - 4, 4, bits, 4);
        std::ofstream(path, std::ios::binary).write(bad.data(), std::streamsize(bad.size()));
        EXPECT_THROWS_CODE(pipeline::Pipeline::load(path, "", cpu_backend()), ErrorCode::Weights);
    }
    std::remove(path.c_str());
}

FOVEA_TEST(pipeline_matches_the_pytorch_reference_pipeline) {
    // test/fixtures/golden/pipeline-golden.json: tools/reference/pipeline.py
    // (an independent implementation of pipeline.h's contract) on the golden
    // weights. Instances are matched by (proposal cell, class): ranking ties
    // may order them differently; masks by IoU (pixels at the threshold flip).
    const io::JsonValue doc = read_json(golden_path("pipeline-golden.json"));
    size_t compared = 0;
    for (const GoldenCase & c : golden_cases(doc)) {
        const auto p = pipeline::Pipeline::load(c.proposals, c.classifier, cpu_backend());
        const pipeline::Result r = p->run({c.rgb.data(), c.width, c.height}, c.options);
        EXPECT_EQ(r.device, std::string("cpu"));
        compared += check_against_reference(c, r);
    }
    EXPECT_TRUE(compared >= 30);
}

// ---------------------------------------------------------------------------
// The pipeline and its models on the CUDA backend (fp32), against the CPU
// backend on the same inputs and against the reference. Without a device
// these report "skip" (a failure with FOVEA_REQUIRE_CUDA set); on a CPU they
// run under tools/device/emu.

namespace {

Backend & cuda_or_skip() {
    const CudaStatus & s = cuda_status();
    if (!s.available) {
        if (std::getenv("FOVEA_REQUIRE_CUDA")) throw Failure("FOVEA_REQUIRE_CUDA is set, but " + s.reason);
        throw Skip("no CUDA device (" + s.reason + ")");
    }
    return cuda_backend(0);
}

// The emulated runtime of tools/device/emu names its one device so.
bool cuda_is_emulated() {
    const CudaStatus & s = cuda_status();
    return !s.devices.empty() && s.devices[0].name == "host emulation";
}

// fp32 arithmetic on cuda:0 for the scope (tf32 is the default on sm_80+).
class Fp32Scope {
  public:
    Fp32Scope() {
#ifdef FOVEA_HAVE_CUDA
        saved_ = cuda::precision(0);
        cuda::set_precision(0, cuda::Precision::FP32);
#endif
    }
    ~Fp32Scope() {
#ifdef FOVEA_HAVE_CUDA
        cuda::set_precision(0, saved_);
#endif
    }
    Fp32Scope(const Fp32Scope &) = delete;
    Fp32Scope & operator=(const Fp32Scope &) = delete;

  private:
#ifdef FOVEA_HAVE_CUDA
    cuda::Precision saved_ = cuda::Precision::FP32;
#endif
};

// max|a - b| / max(max|b|, 1e-6) of a device (or host) result against a host
// reference, after checking the device and shape.
void expect_close(const Tensor & actual, const Tensor & expected, double tol, const std::string & what) {
    if (actual.device().type != DeviceType::CUDA) throw Failure(what + ": result is on " + actual.device().str());
    const Tensor a = to_host(actual), b = to_host(expected);
    if (a.shape() != b.shape()) {
        throw Failure(what + ": shape " + shape_str(a.shape()) + ", expected " + shape_str(b.shape()));
    }
    double diff = 0, scale = 1e-6;
    for (int64_t i = 0; i < a.numel(); i++) {
        const double d = std::fabs(double(a.f32()[i]) - double(b.f32()[i]));
        if (!(d <= diff)) diff = std::isnan(d) ? 1e30 : d;
        scale = std::max(scale, std::fabs(double(b.f32()[i])));
    }
    if (!(diff / scale <= tol)) {
        throw Failure(what + ": normalised error " + std::to_string(diff / scale) + " > " + std::to_string(tol));
    }
}

// Model outputs after a dozen layers: each fp32 op agrees with the CPU
// within 1e-5 (test_cuda_ops.cc); 1e-4 leaves room for their sum.
constexpr double kModelTolerance = 1e-4;

}  // namespace

FOVEA_TEST(cuda_models_match_cpu_on_the_golden_weights) {
    Backend & cuda = cuda_or_skip();
    Fp32Scope fp32;
    Backend & cpu = cpu_backend();
    const Device dev = cuda.device();
    // SharpMask (and its DeepMask) dense on a 2x3-cell image, masks at cells
    // inside and on the edge of the grid, and at no cell. (Small inputs: the
    // CPU emulation runs this too.)
    {
        const models::ModelWeights w = models::ModelWeights::open(golden_path("sharpmask-resnet18-d16.safetensors"));
        const models::SharpMask gpu = models::SharpMask::load(w, cuda), ref = models::SharpMask::load(w, cpu);
        const Tensor image = random_tensor({1, 3, 176, 192}, 21);
        const models::SharpMaskDense dg = gpu.dense(to_device(image, dev)), dc = ref.dense(image);
        expect_close(dg.deepmask.score_logits, dc.deepmask.score_logits, kModelTolerance, "sharpmask scores");
        for (size_t i = 0; i < 4; i++) {
            expect_close(dg.h_maps[i], dc.h_maps[i], kModelTolerance, "sharpmask h map " + std::to_string(i + 1));
        }
        const std::vector<models::GridCell> cells = {{0, 0}, {1, 2}, {0, 1}};
        expect_close(gpu.masks_at(dg, cells), ref.masks_at(dc, cells), kModelTolerance, "sharpmask masks_at");
        expect_close(gpu.masks_at(dg, {}), ref.masks_at(dc, {}), 0, "sharpmask masks_at no cell");
        expect_close(gpu.deepmask().masks_at(dg.deepmask, cells), ref.deepmask().masks_at(dc.deepmask, cells),
                     kModelTolerance, "deepmask masks_at");
    }
    // MultiPathNet, both variants, with every intermediate; three ROIs in
    // chunks of two (views of the uploaded ROI table), and no ROI.
    for (const char * file : {"multipathnet-resnet18-d16.safetensors", "multipathnet-vgg16-d16.safetensors"}) {
        const models::ModelWeights w = models::ModelWeights::open(golden_path(file));
        const models::MultiPathNet gpu(w, cuda), ref(w, cpu);
        const Tensor image = random_tensor({1, 3, 72, 88}, 22);
        const Tensor rois = Tensor::from_vector({3, 4}, {3, 4, 40, 50, 0, 0, 87, 71, 20.5f, 10, 30, 60});
        models::MultiPathNetOptions o;
        o.roi_chunk = 2;
        o.keep_intermediates = true;
        const models::MultiPathNetOutput g = gpu.forward(to_device(image, dev), rois, o);
        const models::MultiPathNetOutput c = ref.forward(image, rois, o);
        const std::string name = file;
        expect_close(g.cls_prob, c.cls_prob, kModelTolerance, name + " cls_prob");
        expect_close(g.bbox_deltas, c.bbox_deltas, kModelTolerance, name + " bbox_deltas");
        expect_close(g.cls_logits, c.cls_logits, kModelTolerance, name + " cls_logits");
        if (c.foveal_rois.defined()) {
            expect_close(g.foveal_rois, c.foveal_rois, 0, name + " foveal_rois");
            for (size_t t = 0; t < c.towers.size(); t++) {
                expect_close(g.towers[t], c.towers[t], kModelTolerance, name + " tower " + std::to_string(t));
            }
        } else {
            expect_close(g.pooled, c.pooled, kModelTolerance, name + " pooled");
        }
        // ROIs already on the device are accepted too.
        expect_close(gpu.forward(to_device(image, dev), to_device(rois, dev)).cls_prob, c.cls_prob, kModelTolerance,
                     name + " cls_prob (device ROIs)");
        const models::MultiPathNetOutput none = gpu.forward(to_device(image, dev), Tensor::empty({0, 4}));
        expect_close(none.cls_prob, Tensor::empty({0, ref.config().num_classes}), 0, name + " no ROI");
        // Box decoding reads device deltas on the host.
        const Tensor boxes = models::decode_multipathnet_boxes(rois, g.bbox_deltas, 88, 72);
        EXPECT_TRUE(boxes.device().type == DeviceType::CPU);
    }
}

FOVEA_TEST(cuda_pipeline_matches_cpu_and_the_reference) {
    // Every case of pipeline-golden.json on cuda:0 in fp32: the reference
    // checks of the CPU test above (same cells and classes, scores within
    // 1e-4 relative, boxes within 0.05 px, mask IoU >= 0.99), and the same
    // checks against the CPU pipeline on the same input. Under the CPU
    // emulation of the runtime (tools/device/emu) only the cases of
    // kEmulatedCases run: small proposal cases and the instances case whose
    // proposals are all dropped (every other instances case runs
    // MultiPathNet on a ~1000-pixel input, which takes the emulation many
    // minutes; the classifier on the device is checked by
    // cuda_models_match_cpu_on_the_golden_weights). A GPU runs them all,
    // unless FOVEA_CUDA_PIPELINE_QUICK is set (the sanitizer runs of
    // tools/device/cuda-check.sh, where every kernel is slow).
    Backend & cuda = cuda_or_skip();
    Fp32Scope fp32;
    static const std::set<std::string> kEmulatedCases = {
        "sharpmask-proposals-nms-off-scales", "deepmask-proposals-work-resize", "deepmask-instances-1xN-all-dropped"};
    const bool quick = cuda_is_emulated() || std::getenv("FOVEA_CUDA_PIPELINE_QUICK") != nullptr;
    const io::JsonValue doc = read_json(golden_path("pipeline-golden.json"));
    size_t compared = 0, cases = 0;
    std::vector<std::string> skipped;
    for (const GoldenCase & c : golden_cases(doc)) {
        if (quick && !kEmulatedCases.count(c.name)) {
            skipped.push_back(c.name);
            continue;
        }
        const auto pg = pipeline::Pipeline::load(c.proposals, c.classifier, cuda);
        const auto pc = pipeline::Pipeline::load(c.proposals, c.classifier, cpu_backend());
        EXPECT_EQ(pg->device_name(), std::string("cuda:0"));
        const pipeline::ImageView img{c.rgb.data(), c.width, c.height};
        const pipeline::Result rg = pg->run(img, c.options), rc = pc->run(img, c.options);
        EXPECT_EQ(rg.device, std::string("cuda:0"));
        compared += check_against_reference(c, rg);
        check_same_instances(c.name + " (cuda vs cpu): ", rg, rc, size_t(c.width * c.height));
        cases++;
    }
    if (!skipped.empty()) {
        std::string list;
        for (const std::string & n : skipped) list += (list.empty() ? "" : ", ") + n;
        std::printf("  note: %s: ran %zu of %zu golden cases; not run: %s\n",
                    cuda_is_emulated() ? "emulated device" : "FOVEA_CUDA_PIPELINE_QUICK", cases,
                    cases + skipped.size(), list.c_str());
    }
    EXPECT_TRUE(cases >= kEmulatedCases.size());
    if (!quick) EXPECT_TRUE(compared >= 30);
}

FOVEA_TEST(cuda_pipeline_steady_state_and_bad_device) {
    // A second run of the same input gives the same result and (once the
    // allocator has seen the sizes) makes no cudaMalloc; cuda:N past the last
    // device is Error(Device).
    Backend & cuda = cuda_or_skip();
    Fp32Scope fp32;
    const auto p = pipeline::Pipeline::load(golden_path("sharpmask-resnet18-d16.safetensors"), "", cuda);
    std::vector<uint8_t> pixels(size_t(20 * 24 * 3));
    for (size_t i = 0; i < pixels.size(); i++) pixels[i] = uint8_t((i * 37) % 251);
    pipeline::Options o;
    o.mode = pipeline::Mode::Proposals;
    o.scales = {0.5};
    o.max_proposals = 3;
    o.score_threshold = 0;
    const pipeline::Result a = p->run({pixels.data(), 24, 20}, o);
#ifdef FOVEA_HAVE_CUDA
    const uint64_t mallocs = cuda::allocator(0).stats().device_mallocs;
#endif
    const pipeline::Result b = p->run({pixels.data(), 24, 20}, o);
#ifdef FOVEA_HAVE_CUDA
    EXPECT_EQ(cuda::allocator(0).stats().device_mallocs, mallocs);
#endif
    check_same_instances("repeat: ", b, a, size_t(24 * 20));
    for (const pipeline::Timing & t : b.timings) EXPECT_TRUE(t.ms >= 0);
    EXPECT_THROWS_CODE(cuda_backend(int(cuda_status().devices.size())), ErrorCode::Device);
}

}  // namespace fovea::test
