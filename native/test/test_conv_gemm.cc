// conv2d, gemm and linear against naive double-precision references written
// here, on every instruction set this CPU supports. Tolerance: nmse < 1e-10,
// which fp32 accumulation over K <= ~5000 terms meets with a wide margin
// (about K * 2^-48 in the worst case) while any indexing or packing bug
// gives nmse of order 1e-3 or more.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/ops.h"
#include "cpu/ops.h"
#include "test/harness.h"

using namespace fovea;
using fovea::test::conv_params;
using fovea::test::nmse;
using fovea::test::random_tensor;

namespace {

constexpr double kTolerance = 1e-10;

// Runs fn once per ISA the CPU supports, then restores the ISA in force.
void for_each_isa(const std::function<void(CpuIsa)> & fn) {
    const CpuIsa saved = cpu_isa();
    try {
        for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512}) {
            set_cpu_isa(isa);
            if (cpu_isa() != isa) continue;  // not supported here
            fn(isa);
        }
    } catch (...) {
        set_cpu_isa(saved);
        throw;
    }
    set_cpu_isa(saved);
}

double activate(double v, Activation act) {
    if (act == Activation::Relu) return v > 0 ? v : 0;
    if (act == Activation::Sigmoid) return 1.0 / (1.0 + std::exp(-v));
    return v;
}

void expect_close(const Tensor & actual, const Tensor & expected, const std::string & what) {
    if (actual.shape() != expected.shape()) {
        throw test::Failure(what + ": shape " + shape_str(actual.shape()) + ", expected " +
                            shape_str(expected.shape()));
    }
    const double e = nmse(actual, expected);
    if (!(e < kTolerance)) {
        std::ostringstream os;
        os << what << ": nmse " << e << " (max abs diff " << test::max_abs_diff(actual, expected) << ")";
        throw test::Failure(os.str());
    }
}

// ---- references -----------------------------------------------------------

Tensor ref_conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) {
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
    const int64_t oc = w.dim(0), kh = w.dim(2), kw = w.dim(3);
    const int64_t cg = c / p.groups, ocg = oc / p.groups;
    const int64_t oh = (h + p.pad_top + p.pad_bottom - p.dilation_h * (kh - 1) - 1) / p.stride_h + 1;
    const int64_t ow = (wd + p.pad_left + p.pad_right - p.dilation_w * (kw - 1) - 1) / p.stride_w + 1;
    Tensor y = Tensor::empty({n, oc, oh, ow});
    const float * xp = x.f32();
    const float * wp = w.f32();
    float * yp = y.f32();
    for (int64_t b = 0; b < n; b++) {
        for (int64_t o = 0; o < oc; o++) {
            const int64_t g = o / ocg;
            for (int64_t oy = 0; oy < oh; oy++) {
                for (int64_t ox = 0; ox < ow; ox++) {
                    double s = bias.defined() ? bias.f32()[o] : 0.0;
                    for (int64_t ci = 0; ci < cg; ci++) {
                        for (int64_t ky = 0; ky < kh; ky++) {
                            const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
                            if (iy < 0 || iy >= h) continue;
                            for (int64_t kx = 0; kx < kw; kx++) {
                                const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
                                if (ix < 0 || ix >= wd) continue;
                                s += double(xp[((b * c + g * cg + ci) * h + iy) * wd + ix]) *
                                     double(wp[((o * cg + ci) * kh + ky) * kw + kx]);
                            }
                        }
                    }
                    yp[((b * oc + o) * oh + oy) * ow + ox] = float(activate(s, p.activation));
                }
            }
        }
    }
    return y;
}

Tensor ref_gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) {
    const int64_t m = p.trans_a ? a.dim(1) : a.dim(0);
    const int64_t k = p.trans_a ? a.dim(0) : a.dim(1);
    const int64_t n = p.trans_b ? b.dim(0) : b.dim(1);
    Tensor y = Tensor::empty({m, n});
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t q = 0; q < k; q++) {
                const double av = p.trans_a ? a.f32()[q * m + i] : a.f32()[i * k + q];
                const double bv = p.trans_b ? b.f32()[j * k + q] : b.f32()[q * n + j];
                s += av * bv;
            }
            double v = p.alpha * s;
            if (c.defined() && p.beta != 0.0f) {
                const int64_t cm = c.ndim() == 2 ? c.dim(0) : 1;
                const int64_t cn = c.ndim() >= 1 ? c.dim(-1) : 1;
                v += double(p.beta) * c.f32()[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
            }
            y.f32()[i * n + j] = float(activate(v, p.activation));
        }
    }
    return y;
}

Tensor ref_linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) {
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    Tensor y = Tensor::empty({n, m});
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double s = bias.defined() ? bias.f32()[j] : 0.0;
            for (int64_t q = 0; q < k; q++) s += double(x.f32()[i * k + q]) * double(w.f32()[j * k + q]);
            y.f32()[i * m + j] = float(activate(s, act));
        }
    }
    return y;
}

// ---- conv2d ---------------------------------------------------------------

struct ConvCase {
    const char * name;
    int64_t n, c, h, w, oc, kh, kw;
    Conv2dParams p;
    bool bias;
};

Conv2dParams asym(Conv2dParams p, int top, int left, int bottom, int right) {
    p.pad_top = top;
    p.pad_left = left;
    p.pad_bottom = bottom;
    p.pad_right = right;
    return p;
}

Conv2dParams strides(Conv2dParams p, int sh, int sw) {
    p.stride_h = sh;
    p.stride_w = sw;
    return p;
}

void check_conv_cases(const std::vector<ConvCase> & cases) {
    uint64_t seed = 100;
    for (const ConvCase & cc : cases) {
        const Tensor x = random_tensor({cc.n, cc.c, cc.h, cc.w}, seed++);
        const Tensor w = random_tensor({cc.oc, cc.c / cc.p.groups, cc.kh, cc.kw}, seed++);
        const Tensor b = cc.bias ? random_tensor({cc.oc}, seed++) : Tensor();
        const Tensor expected = ref_conv2d(x, w, b, cc.p);
        // With a residual: act(conv + bias + residual), the activation last.
        Conv2dParams no_act = cc.p;
        no_act.activation = Activation::None;
        const Tensor residual = random_tensor(expected.shape(), seed++);
        const Tensor linear = ref_conv2d(x, w, b, no_act);
        Tensor expected_res = linear.clone();
        for (int64_t i = 0; i < expected_res.numel(); i++) {
            expected_res.f32()[i] =
                float(activate(double(linear.f32()[i]) + double(residual.f32()[i]), cc.p.activation));
        }
        // And with the residual scaled per output channel.
        const Tensor residual_scale = random_tensor({cc.oc}, seed++);
        Tensor expected_scaled = linear.clone();
        const int64_t plane = linear.numel() / (cc.n * cc.oc);
        for (int64_t i = 0; i < expected_scaled.numel(); i++) {
            const double scale = residual_scale.f32()[i / plane % cc.oc];
            expected_scaled.f32()[i] = float(
                activate(double(linear.f32()[i]) + scale * double(residual.f32()[i]), cc.p.activation));
        }
        for_each_isa([&](CpuIsa isa) {
            for (cpu::ConvAlgo algo : {cpu::ConvAlgo::Shifted, cpu::ConvAlgo::Im2col, cpu::ConvAlgo::Im2colMerged,
                                       cpu::ConvAlgo::ChannelsLast, cpu::ConvAlgo::Winograd}) {
                if (algo == cpu::ConvAlgo::Winograd && !cpu::conv2d_winograd_applies(w.shape(), cc.p)) continue;
                const char * algo_name = cpu::conv_algo_name(algo);
                expect_close(cpu::conv2d(x, w, b, cc.p, algo), expected,
                             std::string(cc.name) + " on " + cpu_isa_name(isa) + ", " + algo_name);
                expect_close(cpu::conv2d(x, w, b, cc.p, algo, residual), expected_res,
                             std::string(cc.name) + " on " + cpu_isa_name(isa) + ", " + algo_name + " + residual");
                expect_close(cpu::conv2d(x, w, b, cc.p, algo, residual, residual_scale), expected_scaled,
                             std::string(cc.name) + " on " + cpu_isa_name(isa) + ", " + algo_name +
                                 " + scaled residual");
            }
            // Constant weights, as a model's: channels last may be chosen,
            // and its packed weights are reused by the second call.
            const Tensor wc = w.clone();
            wc.mark_constant();
            for (int call = 0; call < 2; call++) {
                expect_close(cpu::conv2d(x, wc, b, cc.p), expected,
                             std::string(cc.name) + " on " + cpu_isa_name(isa) + ", constant weights, call " +
                                 std::to_string(call + 1));
                expect_close(cpu::conv2d(x, wc, b, cc.p, cpu::ConvAlgo::ChannelsLast), expected,
                             std::string(cc.name) + " on " + cpu_isa_name(isa) +
                                 ", channels last with packed weights kept, call " + std::to_string(call + 1));
            }
        });
    }
}

}  // namespace

FOVEA_TEST(conv2d_small_and_odd_shapes) {
    check_conv_cases({
        {"1x1 image, 1x1 kernel", 1, 3, 1, 1, 5, 1, 1, conv_params(1, 0), true},
        {"1x1 image, 3x3 kernel pad 1", 1, 4, 1, 1, 3, 3, 3, conv_params(1, 1), false},
        {"1x1 image, 3x3/2 pad 1", 1, 4, 1, 1, 3, 3, 3, conv_params(2, 1), true},
        {"3x3 image, 3x3/2 unpadded", 2, 5, 3, 3, 6, 3, 3, conv_params(2, 0), true},
        {"1 in 1 out channel", 1, 1, 9, 11, 1, 3, 3, conv_params(1, 1), true},
        {"width 13, K 63, M 9", 1, 7, 6, 13, 9, 3, 3, conv_params(1, 1), true},
        {"width 17, 5x5 pad 2", 1, 5, 17, 17, 20, 5, 5, conv_params(1, 2), true},
        {"kernel covers padding only at edges", 1, 2, 2, 2, 3, 3, 3, conv_params(1, 1), true},
        {"rectangular 1x5 kernel", 1, 6, 7, 19, 10, 1, 5, asym(conv_params(1, 0), 0, 2, 0, 2), true},
        {"rectangular 5x1 kernel", 1, 6, 19, 7, 10, 5, 1, asym(conv_params(1, 0), 2, 0, 2, 0), false},
        {"wide output row 67 > panel", 1, 3, 5, 67, 17, 3, 3, conv_params(1, 1), true},
        {"rows of 51, stride 2, groups 2, 5x5 dilated", 1, 8, 21, 101, 6, 5, 5, conv_params(2, 4, 2, 2), true},
        {"rows of 130 over two panels, batch 2", 2, 5, 4, 130, 7, 3, 3, conv_params(1, 1), true},
    });
}

FOVEA_TEST(conv2d_stride_padding_dilation) {
    check_conv_cases({
        {"stride 2 pad 1", 1, 8, 15, 15, 16, 3, 3, conv_params(2, 1), true},
        {"stride 2 even input", 1, 8, 16, 16, 12, 3, 3, conv_params(2, 1), true},
        {"stride 2x3", 1, 5, 14, 20, 7, 3, 3, strides(conv_params(1, 1), 2, 3), true},
        {"asymmetric pads 0,1,2,3", 1, 4, 10, 9, 6, 3, 3, asym(conv_params(1, 0), 0, 1, 2, 3), true},
        {"asymmetric pads stride 2 (SAME_UPPER)", 1, 4, 10, 10, 6, 3, 3, asym(conv_params(2, 0), 0, 0, 1, 1), true},
        {"dilation 2 pad 2", 1, 6, 12, 13, 8, 3, 3, conv_params(1, 2, 2), true},
        {"dilation 3 stride 2", 1, 3, 20, 21, 5, 3, 3, conv_params(2, 3, 3), false},
        {"7x7 stride 2 pad 3 (ResNet stem)", 1, 3, 37, 37, 16, 7, 7, conv_params(2, 3), true},
        {"1x1 stride 2 (downsample)", 1, 16, 14, 14, 24, 1, 1, conv_params(2, 0), true},
        {"1x1 with padding", 1, 4, 5, 6, 3, 1, 1, conv_params(1, 1), true},
    });
}

FOVEA_TEST(conv2d_groups_and_depthwise) {
    check_conv_cases({
        {"groups 2", 1, 8, 9, 10, 6, 3, 3, conv_params(1, 1, 1, 2), true},
        {"groups 4, 1x1 direct", 1, 16, 7, 9, 12, 1, 1, conv_params(1, 0, 1, 4), true},
        {"depthwise 3x3", 1, 16, 11, 13, 16, 3, 3, conv_params(1, 1, 1, 16), true},
        {"depthwise stride 2, multiplier 2", 1, 8, 12, 12, 16, 3, 3, conv_params(2, 1, 1, 8), false},
        {"depthwise batch 2 dilation 2", 2, 5, 9, 9, 5, 3, 3, conv_params(1, 2, 2, 5), true},
    });
}

FOVEA_TEST(conv2d_batch_and_activation) {
    check_conv_cases({
        {"batch 2, relu", 2, 6, 8, 11, 10, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu), true},
        {"batch 2, sigmoid", 2, 6, 8, 11, 10, 3, 3, conv_params(1, 1, 1, 1, Activation::Sigmoid), true},
        {"batch 3, 1x1 direct, relu", 3, 20, 5, 7, 9, 1, 1, conv_params(1, 0, 1, 1, Activation::Relu), true},
        {"batch 2, groups 2, stride 2, no bias, relu", 2, 6, 9, 9, 4, 3, 3,
         conv_params(2, 1, 1, 2, Activation::Relu), false},
    });
}

FOVEA_TEST(conv2d_larger_layers) {
    // K > the kernels' K block (several K blocks accumulate through C), many
    // column blocks, and M not a multiple of any register tile.
    check_conv_cases({
        {"3x3 64->70 on 28x28", 1, 64, 28, 28, 70, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu), true},
        {"3x3 96->40 stride 2 on 31x29", 1, 96, 31, 29, 40, 3, 3, conv_params(2, 1), true},
        {"1x1 600->33 on 12x12", 1, 600, 12, 12, 33, 1, 1, conv_params(1, 0), true},
        {"3x3 32->24 on 60x45 batch 2", 2, 32, 60, 45, 24, 3, 3, conv_params(1, 1), true},
        // Merged over the batch: column blocks start and end inside images.
        {"3x3 96->70 on a batch of 9 7x7 maps", 9, 96, 7, 7, 70, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu), true},
        {"3x3/2 40->24 on a batch of 5 13x11 maps, groups 2", 5, 40, 13, 11, 24, 3, 3, conv_params(2, 1, 1, 2),
         true},
        // Channels last by default with constant weights: rows of 14 and 7
        // pixels, K blocks of a few channels, odd padding and dilation.
        {"3x3 48->64 on 14x14, relu", 1, 48, 14, 14, 64, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu), true},
        {"3x3/2 64->32 on 15x13", 1, 64, 15, 13, 32, 3, 3, conv_params(2, 1), true},
        {"3x3 dilation 2 72->48 on 9x11, pads 2,1,0,3", 1, 72, 9, 11, 48, 3, 3,
         asym(conv_params(1, 0, 2), 2, 1, 0, 3), true},
        {"1x1 1024->32 on 7x7", 1, 1024, 7, 7, 32, 1, 1, conv_params(1, 0), true},
        {"3x3 32->64 on 16x16 batch 2, groups 2", 2, 32, 16, 16, 64, 3, 3, conv_params(1, 1, 1, 2), false},
        // A batch of small maps as one stack of rows (MultiPathNet's tower):
        // register tiles span rows and images.
        {"3x3 32->48 on a batch of 5 5x5 maps", 5, 32, 5, 5, 48, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu),
         true},
        {"3x3/2 48->32 on a batch of 3 9x9 maps", 3, 48, 9, 9, 32, 3, 3, conv_params(2, 1), true},
        // Winograd by default: 528 tiles of 4x4 over two chunks of tiles,
        // the second starting inside the last image; 45 is no multiple of 4.
        {"3x3 32->32 on a batch of 4 45x43 maps", 4, 32, 45, 43, 32, 3, 3, conv_params(1, 1, 1, 1, Activation::Relu),
         true},
        // And at stride 2 (four phases): 216 tiles over two chunks; with no
        // padding, the last input row and column lie past every window.
        {"3x3/2 32->48 on a batch of 6 45x43 maps", 6, 32, 45, 43, 48, 3, 3, conv_params(2, 1, 1, 1, Activation::Relu),
         true},
        {"3x3/2 32->32 unpadded on 18x17", 1, 32, 18, 17, 32, 3, 3, conv_params(2, 0), true},
        // Tiles wide enough (81 points x 208 floats) for the minimum chunk of
        // 64 tiles to govern: 162 tiles in two chunks of 81.
        {"3x3/2 64->144 on a batch of 2 72x72 maps", 2, 64, 72, 72, 144, 3, 3, conv_params(2, 1), true},
        // Stride 2 in tiles of 2x2 (outputs of 14x13 and 5x5): 588 tiles in
        // chunks of 436 and 152; odd pads.
        {"3x3/2 48->48 on a batch of 12 28x26 maps", 12, 48, 28, 26, 48, 3, 3, conv_params(2, 1), true},
        {"3x3/2 16->16 pads 0,2,1,0 on 10x9", 1, 16, 10, 9, 16, 3, 3, asym(conv_params(2, 0), 0, 2, 1, 0), true},
    });
}

// Winograd's transforms scale values by up to 8 (outputs) and 1/24
// (weights), so it rounds more than the direct product: on network-like data
// (post-ReLU inputs, He-initialised weights) its error must stay far below
// what inference notices, and is printed next to the direct path's.
FOVEA_TEST(conv2d_winograd_error_on_network_layers) {
    struct Layer {
        int64_t c, oc, size, stride;
    };
    uint64_t seed = 900;
    for (const Layer & l :
         {Layer{64, 64, 28, 1}, Layer{256, 256, 14, 1}, Layer{128, 128, 56, 2}, Layer{256, 256, 28, 2}}) {
        Tensor x = random_tensor({1, l.c, l.size, l.size}, seed++, -1.0f, 1.0f);
        for (int64_t i = 0; i < x.numel(); i++) x.f32()[i] = std::max(x.f32()[i], 0.0f);
        const float he = std::sqrt(6.0f / float(l.c * 9));  // uniform with He's variance
        const Tensor w = random_tensor({l.oc, l.c, 3, 3}, seed++, -he, he);
        w.mark_constant();
        const Conv2dParams p = conv_params(int(l.stride), 1);
        const Tensor expected = ref_conv2d(x, w, Tensor(), p);
        const double direct = nmse(cpu::conv2d(x, w, Tensor(), p, cpu::ConvAlgo::ChannelsLast), expected);
        const double winograd = nmse(cpu::conv2d(x, w, Tensor(), p, cpu::ConvAlgo::Winograd), expected);
        std::printf("     3x3/%lld %lld->%lld on %lldx%lld: nmse winograd %.2g, channels last %.2g\n",
                    (long long)l.stride, (long long)l.c, (long long)l.oc, (long long)l.size, (long long)l.size,
                    winograd, direct);
        EXPECT_TRUE(winograd < 1e-10);
    }
}

// Auto's choice, as conv2d_auto_algo reports it to the benchmarks: Winograd
// at stride 1 and 2 only with constant weights and where it was measured to
// pay (conv.cc, winograd_pays).
FOVEA_TEST(conv2d_auto_algo_picks_winograd_where_it_pays) {
    struct Layer {
        int64_t n, c, oc, size, stride;
        bool winograd;
    };
    for (const Layer & l : {Layer{1, 64, 64, 56, 1, true}, Layer{1, 128, 128, 56, 2, true},
                            Layer{1, 256, 256, 28, 2, true},    // 49 tiles of 2x2
                            Layer{1, 512, 512, 28, 2, true},    // 49 tiles of 2x2
                            Layer{100, 256, 512, 14, 2, true},  // 400 tiles of 4x4
                            Layer{1, 512, 512, 14, 2, false},   // 4 tiles
                            Layer{4, 512, 512, 14, 2, false},   // 16 tiles, 85 MB of transformed weights
                            Layer{1, 32, 64, 56, 2, false},     // 32 input channels at stride 2
                            Layer{1, 8, 8, 56, 1, false}}) {
        const Tensor x = Tensor::empty({l.n, l.c, l.size, l.size});
        const Tensor w = Tensor::empty({l.oc, l.c, 3, 3});
        const Conv2dParams p = conv_params(int(l.stride), 1);
        EXPECT_TRUE(cpu::conv2d_auto_algo(x, w, p) != cpu::ConvAlgo::Winograd);  // weights not constant
        w.mark_constant();
        EXPECT_EQ(cpu::conv2d_auto_algo(x, w, p) == cpu::ConvAlgo::Winograd, l.winograd);
    }
}

FOVEA_TEST(transpose_blocks_and_edges) {
    // Sizes around the 8- and 16-lane blocks, strided source and destination.
    for (const auto & [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {1, 37}, {37, 1}, {16, 16}, {8, 24}, {17, 33}, {40, 15}, {64, 49}}) {
        const int64_t src_rs = cols + 3, dst_rs = rows + 5;
        const Tensor src = random_tensor({rows * src_rs}, uint64_t(rows * 100 + cols));
        for_each_isa([&](CpuIsa isa) {
            Tensor dst = Tensor::full({cols * dst_rs}, -7.0f);
            cpu::transpose(src.f32(), src_rs, rows, cols, dst.f32(), dst_rs);
            int64_t wrong = 0, touched = 0;
            for (int64_t j = 0; j < cols; j++) {
                for (int64_t i = 0; i < dst_rs; i++) {
                    const float got = dst.f32()[j * dst_rs + i];
                    if (i < rows) wrong += got != src.f32()[i * src_rs + j];
                    else touched += got != -7.0f;  // padding past `rows` is left alone
                }
            }
            EXPECT_EQ(wrong, 0);
            EXPECT_EQ(touched, 0);
            (void)isa;
        });
    }
}

FOVEA_TEST(conv2d_zero_input_channels_gives_bias) {
    const Tensor x = Tensor::zeros({1, 0, 4, 4});
    const Tensor w = Tensor::zeros({3, 0, 3, 3});
    const Tensor b = Tensor::from_vector({3}, {1.0f, -2.0f, 0.5f});
    Conv2dParams p = conv_params(1, 1, 1, 1, Activation::Relu);
    for_each_isa([&](CpuIsa) {
        const Tensor y = cpu::conv2d(x, w, b, p);
        EXPECT_EQ(shape_str(y.shape()), std::string("[1, 3, 4, 4]"));
        EXPECT_EQ(y.f32()[0], 1.0f);
        EXPECT_EQ(y.f32()[16], 0.0f);
        EXPECT_EQ(y.f32()[47], 0.5f);
    });
}

FOVEA_TEST(conv2d_empty_batch) {
    const Tensor y = cpu::conv2d(Tensor::zeros({0, 3, 5, 5}), random_tensor({4, 3, 3, 3}, 1), Tensor(),
                                 conv_params(1, 1));
    EXPECT_EQ(shape_str(y.shape()), std::string("[0, 4, 5, 5]"));
}

FOVEA_TEST(conv2d_bad_inputs_throw) {
    const Tensor x = random_tensor({1, 4, 8, 8}, 1);
    const Tensor w = random_tensor({6, 4, 3, 3}, 2);
    const Conv2dParams ok = conv_params(1, 1);
    EXPECT_THROWS_CODE(cpu::conv2d(Tensor(), w, Tensor(), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(random_tensor({4, 8, 8}, 3), w, Tensor(), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, random_tensor({6, 4, 3}, 4), Tensor(), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, Tensor::zeros({6, 4, 3, 3}, DType::I32), Tensor(), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, random_tensor({6, 3, 3, 3}, 5), Tensor(), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, random_tensor({5}, 6), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, random_tensor({6, 1}, 7), ok), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, random_tensor({6, 4, 11, 11}, 8), Tensor(), ok), ErrorCode::Input);
    // Winograd asked for where it does not apply: stride 3, strides 2x1, a
    // 1x1 kernel.
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(3, 1), cpu::ConvAlgo::Winograd), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), strides(conv_params(1, 1), 2, 1), cpu::ConvAlgo::Winograd),
                       ErrorCode::Input);
    const Tensor w1x1 = random_tensor({6, 4, 1, 1}, 9);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w1x1, Tensor(), conv_params(1, 0), cpu::ConvAlgo::Winograd), ErrorCode::Input);
    // A residual not shaped as the output [1, 6, 8, 8].
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), ok, cpu::ConvAlgo::Auto, random_tensor({1, 6, 8, 7}, 10)),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), ok, cpu::ConvAlgo::Auto, Tensor::zeros({1, 6, 8, 8}, DType::I32)),
                       ErrorCode::Input);
    const Tensor good_residual = random_tensor({1, 6, 8, 8}, 11);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), ok, cpu::ConvAlgo::Auto, good_residual, random_tensor({5}, 12)),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), ok, cpu::ConvAlgo::Auto, Tensor(), random_tensor({6}, 13)),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(0, 1)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(1, -1)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(1, 1, 0)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(1, 1, 1, 0)), ErrorCode::Options);
    EXPECT_THROWS_CODE(cpu::conv2d(x, w, Tensor(), conv_params(1, 1, 1, -2)), ErrorCode::Options);
    // 4 input channels do not split into 3 groups; 6 outputs with groups 4 neither.
    EXPECT_THROWS_CODE(cpu::conv2d(x, random_tensor({6, 1, 3, 3}, 9), Tensor(), conv_params(1, 1, 1, 3)),
                       ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::conv2d(x, random_tensor({6, 1, 3, 3}, 10), Tensor(), conv_params(1, 1, 1, 4)),
                       ErrorCode::Input);
}

// ---- gemm -----------------------------------------------------------------

namespace {

void check_gemm(int64_t m, int64_t n, int64_t k, const GemmParams & p, const Shape & c_shape, bool with_c,
                uint64_t seed) {
    const Tensor a = random_tensor(p.trans_a ? Shape{k, m} : Shape{m, k}, seed);
    const Tensor b = random_tensor(p.trans_b ? Shape{n, k} : Shape{k, n}, seed + 1);
    const Tensor c = with_c ? random_tensor(c_shape, seed + 2) : Tensor();
    const Tensor expected = ref_gemm(a, b, c, p);
    for_each_isa([&](CpuIsa isa) {
        std::ostringstream what;
        what << "gemm " << m << "x" << n << "x" << k << (p.trans_a ? " A^T" : "") << (p.trans_b ? " B^T" : "")
             << " alpha " << p.alpha << " beta " << p.beta << " C " << (with_c ? shape_str(c_shape) : "none")
             << " act " << int(p.activation) << " on " << cpu_isa_name(isa);
        expect_close(cpu::gemm(a, b, c, p), expected, what.str());
    });
}

GemmParams gemm_params(bool ta, bool tb, float alpha, float beta, Activation act = Activation::None) {
    GemmParams p;
    p.trans_a = ta;
    p.trans_b = tb;
    p.alpha = alpha;
    p.beta = beta;
    p.activation = act;
    return p;
}

}  // namespace

FOVEA_TEST(gemm_shapes_and_transposes) {
    const int64_t shapes[][3] = {{1, 1, 1},   {1, 37, 19},  {37, 1, 19},  {5, 7, 1},     {17, 33, 65},
                                 {8, 48, 16}, {9, 49, 17},  {64, 96, 300}, {130, 200, 513}, {3, 1000, 7}};
    uint64_t seed = 1000;
    for (const auto & s : shapes) {
        for (int t = 0; t < 4; t++) {
            check_gemm(s[0], s[1], s[2], gemm_params(t & 1, t & 2, 1.0f, 1.0f), {}, false, seed);
            seed += 3;
        }
    }
}

FOVEA_TEST(gemm_alpha_beta_and_c_broadcast) {
    const int64_t m = 13, n = 21, k = 29;
    const std::vector<Shape> c_shapes = {{}, {1}, {n}, {1, n}, {m, 1}, {m, n}, {1, 1}};
    uint64_t seed = 2000;
    for (const Shape & cs : c_shapes) {
        for (float beta : {1.0f, 0.25f, -3.0f}) {
            check_gemm(m, n, k, gemm_params(false, false, 0.5f, beta), cs, true, seed);
            check_gemm(m, n, k, gemm_params(true, true, -2.0f, beta), cs, true, seed + 1);
            seed += 3;
        }
    }
    // Broadcast C where M or N is 1 itself.
    check_gemm(1, n, k, gemm_params(false, true, 1.0f, 1.0f), {1, n}, true, seed++);
    check_gemm(m, 1, k, gemm_params(true, false, 1.0f, 1.0f), {m, 1}, true, seed++);
    check_gemm(m, 1, k, gemm_params(false, false, 1.0f, 1.0f), {1}, true, seed++);
}

FOVEA_TEST(gemm_beta_zero_ignores_c) {
    // BLAS convention: with beta == 0, C is not read, so NaN in C does not leak.
    const Tensor a = random_tensor({4, 5}, 1);
    const Tensor b = random_tensor({5, 6}, 2);
    const Tensor c = Tensor::full({4, 6}, std::numeric_limits<float>::quiet_NaN());
    const GemmParams p = gemm_params(false, false, 1.0f, 0.0f);
    const Tensor expected = ref_gemm(a, b, Tensor(), p);
    for_each_isa([&](CpuIsa isa) {
        expect_close(cpu::gemm(a, b, c, p), expected, std::string("beta 0 on ") + cpu_isa_name(isa));
    });
}

FOVEA_TEST(gemm_fused_activation) {
    uint64_t seed = 3000;
    for (Activation act : {Activation::Relu, Activation::Sigmoid}) {
        check_gemm(19, 45, 70, gemm_params(false, false, 1.5f, 1.0f, act), {45}, true, seed);
        check_gemm(70, 19, 300, gemm_params(true, false, 1.0f, 0.5f, act), {70, 19}, true, seed + 1);
        seed += 2;
    }
}

FOVEA_TEST(gemm_zero_k_gives_beta_c) {
    const Tensor a = Tensor::zeros({3, 0});
    const Tensor b = Tensor::zeros({0, 4});
    const Tensor c = random_tensor({4}, 7);
    const GemmParams p = gemm_params(false, false, 1.0f, 2.0f);
    const Tensor expected = ref_gemm(a, b, c, p);
    for_each_isa([&](CpuIsa isa) {
        expect_close(cpu::gemm(a, b, c, p), expected, std::string("K = 0 on ") + cpu_isa_name(isa));
    });
}

FOVEA_TEST(gemm_bad_inputs_throw) {
    const Tensor a = random_tensor({3, 4}, 1);
    const Tensor b = random_tensor({4, 5}, 2);
    const GemmParams p;
    EXPECT_THROWS_CODE(cpu::gemm(Tensor(), b, Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, Tensor(), Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(random_tensor({12}, 3), b, Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, random_tensor({5, 4}, 4), Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, b, Tensor(), gemm_params(true, false, 1, 1)), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, b, random_tensor({4}, 5), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, b, random_tensor({2, 5}, 6), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, b, random_tensor({1, 3, 5}, 7), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::gemm(a, Tensor::zeros({4, 5}, DType::I64), Tensor(), p), ErrorCode::Input);
}

// ---- linear ---------------------------------------------------------------

FOVEA_TEST(gemm_linear_matches_reference) {
    const int64_t shapes[][3] = {{1, 25, 10}, {1, 1, 1}, {7, 300, 33}, {64, 1000, 70}, {130, 17, 129}};
    uint64_t seed = 4000;
    for (const auto & s : shapes) {
        for (int variant = 0; variant < 3; variant++) {
            const Tensor x = random_tensor({s[0], s[1]}, seed++);
            const Tensor w = random_tensor({s[2], s[1]}, seed++);
            const Tensor b = variant == 1 ? Tensor() : random_tensor({s[2]}, seed++);
            const Activation act = variant == 2 ? Activation::Relu : Activation::None;
            const Tensor expected = ref_linear(x, w, b, act);
            for_each_isa([&](CpuIsa isa) {
                std::ostringstream what;
                what << "linear " << s[0] << "x" << s[1] << " -> " << s[2] << " variant " << variant << " on "
                     << cpu_isa_name(isa);
                expect_close(cpu::linear(x, w, b, act), expected, what.str());
            });
        }
    }
}

FOVEA_TEST(gemm_linear_bad_inputs_throw) {
    const Tensor x = random_tensor({2, 5}, 1);
    const Tensor w = random_tensor({3, 5}, 2);
    EXPECT_THROWS_CODE(cpu::linear(Tensor(), w, Tensor(), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::linear(random_tensor({10}, 3), w, Tensor(), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::linear(x, random_tensor({3, 4}, 4), Tensor(), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::linear(x, w, random_tensor({4}, 5), Activation::None), ErrorCode::Input);
    EXPECT_THROWS_CODE(cpu::linear(x, w, random_tensor({1, 3}, 6), Activation::None), ErrorCode::Input);
}
