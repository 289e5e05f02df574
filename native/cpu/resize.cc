// Bilinear resize (ONNX Resize mode "linear", no antialias) and integer
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
