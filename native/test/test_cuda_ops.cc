// The CUDA backend against the CPU reference: every op on random inputs and
// odd shapes (1x1 images, widths not a multiple of 8, channels not a
// multiple of the 16-deep K tile, one ROI, zero ROIs), compared by the
// normalised error max|cuda - cpu| / max(max|cpu|, 1e-6): below 1e-5 for
// fp32 arithmetic, 2e-3 for conv / gemm / linear on tf32 tensor cores.
// Also: identical rejection of bad input, transfers, out-of-memory recovery
// and the caching allocator's steady state.
//
// Without a CUDA device every test here but the first reports "skip" with
// the reason; with FOVEA_REQUIRE_CUDA set (the GPU machine's script) that
// is a failure instead. Run just these: ./fovea_tests cuda_ (on a CPU, under
// the emulation of tools/device/emu/run.sh).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/ops.h"
#include "test/harness.h"
#ifdef FOVEA_HAVE_CUDA
#include "cuda/api.h"
#endif

using namespace fovea;
using fovea::test::random_tensor;

namespace {

constexpr double kFp32Tolerance = 1e-5;
constexpr double kTf32Tolerance = 2e-3;
const Device kCuda{DeviceType::CUDA, 0};

Backend & cuda_or_skip() {
    const CudaStatus & s = cuda_status();
    if (!s.available) {
        if (std::getenv("FOVEA_REQUIRE_CUDA")) throw test::Failure("FOVEA_REQUIRE_CUDA is set, but " + s.reason);
        throw test::Skip("no CUDA device (" + s.reason + ")");
    }
    return cuda_backend(0);
}

Tensor dev(const Tensor & t) { return to_device(t, kCuda); }

// max|a - b| / max(max|b|, 1e-6); NaN anywhere gives infinity.
double normalised_error(const Tensor & actual, const Tensor & expected) {
    const float * a = actual.f32();
    const float * b = expected.f32();
    double diff = 0, scale = 1e-6;
    for (int64_t i = 0; i < actual.numel(); i++) {
        const double d = std::fabs(double(a[i]) - double(b[i]));
        if (!(d <= diff)) diff = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
        scale = std::max(scale, std::fabs(double(b[i])));
    }
    return diff / scale;
}

// `actual` may live on the device; it is copied back (which waits).
void expect_match(const Tensor & actual, const Tensor & expected, double tol, const std::string & what) {
    const Tensor a = to_host(actual);
    if (a.device().type != DeviceType::CPU || a.shape() != expected.shape()) {
        throw test::Failure(what + ": shape " + shape_str(a.shape()) + " on " + a.device().str() + ", expected " +
                            shape_str(expected.shape()) + " on cpu");
    }
    const double e = normalised_error(a, expected);
    if (!(e <= tol)) {
        std::ostringstream os;
        os << what << ": normalised error " << e << " > " << tol;
        throw test::Failure(os.str());
    }
}

// Both backends must fail alike: the same error code, or both succeed.
void expect_same_rejection(const std::function<void(Backend &)> & op, const std::string & what) {
    auto code_of = [&](Backend & be) -> int {
        try {
            op(be);
        } catch (const Error & e) {
            return int(e.code());
        }
        return -1;
    };
    const int cpu = code_of(cpu_backend()), cuda = code_of(cuda_backend(0));
    if (cpu != cuda || cpu == -1) {
        std::ostringstream os;
        os << what << ": cpu " << (cpu < 0 ? "accepted" : error_code_name(ErrorCode(cpu))) << ", cuda "
           << (cuda < 0 ? "accepted" : error_code_name(ErrorCode(cuda))) << " (expected the same rejection)";
        throw test::Failure(os.str());
    }
}

#ifdef FOVEA_HAVE_CUDA
// Sets the precision of conv / gemm / linear on device 0 for one scope.
struct PrecisionScope {
    explicit PrecisionScope(cuda::Precision p) : saved(cuda::precision(0)) { cuda::set_precision(0, p); }
    ~PrecisionScope() { cuda::set_precision(0, saved); }
    cuda::Precision saved;
};

// The precisions this device runs: fp32 always, tf32 from sm_80 on.
std::vector<std::pair<cuda::Precision, double>> precisions() {
    std::vector<std::pair<cuda::Precision, double>> out{{cuda::Precision::FP32, kFp32Tolerance}};
    if (cuda_status().devices[0].compute_major >= 8) out.push_back({cuda::Precision::TF32, kTf32Tolerance});
    return out;
}
#endif

}  // namespace

FOVEA_TEST(cuda_backend_reports_unavailable_or_bad_index) {
    if (!cuda_status().available) {
        EXPECT_THROWS_CODE(cuda_backend(0), ErrorCode::Device);
        EXPECT_THROWS_CODE(to_device(Tensor::zeros({2}), kCuda), ErrorCode::Device);
        std::printf("     (CUDA unavailable here: %s)\n", cuda_status().reason.c_str());
        return;
    }
    EXPECT_THROWS_CODE(cuda_backend(int(cuda_status().devices.size())), ErrorCode::Device);
    EXPECT_THROWS_CODE(cuda_backend(-1), ErrorCode::Device);
    EXPECT_EQ(std::string(cuda_backend(0).name()), std::string("cuda"));
    EXPECT_TRUE(cuda_backend(0).device() == kCuda);
}

FOVEA_TEST(cuda_transfers_round_trip) {
    cuda_or_skip();
    for (const Shape & shape : {Shape{0}, Shape{1}, Shape{3, 5, 7}, Shape{1, 3, 1021, 517}}) {
        const Tensor x = random_tensor(shape, 1);
        const Tensor d = dev(x);
        EXPECT_TRUE(d.device() == kCuda);
        EXPECT_TRUE(to_device(d, kCuda).raw() == d.raw());  // already there
        const Tensor back = to_host(d);
        EXPECT_TRUE(back.shape() == shape);
        for (int64_t i = 0; i < x.numel(); i++) EXPECT_EQ(back.f32()[i], x.f32()[i]);
    }
    Tensor ints = Tensor::empty({5}, DType::I64);
    for (int i = 0; i < 5; i++) ints.data<int64_t>()[i] = (int64_t(1) << 40) + i;
    const Tensor back = to_host(dev(ints));
    EXPECT_TRUE(back.dtype() == DType::I64);
    for (int i = 0; i < 5; i++) EXPECT_EQ(back.data<int64_t>()[i], (int64_t(1) << 40) + i);
}

FOVEA_TEST(cuda_rejects_tensors_of_the_other_device) {
    Backend & cuda = cuda_or_skip();
    const Tensor h = random_tensor({1, 2, 3, 3}, 2);
    EXPECT_THROWS_CODE(cuda.relu(h), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu_backend().relu(dev(h)), ErrorCode::Input);
    EXPECT_THROWS_CODE(cuda.add(dev(h), h, Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cuda.conv2d(dev(h), random_tensor({2, 2, 1, 1}, 3), Tensor(), {}), ErrorCode::Input);
}

FOVEA_TEST(cuda_rejects_bad_input_as_the_cpu_does) {
    cuda_or_skip();
    auto on = [](Backend & be, const Tensor & t) { return be.device() == kCuda ? dev(t) : t; };
    const Tensor x = random_tensor({1, 4, 5, 6}, 4);
    expect_same_rejection([&](Backend & be) { be.conv2d(on(be, x), on(be, random_tensor({2, 3, 3, 3}, 5)), Tensor(), {}); },
                          "conv2d channel mismatch");
    expect_same_rejection(
        [&](Backend & be) {
            Conv2dParams p;
            p.groups = 3;
            be.conv2d(on(be, x), on(be, random_tensor({3, 1, 1, 1}, 5)), Tensor(), p);
        },
        "conv2d groups");
    expect_same_rejection(
        [&](Backend & be) {
            Pool2dParams p;
            p.kernel_h = p.kernel_w = 2;
            p.pad_top = 2;
            be.max_pool2d(on(be, x), p);
        },
        "pool padding >= kernel");
    expect_same_rejection([&](Backend & be) { be.resize_bilinear(on(be, x), ResizeParams{0, 3}); }, "resize to 0");
    expect_same_rejection(
        [&](Backend & be) {
            Pad2dParams p;
            p.left = p.right = -3;
            be.pad2d(on(be, x), p);
        },
        "crop to nothing");
    expect_same_rejection([&](Backend & be) { be.concat({on(be, x), on(be, random_tensor({1, 4, 5, 7}, 6))}, 1); },
                          "concat mismatch");
    expect_same_rejection([&](Backend & be) { be.softmax(on(be, x), 4); }, "softmax axis");
    expect_same_rejection(
        [&](Backend & be) { be.gemm(on(be, random_tensor({3, 4}, 7)), on(be, random_tensor({5, 6}, 8)), Tensor(), {}); },
        "gemm inner mismatch");
    expect_same_rejection([&](Backend & be) { be.add(on(be, x), on(be, x), Activation::Sigmoid); }, "add sigmoid");
    // Rejections that depend on tensor values held on the device.
    expect_same_rejection(
        [&](Backend & be) {
            be.roi_max_pool(on(be, x), on(be, Tensor::from_vector({1, 5}, {1, 0, 0, 2, 2})), RoiPoolParams{});
        },
        "roi_max_pool batch index out of range");
    expect_same_rejection(
        [&](Backend & be) {
            Tensor idx = Tensor::zeros({1}, DType::I64);
            const float inf = std::numeric_limits<float>::infinity();
            be.roi_align(on(be, x), on(be, Tensor::from_vector({1, 4}, {0, 0, inf, 2})), on(be, idx), RoiAlignParams{});
        },
        "roi_align infinite coordinate");
    expect_same_rejection(
        [&](Backend & be) {
            const Tensor p = Tensor::full({4}, 1.0f);
            be.batch_norm(on(be, x), on(be, p), on(be, p), on(be, p), on(be, Tensor::full({4}, -1.0f)), 0.0f);
        },
        "batch_norm negative variance");
    expect_same_rejection(
        [&](Backend & be) {
            NmsParams p;
            p.iou_threshold = 2.0f;
            be.nms(on(be, random_tensor({3, 4}, 9)), on(be, random_tensor({3}, 10)), p);
        },
        "nms iou threshold");
}

FOVEA_TEST(cuda_activations) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 100;
    for (const Shape & shape : {Shape{1}, Shape{3, 5, 7}, Shape{2, 3, 17, 33}, Shape{0, 4}}) {
        const Tensor x = random_tensor(shape, seed++, -12.0f, 12.0f);
        expect_match(cuda.relu(dev(x)), cpu_backend().relu(x), kFp32Tolerance, "relu " + shape_str(shape));
        expect_match(cuda.sigmoid(dev(x)), cpu_backend().sigmoid(x), kFp32Tolerance, "sigmoid " + shape_str(shape));
    }
    struct Case {
        Shape shape;
        int axis;
    };
    for (const Case & c : {Case{{1, 1}, -1}, Case{{7, 1000}, -1}, Case{{3, 5000}, 1}, Case{{2, 5, 3, 4}, 1},
                           Case{{2, 5, 3, 4}, 0}, Case{{2, 5, 3, 4}, 3}, Case{{1, 81, 1, 1}, 1}, Case{{4, 1, 9}, 1}}) {
        const Tensor x = random_tensor(c.shape, seed++, -20.0f, 20.0f);
        expect_match(cuda.softmax(dev(x), c.axis), cpu_backend().softmax(x, c.axis), kFp32Tolerance,
                     "softmax " + shape_str(c.shape) + " axis " + std::to_string(c.axis));
    }
}

FOVEA_TEST(cuda_add_concat_pad) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 200;
    for (const Shape & shape : {Shape{1, 1, 1, 1}, Shape{2, 3, 7, 13}}) {
        const Tensor a = random_tensor(shape, seed++), b = random_tensor(shape, seed++);
        for (Activation act : {Activation::None, Activation::Relu}) {
            expect_match(cuda.add(dev(a), dev(b), act), cpu_backend().add(a, b, act), kFp32Tolerance,
                         "add " + shape_str(shape));
        }
    }
    const std::vector<Tensor> parts{random_tensor({2, 3, 5, 7}, seed++), random_tensor({2, 1, 5, 7}, seed++),
                                    random_tensor({2, 0, 5, 7}, seed++), random_tensor({2, 6, 5, 7}, seed++)};
    std::vector<Tensor> dparts;
    for (const Tensor & t : parts) dparts.push_back(dev(t));
    expect_match(cuda.concat(dparts, 1), cpu_backend().concat(parts, 1), 0.0, "concat axis 1");
    const std::vector<Tensor> rows{random_tensor({1, 3, 5, 7}, seed++), random_tensor({3, 3, 5, 7}, seed++)};
    expect_match(cuda.concat({dev(rows[0]), dev(rows[1])}, 0), cpu_backend().concat(rows, 0), 0.0, "concat axis 0");
    const std::vector<Tensor> cols{random_tensor({2, 3, 5, 1}, seed++), random_tensor({2, 3, 5, 9}, seed++)};
    expect_match(cuda.concat({dev(cols[0]), dev(cols[1])}, -1), cpu_backend().concat(cols, -1), 0.0,
                 "concat last axis");
    const Tensor x = random_tensor({2, 3, 5, 7}, seed++);
    for (const Pad2dParams & p : {Pad2dParams{1, 2, 3, 4, PadMode::Constant, 0.5f}, Pad2dParams{2, 2, 2, 2, PadMode::Symmetric, 0},
                                  Pad2dParams{12, 15, 11, 16, PadMode::Symmetric, 0}, Pad2dParams{-1, -2, -1, -3, PadMode::Constant, 0},
                                  Pad2dParams{-2, 3, 1, -4, PadMode::Symmetric, 0}}) {
        std::ostringstream os;
        os << "pad2d " << p.top << "," << p.left << "," << p.bottom << "," << p.right << " mode " << int(p.mode);
        expect_match(cuda.pad2d(dev(x), p), cpu_backend().pad2d(x, p), 0.0, os.str());
    }
    const Tensor one = random_tensor({1, 1, 1, 1}, seed++);
    const Pad2dParams sym{3, 3, 3, 3, PadMode::Symmetric, 0};
    expect_match(cuda.pad2d(dev(one), sym), cpu_backend().pad2d(one, sym), 0.0, "pad2d 1x1 symmetric");
}

FOVEA_TEST(cuda_pooling) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 300;
    struct Case {
        Shape shape;
        Pool2dParams p;
    };
    std::vector<Case> cases;
    auto make = [](int k, int s, int pad, int dil, bool ceil, bool include) {
        Pool2dParams p;
        p.kernel_h = p.kernel_w = k;
        p.stride_h = p.stride_w = s;
        p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
        p.dilation_h = p.dilation_w = dil;
        p.ceil_mode = ceil;
        p.count_include_pad = include;
        return p;
    };
    cases.push_back({{1, 1, 1, 1}, make(1, 1, 0, 1, false, false)});
    cases.push_back({{2, 3, 13, 17}, make(3, 2, 1, 1, false, false)});
    cases.push_back({{2, 3, 13, 17}, make(3, 2, 1, 1, true, true)});
    cases.push_back({{2, 3, 13, 17}, make(3, 2, 1, 1, true, false)});
    cases.push_back({{1, 5, 8, 9}, make(2, 2, 0, 1, true, false)});
    cases.push_back({{1, 2, 4, 4}, make(4, 1, 3, 1, false, true)});
    Pool2dParams asym = make(3, 3, 0, 1, true, false);
    asym.kernel_w = 2;
    asym.stride_h = 1;
    asym.pad_left = 1;
    cases.push_back({{1, 4, 11, 10}, asym});
    for (const Case & c : cases) {
        const Tensor x = random_tensor(c.shape, seed++);
        const std::string what = shape_str(c.shape) + " k" + std::to_string(c.p.kernel_h) + " s" +
                                 std::to_string(c.p.stride_h) + (c.p.ceil_mode ? " ceil" : "") +
                                 (c.p.count_include_pad ? " include_pad" : "");
        expect_match(cuda.max_pool2d(dev(x), c.p), cpu_backend().max_pool2d(x, c.p), 0.0, "max_pool2d " + what);
        expect_match(cuda.avg_pool2d(dev(x), c.p), cpu_backend().avg_pool2d(x, c.p), kFp32Tolerance,
                     "avg_pool2d " + what);
    }
    // Dilation (max pool only), with every kernel row able to fall in the padding.
    const Tensor x = random_tensor({1, 3, 9, 11}, seed++);
    const Pool2dParams dil = make(3, 2, 2, 3, true, false);
    expect_match(cuda.max_pool2d(dev(x), dil), cpu_backend().max_pool2d(x, dil), 0.0, "max_pool2d dilated");
}

FOVEA_TEST(cuda_resize_and_upsample) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 400;
    struct Case {
        Shape shape;
        int64_t oh, ow;
        double sh, sw;
    };
    const std::vector<Case> cases{{{1, 1, 1, 1}, 5, 7, 0, 0},   {{2, 3, 7, 9}, 1, 1, 0, 0},
                                  {{1, 2, 13, 17}, 29, 7, 0, 0}, {{1, 3, 10, 12}, 20, 24, 0, 0},
                                  {{1, 2, 5, 6}, 12, 9, 2.5, 1.6}, {{1, 1, 8, 8}, 3, 5, 0.4, 0.7}};
    for (const Case & c : cases) {
        const Tensor x = random_tensor(c.shape, seed++);
        for (ResizeCoord coord : {ResizeCoord::AlignCorners, ResizeCoord::HalfPixel, ResizeCoord::PytorchHalfPixel,
                                  ResizeCoord::Asymmetric}) {
            ResizeParams p;
            p.out_h = c.oh;
            p.out_w = c.ow;
            p.coord = coord;
            p.scale_h = c.sh;
            p.scale_w = c.sw;
            expect_match(cuda.resize_bilinear(dev(x), p), cpu_backend().resize_bilinear(x, p), kFp32Tolerance,
                         "resize_bilinear " + shape_str(c.shape) + " -> " + std::to_string(c.oh) + "x" +
                             std::to_string(c.ow) + " mode " + std::to_string(int(coord)));
        }
    }
    struct Scale {
        Shape shape;
        int64_t oh, ow;
    };
    for (const Scale & c : {Scale{{1, 1, 1, 1}, 4, 3}, Scale{{1, 3, 17, 23}, 17, 23}, Scale{{2, 3, 17, 23}, 40, 9},
                            Scale{{1, 2, 100, 61}, 7, 160}, Scale{{1, 1, 64, 64}, 224, 224}, Scale{{1, 1, 5, 1}, 1, 6}}) {
        const Tensor x = random_tensor(c.shape, seed++);
        expect_match(cuda.image_scale(dev(x), c.oh, c.ow), cpu_backend().image_scale(x, c.oh, c.ow), kFp32Tolerance,
                     "image_scale " + shape_str(c.shape) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow));
    }
    for (int factor : {1, 2, 3}) {
        const Tensor x = random_tensor({2, 3, 5, 7}, seed++);
        expect_match(cuda.upsample_nearest(dev(x), factor), cpu_backend().upsample_nearest(x, factor), 0.0,
                     "upsample_nearest x" + std::to_string(factor));
    }
}

FOVEA_TEST(cuda_batch_norm) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 500;
    for (const Shape & shape : {Shape{3, 5}, Shape{2, 7, 3, 9}, Shape{1, 1, 1, 1}}) {
        const int64_t c = shape[1];
        const Tensor x = random_tensor(shape, seed++), s = random_tensor({c}, seed++), b = random_tensor({c}, seed++);
        const Tensor m = random_tensor({c}, seed++), v = random_tensor({c}, seed++, 0.1f, 2.0f);
        expect_match(cuda.batch_norm(dev(x), dev(s), dev(b), dev(m), dev(v), 1e-5f),
                     cpu_backend().batch_norm(x, s, b, m, v, 1e-5f), kFp32Tolerance, "batch_norm " + shape_str(shape));
    }
}

FOVEA_TEST(cuda_roi_pooling) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 600;
    const Tensor x = random_tensor({2, 5, 13, 19}, seed++);
    const Tensor negative = random_tensor({2, 5, 13, 19}, seed++, -2.0f, -1.0f);
    // ROIs inside, across the border, degenerate, and far outside.
    const std::vector<float> boxes{0, 0, 0, 18, 12,     1, 3.2f, 1.7f, 9.9f, 6.1f, 0, -4, -3, 5, 4,
                                   1, 10, 10, 10, 10,   0, 30, 20, 40, 25,       1, 17.5f, 2, 40, 11.5f};
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(6)}) {
        std::vector<float> r5(boxes.begin(), boxes.begin() + k * 5);
        const Tensor rois = Tensor::from_vector({k, 5}, r5);
        for (bool round_bins : {false, true}) {
            for (float scale : {1.0f, 0.5f}) {
                RoiPoolParams p;
                p.out_h = 3;
                p.out_w = 7;
                p.spatial_scale = scale;
                p.round_bins = round_bins;
                expect_match(cuda.roi_max_pool(dev(x), dev(rois), p), cpu_backend().roi_max_pool(x, rois, p), 0.0,
                             "roi_max_pool K=" + std::to_string(k) + (round_bins ? " round" : " floor/ceil"));
            }
        }
        std::vector<float> r4;
        Tensor idx64 = Tensor::empty({k}, DType::I64), idx32 = Tensor::empty({k}, DType::I32);
        for (int64_t i = 0; i < k; i++) {
            for (int j = 1; j < 5; j++) r4.push_back(boxes[size_t(i * 5 + j)]);
            idx64.data<int64_t>()[i] = int64_t(boxes[size_t(i * 5)]);
            idx32.data<int32_t>()[i] = int32_t(boxes[size_t(i * 5)]);
        }
        const Tensor rois4 = Tensor::from_vector({k, 4}, r4);
        for (bool aligned : {false, true}) {
            for (bool max_mode : {false, true}) {
                for (int ratio : {0, 2}) {
                    RoiAlignParams p;
                    p.out_h = 4;
                    p.out_w = 3;
                    p.spatial_scale = 0.5f;
                    p.sampling_ratio = ratio;
                    p.aligned = aligned;
                    p.max_mode = max_mode;
                    const std::string what = "roi_align K=" + std::to_string(k) + (aligned ? " aligned" : "") +
                                             (max_mode ? " max" : " avg") + " ratio " + std::to_string(ratio);
                    const Tensor want = cpu_backend().roi_align(x, rois4, idx64, p);
                    expect_match(cuda.roi_align(dev(x), dev(rois4), dev(idx64), p), want, kFp32Tolerance, what);
                    expect_match(cuda.roi_align(dev(x), dev(rois4), dev(idx32), p), want, kFp32Tolerance,
                                 what + " int32");
                    // All values negative: a dropped sample (0) then wins the max.
                    expect_match(cuda.roi_align(dev(negative), dev(rois4), dev(idx64), p),
                                 cpu_backend().roi_align(negative, rois4, idx64, p), kFp32Tolerance,
                                 what + " negative input");
                }
            }
        }
    }
}

FOVEA_TEST(cuda_nms) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 700;
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(200)}) {
        // Clustered boxes (many overlaps), either corner order, some repeated
        // scores (ties keep index order).
        const Tensor c = random_tensor({n, 4}, seed++, 0.0f, 50.0f);
        Tensor boxes = Tensor::empty({n, 4});
        for (int64_t i = 0; i < n; i++) {
            const float * ci = c.f32() + i * 4;
            float * b = boxes.f32() + i * 4;
            b[0] = ci[0];
            b[1] = ci[1];
            b[2] = ci[0] + (i % 3 == 0 ? -1.0f : 1.0f) * (5 + ci[2]);
            b[3] = ci[1] + 5 + ci[3];
        }
        Tensor scores = random_tensor({n}, seed++, 0.0f, 1.0f);
        for (int64_t i = 1; i < n; i += 5) scores.f32()[i] = scores.f32()[i - 1];
        for (float offset : {0.0f, 1.0f}) {
            for (bool center : {false, true}) {
                for (int64_t max_output : {int64_t(-1), int64_t(0), int64_t(5)}) {
                    NmsParams p;
                    p.iou_threshold = 0.3f;
                    p.pixel_offset = offset;
                    p.center_point_box = center;
                    p.max_output = max_output;
                    p.score_threshold = n > 7 ? 0.2f : -1e30f;
                    const std::vector<int64_t> want = cpu_backend().nms(boxes, scores, p);
                    const std::vector<int64_t> got = cuda.nms(dev(boxes), dev(scores), p);
                    if (got != want) {
                        std::ostringstream os;
                        os << "nms n=" << n << " offset " << offset << " center " << center << " max " << max_output
                           << ": kept " << got.size() << " boxes, the CPU " << want.size();
                        throw test::Failure(os.str());
                    }
                }
            }
        }
    }
}

#ifdef FOVEA_HAVE_CUDA

FOVEA_TEST(cuda_conv2d) {
    Backend & cuda = cuda_or_skip();
    struct Case {
        Shape x, w;
        Conv2dParams p;
        bool bias;
    };
    Conv2dParams asym = test::conv_params(1, 0, 1, 1, Activation::None);
    asym.stride_w = 2;
    asym.pad_top = 2;
    asym.pad_right = 1;
    const std::vector<Case> cases{
        {{1, 1, 1, 1}, {1, 1, 1, 1}, test::conv_params(1, 0, 1, 1, Activation::None), false},
        {{1, 3, 1, 1}, {5, 3, 3, 3}, test::conv_params(1, 1, 1, 1, Activation::Relu), true},
        {{2, 3, 13, 17}, {7, 3, 3, 3}, test::conv_params(1, 1, 1, 1, Activation::Relu), true},
        {{1, 19, 9, 11}, {33, 19, 1, 1}, test::conv_params(1, 0, 1, 1, Activation::None), true},
        {{1, 8, 15, 15}, {16, 8, 3, 3}, test::conv_params(2, 1, 1, 1, Activation::Sigmoid), true},
        {{1, 6, 12, 10}, {4, 6, 3, 3}, test::conv_params(1, 2, 2, 1, Activation::None), false},
        {{2, 8, 9, 7}, {6, 4, 3, 3}, test::conv_params(1, 1, 1, 2, Activation::Relu), true},
        {{1, 12, 10, 9}, {12, 1, 3, 3}, test::conv_params(1, 1, 1, 12, Activation::None), true},
        {{1, 64, 20, 23}, {70, 64, 3, 3}, test::conv_params(1, 1, 1, 1, Activation::Relu), true},
        {{1, 3, 31, 29}, {16, 3, 7, 7}, test::conv_params(2, 3, 1, 1, Activation::None), true},
        {{1, 5, 8, 9}, {3, 5, 2, 3}, asym, true},
        // 1x1 convolutions taken as plain products (stride 1, no padding), with
        // groups and batches; at stride 2 they stay windows.
        {{2, 8, 5, 6}, {6, 4, 1, 1}, test::conv_params(1, 0, 1, 2, Activation::Relu), true},
        {{1, 4, 7, 7}, {3, 4, 1, 1}, test::conv_params(2, 0, 1, 1, Activation::None), true},
        // Split K (few C tiles, deep K; the emulator has 4 SMs): over batches
        // and groups, and 85 K steps, the last one partial.
        {{2, 64, 7, 6}, {20, 32, 3, 3}, test::conv_params(1, 1, 1, 2, Activation::Relu), true},
        {{1, 300, 5, 5}, {10, 300, 3, 3}, test::conv_params(1, 1, 1, 1, Activation::Sigmoid), true},
    };
    uint64_t seed = 800;
    for (const auto & [precision, tol] : precisions()) {
        PrecisionScope scope(precision);
        for (const Case & c : cases) {
            const Tensor x = random_tensor(c.x, seed++), w = random_tensor(c.w, seed++);
            const Tensor b = c.bias ? random_tensor({c.w[0]}, seed++) : Tensor();
            const Tensor want = cpu_backend().conv2d(x, w, b, c.p);
            const Tensor got = cuda.conv2d(dev(x), dev(w), c.bias ? dev(b) : Tensor(), c.p);
            expect_match(got, want, tol,
                         std::string("conv2d ") + cuda::precision_name(precision) + " x" + shape_str(c.x) + " w" +
                             shape_str(c.w) + " groups " + std::to_string(c.p.groups));
        }
    }
}

FOVEA_TEST(cuda_gemm_and_linear) {
    Backend & cuda = cuda_or_skip();
    uint64_t seed = 900;
    for (const auto & [precision, tol] : precisions()) {
        PrecisionScope scope(precision);
        struct Case {
            int64_t m, n, k;
            bool ta, tb;
            Shape c;
            float alpha, beta;
            Activation act;
        };
        const std::vector<Case> cases{
            {1, 1, 1, false, false, {}, 1.0f, 0.0f, Activation::None},
            {37, 29, 70, false, false, {29}, 1.0f, 1.0f, Activation::Relu},
            {37, 29, 70, true, false, {37, 1}, 0.5f, 2.0f, Activation::None},
            {37, 29, 70, false, true, {37, 29}, 1.0f, -1.0f, Activation::Sigmoid},
            {65, 130, 17, true, true, {1, 130}, 1.5f, 1.0f, Activation::None},
            {5, 3, 0, false, false, {3}, 1.0f, 1.0f, Activation::None},
            {128, 64, 256, false, false, {}, 1.0f, 0.0f, Activation::None},
            // Split K with alpha, the added C and an activation in the reduction.
            {3, 5, 1000, false, false, {3, 5}, 0.5f, 1.0f, Activation::Relu},
            {7, 9, 700, true, true, {9}, 1.0f, 1.0f, Activation::None},
        };
        for (const Case & c : cases) {
            const Tensor a = random_tensor(c.ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, seed++);
            const Tensor b = random_tensor(c.tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, seed++);
            const Tensor cc = c.c.empty() ? Tensor() : random_tensor(c.c, seed++);
            GemmParams p;
            p.trans_a = c.ta;
            p.trans_b = c.tb;
            p.alpha = c.alpha;
            p.beta = c.beta;
            p.activation = c.act;
            expect_match(cuda.gemm(dev(a), dev(b), cc.defined() ? dev(cc) : Tensor(), p),
                         cpu_backend().gemm(a, b, cc, p), tol,
                         std::string("gemm ") + cuda::precision_name(precision) + " " + std::to_string(c.m) + "x" +
                             std::to_string(c.n) + "x" + std::to_string(c.k));
        }
        // beta == 0: C is not read, so NaN in it must not leak.
        const Tensor a = random_tensor({4, 5}, seed++), b = random_tensor({5, 6}, seed++);
        GemmParams p;
        p.beta = 0.0f;
        const Tensor nan_c = Tensor::full({4, 6}, std::numeric_limits<float>::quiet_NaN());
        expect_match(cuda.gemm(dev(a), dev(b), dev(nan_c), p), cpu_backend().gemm(a, b, nan_c, p), tol,
                     "gemm beta 0 ignores C");
        for (int64_t batch : {int64_t(1), int64_t(3), int64_t(67)}) {
            const Tensor x = random_tensor({batch, 300}, seed++), w = random_tensor({91, 300}, seed++);
            const Tensor bias = random_tensor({91}, seed++);
            for (Activation act : {Activation::None, Activation::Relu}) {
                expect_match(cuda.linear(dev(x), dev(w), dev(bias), act), cpu_backend().linear(x, w, bias, act), tol,
                             std::string("linear ") + cuda::precision_name(precision) + " batch " + std::to_string(batch));
            }
            expect_match(cuda.linear(dev(x), dev(w), Tensor(), Activation::None),
                         cpu_backend().linear(x, w, Tensor(), Activation::None), tol, "linear without bias");
        }
    }
}

FOVEA_TEST(cuda_precision_setting) {
    cuda_or_skip();
    const cuda::Precision saved = cuda::precision(0);
    cuda::set_precision(0, cuda::Precision::FP32);
    EXPECT_TRUE(cuda::precision(0) == cuda::Precision::FP32);
    if (cuda_status().devices[0].compute_major >= 8) {
        cuda::set_precision(0, cuda::Precision::TF32);
        EXPECT_TRUE(cuda::precision(0) == cuda::Precision::TF32);
    } else {
        EXPECT_THROWS_CODE(cuda::set_precision(0, cuda::Precision::TF32), ErrorCode::Options);
    }
    cuda::set_precision(0, saved);
}

FOVEA_TEST(cuda_out_of_memory_then_usable) {
    Backend & cuda = cuda_or_skip();
    cuda::DeviceAllocator & alloc = cuda::allocator(0);
    // 16 TiB: within the allocator's size limit, beyond any GPU.
    EXPECT_THROWS_CODE(alloc.empty({int64_t(1) << 42}), ErrorCode::OutOfMemory);
    // Past the size limit: refused before asking the driver.
    EXPECT_THROWS_CODE(alloc.empty({int64_t(1) << 50}), ErrorCode::OutOfMemory);
    const Tensor x = random_tensor({2, 3, 5, 7}, 1000);
    expect_match(cuda.relu(dev(x)), cpu_backend().relu(x), 0.0, "relu after out of memory");
    cuda::synchronize(0);
}

FOVEA_TEST(cuda_memory_returns_to_baseline) {
    Backend & cuda = cuda_or_skip();
    cuda::DeviceAllocator & alloc = cuda::allocator(0);
    cuda::synchronize(0);
    const cuda::DeviceAllocatorStats before = alloc.stats();
    auto round = [&] {
        const Tensor x = random_tensor({1, 8, 33, 41}, 1100), w = random_tensor({16, 8, 3, 3}, 1101);
        Conv2dParams p;
        p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 1;
        p.activation = Activation::Relu;
        Tensor y = cuda.conv2d(dev(x), dev(w), Tensor(), p);
        Pool2dParams pp;
        pp.kernel_h = pp.kernel_w = pp.stride_h = pp.stride_w = 2;
        y = cuda.max_pool2d(y, pp);
        y = cuda.image_scale(y, 40, 30);
        return to_host(cuda.softmax(y, 1));
    };
    const Tensor first = round();
    const cuda::DeviceAllocatorStats mid = alloc.stats();
    EXPECT_EQ(mid.bytes_in_use, before.bytes_in_use);
    EXPECT_TRUE(mid.peak_bytes_in_use > before.bytes_in_use);
    const Tensor second = round();
    const cuda::DeviceAllocatorStats after = alloc.stats();
    EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
    // The same work again is served from the cache: no cudaMalloc.
    EXPECT_EQ(after.device_mallocs, mid.device_mallocs);
    EXPECT_TRUE(after.cache_hits > mid.cache_hits);
    expect_match(second, first, 0.0, "same result from recycled blocks");
    alloc.empty_cache();
    EXPECT_EQ(alloc.stats().bytes_cached, size_t(0));
}

#else

FOVEA_TEST(cuda_kernels_not_compiled) {
    throw test::Skip("this build has no CUDA backend (" + cuda_status().reason + ")");
}

#endif  // FOVEA_HAVE_CUDA
