// conv2d of 3x3 kernels at stride 1 by Winograd's minimal filtering F(4x4, 3x3)
// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016). Each 4x4 block of outputs (a tile) comes from the 6x6 window of
// inputs that covers it as
//   Y = A^T [ (G g G^T) . (B^T d B) ] A,
// 36 products per tile and channel pair where the direct convolution needs
// 144. Summed over input channels, the elementwise products are 36
// independent GEMMs, one per point of the transformed 6x6 domain,
//   M[point][tile][oc] = V[point][tile][c] * U[point][c][oc],
// which run on the packed micro-kernel as the groups of one problem. The
// transforms are vectorised over channels: the input is read from the
// zero-padded channels-last copy conv.cc makes, and the outputs are written
// channels last, then transposed into NCHW as the channels-last path does.
//
// Tiles are taken in chunks, so that V and M stay in the last-level cache
// and large images need no 36-fold copy of themselves.

#include <algorithm>
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

constexpr int64_t kTile = 4;                    // outputs per tile side
constexpr int64_t kWindow = kTile + 2;          // inputs per tile side
constexpr int64_t kPoints = kWindow * kWindow;  // one GEMM each
constexpr int kLanes = 16;                      // channels per transform step

// V and M of one chunk of tiles together stay under this many floats (4 MB).
// On VGG-16 and ResNet-50 layers at 800x800 (2 threads, dev VM), 16 MB was
// up to 25% slower on 64-channel maps, 1 MB slower there too, and 8 MB even.
constexpr int64_t kChunkFloats = int64_t(1) << 20;
// Fewer tiles per chunk would reread the transformed weights too often.
constexpr int64_t kMinChunkTiles = 64;

// out[i * os] = (B^T d)[i] for d[j] = in[j * is], on `len` channels.
FOVEA_ALWAYS_INLINE void input_1d(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
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

// out[i * os] = (A^T m)[i] for m[j] = in[j * is], on `len` channels.
FOVEA_ALWAYS_INLINE void output_1d(const float * __restrict in, int64_t is, float * __restrict out, int64_t os,
                                   int len) {
    for (int c = 0; c < len; c++) {
        const float m0 = in[c], m1 = in[is + c], m2 = in[2 * is + c];
        const float m3 = in[3 * is + c], m4 = in[4 * is + c], m5 = in[5 * is + c];
        const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
        out[c] = m0 + s12 + s34;
        out[os + c] = d12 + 2.0f * d34;
        out[2 * os + c] = s12 + 4.0f * s34;
        out[3 * os + c] = d12 + 8.0f * d34 + m5;
    }
}

// Tile t of the batch is (image, tile row, tile column), in that order.
struct Tiling {
    int64_t rows, cols;  // tiles per image
    int64_t image(int64_t t) const { return t / (rows * cols); }
    int64_t row(int64_t t) const { return t % (rows * cols) / cols; }
    int64_t col(int64_t t) const { return t % cols; }
};

struct InputArgs {
    const float * x;  // padded, channels last
    int64_t channels, pixel_pitch, row_pitch, image_pitch;
    Tiling tiling;
    int64_t first;  // the chunk's first tile
    float * v;      // point q of tile t at v + q * point_stride + (t - first) * pitch
    int64_t point_stride, pitch;
};

// One tile's `len` channels from c0 on; `cols` is scratch.
FOVEA_ALWAYS_INLINE void input_tile(const InputArgs & a, const float * window, float * vt, int64_t c0, int len,
                                    float * cols) {
    // Down each column x of the window: cols[i][x] = (B^T d)[i][x].
    for (int64_t x = 0; x < kWindow; x++) {
        input_1d(window + x * a.pixel_pitch + c0, a.row_pitch, cols + x * kLanes, kWindow * kLanes, len);
    }
    // Along each row i: V[i][j] = (B^T d B)[i][j].
    for (int64_t i = 0; i < kWindow; i++) {
        input_1d(cols + i * kWindow * kLanes, kLanes, vt + i * kWindow * a.point_stride + c0, a.point_stride, len);
    }
}

struct InputTransform {
    static FOVEA_ALWAYS_INLINE void run(InputArgs a, int64_t begin, int64_t end) {
        alignas(64) float cols[kPoints * kLanes];
        for (int64_t t = begin; t < end; t++) {
            const float * window = a.x + a.tiling.image(t) * a.image_pitch + a.tiling.row(t) * kTile * a.row_pitch +
                                   a.tiling.col(t) * kTile * a.pixel_pitch;
            float * vt = a.v + (t - a.first) * a.pitch;
            int64_t c0 = 0;
            // Whole vectors with a constant count, which vectorises with no
            // remainder loop; then the channels left.
            for (; c0 + kLanes <= a.channels; c0 += kLanes) input_tile(a, window, vt, c0, kLanes, cols);
            if (c0 < a.channels) input_tile(a, window, vt, c0, int(a.channels - c0), cols);
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
    int64_t point_stride, pitch;
    int64_t channels;
    const float * bias;  // one per channel (zeros when the conv has none)
    Activation act;
    Tiling tiling;
    int64_t first;
    int64_t oh, ow;
    float * y;  // [n][oh][ow][channels]
};

// One tile's `len` channels from c0 on, `rows` x `width` outputs inside the
// image; `cols` and `row` are scratch.
FOVEA_ALWAYS_INLINE void output_tile(const OutputArgs & a, const float * mt, float * yt, int64_t rows, int64_t width,
                                     int64_t c0, int len, float * cols, float * row) {
    // Down each column x: cols[r][x] = (A^T M)[r][x].
    for (int64_t x = 0; x < kWindow; x++) {
        output_1d(mt + x * a.point_stride + c0, kWindow * a.point_stride, cols + x * kLanes, kWindow * kLanes, len);
    }
    // Along each output row r: (A^T M A)[r].
    for (int64_t r = 0; r < rows; r++) {
        output_1d(cols + r * kWindow * kLanes, kLanes, row, kLanes, len);
        for (int64_t x = 0; x < width; x++) {
            store_activated(row + x * kLanes, a.bias + c0, a.act, yt + (r * a.ow + x) * a.channels + c0, len);
        }
    }
}

struct OutputTransform {
    static FOVEA_ALWAYS_INLINE void run(OutputArgs a, int64_t begin, int64_t end) {
        alignas(64) float cols[kTile * kWindow * kLanes];
        alignas(64) float row[kTile * kLanes];
        for (int64_t t = begin; t < end; t++) {
            const int64_t oy = a.tiling.row(t) * kTile, ox = a.tiling.col(t) * kTile;
            const int64_t rows = std::min(kTile, a.oh - oy), width = std::min(kTile, a.ow - ox);
            const float * mt = a.m + (t - a.first) * a.pitch;
            float * yt = a.y + ((a.tiling.image(t) * a.oh + oy) * a.ow + ox) * a.channels;
            int64_t c0 = 0;
            for (; c0 + kLanes <= a.channels; c0 += kLanes) output_tile(a, mt, yt, rows, width, c0, kLanes, cols, row);
            if (c0 < a.channels) output_tile(a, mt, yt, rows, width, c0, int(a.channels - c0), cols, row);
        }
    }
};

// U[point][c][oc] = (G g G^T) of every kernel, computed in double, and
// packed as the B operand of each point's GEMM in prepack_b's layout. Kept
// with constant weights, as the channels-last path keeps its packing.
std::shared_ptr<const Tensor> winograd_weights(const Tensor & w, const conv_detail::ConvDims & d,
                                               const packed::Kernel & kn) {
    auto make = [&]() {
        static constexpr double G[kWindow][3] = {{1.0 / 4, 0, 0},
                                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                                 {0, 0, 1}};
        const int64_t channels = d.cg, oc = d.ocg;
        Tensor u = Tensor::empty({kPoints, channels, oc});
        float * ud = u.f32();
        const float * wd = w.f32();
        parallel_for(oc, 1, [&](int64_t begin, int64_t end) {
            for (int64_t o = begin; o < end; o++) {
                for (int64_t c = 0; c < channels; c++) {
                    const float * g = wd + (o * channels + c) * 9;
                    double gg[kWindow][3];  // G g
                    for (int64_t i = 0; i < kWindow; i++) {
                        for (int64_t b = 0; b < 3; b++) {
                            gg[i][b] = G[i][0] * g[b] + G[i][1] * g[3 + b] + G[i][2] * g[6 + b];
                        }
                    }
                    for (int64_t i = 0; i < kWindow; i++) {
                        for (int64_t j = 0; j < kWindow; j++) {
                            const double v = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
                            ud[((i * kWindow + j) * channels + c) * oc + o] = float(v);
                        }
                    }
                }
            }
        });
        const int64_t per_point = packed::prepacked_b_floats(kn, channels, oc);
        auto packed_u = std::make_shared<Tensor>(Tensor::empty({kPoints, per_point}));
        for (int64_t q = 0; q < kPoints; q++) {
            packed::prepack_b(kn, ud + q * channels * oc, oc, 1, channels, oc, packed_u->f32() + q * per_point);
        }
        return packed_u;
    };
    if (!w.is_constant()) return make();
    const std::string key = std::string("cpu.conv.winograd4x4.") + cpu_isa_name(kn.isa);
    return std::static_pointer_cast<const Tensor>(w.derived(key, make));
}

}  // namespace

bool conv2d_winograd_applies(const Shape & w_shape, const Conv2dParams & p) {
    return w_shape.size() == 4 && w_shape[2] == 3 && w_shape[3] == 3 && p.stride_h == 1 && p.stride_w == 1 &&
           p.dilation_h == 1 && p.dilation_w == 1 && p.groups == 1;
}

namespace conv_detail {

Tensor conv_winograd(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                     const ConvDims & d, const Tensor & residual, const Tensor & residual_scale, Tensor y) {
    const CpuIsa isa = cpu_isa();
    const packed::Kernel & kn = packed::kernel_for(isa);
    const int64_t channels = d.cg, oc = d.ocg;
    const Tiling tiling{(d.oh + kTile - 1) / kTile, (d.ow + kTile - 1) / kTile};
    const int64_t tiles = d.n * tiling.rows * tiling.cols;

    // Padded further at the bottom and right so that every tile's window
    // lies inside the copy (outputs past the image are computed, then dropped).
    const int64_t hp = tiling.rows * kTile + 2, wp = tiling.cols * kTile + 2;
    Conv2dParams window_pad = p;
    window_pad.pad_bottom = int(hp - d.h - p.pad_top);
    window_pad.pad_right = int(wp - d.w - p.pad_left);
    const Tensor xin = channels_last_input(x, d, window_pad);
    const int64_t x_pitch = channels_last_pitch(channels);
    const std::shared_ptr<const Tensor> u = winograd_weights(w, d, kn);

    // V's rows are read by several register-tile rows at once: the same
    // padding against cache-set conflicts as the channels-last input.
    const int64_t v_pitch = x_pitch;
    const int64_t chunk = std::min(tiles, std::max(kMinChunkTiles, kChunkFloats / (kPoints * (v_pitch + oc))));
    Tensor v = Tensor::empty({kPoints, chunk, v_pitch});
    Tensor m = Tensor::empty({kPoints, chunk, oc});
    Tensor yt = Tensor::empty({d.n, d.oh * d.ow, oc});
    std::vector<int64_t> channel_offsets(static_cast<size_t>(channels));
    std::iota(channel_offsets.begin(), channel_offsets.end(), int64_t(0));
    std::vector<float> zeros;
    if (!bias.defined()) zeros.assign(size_t(oc), 0.0f);

    for (int64_t first = 0; first < tiles; first += chunk) {
        const int64_t count = std::min(chunk, tiles - first);
        const InputArgs in{xin.f32(), channels, x_pitch,  wp * x_pitch, hp * wp * x_pitch,
                           tiling,    first,    v.f32(), chunk * v_pitch, v_pitch};
        parallel_for(count, 1, [&](int64_t begin, int64_t end) {
            run_isa<InputTransform>(isa, in, first + begin, first + end);
        });

        packed::Problem pr;
        pr.groups = kPoints;
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
