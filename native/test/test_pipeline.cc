// The pipeline's own steps (image.scale, mask pasting, RLE) against hand
// computed values and pycocotools' strings, and the whole pipeline against
// the independent PyTorch reference (tools/reference/pipeline.py) on the
// golden weights.
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/ops.h"
#include "cpu/ops.h"
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

}  // namespace fovea::test
