// conv2d of 3x3 kernels at stride 1 or 2 by Winograd's minimal filtering
// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016). Each 4x4 block of outputs (a tile) comes from the window of inputs
// that covers it as
//   Y = A^T [ (G g G^T) . (B^T d B) ] A.
// At stride 1 that is F(4x4, 3x3): a 6x6 window, 36 products per tile and
// channel pair where the direct convolution needs 144. At stride 2 the
// window splits into its four phases (even or odd rows, even or odd
// columns), each a stride-1 convolution with the kernel taps of that phase:
// F(4x4, 2x2) on the 2x2 taps, F(4, 2) x F(4, 1) on the 2x1 and 1x2 taps, a
// pointwise product on the centre tap; 81 products where the direct
// convolution needs 144, and the phases' outputs are summed. Small outputs
// at stride 2 (14x14, which 4x4 tiles cover with 16x16) take tiles of 2x2
// instead, through F(2, 2) and F(2, 1): 25 products for 36.
//
// Summed over input channels, the elementwise products are independent
// GEMMs, one per point of the transformed domains,
//   M[point][tile][oc] = V[point][tile][c] * U[point][c][oc],
// which run on the packed micro-kernel as the groups of one problem. The
// transforms are vectorised over channels: the input is read from the
// zero-padded channels-last copy conv.cc makes, and the outputs are written
// channels last, then transposed into NCHW as the channels-last path does.
//
// Tiles are taken in chunks, so that V and M stay in the last-level cache
// and large images need no 36- or 81-fold copy of themselves.

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/conv_internal.h"
#include "cpu/gemm_kernels.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

constexpr int64_t kMaxTile = 4;  // outputs per tile side
constexpr int kLanes = 16;        // channels per transform step

// V and M of one chunk of tiles together stay under this many floats (4 MB).
// On VGG-16 and ResNet-50 layers at 800x800 (2 threads, dev VM), 16 MB was
// up to 25% slower on 64-channel maps, 1 MB slower there too, and 8 MB even.
constexpr int64_t kChunkFloats = int64_t(1) << 20;
// Fewer tiles per chunk would reread the transformed weights too often.
constexpr int64_t kMinChunkTiles = 64;

// The one-dimensional minimal filters F(m, kTaps): kIn = m + kTaps - 1
// inputs give m outputs of a kTaps-tap correlation. input() computes out[i * os] =
// (B^T d)[i] for d[j] = in[j * is], output() out[r * os] (+)= (A^T m)[r], on
// `len` channels; G is the kernel transform, applied in double when the
// weights are packed.

// dst = v, or dst += v for the phases after the first.
template <bool kAdd> FOVEA_ALWAYS_INLINE void put(float & dst, float v) { dst = kAdd ? dst + v : v; }

// Interpolation points 0, 1, -1, 2, -2 and infinity.
struct F43 {
    static constexpr int kIn = 6, kTaps = 3;
    static constexpr double G[kIn][kTaps] = {{1.0 / 4, 0, 0},
                                             {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                             {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                             {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                             {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                             {0, 0, 1}};
    static FOVEA_ALWAYS_INLINE void input(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                          int len) {
        for (int c = 0; c < len; c++) {
            const float d0 = in[c], d1 = in[is + c], d2 = in[2 * is + c];
            const float d3 = in[3 * is + c], d4 = in[4 * is + c], d5 = in[5 * is + c];
            out[c] = 4.0f * d0 - 5.0f * d2 + d4;
            out[os + c] = (d3 + d4) - 4.0f * (d1 + d2);
            out[2 * os + c] = (d4 - d3) + 4.0f * (d1 - d2);
            out[3 * os + c] = (d4 - d2) + 2.0f * (d3 - d1);
            out[4 * os + c] = (d4 - d2) - 2.0f * (d3 - d1);
            out[5 * os + c] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    }
    template <bool kAdd>
    static FOVEA_ALWAYS_INLINE void output(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                           int len) {
        for (int c = 0; c < len; c++) {
            const float m0 = in[c], m1 = in[is + c], m2 = in[2 * is + c];
            const float m3 = in[3 * is + c], m4 = in[4 * is + c], m5 = in[5 * is + c];
            const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            put<kAdd>(out[c], m0 + s12 + s34);
            put<kAdd>(out[os + c], d12 + 2.0f * d34);
            put<kAdd>(out[2 * os + c], s12 + 4.0f * s34);
            put<kAdd>(out[3 * os + c], d12 + 8.0f * d34 + m5);
        }
    }
};

// Interpolation points 0, 1, -1, 2 and infinity.
struct F42 {
    static constexpr int kIn = 5, kTaps = 2;
    static constexpr double G[kIn][kTaps] = {
        {1.0 / 2, 0}, {-1.0 / 2, -1.0 / 2}, {-1.0 / 6, 1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0, 1}};
    static FOVEA_ALWAYS_INLINE void input(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                          int len) {
        for (int c = 0; c < len; c++) {
            const float d0 = in[c], d1 = in[is + c], d2 = in[2 * is + c];
            const float d3 = in[3 * is + c], d4 = in[4 * is + c];
            out[c] = 2.0f * (d0 - d2) + (d3 - d1);
            out[os + c] = (d3 - d2) - 2.0f * d1;
            out[2 * os + c] = 2.0f * d1 - 3.0f * d2 + d3;
            out[3 * os + c] = d3 - d1;
            out[4 * os + c] = 2.0f * (d1 - d3) + (d4 - d2);
        }
    }
    template <bool kAdd>
    static FOVEA_ALWAYS_INLINE void output(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                           int len) {
        for (int c = 0; c < len; c++) {
            const float m0 = in[c], m1 = in[is + c], m2 = in[2 * is + c];
            const float m3 = in[3 * is + c], m4 = in[4 * is + c];
            const float s12 = m1 + m2, d12 = m1 - m2;
            put<kAdd>(out[c], m0 + s12 + m3);
            put<kAdd>(out[os + c], d12 + 2.0f * m3);
            put<kAdd>(out[2 * os + c], s12 + 4.0f * m3);
            put<kAdd>(out[3 * os + c], d12 + 8.0f * m3 + m4);
        }
    }
};

// Interpolation points 0, -1 and infinity.
struct F22 {
    static constexpr int kIn = 3, kTaps = 2;
    static constexpr double G[kIn][kTaps] = {{1, 0}, {-1, 1}, {0, 1}};
    static FOVEA_ALWAYS_INLINE void input(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                          int len) {
        for (int c = 0; c < len; c++) {
            const float d0 = in[c], d1 = in[is + c], d2 = in[2 * is + c];
            out[c] = d0 + d1;
            out[os + c] = d1;
            out[2 * os + c] = d1 + d2;
        }
    }
    template <bool kAdd>
    static FOVEA_ALWAYS_INLINE void output(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                           int len) {
        for (int c = 0; c < len; c++) {
            const float m0 = in[c], m1 = in[is + c], m2 = in[2 * is + c];
            put<kAdd>(out[c], m0 + m1);
            put<kAdd>(out[os + c], m2 - m1);
        }
    }
};

// One tap: the identity on N points.
template <int N> struct Identity {
    static constexpr int kIn = N, kTaps = 1;
    static constexpr std::array<std::array<double, kTaps>, kIn> G = [] {
        std::array<std::array<double, kTaps>, kIn> g{};
        for (auto & row : g) row[0] = 1;
        return g;
    }();
    static FOVEA_ALWAYS_INLINE void input(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                          int len) {
        for (int i = 0; i < kIn; i++) {
            for (int c = 0; c < len; c++) out[i * os + c] = in[i * is + c];
        }
    }
    template <bool kAdd>
    static FOVEA_ALWAYS_INLINE void output(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                           int len) {
        for (int i = 0; i < kIn; i++) {
            for (int c = 0; c < len; c++) put<kAdd>(out[i * os + c], in[i * is + c]);
        }
    }
};
using F41 = Identity<4>;
using F21 = Identity<2>;

// How a layer is tiled: stride 1 in F(4x4, 3x3); stride 2 in the four
// phases of 4x4 tiles, or of 2x2 tiles.
enum class Scheme { Stride1, Stride2Tile4, Stride2Tile2 };

constexpr int64_t stride_of(Scheme s) { return s == Scheme::Stride1 ? 1 : 2; }
constexpr int64_t tile_of(Scheme s) { return s == Scheme::Stride2Tile2 ? 2 : 4; }
constexpr int64_t points_of(Scheme s) {
    return s == Scheme::Stride1        ? F43::kIn * F43::kIn
           : s == Scheme::Stride2Tile4 ? (F42::kIn + F41::kIn) * (F42::kIn + F41::kIn)
                                       : (F22::kIn + F21::kIn) * (F22::kIn + F21::kIn);
}

// Op::run<RowFilter, ColumnFilter>(first row, first column, first point,
// args...) for each phase of the scheme. Phase (py, px) reads the window's
// rows py, py + stride, ... and its columns likewise, with the kernel taps
// at those offsets; its points follow the previous phases'.
template <class Op, class Even, class Odd, class... Args> FOVEA_ALWAYS_INLINE void for_each_phase_2(Args &&... args) {
    constexpr int q01 = Even::kIn * Even::kIn, q10 = q01 + Even::kIn * Odd::kIn, q11 = q10 + Odd::kIn * Even::kIn;
    Op::template run<Even, Even>(0, 0, 0, args...);
    Op::template run<Even, Odd>(0, 1, q01, args...);
    Op::template run<Odd, Even>(1, 0, q10, args...);
    Op::template run<Odd, Odd>(1, 1, q11, args...);
}

template <class Op, class... Args> FOVEA_ALWAYS_INLINE void for_each_phase(Scheme s, Args &&... args) {
    switch (s) {
        case Scheme::Stride1: Op::template run<F43, F43>(0, 0, 0, args...); return;
        case Scheme::Stride2Tile4: for_each_phase_2<Op, F42, F41>(args...); return;
        case Scheme::Stride2Tile2: for_each_phase_2<Op, F22, F21>(args...); return;
    }
}

constexpr int64_t kMaxIn = F43::kIn;  // the widest filter's inputs

// Tile t of the batch is (image, tile row, tile column), in that order.
struct Tiling {
    int64_t size;        // outputs per tile side
    int64_t rows, cols;  // tiles per image
    int64_t image(int64_t t) const { return t / (rows * cols); }
    int64_t row(int64_t t) const { return t % (rows * cols) / cols; }
    int64_t col(int64_t t) const { return t % cols; }
};

Tiling tiling_of(Scheme s, int64_t oh, int64_t ow) {
    const int64_t t = tile_of(s);
    return {t, (oh + t - 1) / t, (ow + t - 1) / t};
}

struct InputArgs {
    const float * x;  // padded, channels last
    Scheme scheme;
    int64_t channels, pixel_pitch, row_pitch, image_pitch;
    Tiling tiling;
    int64_t first;  // the chunk's first tile
    float * v;      // point q of tile t at v + q * point_stride + (t - first) * pitch
    int64_t point_stride, pitch;
};

// One phase of one tile, on `len` channels from c0 on; `cols` is scratch.
struct InputPhase {
    template <class R, class C>
    static FOVEA_ALWAYS_INLINE void run(int64_t py, int64_t px, int64_t q0, const InputArgs & a, const float * window,
                                        float * vt, int64_t c0, int len, float * cols) {
        const float * origin = window + py * a.row_pitch + px * a.pixel_pitch + c0;
        const int64_t stride = stride_of(a.scheme);
        // Down each column x: cols[i][x] = (B^T d)[i][x].
        for (int64_t x = 0; x < C::kIn; x++) {
            R::input(origin + x * stride * a.pixel_pitch, stride * a.row_pitch, cols + x * kLanes, C::kIn * kLanes,
                     len);
        }
        // Along each row i: V[i][j] = (B^T d B)[i][j].
        for (int64_t i = 0; i < R::kIn; i++) {
            C::input(cols + i * C::kIn * kLanes, kLanes, vt + (q0 + i * C::kIn) * a.point_stride + c0, a.point_stride,
                     len);
        }
    }
};

struct InputTransform {
    static FOVEA_ALWAYS_INLINE void run(InputArgs a, int64_t begin, int64_t end) {
        alignas(64) float cols[kMaxIn * kMaxIn * kLanes];
        const int64_t step = stride_of(a.scheme) * a.tiling.size;
        for (int64_t t = begin; t < end; t++) {
            const float * window = a.x + a.tiling.image(t) * a.image_pitch + a.tiling.row(t) * step * a.row_pitch +
                                   a.tiling.col(t) * step * a.pixel_pitch;
            float * vt = a.v + (t - a.first) * a.pitch;
            int64_t c0 = 0;
            // Whole vectors with a constant count, which vectorises with no
            // remainder loop; then the channels left.
            for (; c0 + kLanes <= a.channels; c0 += kLanes) {
                for_each_phase<InputPhase>(a.scheme, a, window, vt, c0, kLanes, cols);
            }
            if (c0 < a.channels) {
                const int len = int(a.channels - c0);
                for_each_phase<InputPhase>(a.scheme, a, window, vt, c0, len, cols);
            }
        }
    }
};

FOVEA_ALWAYS_INLINE void store_activated(const float * __restrict v, const float * __restrict bias, Activation act,
                                         float * __restrict dst, int len) {
    if (act == Activation::Relu) {
        for (int c = 0; c < len; c++) dst[c] = std::max(v[c] + bias[c], 0.0f);
    } else if (act == Activation::Sigmoid) {
        for (int c = 0; c < len; c++) dst[c] = 1.0f / (1.0f + std::exp(-(v[c] + bias[c])));
    } else {
        for (int c = 0; c < len; c++) dst[c] = v[c] + bias[c];
    }
}

struct OutputArgs {
    const float * m;  // point q of tile t at m + q * point_stride + (t - first) * pitch
    Scheme scheme;
    int64_t point_stride, pitch;
    int64_t channels;
    const float * bias;  // one per channel (zeros when the conv has none)
    Activation act;
    Tiling tiling;
    int64_t first;
    int64_t oh, ow;
    float * y;  // [n][oh][ow][channels]
};

// One phase of one tile, on `len` channels from c0 on, `rows` outputs tall:
// acc[r][x] (+)= (A^T M A)[r][x] (rows kMaxTile apart), the first phase
// storing; `cols` is scratch.
struct OutputPhase {
    template <class R, class C>
    static FOVEA_ALWAYS_INLINE void run(int64_t py, int64_t px, int64_t q0, const OutputArgs & a, const float * mt,
                                        int64_t rows, int64_t c0, int len, float * cols, float * acc) {
        // Down each column x: cols[r][x] = (A^T M)[r][x].
        for (int64_t x = 0; x < C::kIn; x++) {
            R::template output<false>(mt + (q0 + x) * a.point_stride + c0, C::kIn * a.point_stride, cols + x * kLanes,
                                      C::kIn * kLanes, len);
        }
        // Along each output row r.
        for (int64_t r = 0; r < rows; r++) {
            if (py == 0 && px == 0) {
                C::template output<false>(cols + r * C::kIn * kLanes, kLanes, acc + r * kMaxTile * kLanes, kLanes, len);
            } else {
                C::template output<true>(cols + r * C::kIn * kLanes, kLanes, acc + r * kMaxTile * kLanes, kLanes, len);
            }
        }
    }
};

struct OutputTransform {
    static FOVEA_ALWAYS_INLINE void run(OutputArgs a, int64_t begin, int64_t end) {
        alignas(64) float cols[kMaxTile * kMaxIn * kLanes];
        alignas(64) float acc[kMaxTile * kMaxTile * kLanes];
        const int64_t size = a.tiling.size;
        for (int64_t t = begin; t < end; t++) {
            const int64_t oy = a.tiling.row(t) * size, ox = a.tiling.col(t) * size;
            const int64_t rows = std::min(size, a.oh - oy), width = std::min(size, a.ow - ox);
            const float * mt = a.m + (t - a.first) * a.pitch;
            float * yt = a.y + ((a.tiling.image(t) * a.oh + oy) * a.ow + ox) * a.channels;
            for (int64_t c0 = 0; c0 < a.channels; c0 += kLanes) {
                const int len = int(std::min<int64_t>(kLanes, a.channels - c0));
                if (len == kLanes) {
                    for_each_phase<OutputPhase>(a.scheme, a, mt, rows, c0, kLanes, cols, acc);
                } else {
                    for_each_phase<OutputPhase>(a.scheme, a, mt, rows, c0, len, cols, acc);
                }
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t x = 0; x < width; x++) {
                        store_activated(acc + (r * kMaxTile + x) * kLanes, a.bias + c0, a.act,
                                        yt + (r * a.ow + x) * a.channels + c0, len);
                    }
                }
            }
        }
    }
};

// U[q0 + i * C::kIn + j][c][oc] = (G_R g' G_C^T)[i][j] for the phase's
// taps g' of every kernel, computed in double.
struct WeightPhase {
    template <class R, class C>
    static void run(int64_t py, int64_t px, int64_t q0, int64_t stride, const float * g, int64_t c, int64_t o,
                    int64_t channels, int64_t oc, float * u) {
        double gg[R::kIn][C::kTaps];  // G_R g'
        for (int64_t i = 0; i < R::kIn; i++) {
            for (int64_t b = 0; b < C::kTaps; b++) {
                double s = 0;
                for (int64_t k = 0; k < R::kTaps; k++) s += R::G[i][k] * g[(py + k * stride) * 3 + px + b * stride];
                gg[i][b] = s;
            }
        }
        for (int64_t i = 0; i < R::kIn; i++) {
            for (int64_t j = 0; j < C::kIn; j++) {
                double s = 0;
                for (int64_t b = 0; b < C::kTaps; b++) s += gg[i][b] * C::G[j][b];
                u[((q0 + i * C::kIn + j) * channels + c) * oc + o] = float(s);
            }
        }
    }
};

// Every point's U, packed as the B operand of its GEMM in prepack_b's
// layout. Kept with constant weights, as the channels-last path keeps its
// packing.
std::shared_ptr<const Tensor> winograd_weights(const Tensor & w, const conv_detail::ConvDims & d, Scheme scheme,
                                               const packed::Kernel & kn) {
    const int64_t points = points_of(scheme), stride = stride_of(scheme);
    auto make = [&]() {
        const int64_t channels = d.cg, oc = d.ocg;
        Tensor u = Tensor::empty({points, channels, oc});
        float * ud = u.f32();
        const float * wd = w.f32();
        parallel_for(oc, 1, [&](int64_t begin, int64_t end) {
            for (int64_t o = begin; o < end; o++) {
                for (int64_t c = 0; c < channels; c++) {
                    const float * g = wd + (o * channels + c) * 9;
                    for_each_phase<WeightPhase>(scheme, stride, g, c, o, channels, oc, ud);
                }
            }
        });
        const int64_t per_point = packed::prepacked_b_floats(kn, channels, oc);
        auto packed_u = std::make_shared<Tensor>(Tensor::empty({points, per_point}));
        for (int64_t q = 0; q < points; q++) {
            packed::prepack_b(kn, ud + q * channels * oc, oc, 1, channels, oc, packed_u->f32() + q * per_point);
        }
        return packed_u;
    };
    if (!w.is_constant()) return make();
    const char * name = scheme == Scheme::Stride1 ? "f4x4s1" : scheme == Scheme::Stride2Tile4 ? "f4x4s2" : "f2x2s2";
    const std::string key = std::string("cpu.conv.winograd.") + name + "." + cpu_isa_name(kn.isa);
    return std::static_pointer_cast<const Tensor>(w.derived(key, make));
}

// At stride 2, the tile size that needs fewer products per output, counting
// the outputs past the image that the tiling computes: 2x2 for 14x14
// outputs (6.25 against 6.6 of 4x4 tiles), 4x4 for 7x7 (6.6 against 8.2)
// and 28x28 (5.1 against 6.25).
double products_per_output(Scheme s, int64_t oh, int64_t ow) {
    const Tiling tiling = tiling_of(s, oh, ow);
    return double(points_of(s)) * double(tiling.rows * tiling.cols) / double(oh * ow);
}

Scheme scheme_for(int64_t stride, int64_t oh, int64_t ow) {
    if (stride == 1) return Scheme::Stride1;
    return products_per_output(Scheme::Stride2Tile2, oh, ow) < products_per_output(Scheme::Stride2Tile4, oh, ow)
               ? Scheme::Stride2Tile2
               : Scheme::Stride2Tile4;
}

}  // namespace

bool conv2d_winograd_applies(const Shape & w_shape, const Conv2dParams & p) {
    return w_shape.size() == 4 && w_shape[2] == 3 && w_shape[3] == 3 && p.stride_h == p.stride_w &&
           (p.stride_h == 1 || p.stride_h == 2) && p.dilation_h == 1 && p.dilation_w == 1 && p.groups == 1;
}

namespace conv_detail {

WinogradPlan winograd_plan(const ConvDims & d, int64_t stride) {
    const Scheme scheme = scheme_for(stride, d.oh, d.ow);
    const Tiling tiling = tiling_of(scheme, d.oh, d.ow);
    return {d.n * tiling.rows * tiling.cols, points_of(scheme), products_per_output(scheme, d.oh, d.ow)};
}

Tensor conv_winograd(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                     const ConvDims & d, const Tensor & residual, const Tensor & residual_scale, Tensor y) {
    const CpuIsa isa = cpu_isa();
    const packed::Kernel & kn = packed::kernel_for(isa);
    const int64_t channels = d.cg, oc = d.ocg, stride = p.stride_h;
    const Scheme scheme = scheme_for(stride, d.oh, d.ow);
    const int64_t points = points_of(scheme);
    const Tiling tiling = tiling_of(scheme, d.oh, d.ow);
    const int64_t size = tiling.size;
    const int64_t tiles = d.n * tiling.rows * tiling.cols;

    // Padded further at the bottom and right so that every tile's window
    // lies inside the copy (outputs past the image are computed, then
    // dropped); never cropped, though a stride-2 window may end before the
    // padded image does.
    const int64_t hp = std::max(stride * tiling.rows * size + 3 - stride, d.h + p.pad_top);
    const int64_t wp = std::max(stride * tiling.cols * size + 3 - stride, d.w + p.pad_left);
    Conv2dParams window_pad = p;
    window_pad.pad_bottom = int(hp - d.h - p.pad_top);
    window_pad.pad_right = int(wp - d.w - p.pad_left);
    const Tensor xin = channels_last_input(x, d, window_pad);
    const int64_t x_pitch = channels_last_pitch(channels);
    const std::shared_ptr<const Tensor> u = winograd_weights(w, d, scheme, kn);

    // V's rows are read by several register-tile rows at once: the same
    // padding against cache-set conflicts as the channels-last input.
    const int64_t v_pitch = x_pitch;
    int64_t chunk = std::min(tiles, std::max(kMinChunkTiles, kChunkFloats / (points * (v_pitch + oc))));
    // Where the minimum governs, U is large and streamed once per chunk: a
    // short last chunk would stream all of it for a few tiles, so its tiles
    // join the others (MultiPathNet's 512-channel tower: 400 tiles in 6
    // chunks, not 6 of 64 and one of 16, took 0.92-0.95 of the time).
    if (chunk == kMinChunkTiles) chunk = (tiles + tiles / chunk - 1) / (tiles / chunk);
    Tensor v = Tensor::empty({points, chunk, v_pitch});
    Tensor m = Tensor::empty({points, chunk, oc});
    Tensor yt = Tensor::empty({d.n, d.oh * d.ow, oc});
    std::vector<int64_t> channel_offsets(static_cast<size_t>(channels));
    std::iota(channel_offsets.begin(), channel_offsets.end(), int64_t(0));
    std::vector<float> zeros;
    if (!bias.defined()) zeros.assign(size_t(oc), 0.0f);

    for (int64_t first = 0; first < tiles; first += chunk) {
        const int64_t count = std::min(chunk, tiles - first);
        const InputArgs in{xin.f32(), scheme, channels, x_pitch,        wp * x_pitch, hp * wp * x_pitch,
                           tiling,    first,  v.f32(),  chunk * v_pitch, v_pitch};
        parallel_for(count, 1, [&](int64_t begin, int64_t end) {
            run_isa<InputTransform>(isa, in, first + begin, first + end);
        });

        packed::Problem pr;
        pr.groups = points;
        pr.m = count;
        pr.n = oc;
        pr.k = channels;
        // Through offsets, so that register tiles split the rows evenly.
        pr.a = v.f32();
        pr.a_gs = chunk * v_pitch;
        pr.a_offsets = channel_offsets.data();
        pr.a_rows.pixel_pitch = v_pitch;
        pr.a_rows.row_len = count;
        pr.a_rows.plane = count;
        pr.b_prepacked = u->f32();
        pr.b_prepacked_gs = u->dim(1);
        pr.c = m.f32();
        pr.c_gs = chunk * oc;
        pr.ldc = oc;
        packed::run(pr);

        // With a residual (in y's layout), the activation waits for it.
        const OutputArgs out{m.f32(),
                             scheme,
                             chunk * oc,
                             oc,
                             oc,
                             bias.defined() ? bias.f32() : zeros.data(),
                             residual.defined() ? Activation::None : p.activation,
                             tiling,
                             first,
                             d.oh,
                             d.ow,
                             yt.f32()};
        parallel_for(count, 1, [&](int64_t begin, int64_t end) {
            run_isa<OutputTransform>(isa, out, first + begin, first + end);
        });
    }
    channels_last_output(yt, d, p.activation, residual, residual_scale, y);
    return y;
}

}  // namespace conv_detail

}  // namespace fovea::cpu
