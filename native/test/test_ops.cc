// Tests of the CPU reference implementations of the non-convolution ops:
// hand-computed answers, the published ONNX node-test answers where they are
// small enough to quote, direct (slow, obviously correct) re-implementations
// on random inputs, every ISA path against the scalar one, and bad input.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

#include "core/cpu_features.h"
#include "cpu/ops.h"
#include "test/harness.h"

using namespace fovea;
using fovea::test::Failure;
using fovea::test::random_tensor;

namespace {

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Restores the ISA a test found, whatever happens inside it.
struct IsaGuard {
    CpuIsa saved = cpu_isa();
    ~IsaGuard() { set_cpu_isa(saved); }
};

const CpuIsa kAllIsas[] = {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512};

Tensor arange(const Shape & shape, float start = 0.0f) {
    Tensor t = Tensor::empty(shape);
    for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = start + float(i);
    return t;
}

// Element-wise |a - e| <= tol * max(1, |e|); NaN must meet NaN.
void expect_close_at(const Tensor & actual, const Tensor & expected, double tol, int line) {
    if (actual.shape() != expected.shape()) {
        throw Failure("line " + std::to_string(line) + ": shape " + shape_str(actual.shape()) + " vs expected " +
                      shape_str(expected.shape()));
    }
    for (int64_t i = 0; i < actual.numel(); i++) {
        double a = actual.f32()[i], e = expected.f32()[i];
        bool ok = std::isnan(e) ? std::isnan(a) : a == e || std::fabs(a - e) <= tol * std::max(1.0, std::fabs(e));
        if (!ok) {
            std::ostringstream os;
            os << "line " << line << ": element " << i << " of " << shape_str(actual.shape()) << " is " << a
               << ", expected " << e;
            throw Failure(os.str());
        }
    }
}
#define EXPECT_CLOSE(actual, expected, tol) expect_close_at((actual), (expected), (tol), __LINE__)
#define EXPECT_SHAPE(t, ...) EXPECT_EQ(shape_str((t).shape()), shape_str(Shape(__VA_ARGS__)))
#define EXPECT_VALUES(actual, shape, tol, ...) \
    expect_close_at((actual), Tensor::from_vector(shape, __VA_ARGS__), (tol), __LINE__)

// Runs op on every ISA path and checks each result against the scalar one.
template <class F> void expect_isas_agree_at(F op, double tol, int line) {
    IsaGuard guard;
    set_cpu_isa(CpuIsa::Scalar);
    Tensor ref = op();
    for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Avx512}) {
        set_cpu_isa(isa);
        Tensor got = op();
        try {
            expect_close_at(got, ref, tol, line);
        } catch (const Failure & f) {
            throw Failure(std::string(cpu_isa_name(cpu_isa())) + " vs scalar: " + f.what());
        }
    }
}
#define EXPECT_ISAS_AGREE(op, tol) expect_isas_agree_at((op), (tol), __LINE__)

// ---------------------------------------------------------------------------
// Direct re-implementations used as references on random inputs.

Tensor naive_pool(const Tensor & x, const Pool2dParams & p, bool is_max, const Shape & out_shape) {
    Tensor y = Tensor::empty(out_shape);
    int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), oh = out_shape[2], ow = out_shape[3];
    for (int64_t pl = 0; pl < n * c; pl++) {
        for (int64_t oy = 0; oy < oh; oy++) {
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
                double m = -INFINITY, sum = 0;
                int64_t count = 0;
                for (int ki = 0; ki < p.kernel_h; ki++) {
                    for (int kj = 0; kj < p.kernel_w; kj++) {
                        int64_t iy = y0 + ki * p.dilation_h, ix = x0 + kj * p.dilation_w;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        double v = x.f32()[(pl * h + iy) * w + ix];
                        m = std::max(m, v);
                        sum += v;
                        count++;
                    }
                }
                double div = count;
                if (p.count_include_pad) {
                    div = double(std::min(y0 + p.kernel_h, h + p.pad_bottom) - y0) *
                          double(std::min(x0 + p.kernel_w, w + p.pad_right) - x0);
                }
                y.f32()[(pl * oh + oy) * ow + ox] = float(is_max ? m : sum / div);
            }
        }
    }
    return y;
}

// ONNX Runtime's UpsampleBilinear formula, in double.
Tensor naive_resize(const Tensor & x, int64_t oh, int64_t ow, ResizeCoord mode, double sh, double sw) {
    auto coord = [&](int64_t o, int64_t in, int64_t out, double s) {
        double len = s > 0 ? in * s : double(out);
        if (s == 0) s = double(out) / in;
        double c = 0;
        switch (mode) {
            case ResizeCoord::AlignCorners: c = len == 1 ? 0 : o * double(in - 1) / (len - 1); break;
            case ResizeCoord::HalfPixel: c = (o + 0.5) / s - 0.5; break;
            case ResizeCoord::PytorchHalfPixel: c = len == 1 ? 0 : (o + 0.5) / s - 0.5; break;
            case ResizeCoord::Asymmetric: c = o / s; break;
        }
        return std::clamp(c, 0.0, double(in - 1));
    };
    int64_t h = x.dim(2), w = x.dim(3);
    Tensor y = Tensor::empty({x.dim(0), x.dim(1), oh, ow});
    for (int64_t pl = 0; pl < x.dim(0) * x.dim(1); pl++) {
        const float * in = x.f32() + pl * h * w;
        for (int64_t oy = 0; oy < oh; oy++) {
            double cy = coord(oy, h, oh, sh);
            int64_t y1 = int64_t(cy), y2 = std::min(y1 + 1, h - 1);
            double dy = cy - y1;
            for (int64_t ox = 0; ox < ow; ox++) {
                double cx = coord(ox, w, ow, sw);
                int64_t x1 = int64_t(cx), x2 = std::min(x1 + 1, w - 1);
                double dx = cx - x1;
                double v = (1 - dy) * ((1 - dx) * in[y1 * w + x1] + dx * in[y1 * w + x2]) +
                           dy * ((1 - dx) * in[y2 * w + x1] + dx * in[y2 * w + x2]);
                y.f32()[(pl * oh + oy) * ow + ox] = float(v);
            }
        }
    }
    return y;
}

Tensor naive_softmax(const Tensor & x, int axis) {
    int ax = axis < 0 ? axis + x.ndim() : axis;
    int64_t outer = 1, inner = 1, len = x.dim(ax);
    for (int d = 0; d < ax; d++) outer *= x.dim(d);
    for (int d = ax + 1; d < x.ndim(); d++) inner *= x.dim(d);
    Tensor y = Tensor::empty(x.shape());
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float * xp = x.f32() + o * len * inner + i;
            double m = -INFINITY, sum = 0;
            for (int64_t a = 0; a < len; a++) m = std::max(m, double(xp[a * inner]));
            for (int64_t a = 0; a < len; a++) sum += std::exp(xp[a * inner] - m);
            for (int64_t a = 0; a < len; a++) {
                y.f32()[o * len * inner + i + a * inner] = float(std::exp(xp[a * inner] - m) / sum);
            }
        }
    }
    return y;
}

// Per output element, as the Caffe / imagine-nn v2 kernels do it (0-based ROIs).
Tensor naive_roi_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) {
    int64_t k = rois.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    Tensor y = Tensor::empty({k, c, p.out_h, p.out_w});
    for (int64_t r = 0; r < k; r++) {
        const float * roi = rois.f32() + r * 5;
        int b = int(roi[0]);
        int sw = int(std::round(roi[1] * p.spatial_scale)), sh = int(std::round(roi[2] * p.spatial_scale));
        int ew = int(std::round(roi[3] * p.spatial_scale)) - p.round_bins;
        int eh = int(std::round(roi[4] * p.spatial_scale)) - p.round_bins;
        float bh = float(std::max(eh - sh + 1, 1)) / float(p.out_h);
        float bw = float(std::max(ew - sw + 1, 1)) / float(p.out_w);
        for (int64_t ch = 0; ch < c; ch++) {
            for (int ph = 0; ph < p.out_h; ph++) {
                for (int pw = 0; pw < p.out_w; pw++) {
                    auto lo = [&](float v) { return int(p.round_bins ? std::round(v) : std::floor(v)); };
                    auto hi = [&](float v) { return int(p.round_bins ? std::round(v) : std::ceil(v)); };
                    int hs = std::min(std::max(lo(float(ph) * bh) + sh, 0), int(h));
                    int he = std::min(std::max(hi(float(ph + 1) * bh) + sh, 0), int(h));
                    int ws = std::min(std::max(lo(float(pw) * bw) + sw, 0), int(w));
                    int we = std::min(std::max(hi(float(pw + 1) * bw) + sw, 0), int(w));
                    bool empty = he <= hs || we <= ws;
                    float m = empty ? 0 : -FLT_MAX;
                    for (int iy = hs; iy < he; iy++) {
                        for (int ix = ws; ix < we; ix++) m = std::max(m, x.f32()[((b * c + ch) * h + iy) * w + ix]);
                    }
                    y.f32()[((r * c + ch) * p.out_h + ph) * p.out_w + pw] = m;
                }
            }
        }
    }
    return y;
}

// A port of the ONNX reference RoiAlign (onnx/reference/ops/op_roi_align.py)
// in float32: every sample, out-of-range ones included as zero weights.
Tensor naive_roi_align(const Tensor & x, const Tensor & rois, const std::vector<int64_t> & batch,
                       const RoiAlignParams & p) {
    int64_t k = rois.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    Tensor y = Tensor::empty({k, c, p.out_h, p.out_w});
    for (int64_t r = 0; r < k; r++) {
        const float * roi = rois.f32() + r * 4;
        float off = p.aligned ? 0.5f : 0.0f;
        float sw = roi[0] * p.spatial_scale - off, sh = roi[1] * p.spatial_scale - off;
        float rw = roi[2] * p.spatial_scale - off - sw, rh = roi[3] * p.spatial_scale - off - sh;
        if (!p.aligned) {
            rw = std::max(rw, 1.0f);
            rh = std::max(rh, 1.0f);
        }
        float bh = rh / float(p.out_h), bw = rw / float(p.out_w);
        int gh = p.sampling_ratio > 0 ? p.sampling_ratio : int(std::ceil(rh / float(p.out_h)));
        int gw = p.sampling_ratio > 0 ? p.sampling_ratio : int(std::ceil(rw / float(p.out_w)));
        float count = float(std::max(gh * gw, 1));
        for (int64_t ch = 0; ch < c; ch++) {
            const float * d = x.f32() + (batch[size_t(r)] * c + ch) * h * w;
            for (int ph = 0; ph < p.out_h; ph++) {
                for (int pw = 0; pw < p.out_w; pw++) {
                    float out = 0;
                    bool first = true;
                    for (int iy = 0; iy < gh; iy++) {
                        float yy = sh + float(ph) * bh + (float(iy) + 0.5f) * bh / float(gh);
                        for (int ix = 0; ix < gw; ix++) {
                            float xx = sw + float(pw) * bw + (float(ix) + 0.5f) * bw / float(gw);
                            int64_t p1 = 0, p2 = 0, p3 = 0, p4 = 0;
                            float w1 = 0, w2 = 0, w3 = 0, w4 = 0;
                            if (!(yy < -1.0f || yy > float(h) || xx < -1.0f || xx > float(w))) {
                                float sy = std::max(yy, 0.0f), sx = std::max(xx, 0.0f);
                                int64_t yl = int64_t(sy), xl = int64_t(sx), yh, xh;
                                if (yl >= h - 1) {
                                    yh = yl = h - 1;
                                    sy = float(yl);
                                } else {
                                    yh = yl + 1;
                                }
                                if (xl >= w - 1) {
                                    xh = xl = w - 1;
                                    sx = float(xl);
                                } else {
                                    xh = xl + 1;
                                }
                                float ly = sy - float(yl), lx = sx - float(xl), hy = 1 - ly, hx = 1 - lx;
                                w1 = hy * hx, w2 = hy * lx, w3 = ly * hx, w4 = ly * lx;
                                p1 = yl * w + xl, p2 = yl * w + xh, p3 = yh * w + xl, p4 = yh * w + xh;
                            }
                            if (!p.max_mode) {
                                out += w1 * d[p1] + w2 * d[p2] + w3 * d[p3] + w4 * d[p4];
                            } else {
                                float v = std::max(std::max(std::max(w1 * d[p1], w2 * d[p2]), w3 * d[p3]), w4 * d[p4]);
                                out = first ? v : std::max(out, v);
                                first = false;
                            }
                        }
                    }
                    y.f32()[((r * c + ch) * p.out_h + ph) * p.out_w + pw] = p.max_mode ? out : out / count;
                }
            }
        }
    }
    return y;
}

Tensor int_tensor(const std::vector<int64_t> & v, DType dtype) {
    Tensor t = Tensor::empty({int64_t(v.size())}, dtype);
    for (size_t i = 0; i < v.size(); i++) {
        if (dtype == DType::I64) t.data<int64_t>()[i] = v[i];
        else t.data<int32_t>()[i] = int32_t(v[i]);
    }
    return t;
}

Pool2dParams pool_params(int k, int s, int pad = 0) {
    Pool2dParams p;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = s;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
    return p;
}

}  // namespace

// ---------------------------------------------------------------------------
// Activations

FOVEA_TEST(ops_relu_known_and_isas) {
    Tensor x = Tensor::from_vector({6}, {-2.0f, -0.0f, 0.0f, 3.5f, -kInf, kInf});
    EXPECT_VALUES(cpu::relu(x), {6}, 0, {0, 0, 0, 3.5f, 0, kInf});
    Tensor nan = Tensor::from_vector({1}, {kNaN});
    EXPECT_TRUE(std::isnan(cpu::relu(nan).f32()[0]));  // NaN passes through, as in PyTorch
    for (int64_t n : {1, 15, 16, 17, 1000, 100003}) {
        Tensor r = random_tensor({n}, uint64_t(n), -3, 3);
        EXPECT_ISAS_AGREE([&] { return cpu::relu(r); }, 0);
    }
    EXPECT_EQ(cpu::relu(Tensor::empty({0, 3})).numel(), 0);
    EXPECT_THROWS_CODE(cpu::relu(Tensor()), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::relu(Tensor::empty({2}, DType::I32)), ErrorCode::Input);
}

FOVEA_TEST(ops_sigmoid_accuracy_every_isa) {
    // A dense sweep over [-110, 110], into the subnormal range on the left.
    std::vector<float> xs;
    for (float v = -110.0f; v <= 110.0f; v += 0.0137f) xs.push_back(v);
    for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 87.0f, -87.0f, 88.8f, -103.9f, -104.1f, -200.0f}) xs.push_back(v);
    Tensor x = Tensor::from_vector({int64_t(xs.size())}, xs);
    IsaGuard guard;
    for (CpuIsa isa : kAllIsas) {
        set_cpu_isa(isa);
        Tensor y = cpu::sigmoid(x);
        for (size_t i = 0; i < xs.size(); i++) {
            double want = 1.0 / (1.0 + std::exp(-double(xs[i])));
            double got = y.f32()[i];
            // Relative 1e-6 for normal results; subnormals keep fewer digits.
            double tol = want >= 1.1754944e-38 ? 1e-6 * want : 1.5e-45;
            if (!(std::fabs(got - want) <= tol)) {
                std::ostringstream os;
                os << cpu_isa_name(isa) << ": sigmoid(" << xs[i] << ") = " << got << ", expected " << want;
                throw Failure(os.str());
            }
        }
    }
    Tensor special = Tensor::from_vector({3}, {kInf, -kInf, kNaN});
    for (CpuIsa isa : kAllIsas) {
        set_cpu_isa(isa);
        Tensor y = cpu::sigmoid(special);
        EXPECT_EQ(y.f32()[0], 1.0f);
        EXPECT_EQ(y.f32()[1], 0.0f);
        EXPECT_TRUE(std::isnan(y.f32()[2]));
    }
    Tensor big = random_tensor({2, 3, 37, 41}, 7, -20, 20);
    EXPECT_ISAS_AGREE([&] { return cpu::sigmoid(big); }, 1e-6);
}

FOVEA_TEST(ops_softmax_known) {
    Tensor x = Tensor::from_vector({2, 3}, {1, 2, 3, 1000, 1001, 1002});
    // Large logits must not overflow: the max is subtracted first.
    EXPECT_VALUES(cpu::softmax(x, 1), Shape({2, 3}), 1e-6,
                  {0.09003057f, 0.24472847f, 0.66524096f, 0.09003057f, 0.24472847f, 0.66524096f});
    EXPECT_VALUES(cpu::softmax(x, 0), Shape({2, 3}), 1e-6, {0, 0, 0, 1, 1, 1});
    EXPECT_VALUES(cpu::softmax(Tensor::from_vector({1, 3}, {-kInf, 0, -kInf}), -1), Shape({1, 3}), 0, {0, 1, 0});
    EXPECT_VALUES(cpu::softmax(Tensor::from_vector({1}, {-5}), 0), {1}, 0, {1});
    // A NaN poisons its own row only.
    Tensor y = cpu::softmax(Tensor::from_vector({2, 2}, {kNaN, 1, 0, 0}), 1);
    EXPECT_TRUE(std::isnan(y.f32()[0]) && std::isnan(y.f32()[1]));
    EXPECT_NEAR(y.f32()[2], 0.5, 1e-7);
    EXPECT_EQ(cpu::softmax(Tensor::empty({0, 5}), 1).numel(), 0);
    EXPECT_EQ(cpu::softmax(Tensor::empty({4, 0}), 1).numel(), 0);
    EXPECT_THROWS_CODE(cpu::softmax(x, 2), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::softmax(x, -3), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::softmax(Tensor::empty({2}, DType::I64), 0), ErrorCode::Input);
}

FOVEA_TEST(ops_softmax_every_axis_every_isa) {
    IsaGuard guard;
    const Shape shapes[] = {{2, 3, 5, 7}, {1, 81}, {3, 1000}, {2, 17, 300}, {1, 1, 1, 1}};
    for (const Shape & shape : shapes) {
        Tensor x = random_tensor(shape, 11, -30, 30);
        for (int axis = -1; axis < int(shape.size()); axis++) {
            Tensor want = naive_softmax(x, axis);
            for (CpuIsa isa : kAllIsas) {
                set_cpu_isa(isa);
                EXPECT_CLOSE(cpu::softmax(x, axis), want, 2e-6);
            }
            EXPECT_ISAS_AGREE([&] { return cpu::softmax(x, axis); }, 2e-6);
        }
    }
}

// ---------------------------------------------------------------------------
// concat, add, batch_norm

FOVEA_TEST(ops_concat_axes) {
    Tensor a = arange({2, 2, 2});
    Tensor b = arange({2, 1, 2}, 100);
    EXPECT_VALUES(cpu::concat({a, b}, 1), Shape({2, 3, 2}), 0, {0, 1, 2, 3, 100, 101, 4, 5, 6, 7, 102, 103});
    EXPECT_VALUES(cpu::concat({a, a}, 0), Shape({4, 2, 2}), 0, {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7});
    Tensor c = arange({2, 2, 1}, 50);
    EXPECT_VALUES(cpu::concat({a, c, Tensor::empty({2, 2, 0})}, -1), Shape({2, 2, 3}), 0,
                  {0, 1, 50, 2, 3, 51, 4, 5, 52, 6, 7, 53});
    EXPECT_VALUES(cpu::concat({a}, 2), Shape({2, 2, 2}), 0, {0, 1, 2, 3, 4, 5, 6, 7});
    // Many rows: the parallel path.
    Tensor big1 = random_tensor({300, 64, 5}, 1), big2 = random_tensor({300, 3, 5}, 2);
    Tensor cat = cpu::concat({big1, big2}, 1);
    EXPECT_EQ(cat.f32()[(299 * 67 + 66) * 5 + 4], big2.f32()[(299 * 3 + 2) * 5 + 4]);
    EXPECT_EQ(cat.f32()[(150 * 67 + 10) * 5 + 1], big1.f32()[(150 * 64 + 10) * 5 + 1]);
    EXPECT_EQ(cpu::concat({Tensor::empty({0, 3}), Tensor::empty({0, 2})}, 1).numel(), 0);
    EXPECT_THROWS_CODE(cpu::concat({}, 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::concat({a, b}, 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::concat({a, arange({2, 2})}, 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::concat({a, b}, 3), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::concat({a, Tensor::empty({2, 1, 2}, DType::I32)}, 1), ErrorCode::Input);
}

FOVEA_TEST(ops_add_and_fused_relu) {
    Tensor a = Tensor::from_vector({2, 2}, {1, -2, 3, -4});
    Tensor b = Tensor::from_vector({2, 2}, {0.5f, 1, -5, 2});
    EXPECT_VALUES(cpu::add(a, b, Activation::None), Shape({2, 2}), 0, {1.5f, -1, -2, -2});
    EXPECT_VALUES(cpu::add(a, b, Activation::Relu), Shape({2, 2}), 0, {1.5f, 0, 0, 0});
    for (int64_t n : {1, 17, 4099, 200001}) {
        Tensor x = random_tensor({n}, 3), y = random_tensor({n}, 4);
        EXPECT_ISAS_AGREE([&] { return cpu::add(x, y, Activation::Relu); }, 0);
        EXPECT_ISAS_AGREE([&] { return cpu::add(x, y, Activation::None); }, 0);
    }
    EXPECT_THROWS_CODE(cpu::add(a, Tensor::empty({4}), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::add(a, Tensor(), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::add(a, b, Activation::Sigmoid), ErrorCode::Options);
}

FOVEA_TEST(ops_batch_norm) {
    Tensor x = Tensor::from_vector({1, 2, 1, 2}, {1, 2, 3, 4});
    Tensor scale = Tensor::from_vector({2}, {1, 2}), bias = Tensor::from_vector({2}, {0, 1});
    Tensor mean = Tensor::from_vector({2}, {1, 3}), var = Tensor::from_vector({2}, {4, 1});
    EXPECT_VALUES(cpu::batch_norm(x, scale, bias, mean, var, 0), Shape({1, 2, 1, 2}), 1e-7, {0, 0.5f, 1, 3});
    // 2-D [N, C] (after a linear layer): one value per channel per row.
    EXPECT_VALUES(cpu::batch_norm(Tensor::from_vector({2, 2}, {1, 3, 2, 4}), scale, bias, mean, var, 0),
                  Shape({2, 2}), 1e-7, {0, 1, 0.5f, 3});
    Tensor big = random_tensor({2, 5, 13, 19}, 5);
    Tensor s5 = random_tensor({5}, 6), b5 = random_tensor({5}, 7), m5 = random_tensor({5}, 8);
    Tensor v5 = random_tensor({5}, 9, 0.1f, 2.0f);
    Tensor want = Tensor::empty(big.shape());
    for (int64_t i = 0; i < big.numel(); i++) {
        int64_t ch = (i / (13 * 19)) % 5;
        want.f32()[i] = float((big.f32()[i] - m5.f32()[ch]) / std::sqrt(double(v5.f32()[ch]) + 1e-5) * s5.f32()[ch] +
                              b5.f32()[ch]);
    }
    EXPECT_CLOSE(cpu::batch_norm(big, s5, b5, m5, v5, 1e-5f), want, 1e-6);
    EXPECT_ISAS_AGREE([&] { return cpu::batch_norm(big, s5, b5, m5, v5, 1e-5f); }, 1e-6);
    Tensor rows = random_tensor({3, 37}, 10);
    Tensor s37 = random_tensor({37}, 11), v37 = random_tensor({37}, 12, 0.5f, 1.0f);
    EXPECT_ISAS_AGREE([&] { return cpu::batch_norm(rows, s37, s37, s37, v37, 1e-3f); }, 1e-6);
    EXPECT_THROWS_CODE(cpu::batch_norm(x, scale, bias, mean, Tensor::from_vector({2}, {-1, 1}), 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::batch_norm(x, scale, bias, mean, Tensor::from_vector({2}, {0, 1}), 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::batch_norm(x, scale, bias, mean, Tensor::from_vector({3}, {1, 1, 1}), 0), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::batch_norm(x, scale, bias, mean, var, -1), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::batch_norm(Tensor::from_vector({2}, {1, 2}), scale, bias, mean, var, 0), ErrorCode::Input);
}

// ---------------------------------------------------------------------------
// Pooling

FOVEA_TEST(ops_max_pool_known) {
    Tensor x4 = arange({1, 1, 4, 4});
    EXPECT_VALUES(cpu::max_pool2d(x4, pool_params(2, 2)), Shape({1, 1, 2, 2}), 0, {5, 7, 13, 15});
    // ResNet stem: 3x3 stride 2 pad 1.
    Tensor x5 = arange({1, 1, 5, 5});
    EXPECT_VALUES(cpu::max_pool2d(x5, pool_params(3, 2, 1)), Shape({1, 1, 3, 3}), 0, {6, 8, 9, 16, 18, 19, 21, 23, 24});
    // Ceil mode keeps the partial last window (VGG pools converted from Caffe).
    Pool2dParams ceil = pool_params(2, 2);
    ceil.ceil_mode = true;
    EXPECT_VALUES(cpu::max_pool2d(x5, ceil), Shape({1, 1, 3, 3}), 0, {6, 8, 9, 16, 18, 19, 21, 23, 24});
    EXPECT_VALUES(cpu::max_pool2d(x5, pool_params(2, 2)), Shape({1, 1, 2, 2}), 0, {6, 8, 16, 18});
    // Asymmetric padding: one row on top, one column on the right.
    Pool2dParams asym = pool_params(2, 1);
    asym.pad_top = 1;
    asym.pad_right = 1;
    EXPECT_VALUES(cpu::max_pool2d(arange({1, 1, 3, 3}), asym), Shape({1, 1, 3, 3}), 0, {1, 2, 2, 4, 5, 5, 7, 8, 8});
    Pool2dParams dil = pool_params(2, 1);
    dil.dilation_h = dil.dilation_w = 2;
    EXPECT_VALUES(cpu::max_pool2d(x4, dil), Shape({1, 1, 2, 2}), 0, {10, 11, 14, 15});
    // NaN inputs are skipped (ONNX Runtime's comparison), -inf is a value.
    Tensor odd = Tensor::from_vector({1, 1, 1, 3}, {kNaN, -kInf, 2});
    EXPECT_VALUES(cpu::max_pool2d(odd, pool_params(1, 1)), Shape({1, 1, 1, 3}), 0, {-kInf, -kInf, 2});
    EXPECT_VALUES(cpu::max_pool2d(Tensor::from_vector({1, 1, 1, 1}, {-3}), pool_params(1, 1)), Shape({1, 1, 1, 1}), 0,
                  {-3});
}

FOVEA_TEST(ops_avg_pool_known) {
    Tensor x4 = arange({1, 1, 4, 4});
    EXPECT_VALUES(cpu::avg_pool2d(x4, pool_params(2, 2)), Shape({1, 1, 2, 2}), 0, {2.5f, 4.5f, 10.5f, 12.5f});
    // 3x3 stride 2 pad 1 ceil mode over 4x4: windows start at -1, 1, 3; the
    // last one runs past the padding. Padded cells count only when asked,
    // and never the part beyond the padding (PyTorch / Torch7 / cuDNN).
    Pool2dParams p = pool_params(3, 2, 1);
    p.ceil_mode = true;
    p.count_include_pad = true;
    Tensor inc = cpu::avg_pool2d(x4, p);
    EXPECT_SHAPE(inc, {1, 1, 3, 3});
    EXPECT_NEAR(inc.f32()[0], 10.0 / 9, 1e-6);  // (0 + 1 + 4 + 5) / 9
    EXPECT_NEAR(inc.f32()[2], 10.0 / 6, 1e-6);  // (3 + 7) / (3 rows * 2 cols)
    EXPECT_NEAR(inc.f32()[8], 15.0 / 4, 1e-6);  // 15 / (2 * 2)
    p.count_include_pad = false;
    Tensor exc = cpu::avg_pool2d(x4, p);
    EXPECT_VALUES(exc, Shape({1, 1, 3, 3}), 1e-6, {2.5f, 4, 5, 8.5f, 10, 11, 12.5f, 14, 15});
}

FOVEA_TEST(ops_pool_random_vs_naive_every_isa) {
    struct Cfg {
        int kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
        bool ceil;
    };
    const Cfg cfgs[] = {
        {2, 2, 2, 2, 0, 0, 0, 0, 1, 1, false}, {3, 3, 2, 2, 1, 1, 1, 1, 1, 1, false},
        {3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true},  {3, 3, 1, 1, 1, 1, 1, 1, 1, 1, false},
        {2, 3, 1, 3, 1, 0, 0, 2, 1, 1, true},  {3, 2, 3, 1, 0, 1, 2, 0, 2, 3, false},
        {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, false}, {7, 7, 1, 1, 0, 0, 0, 0, 1, 1, false},
        {3, 3, 3, 3, 2, 2, 2, 2, 2, 2, true},  {4, 4, 3, 3, 1, 2, 3, 0, 1, 1, true},
    };
    const Shape shapes[] = {{2, 3, 7, 9}, {1, 2, 16, 17}, {2, 1, 5, 33}, {1, 1, 8, 1}, {1, 4, 9, 64}};
    IsaGuard guard;
    int ran = 0;
    for (const Cfg & c : cfgs) {
        for (const Shape & shape : shapes) {
            Pool2dParams p;
            p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw;
            p.pad_top = c.pt, p.pad_left = c.pl, p.pad_bottom = c.pb, p.pad_right = c.pr;
            p.dilation_h = c.dh, p.dilation_w = c.dw, p.ceil_mode = c.ceil;
            Tensor x = random_tensor(shape, uint64_t(ran + 1), -5, 5);
            Shape out;
            try {
                out = cpu::max_pool2d(x, p).shape();
            } catch (const Error &) {
                continue;  // the window does not fit this shape
            }
            ran++;
            Tensor want_max = naive_pool(x, p, true, out);
            for (CpuIsa isa : kAllIsas) {
                set_cpu_isa(isa);
                EXPECT_CLOSE(cpu::max_pool2d(x, p), want_max, 0);
            }
            if (c.dh != 1 || c.dw != 1) continue;
            for (bool include : {false, true}) {
                p.count_include_pad = include;
                Tensor want_avg = naive_pool(x, p, false, out);
                for (CpuIsa isa : kAllIsas) {
                    set_cpu_isa(isa);
                    EXPECT_CLOSE(cpu::avg_pool2d(x, p), want_avg, 1e-6);
                }
            }
        }
    }
    EXPECT_TRUE(ran >= 30);
}

FOVEA_TEST(ops_pool_bad_input) {
    Tensor x = arange({1, 1, 4, 4});
    EXPECT_THROWS_CODE(cpu::max_pool2d(x, pool_params(0, 1)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::max_pool2d(x, pool_params(2, 0)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::max_pool2d(x, pool_params(2, 1, 2)), ErrorCode::Options);  // pad >= kernel
    EXPECT_THROWS_CODE(cpu::max_pool2d(x, pool_params(5, 1)), ErrorCode::Input);      // does not fit
    EXPECT_THROWS_CODE(cpu::max_pool2d(arange({4, 4}), pool_params(2, 2)), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::max_pool2d(Tensor::empty({1, 1, 0, 4}), pool_params(1, 1)), ErrorCode::Input);
    Pool2dParams dil = pool_params(2, 1);
    dil.dilation_w = 2;
    EXPECT_THROWS_CODE(cpu::avg_pool2d(x, dil), ErrorCode::Options);
    EXPECT_SHAPE(cpu::avg_pool2d(Tensor::empty({0, 3, 4, 4}), pool_params(2, 2)), {0, 3, 2, 2});
}

// ---------------------------------------------------------------------------
// Resize

// Torch7 conventions: nn.SpatialUpSamplingBilinear and nnx
// SpatialReSamplingEx (mode 'bilinear'), which the official DeepMask models
// use to resize the 56x56 mask logits and the input pyramid, both use the
// align-corners mapping src = dst * (in - 1) / (out - 1) (corner pixels
// coincide, no half-pixel shift). SharpMask's refinement upsampling is
// nearest-neighbour x2 (nn.SpatialUpSamplingNearest), tested below.
FOVEA_TEST(ops_resize_align_corners_torch7) {
    ResizeParams p;
    p.out_h = p.out_w = 3;
    p.coord = ResizeCoord::AlignCorners;
    EXPECT_VALUES(cpu::resize_bilinear(Tensor::from_vector({1, 1, 2, 2}, {0, 1, 2, 3}), p), Shape({1, 1, 3, 3}), 1e-7,
                  {0, 0.5f, 1, 1, 1.5f, 2, 2, 2.5f, 3});
    // Downscaling samples (no area filter) at dst * (in - 1) / (out - 1).
    p.out_h = 1;
    p.out_w = 2;
    EXPECT_VALUES(cpu::resize_bilinear(arange({1, 1, 3, 4}), p), Shape({1, 1, 1, 2}), 1e-7, {0, 3});
    // ONNX test_resize_upsample_scales_linear_align_corners.
    p.out_h = p.out_w = 4;
    EXPECT_VALUES(cpu::resize_bilinear(Tensor::from_vector({1, 1, 2, 2}, {1, 2, 3, 4}), p), Shape({1, 1, 4, 4}), 1e-6,
                  {1, 4.f / 3, 5.f / 3, 2, 5.f / 3, 2, 7.f / 3, 8.f / 3, 7.f / 3, 8.f / 3, 3, 10.f / 3, 3, 10.f / 3,
                   11.f / 3, 4});
    // ONNX test_resize_downsample_scales_linear_align_corners: with an
    // explicit scale, ONNX's resized length is in * scale, not the output size.
    p.out_h = 1;
    p.out_w = 2;
    p.scale_h = p.scale_w = 0.6f;
    EXPECT_VALUES(cpu::resize_bilinear(arange({1, 1, 2, 4}, 1), p), Shape({1, 1, 1, 2}), 1e-6, {1, 3.142857f});
}

FOVEA_TEST(ops_resize_onnx_modes_known) {
    ResizeParams p;
    Tensor x = Tensor::from_vector({1, 1, 2, 2}, {1, 2, 3, 4});
    p.out_h = p.out_w = 4;
    p.coord = ResizeCoord::HalfPixel;  // ONNX test_resize_upsample_scales_linear
    EXPECT_VALUES(cpu::resize_bilinear(x, p), Shape({1, 1, 4, 4}), 1e-6,
                  {1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4});
    p.coord = ResizeCoord::Asymmetric;
    EXPECT_VALUES(cpu::resize_bilinear(x, p), Shape({1, 1, 4, 4}), 1e-6,
                  {1, 1.5f, 2, 2, 2, 2.5f, 3, 3, 3, 3.5f, 4, 4, 3, 3.5f, 4, 4});
    // ONNX test_resize_downsample_scales_linear: the explicit scale 0.6
    // differs from out/in (0.5 rows, 0.5 columns) and changes the answer.
    p.coord = ResizeCoord::HalfPixel;
    p.out_h = 1;
    p.out_w = 2;
    p.scale_h = p.scale_w = 0.6f;
    EXPECT_VALUES(cpu::resize_bilinear(arange({1, 1, 2, 4}, 1), p), Shape({1, 1, 1, 2}), 1e-6,
                  {2.6666665f, 4.3333331f});
    // ONNX test_resize_downsample_sizes_linear_pytorch_half_pixel: 4x4 -> 3x1.
    ResizeParams q;
    q.out_h = 3;
    q.out_w = 1;
    q.coord = ResizeCoord::PytorchHalfPixel;
    EXPECT_VALUES(cpu::resize_bilinear(arange({1, 1, 4, 4}, 1), q), Shape({1, 1, 3, 1}), 1e-6,
                  {1.6666666f, 7, 12.333333f});
    // A 1x1 input replicates.
    q.out_h = 3;
    q.out_w = 5;
    q.coord = ResizeCoord::HalfPixel;
    EXPECT_VALUES(cpu::resize_bilinear(Tensor::from_vector({1, 1, 1, 1}, {7}), q), Shape({1, 1, 3, 5}), 0,
                  std::vector<float>(15, 7.0f));
}

FOVEA_TEST(ops_resize_random_vs_naive_every_isa) {
    struct Cfg {
        Shape in;
        int64_t oh, ow;
        double sh, sw;
    };
    const Cfg cfgs[] = {
        {{2, 3, 7, 9}, 14, 18, 0, 0},   {{1, 2, 56, 56}, 97, 131, 0, 0}, {{1, 1, 17, 33}, 5, 7, 0, 0},
        {{2, 1, 1, 1}, 3, 17, 0, 0},    {{1, 2, 10, 10}, 25, 25, 2.5, 2.5}, {{1, 1, 9, 13}, 4, 6, 0.45, 0.47},
        {{1, 1, 5, 40}, 1, 1, 0, 0},    {{1, 3, 12, 12}, 12, 12, 0, 0},
    };
    IsaGuard guard;
    for (const Cfg & c : cfgs) {
        Tensor x = random_tensor(c.in, uint64_t(c.oh * 131 + c.ow), -4, 4);
        for (ResizeCoord mode : {ResizeCoord::AlignCorners, ResizeCoord::HalfPixel, ResizeCoord::PytorchHalfPixel,
                                 ResizeCoord::Asymmetric}) {
            ResizeParams p;
            p.out_h = c.oh, p.out_w = c.ow, p.coord = mode, p.scale_h = c.sh, p.scale_w = c.sw;
            Tensor want = naive_resize(x, c.oh, c.ow, mode, c.sh, c.sw);
            for (CpuIsa isa : kAllIsas) {
                set_cpu_isa(isa);
                EXPECT_CLOSE(cpu::resize_bilinear(x, p), want, 2e-6);
            }
            EXPECT_ISAS_AGREE([&] { return cpu::resize_bilinear(x, p); }, 1e-6);
        }
    }
}

FOVEA_TEST(ops_resize_bad_input) {
    Tensor x = arange({1, 1, 2, 2});
    ResizeParams p;
    p.out_h = 0;
    p.out_w = 2;
    EXPECT_THROWS_CODE(cpu::resize_bilinear(x, p), ErrorCode::Options);
    p.out_h = 2;
    p.scale_h = -1;
    EXPECT_THROWS_CODE(cpu::resize_bilinear(x, p), ErrorCode::Options);
    p.scale_h = std::nan("");
    EXPECT_THROWS_CODE(cpu::resize_bilinear(x, p), ErrorCode::Options);
    p.scale_h = 0;
    p.coord = static_cast<ResizeCoord>(42);
    EXPECT_THROWS_CODE(cpu::resize_bilinear(x, p), ErrorCode::Options);
    p.coord = ResizeCoord::HalfPixel;
    EXPECT_THROWS_CODE(cpu::resize_bilinear(Tensor::empty({1, 1, 0, 2}), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::resize_bilinear(arange({2, 2}), p), ErrorCode::Input);
    // Extreme but valid scales clamp to the edges instead of reading outside.
    p.scale_h = 1e-300;
    p.scale_w = 1e300;
    EXPECT_VALUES(cpu::resize_bilinear(x, p), Shape({1, 1, 2, 2}), 0, {2, 2, 2, 2});
    EXPECT_SHAPE(cpu::resize_bilinear(Tensor::empty({0, 2, 3, 3}), p), {0, 2, 2, 2});
}

FOVEA_TEST(ops_upsample_nearest) {
    EXPECT_VALUES(cpu::upsample_nearest(Tensor::from_vector({1, 1, 2, 2}, {1, 2, 3, 4}), 2), Shape({1, 1, 4, 4}), 0,
                  {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
    Tensor x = random_tensor({2, 3, 5, 7}, 21);
    for (int f : {1, 3}) {
        Tensor y = cpu::upsample_nearest(x, f);
        EXPECT_SHAPE(y, {2, 3, 5 * f, 7 * f});
        for (int64_t pl = 0; pl < 6; pl++) {
            for (int64_t oy = 0; oy < 5 * f; oy++) {
                for (int64_t ox = 0; ox < 7 * f; ox++) {
                    EXPECT_EQ(y.f32()[(pl * 5 * f + oy) * 7 * f + ox], x.f32()[(pl * 5 + oy / f) * 7 + ox / f]);
                }
            }
        }
    }
    EXPECT_SHAPE(cpu::upsample_nearest(Tensor::empty({1, 0, 3, 3}), 2), {1, 0, 6, 6});
    EXPECT_THROWS_CODE(cpu::upsample_nearest(x, 0), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::upsample_nearest(x, 65), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::upsample_nearest(arange({3, 3}), 2), ErrorCode::Input);
}

// ---------------------------------------------------------------------------
// ROI pooling

FOVEA_TEST(ops_roi_max_pool_known) {
    Tensor x = arange({1, 1, 4, 4});  // value = 4 * y + x
    RoiPoolParams p;
    p.out_h = p.out_w = 2;
    // Caffe / ONNX MaxRoiPool: ROI 0..3 inclusive is 4 cells, bins of 2.
    Tensor whole = Tensor::from_vector({1, 5}, {0, 0, 0, 3, 3});
    EXPECT_VALUES(cpu::roi_max_pool(x, whole, p), Shape({1, 1, 2, 2}), 0, {5, 7, 13, 15});
    // imagine-nn v2 (MultiPathNet, spec multipathnet.md 4.3): the end is
    // exclusive (3 cells) and the bin edges round(0, 1.5, 3) = 0, 2, 3.
    p.round_bins = true;
    EXPECT_VALUES(cpu::roi_max_pool(x, whole, p), Shape({1, 1, 2, 2}), 0, {5, 6, 9, 10});
    p.round_bins = false;
    // Partly outside: bins are clipped; a bin entirely outside is 0.
    EXPECT_VALUES(cpu::roi_max_pool(x, Tensor::from_vector({1, 5}, {0, 2, 2, 10, 10}), p), Shape({1, 1, 2, 2}), 0,
                  {15, 0, 0, 0});
    EXPECT_VALUES(cpu::roi_max_pool(x, Tensor::from_vector({1, 5}, {0, -10, -10, -5, -5}), p), Shape({1, 1, 2, 2}), 0,
                  {0, 0, 0, 0});
    // Spatial scale and batch index: image 1 holds value + 100; the ROI
    // (0, 0)-(6, 6) at scale 0.5 is cells 0..3.
    Tensor x2 = arange({2, 1, 4, 4});
    RoiPoolParams half = p;
    half.spatial_scale = 0.5f;
    EXPECT_VALUES(cpu::roi_max_pool(x2, Tensor::from_vector({1, 5}, {1, 0, 0, 6, 6}), half), Shape({1, 1, 2, 2}), 0,
                  {21, 23, 29, 31});
    // A malformed ROI (x2 < x1) is forced to one cell.
    EXPECT_VALUES(cpu::roi_max_pool(x, Tensor::from_vector({1, 5}, {0, 2, 1, 0, 1}), p), Shape({1, 1, 2, 2}), 0,
                  {6, 6, 6, 6});
    EXPECT_SHAPE(cpu::roi_max_pool(x, Tensor::empty({0, 5}), p), {0, 1, 2, 2});
}

FOVEA_TEST(ops_roi_max_pool_random_vs_naive) {
    Tensor x = random_tensor({2, 3, 13, 17}, 31, -5, 5);
    Tensor rois = Tensor::empty({40, 5});
    Tensor r = random_tensor({40, 5}, 32, -8, 40);
    for (int64_t k = 0; k < 40; k++) {
        float * roi = rois.f32() + k * 5;
        const float * v = r.f32() + k * 5;
        roi[0] = float(k % 2);
        for (int j = 1; j < 5; j++) roi[j] = v[j];
    }
    for (bool round_bins : {false, true}) {
        for (float scale : {1.0f, 0.5f, 0.0625f}) {
            for (int out : {1, 3, 7}) {
                RoiPoolParams p;
                p.out_h = out;
                p.out_w = out + 1;
                p.spatial_scale = scale;
                p.round_bins = round_bins;
                EXPECT_CLOSE(cpu::roi_max_pool(x, rois, p), naive_roi_pool(x, rois, p), 0);
            }
        }
    }
}

FOVEA_TEST(ops_roi_max_pool_bad_input) {
    Tensor x = arange({2, 1, 4, 4});
    RoiPoolParams p;
    auto roi = [](float b, float x1, float y1, float x2, float y2) {
        return Tensor::from_vector({1, 5}, {b, x1, y1, x2, y2});
    };
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(2, 0, 0, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(-1, 0, 0, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0.5f, 0, 0, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(kNaN, 0, 0, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0, kNaN, 0, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0, 0, 0, kInf, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0, 0, -1e30f, 1, 1), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, Tensor::empty({1, 4}), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_max_pool(arange({1, 4, 4}), roi(0, 0, 0, 1, 1), p), ErrorCode::Input);
    RoiPoolParams bad = p;
    bad.out_h = 0;
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0, 0, 0, 1, 1), bad), ErrorCode::Options);
    bad = p;
    bad.spatial_scale = 0;
    EXPECT_THROWS_CODE(cpu::roi_max_pool(x, roi(0, 0, 0, 1, 1), bad), ErrorCode::Options);
    // Far outside but representable: fine, all bins empty.
    Tensor far = cpu::roi_max_pool(x, roi(1, 1e6f, 1e6f, 2e6f, 2e6f), p);
    EXPECT_EQ(far.f32()[0], 0.0f);
}

FOVEA_TEST(ops_roi_align_known) {
    Tensor x = arange({1, 1, 4, 4});  // value = 4 * y + x: bilinear sampling is exact
    Tensor b0 = int_tensor({0}, DType::I64);
    RoiAlignParams p;
    p.out_h = p.out_w = 1;
    p.sampling_ratio = 2;  // samples at 0.75 and 2.25 on each axis
    Tensor roi = Tensor::from_vector({1, 4}, {0, 0, 3, 3});
    EXPECT_VALUES(cpu::roi_align(x, roi, b0, p), Shape({1, 1, 1, 1}), 1e-6, {7.5f});
    p.sampling_ratio = 0;  // adaptive: ceil(3 / 1) = 3 samples per axis
    EXPECT_VALUES(cpu::roi_align(x, roi, b0, p), Shape({1, 1, 1, 1}), 1e-6, {7.5f});
    // aligned (half_pixel): ROI 0..4 shifted to -0.5..3.5, one sample per bin
    // at 0.5 and 2.5.
    p.aligned = true;
    p.out_h = p.out_w = 2;
    p.sampling_ratio = 1;
    Tensor roi4 = Tensor::from_vector({1, 4}, {0, 0, 4, 4});
    EXPECT_VALUES(cpu::roi_align(x, roi4, b0, p), Shape({1, 1, 2, 2}), 1e-6, {2.5f, 4.5f, 10.5f, 12.5f});
    // ONNX mode "max" takes the largest *weighted* corner: at (0.5, 0.5) the
    // corners 0, 1, 4, 5 weigh 1/4 each, so 5 / 4, not the average 2.5.
    p.max_mode = true;
    EXPECT_VALUES(cpu::roi_align(x, roi4, b0, p), Shape({1, 1, 2, 2}), 1e-6, {1.25f, 1.75f, 3.25f, 3.75f});
    // Samples outside [-1, size] count in the average as 0 (ONNX): x samples
    // at -2 (dropped) and 0, y samples at 0.25 and 0.75 -> (1 + 3) / 4.
    p = RoiAlignParams();
    p.sampling_ratio = 2;
    Tensor edge = Tensor::from_vector({1, 4}, {-3, 0, 1, 1});
    EXPECT_VALUES(cpu::roi_align(x, edge, b0, p), Shape({1, 1, 1, 1}), 1e-6, {1.0f});
    p.max_mode = true;
    EXPECT_VALUES(cpu::roi_align(x, edge, b0, p), Shape({1, 1, 1, 1}), 1e-6, {3.0f});
    // Entirely outside: every sample dropped -> 0 in both modes.
    Tensor out = Tensor::from_vector({1, 4}, {-50, -50, -10, -10});
    EXPECT_VALUES(cpu::roi_align(x, out, b0, p), Shape({1, 1, 1, 1}), 0, {0});
    p.max_mode = false;
    EXPECT_VALUES(cpu::roi_align(x, out, b0, p), Shape({1, 1, 1, 1}), 0, {0});
    // Aligned mode lets an inverted ROI have no samples at all: 0.
    p.aligned = true;
    p.sampling_ratio = 0;
    EXPECT_VALUES(cpu::roi_align(x, Tensor::from_vector({1, 4}, {3, 3, 0, 0}), b0, p), Shape({1, 1, 1, 1}), 0, {0});
    // Batch index as int32 or int64 selects the image (image 1 = value + 16).
    Tensor x2 = arange({2, 1, 4, 4});
    p = RoiAlignParams();
    p.sampling_ratio = 2;
    for (DType dt : {DType::I32, DType::I64}) {
        EXPECT_VALUES(cpu::roi_align(x2, roi, int_tensor({1}, dt), p), Shape({1, 1, 1, 1}), 1e-5, {23.5f});
    }
    EXPECT_SHAPE(cpu::roi_align(x, Tensor::empty({0, 4}), int_tensor({}, DType::I64), p), {0, 1, 1, 1});
}

FOVEA_TEST(ops_roi_align_random_vs_onnx_reference) {
    Tensor x = random_tensor({2, 3, 11, 14}, 41, -3, 3);
    const int64_t k = 30;
    Tensor r = random_tensor({k, 4}, 42, -6, 40);
    std::vector<int64_t> batch;
    for (int64_t i = 0; i < k; i++) batch.push_back(i % 2);
    Tensor bi = int_tensor(batch, DType::I64);
    for (bool aligned : {false, true}) {
        for (bool max_mode : {false, true}) {
            for (int ratio : {0, 1, 2, 3}) {
                for (float scale : {1.0f, 0.25f}) {
                    RoiAlignParams p;
                    p.out_h = 3;
                    p.out_w = 5;
                    p.aligned = aligned;
                    p.max_mode = max_mode;
                    p.sampling_ratio = ratio;
                    p.spatial_scale = scale;
                    EXPECT_CLOSE(cpu::roi_align(x, r, bi, p), naive_roi_align(x, r, batch, p), 1e-6);
                }
            }
        }
    }
}

FOVEA_TEST(ops_roi_align_bad_input) {
    Tensor x = arange({2, 1, 4, 4});
    Tensor roi = Tensor::from_vector({1, 4}, {0, 0, 1, 1});
    RoiAlignParams p;
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, int_tensor({2}, DType::I64), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, int_tensor({-1}, DType::I32), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, int_tensor({0, 0}, DType::I64), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, Tensor::from_vector({1}, {0}), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, Tensor::from_vector({1, 4}, {0, kNaN, 1, 1}), int_tensor({0}, DType::I64), p),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, Tensor::from_vector({1, 4}, {0, 0, 1, -kInf}), int_tensor({0}, DType::I64), p),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, Tensor::from_vector({1, 4}, {0, 0, 1e9f, 1}), int_tensor({0}, DType::I64), p),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::roi_align(x, Tensor::empty({1, 5}), int_tensor({0}, DType::I64), p), ErrorCode::Input);
    RoiAlignParams bad = p;
    bad.sampling_ratio = -1;
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, int_tensor({0}, DType::I64), bad), ErrorCode::Options);
    bad = p;
    bad.out_w = 2000;
    EXPECT_THROWS_CODE(cpu::roi_align(x, roi, int_tensor({0}, DType::I64), bad), ErrorCode::Options);
    // Huge but allowed ROI with adaptive sampling: bounded work, finite answer.
    Tensor huge = Tensor::from_vector({1, 4}, {-1e6f, -1e6f, 1e6f, 1e6f});
    Tensor y = cpu::roi_align(x, huge, int_tensor({0}, DType::I64), p);
    EXPECT_TRUE(std::isfinite(y.f32()[0]));
}

// ---------------------------------------------------------------------------
// NMS

namespace {

std::vector<int64_t> run_nms(const std::vector<float> & boxes, const std::vector<float> & scores, NmsParams p) {
    return cpu::nms(Tensor::from_vector({int64_t(scores.size()), 4}, boxes),
                    Tensor::from_vector({int64_t(scores.size())}, scores), p);
}

using Idx = std::vector<int64_t>;

std::string str(const Idx & v) {
    std::string s;
    for (int64_t i : v) s += std::to_string(i) + " ";
    return s;
}

}  // namespace

#define EXPECT_IDX(got, ...) EXPECT_EQ(str(got), str(Idx(__VA_ARGS__)))

FOVEA_TEST(ops_nms_onnx_cases) {
    // The ONNX NonMaxSuppression node tests (one batch, one class). IoU is
    // symmetric in x and y, so ONNX's (y1, x1, y2, x2) boxes serve as is.
    const std::vector<float> boxes = {0, 0, 1, 1, 0, 0.1f, 1, 1.1f, 0, -0.1f, 1, 0.9f,
                                      0, 10, 1, 11, 0, 10.1f, 1, 11.1f, 0, 100, 1, 101};
    const std::vector<float> scores = {0.9f, 0.75f, 0.6f, 0.95f, 0.5f, 0.3f};
    NmsParams p;
    p.iou_threshold = 0.5f;
    p.score_threshold = 0.0f;
    p.max_output = 3;
    EXPECT_IDX(run_nms(boxes, scores, p), {3, 0, 5});  // suppress_by_IOU
    p.max_output = 2;
    EXPECT_IDX(run_nms(boxes, scores, p), {3, 0});  // limit_output_size
    p.max_output = 3;
    p.score_threshold = 0.4f;
    EXPECT_IDX(run_nms(boxes, scores, p), {3, 0});  // suppress_by_IOU_and_scores
    p.score_threshold = 0.0f;
    p.max_output = -1;
    EXPECT_IDX(run_nms(boxes, scores, p), {3, 0, 5});
    p.max_output = 0;
    EXPECT_IDX(run_nms(boxes, scores, p), {});
    p.max_output = 3;
    // flipped_coordinates: either corner may come first.
    const std::vector<float> flipped = {1, 1, 0, 0, 0, 0.1f, 1, 1.1f, 0, 0.9f, 1, -0.1f,
                                        0, 10, 1, 11, 1, 10.1f, 0, 11.1f, 1, 101, 0, 100};
    EXPECT_IDX(run_nms(flipped, scores, p), {3, 0, 5});
    // center_point_box: (cx, cy, w, h).
    const std::vector<float> centers = {0.5f, 0.5f, 1, 1, 0.5f, 0.6f, 1, 1, 0.5f, 0.4f, 1, 1,
                                        0.5f, 10.5f, 1, 1, 0.5f, 10.6f, 1, 1, 0.5f, 100.5f, 1, 1};
    p.center_point_box = true;
    EXPECT_IDX(run_nms(centers, scores, p), {3, 0, 5});
    p.center_point_box = false;
    // identical_boxes: ten copies, one survives.
    std::vector<float> same, same_scores(10, 0.9f);
    for (int i = 0; i < 10; i++) same.insert(same.end(), {0, 0, 1, 1});
    EXPECT_IDX(run_nms(same, same_scores, p), {0});
    // two_boxes / no suppression at threshold 1 keeps everything but caps.
    p.iou_threshold = 1.0f;
    p.max_output = -1;
    EXPECT_IDX(run_nms(boxes, scores, p), {3, 0, 1, 2, 4, 5});
}

FOVEA_TEST(ops_nms_thresholds_ties_and_pixel_offset) {
    NmsParams p;
    // Ties keep index order.
    EXPECT_IDX(run_nms({0, 0, 1, 1, 5, 5, 6, 6, 9, 9, 10, 10}, {0.5f, 0.5f, 0.5f}, p), {0, 1, 2});
    EXPECT_IDX(run_nms({0, 0, 1, 1, 0, 0, 1, 1}, {0.5f, 0.5f}, p), {0});
    // Scores must be strictly above the threshold; NaN scores never pass.
    p.score_threshold = 0.5f;
    EXPECT_IDX(run_nms({0, 0, 1, 1, 5, 5, 6, 6, 9, 9, 10, 10}, {0.5f, 0.6f, kNaN}, p), {1});
    p.score_threshold = -1e30f;
    // IoU exactly at the threshold does not suppress: 1 / 3 here.
    const std::vector<float> third = {0, 0, 2, 1, 1, 0, 3, 1};
    p.iou_threshold = 1.0f / 3.0f;
    EXPECT_IDX(run_nms(third, {0.9f, 0.8f}, p), {0, 1});
    p.iou_threshold = 0.33f;
    EXPECT_IDX(run_nms(third, {0.9f, 0.8f}, p), {0});
    // Torch7 / MultiPathNet +1 convention (spec multipathnet.md 4.6): boxes
    // 0..9 and 5..14 overlap 5 of 10 columns -> IoU 50 / 150 = 1/3, while
    // without the offset it is 36 / 126 = 0.2857.
    const std::vector<float> torch = {0, 0, 9, 9, 5, 0, 14, 9};
    p.iou_threshold = 0.3f;
    EXPECT_IDX(run_nms(torch, {0.9f, 0.8f}, p), {0, 1});
    p.pixel_offset = 1;
    EXPECT_IDX(run_nms(torch, {0.9f, 0.8f}, p), {0});
    // Boxes that share an edge column overlap by one pixel only with +1.
    p.iou_threshold = 0.1f;
    EXPECT_IDX(run_nms({0, 0, 4, 4, 4, 0, 8, 4}, {0.9f, 0.8f}, p), {0});  // IoU 5 / 45
    p.pixel_offset = 0;
    EXPECT_IDX(run_nms({0, 0, 4, 4, 4, 0, 8, 4}, {0.9f, 0.8f}, p), {0, 1});
    // Degenerate and NaN boxes never suppress nor crash.
    EXPECT_IDX(run_nms({0, 0, 0, 0, 0, 0, 0, 0, kNaN, 0, 1, 1, 0, 0, 1, 1}, {0.9f, 0.8f, 0.7f, 0.6f}, p),
               {0, 1, 2, 3});
    EXPECT_IDX(cpu::nms(Tensor::empty({0, 4}), Tensor::empty({0}), p), {});
}

FOVEA_TEST(ops_nms_bad_input) {
    NmsParams p;
    Tensor b = Tensor::from_vector({1, 4}, {0, 0, 1, 1}), s = Tensor::from_vector({1}, {1});
    EXPECT_THROWS_CODE(cpu::nms(Tensor::empty({1, 3}), s, p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::nms(b, Tensor::empty({2}), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::nms(b, Tensor(), p), ErrorCode::Input);
    NmsParams bad = p;
    bad.iou_threshold = 1.5f;
    EXPECT_THROWS_CODE(cpu::nms(b, s, bad), ErrorCode::Options);
    bad = p;
    bad.iou_threshold = std::nanf("");
    EXPECT_THROWS_CODE(cpu::nms(b, s, bad), ErrorCode::Options);
    bad = p;
    bad.pixel_offset = 0.5f;
    EXPECT_THROWS_CODE(cpu::nms(b, s, bad), ErrorCode::Options);
    bad = p;
    bad.max_output = -2;
    EXPECT_THROWS_CODE(cpu::nms(b, s, bad), ErrorCode::Options);
}

// ---------------------------------------------------------------------------

FOVEA_TEST(ops_reject_device_tensors) {
    // The CPU backend must refuse memory it cannot read instead of crashing.
    float dummy[4] = {};
    Tensor dev = Tensor::wrap(dummy, {1, 1, 2, 2}, DType::F32, Device{DeviceType::CUDA, 0});
    EXPECT_THROWS_CODE(cpu::relu(dev), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::max_pool2d(dev, pool_params(1, 1)), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::concat({dev}, 0), ErrorCode::Input);
    ResizeParams rp;
    rp.out_h = rp.out_w = 2;
    EXPECT_THROWS_CODE(cpu::resize_bilinear(dev, rp), ErrorCode::Input);
}

// pad2d: DeepMask's SymPad (edge-inclusive mirror) and Crop, against numpy's
// np.pad(mode='symmetric') / slicing worked by hand.
FOVEA_TEST(ops_pad2d_symmetric_and_crop) {
    Tensor x = Tensor::from_vector({1, 1, 2, 3}, {1, 2, 3, 4, 5, 6});
    Pad2dParams p;
    p.mode = PadMode::Symmetric;
    p.left = 2;
    p.right = 1;
    p.top = 1;
    Tensor y = cpu::pad2d(x, p);
    EXPECT_TRUE(y.shape() == Shape({1, 1, 3, 6}));
    // np.pad([[1,2,3],[4,5,6]], ((1,0),(2,1)), 'symmetric')
    const std::vector<float> expected = {2, 1, 1, 2, 3, 3, 2, 1, 1, 2, 3, 3, 5, 4, 4, 5, 6, 6};
    for (size_t i = 0; i < expected.size(); i++) EXPECT_EQ(y.f32()[i], expected[i]);

    // Pads wider than the input keep mirroring: np.pad([7], 3, 'symmetric') is all 7s,
    // np.pad([1,2], 3, 'symmetric') = [2,2,1,1,2,2,1,1].
    Tensor z = cpu::pad2d(Tensor::from_vector({1, 1, 1, 2}, {1, 2}), Pad2dParams{0, 3, 0, 3, PadMode::Symmetric, 0});
    const std::vector<float> mirrored = {2, 2, 1, 1, 2, 2, 1, 1};
    for (size_t i = 0; i < mirrored.size(); i++) EXPECT_EQ(z.f32()[i], mirrored[i]);

    Tensor c = cpu::pad2d(Tensor::from_vector({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
                          Pad2dParams{-1, -1, -1, -1, PadMode::Constant, 0});
    EXPECT_TRUE(c.shape() == Shape({1, 1, 1, 1}));
    EXPECT_EQ(c.f32()[0], 5.0f);

    Tensor k = cpu::pad2d(Tensor::from_vector({1, 1, 1, 1}, {3}), Pad2dParams{1, 0, 0, 1, PadMode::Constant, 0.5f});
    const std::vector<float> constant = {0.5f, 0.5f, 3, 0.5f};
    for (size_t i = 0; i < constant.size(); i++) EXPECT_EQ(k.f32()[i], constant[i]);

    EXPECT_THROWS_CODE(cpu::pad2d(x, Pad2dParams{-1, 0, -1, 0, PadMode::Constant, 0}), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::pad2d(x, Pad2dParams{0, 1 << 21, 0, 0, PadMode::Constant, 0}), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::pad2d(Tensor::zeros({1, 1, 0, 2}), Pad2dParams{1, 1, 1, 1, PadMode::Symmetric, 0}),
                       ErrorCode::Input);
}
