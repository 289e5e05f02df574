// Bilinear resize (ONNX Resize mode "linear", no antialias), torch/image's
// image.scale (linear when growing, area average when shrinking) and integer
// nearest-neighbour upsampling (Torch7 nn.SpatialUpSamplingNearest).
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Output elements per task.
constexpr int64_t kGrain = 1 << 15;

// For each output index along one axis: the two input neighbours and their
// weights (left/top first).
struct AxisTaps {
    std::vector<int32_t> i0, i1;
    std::vector<float> w0, w1;
};

// Source coordinate of output index `dst` (ONNX coordinate_transformation_mode).
// `length` is ONNX's resized length: in * scale when a scale is given (which
// need not be an integer), otherwise the output size.
double source_coord(int64_t dst, int64_t in, double length, double scale, ResizeCoord mode) {
    double d = double(dst);
    switch (mode) {
        case ResizeCoord::AlignCorners: return length == 1.0 ? 0.0 : d * double(in - 1) / (length - 1.0);
        case ResizeCoord::HalfPixel: return (d + 0.5) / scale - 0.5;
        case ResizeCoord::PytorchHalfPixel: return length == 1.0 ? 0.0 : (d + 0.5) / scale - 0.5;
        case ResizeCoord::Asymmetric: return d / scale;
    }
    throw_error(ErrorCode::Options, "resize_bilinear: unknown coordinate mode");
}

AxisTaps axis_taps(int64_t in, int64_t out, double scale, ResizeCoord mode) {
    double length = scale > 0.0 ? double(in) * scale : double(out);
    if (scale == 0.0) scale = double(out) / double(in);
    AxisTaps t;
    t.i0.resize(size_t(out));
    t.i1.resize(size_t(out));
    t.w0.resize(size_t(out));
    t.w1.resize(size_t(out));
    for (int64_t o = 0; o < out; o++) {
        // ONNX clamps the coordinate into the input (edge replication); the
        // comparisons also send +-inf from extreme scales to an edge.
        double c = source_coord(o, in, length, scale, mode);
        c = c > 0.0 ? c : 0.0;
        c = c < double(in - 1) ? c : double(in - 1);
        int64_t i0 = int64_t(c);
        double frac = c - double(i0);
        t.i0[size_t(o)] = int32_t(i0);
        t.i1[size_t(o)] = int32_t(std::min(i0 + 1, in - 1));
        t.w0[size_t(o)] = float(1.0 - frac);
        t.w1[size_t(o)] = float(frac);
    }
    return t;
}

// out[x] = row[i0[x]] * w0[x] + row[i1[x]] * w1[x]. Without restrict GCC
// cannot rule out aliasing and, as it does not version gathers for it,
// leaves the loop scalar.
FOVEA_ALWAYS_INLINE void interpolate_row(const float * __restrict row, const int32_t * __restrict i0,
                                         const int32_t * __restrict i1, const float * __restrict w0,
                                         const float * __restrict w1, float * __restrict out, int64_t n) {
    for (int64_t x = 0; x < n; x++) out[x] = row[i0[x]] * w0[x] + row[i1[x]] * w1[x];
}

struct ResizeGeom {
    int64_t h, w, oh, ow;
    const AxisTaps * ty;
    const AxisTaps * tx;
};

// Separable: each needed input row is interpolated horizontally once into
// one of two cached rows (slot = row parity, so rows y and y + 1 never
// collide), then every output row is a vertical blend of two cached rows.
struct ResizeKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * in, float * out, int64_t planes, const ResizeGeom * g,
                                        float * cache) {
        const int64_t h = g->h, w = g->w, oh = g->oh, ow = g->ow;
        const int32_t * x0 = g->tx->i0.data();
        const int32_t * x1 = g->tx->i1.data();
        const float * wx0 = g->tx->w0.data();
        const float * wx1 = g->tx->w1.data();
        for (int64_t p = 0; p < planes; p++) {
            const float * ip = in + p * h * w;
            float * op = out + p * oh * ow;
            int64_t cached[2] = {-1, -1};
            for (int64_t y = 0; y < oh; y++) {
                const float * rows[2];
                for (int k = 0; k < 2; k++) {
                    int64_t iy = k ? g->ty->i1[size_t(y)] : g->ty->i0[size_t(y)];
                    float * slot = cache + (iy & 1) * ow;
                    if (cached[iy & 1] != iy) {
                        interpolate_row(ip + iy * w, x0, x1, wx0, wx1, slot, ow);
                        cached[iy & 1] = iy;
                    }
                    rows[k] = slot;
                }
                const float wy0 = g->ty->w0[size_t(y)], wy1 = g->ty->w1[size_t(y)];
                const float * r0 = rows[0];
                const float * r1 = rows[1];
                float * orow = op + y * ow;
                for (int64_t x = 0; x < ow; x++) orow[x] = r0[x] * wy0 + r1[x] * wy1;
            }
        }
    }
};

}  // namespace

Tensor resize_bilinear(const Tensor & x, const ResizeParams & p) {
    Shape shape = resize_output_shape(x, p);
    check_host(x, "resize_bilinear");
    FOVEA_CHECK_INPUT(x.dim(3) < (int64_t(1) << 31), "resize_bilinear: input width " << x.dim(3) << " is too large");
    FOVEA_CHECK_OPTIONS(p.coord == ResizeCoord::AlignCorners || p.coord == ResizeCoord::HalfPixel ||
                            p.coord == ResizeCoord::PytorchHalfPixel || p.coord == ResizeCoord::Asymmetric,
                        "resize_bilinear: unknown coordinate mode " << int(p.coord));
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    AxisTaps ty = axis_taps(x.dim(2), p.out_h, p.scale_h, p.coord);
    AxisTaps tx = axis_taps(x.dim(3), p.out_w, p.scale_w, p.coord);
    ResizeGeom g{x.dim(2), x.dim(3), p.out_h, p.out_w, &ty, &tx};
    const float * xp = x.f32();
    float * yp = y.f32();
    int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    CpuIsa isa = cpu_isa();
    parallel_for(shape[0] * shape[1], std::max<int64_t>(1, kGrain / out_plane), [&](int64_t lo, int64_t hi) {
        std::vector<float> cache(size_t(2 * g.ow));
        run_isa<ResizeKernel>(isa, xp + lo * in_plane, yp + lo * out_plane, hi - lo, &g, cache.data());
    });
    return y;
}

ImageScaleAxis::ImageScaleAxis(int64_t in, int64_t out) {
    FOVEA_CHECK_OPTIONS(in >= 1 && out >= 1 && in < (int64_t(1) << 31) && out < (int64_t(1) << 31),
                        "image_scale: sizes must be in [1, 2^31), got " << in << " -> " << out);
    first.resize(size_t(out));
    offset.resize(size_t(out) + 1);
    norm.resize(size_t(out));
    // torch/image generic/image.c scaleLinear_rowcol, in float32 as there.
    for (int64_t o = 0; o < out; o++) {
        offset[size_t(o)] = int64_t(weights.size());
        float n = 1.0f;
        if (out > in) {
            if (o == out - 1 || in == 1) {
                first[size_t(o)] = int32_t(o == out - 1 ? in - 1 : 0);
                weights.push_back(1.0f);
            } else {
                const float scale = float(in - 1) / float(out - 1);
                float f = float(o) * scale;
                int64_t i = int64_t(f);
                f -= float(i);
                // Rounding can put the position on the last sample, whose
                // right neighbour does not exist (its weight is 0 there).
                if (i >= in - 1) {
                    i = in - 2;
                    f = 1.0f;
                }
                first[size_t(o)] = int32_t(i);
                weights.push_back(1.0f - f);
                weights.push_back(f);
            }
        } else if (out < in) {
            const float scale = float(in) / float(out);
            float f0 = float(o) * scale, f1 = float(o + 1) * scale;
            int64_t i0 = int64_t(f0), i1 = int64_t(f1);
            f0 -= float(i0);
            f1 -= float(i1);
            first[size_t(o)] = int32_t(i0);
            weights.push_back(1.0f - f0);
            n = 1.0f - f0;
            for (int64_t i = i0 + 1; i < i1; i++) {
                weights.push_back(1.0f);
                n += 1.0f;
            }
            if (i1 < in) {
                weights.push_back(f1);
                n += f1;
            }
        } else {
            first[size_t(o)] = int32_t(o);
            weights.push_back(1.0f);
        }
        norm[size_t(o)] = n;
    }
    offset[size_t(out)] = int64_t(weights.size());
}

void image_scale_plane(const float * in, int64_t in_h, int64_t in_w, const ImageScaleAxis & ay,
                       const ImageScaleAxis & ax, int64_t row_begin, int64_t row_end, int64_t col_begin,
                       int64_t col_end, float * out, float * tmp) {
    const int64_t cols = col_end - col_begin;
    // Width pass over every input row, only for the wanted output columns.
    for (int64_t r = 0; r < in_h; r++) {
        const float * src = in + r * in_w;
        float * dst = tmp + r * cols;
        for (int64_t c = col_begin; c < col_end; c++) {
            const float * w = ax.weights.data() + ax.offset[size_t(c)];
            const int64_t taps = ax.offset[size_t(c) + 1] - ax.offset[size_t(c)];
            const float * s = src + ax.first[size_t(c)];
            float acc = 0.0f;
            for (int64_t k = 0; k < taps; k++) acc += w[k] * s[k];
            dst[c - col_begin] = acc / ax.norm[size_t(c)];
        }
    }
    // Height pass, taps outermost so the column loops vectorise; every
    // output still sums its taps from 0 in tap order, as the width pass does.
    for (int64_t r = row_begin; r < row_end; r++) {
        const float * w = ay.weights.data() + ay.offset[size_t(r)];
        const int64_t taps = ay.offset[size_t(r) + 1] - ay.offset[size_t(r)];
        const float * s = tmp + int64_t(ay.first[size_t(r)]) * cols;
        float * __restrict dst = out + (r - row_begin) * cols;
        const float norm = ay.norm[size_t(r)];
        std::fill(dst, dst + cols, 0.0f);
        for (int64_t k = 0; k < taps; k++) {
            const float wk = w[k];
            const float * __restrict sk = s + k * cols;
            for (int64_t c = 0; c < cols; c++) dst[c] += wk * sk[c];
        }
        for (int64_t c = 0; c < cols; c++) dst[c] /= norm;
    }
}

Tensor image_scale(const Tensor & x, int64_t out_h, int64_t out_w) {
    Shape shape = image_scale_output_shape(x, out_h, out_w);
    check_host(x, "image_scale");
    Tensor y = Tensor::empty(shape);
    const int64_t h = x.dim(2), w = x.dim(3);
    const ImageScaleAxis ay(h, out_h), ax(w, out_w);
    const float * xp = x.f32();
    float * yp = y.f32();
    parallel_for(shape[0] * shape[1], std::max<int64_t>(1, kGrain / (out_h * out_w)), [&](int64_t lo, int64_t hi) {
        std::vector<float> tmp(size_t(h * out_w));
        for (int64_t p = lo; p < hi; p++) {
            image_scale_plane(xp + p * h * w, h, w, ay, ax, 0, out_h, 0, out_w, yp + p * out_h * out_w, tmp.data());
        }
    });
    return y;
}

Tensor upsample_nearest(const Tensor & x, int factor) {
    Shape shape = upsample_nearest_output_shape(x, factor);
    check_host(x, "upsample_nearest");
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    const int64_t h = x.dim(2), w = x.dim(3), ow = shape[3];
    const float * xp = x.f32();
    float * yp = y.f32();
    // out[y][x] = in[y / f][x / f]: build one output row per input row, then
    // copy it to the other f - 1 rows (memory bound; no ISA variants needed).
    parallel_for(shape[0] * shape[1], std::max<int64_t>(1, kGrain / (h * w * factor * factor)),
                 [&](int64_t lo, int64_t hi) {
                     for (int64_t p = lo; p < hi; p++) {
                         for (int64_t iy = 0; iy < h; iy++) {
                             const float * irow = xp + (p * h + iy) * w;
                             float * orow = yp + (p * h + iy) * factor * ow;
                             for (int64_t ix = 0; ix < w; ix++) {
                                 for (int k = 0; k < factor; k++) orow[ix * factor + k] = irow[ix];
                             }
                             for (int k = 1; k < factor; k++) {
                                 std::memcpy(orow + k * ow, orow, size_t(ow) * sizeof(float));
                             }
                         }
                     }
                 });
    return y;
}

}  // namespace fovea::cpu
