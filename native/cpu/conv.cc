// conv2d as implicit GEMM on the packed micro-kernel: per image and group,
// Y[OCg, OH*OW] = W[OCg, Cg*KH*KW] * im2col(X)[Cg*KH*KW, OH*OW], with no
// im2col matrix. Two ways to feed B, chosen per layer:
//
// - Shifted windows (ConvAlgo::Shifted): the image is laid out so that row
//   k = (c, ky, kx) of im2col is one contiguous run of memory, and the
//   micro-kernel reads it in place. Output pixel (oy, ox) becomes column
//   n = oy * pitch + ox of a plane whose rows are `pitch` wide, and tap
//   (c, ky, kx) the offset of its top-left input; the `pitch - OW` columns
//   past each output row are computed and dropped. Stride s is handled by
//   splitting the (padded) image into s_h x s_w phase planes, inside which
//   every tap is again a shift. Costs: one copy of the input when it needs
//   padding or phases, one copy of the output when pitch != OW, and
//   (pitch - OW) / pitch wasted columns. It saves the im2col packing, which
//   writes KH*KW copies of the input and dominates thin layers.
// - Packed im2col (ConvAlgo::Im2col): B blocks gathered from the image
//   straight into the micro-kernel's panel layout while packing. Used where
//   the shifted layout wastes too much (outputs much narrower than the
//   phase planes), and, with the columns running over all images of the
//   batch (ConvAlgo::Im2colMerged), for batches of small maps.
// - Channels last (ConvAlgo::ChannelsLast): the transposed product,
//   Y^T[N*OH*OW, OCg] = im2col(X)^T * W^T, with the weights as the packed,
//   vectorised operand and the pixels of all images as the broadcast one,
//   read in place from a zero-padded [N][H][W][C] copy of the batch (per-k
//   offsets pick channel and tap, per-row offsets the pixel, so register
//   tiles span output rows and images). Pixels are then no longer rounded
//   up to whole vectors, which wastes nothing on 7x7 or 14x14 maps, but the
//   weights must be packed (kept with constant weights, see
//   Tensor::derived) and both image and output transposed.
//
// - Winograd (ConvAlgo::Winograd, conv_winograd.cc): 3x3 layers through
//   F(4x4, 3x3), 36 GEMMs with a quarter of the multiply-adds, or at
//   stride 2 through its four phases, 81 GEMMs with 9/16 of them.
//
// Bias and activation run in the GEMM epilogue in every case but Winograd,
// which adds them in its output transform.

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/conv_internal.h"
#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"

namespace fovea::cpu {

using conv_detail::channels_last_input;
using conv_detail::channels_last_output;
using conv_detail::channels_last_pitch;
using conv_detail::ConvDims;

namespace {

// Phase planes of the zero-padded input for the shifted path: phase (py, px)
// of channel c is padded(x)[c][qy * sh + py][qx * sw + px] over (qy, qx).
// Only the phases some tap reads are stored (a strided 1x1 conv reads one).
struct ShiftedInput {
    const float * data = nullptr;
    int64_t phases = 0, ph = 0, pw = 0;  // pw is the pitch of output rows
    std::vector<int64_t> slot;           // phase py * sw + px -> stored index, -1 if unread
    Tensor storage;                      // undefined when x is used as is
};

ShiftedInput shifted_input(const Tensor & x, const ConvDims & d, const Conv2dParams & p, int64_t kh, int64_t kw) {
    ShiftedInput in;
    const int64_t sh = p.stride_h, sw = p.stride_w;
    const int64_t hp = d.h + p.pad_top + p.pad_bottom, wp = d.w + p.pad_left + p.pad_right;
    in.ph = (hp + sh - 1) / sh;
    in.pw = (wp + sw - 1) / sw;
    in.slot.assign(size_t(sh * sw), -1);
    std::vector<int64_t> stored;  // phase of each stored index
    for (int64_t ky = 0; ky < kh; ky++) {
        for (int64_t kx = 0; kx < kw; kx++) {
            const int64_t phase = (ky * p.dilation_h % sh) * sw + kx * p.dilation_w % sw;
            if (in.slot[size_t(phase)] < 0) {
                in.slot[size_t(phase)] = int64_t(stored.size());
                stored.push_back(phase);
            }
        }
    }
    in.phases = int64_t(stored.size());
    if (sh == 1 && sw == 1 && hp == d.h && wp == d.w) {
        in.data = x.f32();
        return in;
    }
    const int64_t channels = d.n * d.groups * d.cg, plane = in.ph * in.pw;
    in.storage = Tensor::empty({channels * in.phases * plane});
    float * dst = in.storage.f32();
    const float * src = x.f32();
    parallel_for(channels * in.phases, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++) {
            const int64_t ch = t / in.phases, phase = stored[size_t(t % in.phases)];
            const int64_t py = phase / sw, px = phase % sw;
            const float * xc = src + ch * d.h * d.w;
            float * out = dst + t * plane;
            for (int64_t qy = 0; qy < in.ph; qy++) {
                float * row = out + qy * in.pw;
                const int64_t iy = qy * sh + py - p.pad_top;
                if (iy < 0 || iy >= d.h) {
                    std::fill(row, row + in.pw, 0.0f);
                    continue;
                }
                const float * xrow = xc + iy * d.w;
                // Columns qx with 0 <= qx * sw + px - pad_left < w.
                const int64_t first = std::clamp<int64_t>((p.pad_left - px + sw - 1) / sw, 0, in.pw);
                const int64_t end = std::clamp<int64_t>((d.w + p.pad_left - px + sw - 1) / sw, first, in.pw);
                std::fill(row, row + first, 0.0f);
                const float * src_x = xrow + first * sw + px - p.pad_left;
                if (sw == 1) {
                    std::copy(src_x, src_x + (end - first), row + first);
                } else {
                    for (int64_t qx = first; qx < end; qx++, src_x += sw) row[qx] = *src_x;
                }
                std::fill(row + end, row + in.pw, 0.0f);
            }
        }
    });
    in.data = in.storage.f32();
    return in;
}

// The shifted path's wasted work, as a fraction of its multiply-adds: either
// register tiles kept inside output rows (the lanes of a partial vector at
// each row's end) or tiles running on over the pitch - OW dropped columns plus
// the copy of y out, which costs about as much as kCopyColumns columns of
// multiply-adds per K (a few cycles per 16 floats moved, against K / 16 FMAs
// per output vector).
struct ShiftedWaste {
    double row_tiles, run_on;
    bool use_row_tiles() const { return row_tiles <= run_on; }
    double best() const { return use_row_tiles() ? row_tiles : run_on; }
};

ShiftedWaste shifted_waste(const ConvDims & d, int64_t pitch) {
    constexpr double kLanes = 16, kCopyColumns = 16;
    const double padded = std::ceil(double(d.ow) / kLanes) * kLanes;
    return {(padded - double(d.ow)) / padded, double(pitch - d.ow) / double(pitch) + kCopyColumns / double(d.k)};
}

// Waste of the shifted path above which packed im2col is used. Measured on
// 2 threads of the EPYC dev machine, alternating both paths in one process:
// im2col is 6-14% faster on 14x14 maps (12.5% waste: 256 and 512 channels,
// two runs), while on larger maps the two are within the machine's noise
// (+-5%, and the sign changed between runs for thin 32->4 convs on 400x500).
constexpr double kMaxShiftedWaste = 0.10;

// Output planes smaller than this are merged over the batch: one GEMM per
// image would stream all the weights once per image for a few hundred
// columns, and end in a partial register tile each time (MultiPathNet's
// per-region layer4 runs 512x512x3x3 weights over 100 maps of 7x7).
constexpr int64_t kMergeBelowPixels = 384;

int64_t shifted_pitch(const ConvDims & d, const Conv2dParams & p) {
    return (d.w + p.pad_left + p.pad_right + p.stride_w - 1) / p.stride_w;
}

// Where channels last pays, measured on 2 threads of the EPYC dev machine
// (fovea_bench --algo, ResNet-50 and VGG-16 layers at 224 and 800): 3x3
// layers up to 56x56 outputs gained 3-30% (the most on 7x7 and 14x14, where
// pixel vectors were a quarter or an eighth empty); on 100x100 and larger
// the transposes of big images cost more than they save (up to 40% slower
// on VGG's 400x400 layers). 1x1 layers, whose few multiply-adds per pixel
// do not hide the transposes, gain only on outputs of a few dozen pixels
// (ResNet-50's 7x7 layer4: 0-17%) and lose 0-20% on 14x14 and larger.
// Output channels in whole vectors only; weights packed per call never pay.
bool channels_last_pays(const ConvDims & d, int64_t taps, bool constant_weights) {
    if (!constant_weights || d.ocg % 16 != 0) return false;
    const int64_t plane = d.oh * d.ow;
    if (taps > 1) return plane <= 4096 && d.k >= 256;
    return plane < 100 && d.k >= 256;
}

// Winograd's F(4x4, 3x3), measured against the other paths on 2 threads of
// the EPYC dev machine (fovea_bench --algo winograd, alternating runs): 2.3-3x
// faster on ResNet-50, VGG-16 and ResNet-18 3x3 layers of 64 to 512 channels
// at 224x224 and MultiPathNet's tower, 1.0-2.5x at 800x800 (least on the
// 64- and 128-channel maps of 200x200 and larger, where the transforms move
// as many bytes as the product does arithmetic); 0.6-0.75x of the time on 32 to
// 128 channels over 12x12 to 160x160, about even on 16 channels, 2-3x slower
// on 3 or 8 (whole vectors of channels are what the transforms vectorise).
// Outputs in tiles of 4x4 that are mostly padding (1x1, 2x2) waste the gain.
// Its weights are transformed once, so they must be constant.
//
// At stride 2 it saves less (9/16 of the products in tiles of 4x4, 25/36 in
// tiles of 2x2, which it takes for 14x14 and 10x10 outputs) and its
// transformed weights are 9 (or 2.8) times the kernel's, reread for each
// chunk of tiles. Against the channels-last path (2 threads, alternating):
// 0.72-0.94 of the time on the stride-2 layers of ResNet-50 and
// MultiPathNet at 224 and 800 with 16 or more tiles (the tower's 400
// included), 0.75-0.92 on 64 to 512 channels over 20x20 to 56x56 inputs;
// but 1.1-2x on fewer than 16 tiles (ResNet-50's 512-channel 7x7 output:
// 1.8x), on 512x512 channels with 16 tiles of 4x4 (1.1-1.2x: 85 MB of
// transformed weights), and on 32 input channels (1.0-1.5x).
bool winograd_pays(const ConvDims & d, const Conv2dParams & p, const Shape & w_shape, bool constant_weights) {
    if (!constant_weights || !conv2d_winograd_applies(w_shape, p)) return false;
    if (d.cg % 16 != 0 || d.ocg % 16 != 0 || d.cg < 32 || d.ocg < 32) return false;
    const conv_detail::WinogradPlan plan = conv_detail::winograd_plan(d, p.stride_h);
    if (p.stride_h == 1) return plan.products_per_output <= 4.5;  // tiles that are not mostly padding
    const bool weights_fit = plan.points * d.cg * d.ocg <= 81 * 256 * 256;  // 21 MB
    return d.cg >= 64 && plan.products_per_output <= 6.75 && plan.tiles >= 16 && (plan.tiles >= 48 || weights_fit);
}

// Winograd first where it applies; then channels last before merged im2col:
// on MultiPathNet's tower (100 ROIs of 14x14 and 7x7, 256 and 512 channels)
// it reached 203-215 GFLOP/s where the merged im2col reached 174-186 (2
// threads, dev VM).
ConvAlgo choose_algo(const ConvDims & d, const Conv2dParams & p, const Shape & w_shape, bool constant_weights) {
    const int64_t taps = w_shape[2] * w_shape[3];
    if (winograd_pays(d, p, w_shape, constant_weights)) return ConvAlgo::Winograd;
    if (channels_last_pays(d, taps, constant_weights)) return ConvAlgo::ChannelsLast;
    if (d.n > 1 && d.oh * d.ow < kMergeBelowPixels) return ConvAlgo::Im2colMerged;
    const int64_t pitch = shifted_pitch(d, p);
    if (pitch != d.ow && shifted_waste(d, pitch).best() > kMaxShiftedWaste) return ConvAlgo::Im2col;
    return ConvAlgo::Shifted;
}

// y[i] = act(y[i] + scale * residual[i]): the residual of the paths that copy their
// output into place, done as each part is copied while it is in cache.
void add_residual(float * y, const float * residual, float scale, int64_t n, Activation act) {
    // One loop per activation, so the common ones vectorise.
    if (act == Activation::Relu) {
        for (int64_t i = 0; i < n; i++) y[i] = std::max(y[i] + scale * residual[i], 0.0f);
    } else if (act == Activation::Sigmoid) {
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + std::exp(-(y[i] + scale * residual[i])));
    } else {
        for (int64_t i = 0; i < n; i++) y[i] += scale * residual[i];
    }
}

// Per output channel o of the residual: residual_scale[o], or 1.
float residual_scale_of(const Tensor & residual_scale, int64_t o) {
    return residual_scale.defined() ? residual_scale.f32()[o] : 1.0f;
}

}  // namespace

namespace conv_detail {

// Floats from one pixel to the next in the channels-last image: the channel
// count, plus one cache line where pixels would otherwise lie a multiple of
// 1 KB apart. A register tile reads the same channel of several pixels at
// once; 4 KB apart (512 channels, stride 2) they all fall in one set of the
// 8-way L1 and evict each other (ResNet-50's 512x14x14 3x3/2 went from 66%
// to 73-84% of the FMA peak with the padding, 2 threads, dev VM).
int64_t channels_last_pitch(int64_t channels) { return channels % 256 == 0 ? channels + 16 : channels; }

// The zero-padded image, channels last: [n][hp][wp][pitch], channels in the
// first of each pixel's `pitch` floats (the rest uninitialised, never read).
Tensor channels_last_input(const Tensor & x, const ConvDims & d, const Conv2dParams & p) {
    const int64_t channels = d.groups * d.cg, pitch = channels_last_pitch(channels);
    const int64_t hp = d.h + p.pad_top + p.pad_bottom, wp = d.w + p.pad_left + p.pad_right;
    Tensor xin = Tensor::empty({d.n, hp, wp, pitch});
    const float * src = x.f32();
    float * dst = xin.f32();
    const int64_t row = wp * pitch;
    parallel_for(d.n * hp, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++) {
            const int64_t img = t / hp, iy = t % hp - p.pad_top;
            float * out = dst + t * row;
            if (iy < 0 || iy >= d.h) {
                std::fill(out, out + row, 0.0f);
                continue;
            }
            std::fill(out, out + p.pad_left * pitch, 0.0f);
            std::fill(out + (p.pad_left + d.w) * pitch, out + row, 0.0f);
            transpose(src + (img * channels * d.h + iy) * d.w, d.h * d.w, channels, d.w, out + p.pad_left * pitch,
                      pitch);
        }
    });
    return xin;
}

void channels_last_output(const Tensor & yt, const ConvDims & d, Activation act, const Tensor & residual,
                          const Tensor & residual_scale, Tensor & y) {
    constexpr int64_t kPixels = 64;
    const int64_t oc = d.groups * d.ocg, pixels = d.oh * d.ow;
    const int64_t chunks = (pixels + kPixels - 1) / kPixels;
    const float * src = yt.f32();
    float * dst = y.f32();
    parallel_for(d.n * chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++) {
            const int64_t img = t / chunks, p0 = t % chunks * kPixels, len = std::min(kPixels, pixels - p0);
            float * out = dst + img * oc * pixels + p0;
            transpose(src + (img * pixels + p0) * oc, oc, len, oc, out, pixels);
            if (!residual.defined()) continue;
            const float * res = residual.f32() + img * oc * pixels + p0;
            for (int64_t o = 0; o < oc; o++) {
                add_residual(out + o * pixels, res + o * pixels, residual_scale_of(residual_scale, o), len, act);
            }
        }
    });
}

}  // namespace conv_detail

namespace {

// The weights as the B operand of the channels-last product, B(k, oc) =
// w[g][oc][c][tap] with k = tap * Cg + c (see conv_channels_last), for each
// group in prepack_b's layout. Packed on every call unless the weights are
// constant, whose packed copy is kept with them.
std::shared_ptr<const Tensor> channels_last_weights(const Tensor & w, const ConvDims & d, int64_t taps,
                                                    const packed::Kernel & kn) {
    auto pack = [&]() {
        const int64_t per_group = packed::prepacked_b_floats(kn, d.k, d.ocg);
        auto t = std::make_shared<Tensor>(Tensor::empty({d.groups, per_group}));
        // [oc][c][tap] -> [oc][tap][c], then B^T rows of K.
        Tensor tap_major = Tensor::empty({d.ocg, d.k});
        for (int64_t g = 0; g < d.groups; g++) {
            const float * wg = w.f32() + g * d.ocg * d.k;
            float * tm = tap_major.f32();
            for (int64_t o = 0; o < d.ocg; o++) {
                transpose(wg + o * d.k, taps, d.cg, taps, tm + o * d.k, d.cg);
            }
            packed::prepack_b(kn, tm, 1, d.k, d.k, d.ocg, t->f32() + g * per_group);
        }
        return t;
    };
    if (!w.is_constant()) return pack();
    const std::string key = std::string("cpu.conv.channels_last.") + cpu_isa_name(kn.isa) + ".groups" +
                            std::to_string(d.groups);
    return std::static_pointer_cast<const Tensor>(w.derived(key, pack));
}

Tensor conv_channels_last(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                          const ConvDims & d, const Tensor & residual, const Tensor & residual_scale, Tensor y) {
    const packed::Kernel & kn = packed::kernel_for(cpu_isa());
    const int64_t kh = w.dim(2), kw = w.dim(3), taps = kh * kw;
    const int64_t channels = d.groups * d.cg, oc = d.groups * d.ocg, pixels = d.oh * d.ow;
    const int64_t pitch = channels_last_pitch(channels);
    const int64_t wp = d.w + p.pad_left + p.pad_right, hp = d.h + p.pad_top + p.pad_bottom;
    const Tensor xin = channels_last_input(x, d, p);
    const std::shared_ptr<const Tensor> wpk = channels_last_weights(w, d, taps, kn);
    // k = (tap, c): consecutive k read consecutive floats of a pixel, which
    // the prefetchers follow (k = (c, tap) jumped between image rows).
    std::vector<int64_t> offsets(size_t(d.k));
    for (int64_t k = 0; k < d.k; k++) {
        const int64_t tap = k / d.cg, c = k % d.cg, ky = tap / kw, kx = tap % kw;
        offsets[size_t(k)] = (ky * p.dilation_h * wp + kx * p.dilation_w) * pitch + c;
    }
    // The images of the batch are one stack of rows (M = n * OH * OW): the
    // weights are then reused across all of them, and register tiles span
    // images as they span output rows.
    packed::Problem pr;
    pr.groups = d.groups;
    pr.m = d.n * pixels;
    pr.n = d.ocg;
    pr.k = d.k;
    pr.a = xin.f32();
    pr.a_gs = d.cg;
    pr.a_offsets = offsets.data();
    pr.a_rows.pixel_pitch = p.stride_w * pitch;
    pr.a_rows.row_len = d.ow;
    pr.a_rows.row_pitch = p.stride_h * wp * pitch;
    pr.a_rows.plane = pixels;
    pr.a_rows.plane_pitch = hp * wp * pitch;
    pr.b_prepacked = wpk->f32();
    pr.b_prepacked_gs = wpk->dim(1);
    Tensor yt = Tensor::empty({d.n, pixels, oc});
    pr.c = yt.f32();
    pr.c_gs = d.ocg;
    pr.ldc = oc;
    // With a residual (in y's layout), the activation waits for it.
    pr.ep.act = residual.defined() ? Activation::None : p.activation;
    if (bias.defined()) {
        pr.ep.add = bias.f32();
        pr.ep.beta = 1.0f;
        pr.ep.add_cs = 1;
        pr.add_gs = d.ocg;
    }
    packed::run(pr);
    channels_last_output(yt, d, p.activation, residual, residual_scale, y);
    return y;
}

// For arguments conv2d_output_shape accepted, `out` being its result.
ConvDims conv_dims(const Tensor & x, const Tensor & w, const Conv2dParams & p, const Shape & out) {
    ConvDims d;
    d.n = out[0];
    d.groups = p.groups;
    d.cg = x.dim(1) / p.groups;
    d.ocg = w.dim(0) / p.groups;
    d.h = x.dim(2);
    d.w = x.dim(3);
    d.oh = out[2];
    d.ow = out[3];
    d.k = d.cg * w.dim(2) * w.dim(3);
    return d;
}

}  // namespace

ConvAlgo conv2d_auto_algo(const Tensor & x, const Tensor & w, const Conv2dParams & p) {
    const Shape out = conv2d_output_shape(x, w, Tensor(), p);
    return choose_algo(conv_dims(x, w, p, out), p, w.shape(), w.is_constant());
}

const char * conv_algo_name(ConvAlgo algo) {
    switch (algo) {
        case ConvAlgo::Auto: return "auto";
        case ConvAlgo::Shifted: return "shifted";
        case ConvAlgo::Im2col: return "im2col";
        case ConvAlgo::Im2colMerged: return "im2col-merged";
        case ConvAlgo::ChannelsLast: return "channels-last";
        case ConvAlgo::Winograd: return "winograd";
    }
    return "unknown";
}

Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p, ConvAlgo algo,
              const Tensor & residual, const Tensor & residual_scale) {
    const Shape out = conv2d_output_shape(x, w, bias, p);
    if (residual.defined() || residual_scale.defined()) check_conv2d_residual(residual, residual_scale, out);
    Tensor y = Tensor::empty(out);
    if (y.numel() == 0) return y;

    const ConvDims d = conv_dims(x, w, p, out);
    if (algo == ConvAlgo::Auto) algo = choose_algo(d, p, w.shape(), w.is_constant());
    if (algo == ConvAlgo::ChannelsLast) return conv_channels_last(x, w, bias, p, d, residual, residual_scale, y);
    if (algo == ConvAlgo::Winograd) {
        FOVEA_CHECK_INPUT(conv2d_winograd_applies(w.shape(), p),
                          "conv2d: the Winograd algorithm takes 3x3 kernels at stride 1 or 2 (the same both ways) with no dilation and one "
                          "group, not " << shape_str(w.shape()) << " at stride " << p.stride_h << "x" << p.stride_w
                                        << ", dilation " << p.dilation_h << "x" << p.dilation_w << ", groups "
                                        << p.groups);
        return conv_detail::conv_winograd(x, w, bias, p, d, residual, residual_scale, y);
    }

    const int64_t kh = w.dim(2), kw = w.dim(3);
    const int64_t out_plane = d.oh * d.ow;
    packed::Problem pr;
    pr.batches = d.n;
    pr.groups = d.groups;
    pr.m = d.ocg;
    pr.k = d.k;
    pr.a = w.f32();
    pr.a_gs = d.ocg * d.k;
    pr.lda = d.k;
    pr.ep.act = p.activation;
    if (bias.defined()) {
        pr.ep.add = bias.f32();
        pr.ep.beta = 1.0f;
        pr.ep.add_rs = 1;
    }
    pr.add_gs = d.ocg;  // bias and residual scale, per output channel

    // C laid out as y itself: [image][group][oc][pixel]; so is the residual.
    auto run_into_y = [&]() {
        pr.ep.residual = residual.defined() ? residual.f32() : nullptr;
        pr.ep.residual_scale = residual_scale.defined() ? residual_scale.f32() : nullptr;
        pr.c = y.f32();
        pr.c_gs = d.ocg * out_plane;
        pr.c_bs = d.groups * pr.c_gs;
        pr.ldc = out_plane;
        packed::run(pr);
        return y;
    };

    if (algo == ConvAlgo::Shifted) {
        const ShiftedInput in = shifted_input(x, d, p, kh, kw);
        const int64_t plane = in.ph * in.pw;
        std::vector<int64_t> offsets(size_t(d.k));
        for (int64_t c = 0, k = 0; c < d.cg; c++) {
            for (int64_t ky = 0; ky < kh; ky++) {
                for (int64_t kx = 0; kx < kw; kx++, k++) {
                    const int64_t dy = ky * p.dilation_h, dx = kx * p.dilation_w;
                    const int64_t phase = in.slot[size_t((dy % p.stride_h) * p.stride_w + dx % p.stride_w)];
                    offsets[size_t(k)] =
                        (c * in.phases + phase) * plane + (dy / p.stride_h) * in.pw + dx / p.stride_w;
                }
            }
        }
        pr.b_data = in.data;
        pr.b_gs = d.cg * in.phases * plane;
        pr.b_bs = d.groups * pr.b_gs;
        pr.b_offsets = offsets.data();
        if (in.pw == d.ow) {
            // No dropped columns (1x1 convs): the output plane is one run.
            pr.n = out_plane;
            return run_into_y();
        }
        if (shifted_waste(d, in.pw).use_row_tiles()) {
            // Register tiles within output rows, written straight into y.
            pr.n = out_plane;
            pr.b_row_len = d.ow;
            pr.b_row_pitch = in.pw;
            return run_into_y();
        }
        // Narrow rows: tiles run on over the dropped columns (the plane sizes
        // of shifted_input keep every read of every tap inside its image
        // group, up to the last real output pixel), then y is copied out.
        const int64_t n_cols = (d.oh - 1) * in.pw + d.ow;
        pr.n = n_cols;
        if (residual.defined()) pr.ep.act = Activation::None;  // applied after the residual, below
        Tensor wide = Tensor::empty({d.n * d.groups * d.ocg, n_cols});
        pr.c = wide.f32();
        pr.c_gs = d.ocg * n_cols;
        pr.c_bs = d.groups * pr.c_gs;
        pr.ldc = n_cols;
        packed::run(pr);
        const float * src = wide.f32();
        float * dst = y.f32();
        parallel_for(d.n * d.groups * d.ocg, 1, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; r++) {
                for (int64_t oy = 0; oy < d.oh; oy++) {
                    std::copy_n(src + r * n_cols + oy * in.pw, d.ow, dst + r * out_plane + oy * d.ow);
                }
                if (residual.defined()) {
                    add_residual(dst + r * out_plane, residual.f32() + r * out_plane,
                                 residual_scale_of(residual_scale, r % (d.groups * d.ocg)), out_plane, p.activation);
                }
            }
        });
        return y;
    }

    packed::ConvGeometry g;
    g.c = d.cg;
    g.h = d.h;
    g.w = d.w;
    g.kh = kh;
    g.kw = kw;
    g.sh = p.stride_h;
    g.sw = p.stride_w;
    g.pt = p.pad_top;
    g.pl = p.pad_left;
    g.dh = p.dilation_h;
    g.dw = p.dilation_w;
    g.oh = d.oh;
    g.ow = d.ow;
    const float * xd = x.f32();
    const int64_t groups = d.groups, image = d.groups * d.cg * d.h * d.w, group_in = d.cg * d.h * d.w;
    g.image_stride = image;
    const bool merged = algo == ConvAlgo::Im2colMerged;
    // Merged: one GEMM per group whose columns run over every image.
    pr.batches = merged ? 1 : d.n;
    pr.n = merged ? d.n * out_plane : out_plane;
    pr.pack_b = [=](const packed::Kernel & kn, int64_t q, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                    float * dst) {
        const float * xg = xd + (q / groups) * image + (q % groups) * group_in;
        kn.pack_im2col(xg, g, k0, kc, n0, nc, dst);
    };
    if (!merged) return run_into_y();
    // C is [group][oc][image][pixel]; y wants [image][group][oc][pixel].
    if (residual.defined()) pr.ep.act = Activation::None;  // applied after the residual, below
    Tensor merged_out = Tensor::empty({d.groups * d.ocg, d.n * out_plane});
    pr.c = merged_out.f32();
    pr.c_gs = d.ocg * pr.n;
    pr.ldc = pr.n;
    packed::run(pr);
    const float * src = merged_out.f32();
    float * dst = y.f32();
    const int64_t rows = d.groups * d.ocg;
    parallel_for(d.n * rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++) {
            const int64_t img = t / rows, row = t % rows;
            std::copy_n(src + (row * d.n + img) * out_plane, out_plane, dst + t * out_plane);
            if (residual.defined()) {
                add_residual(dst + t * out_plane, residual.f32() + t * out_plane, residual_scale_of(residual_scale, row),
                             out_plane, p.activation);
            }
        }
    });
    return y;
}

}  // namespace fovea::cpu
