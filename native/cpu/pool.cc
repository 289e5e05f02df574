// 2-D max and average pooling. Both reductions are separable, so each output
// row takes two passes: the kernel rows inside the image are reduced into one
// input-width row (contiguous, vectorised), then the kernel columns of that
// row; for a column tap the output columns whose input lies inside the image
// form one range, so that loop has no bounds test either (unit and 2 strides
// get their own instantiations). kh + kw passes instead of kh * kw.
#include <algorithm>
#include <limits>
#include <vector>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Output elements times taps per task.
constexpr int64_t kGrain = 1 << 16;

struct PoolGeom {
    int64_t h, w, oh, ow;
    int64_t kh, kw, sh, sw, pt, pl, dh, dw;
    // Average pool divisors, separable into a row and a column factor.
    const float * div_h;
    const float * div_w;
};

// m > v ? m : v would keep a NaN once it got in; v > m ? v : m skips NaN
// inputs (as ONNX Runtime's MaxPool) and so makes the max order-independent.
template <bool IsMax> FOVEA_ALWAYS_INLINE float combine(float m, float v) { return IsMax ? (v > m ? v : m) : m + v; }

// S: the column stride when known at compile time, 0 for any. row: scratch
// of g->w floats.
template <bool IsMax, int S> struct PoolKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * in, float * out, int64_t planes, const PoolGeom * g,
                                        float * row) {
        const int64_t sw = S ? S : g->sw;
        const int64_t h = g->h, w = g->w, oh = g->oh, ow = g->ow;
        // Padding never wins a max (PyTorch, ONNX) and adds nothing to a sum.
        const float init = IsMax ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int64_t p = 0; p < planes; p++) {
            const float * ip = in + p * h * w;
            float * op = out + p * oh * ow;
            for (int64_t y = 0; y < oh; y++) {
                bool any_row = false;
                for (int64_t ki = 0; ki < g->kh; ki++) {
                    int64_t ih = y * g->sh - g->pt + ki * g->dh;
                    if (ih < 0 || ih >= h) continue;
                    const float * irow = ip + ih * w;
                    if (any_row) {
                        for (int64_t x = 0; x < w; x++) row[x] = combine<IsMax>(row[x], irow[x]);
                    } else {
                        for (int64_t x = 0; x < w; x++) row[x] = combine<IsMax>(init, irow[x]);
                        any_row = true;
                    }
                }
                float * orow = op + y * ow;
                for (int64_t x = 0; x < ow; x++) orow[x] = init;
                // With dilation every kernel row can fall in the padding.
                for (int64_t kj = 0; any_row && kj < g->kw; kj++) {
                    // Columns x with 0 <= x * sw + off < w.
                    int64_t off = kj * g->dw - g->pl;
                    int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                    int64_t hi = off >= w ? 0 : std::min(ow, (w - 1 - off) / sw + 1);
                    for (int64_t x = lo; x < hi; x++) orow[x] = combine<IsMax>(orow[x], row[x * sw + off]);
                }
                if (!IsMax) {
                    float dy = g->div_h[y];
                    for (int64_t x = 0; x < ow; x++) orow[x] = orow[x] / (dy * g->div_w[x]);
                }
            }
        }
    }
};

template <bool IsMax>
void pool_planes(CpuIsa isa, const float * in, float * out, int64_t planes, const PoolGeom * g, float * row) {
    switch (g->sw) {
        case 1: run_isa<PoolKernel<IsMax, 1>>(isa, in, out, planes, g, row); return;
        case 2: run_isa<PoolKernel<IsMax, 2>>(isa, in, out, planes, g, row); return;
        default: run_isa<PoolKernel<IsMax, 0>>(isa, in, out, planes, g, row); return;
    }
}

// Average pool divisors along one axis: the number of input cells in each
// window, or with count_include_pad the window clipped to the padded input
// (Torch7 / PyTorch / cuDNN; only differs from the kernel size in ceil mode).
std::vector<float> avg_divisors(int64_t out, int64_t in, int64_t kernel, int64_t stride, int64_t pad_a, int64_t pad_b,
                                bool include_pad) {
    std::vector<float> div(static_cast<size_t>(out));
    for (int64_t i = 0; i < out; i++) {
        int64_t start = i * stride - pad_a;
        int64_t end = start + kernel;
        div[size_t(i)] = include_pad ? float(std::min(end, in + pad_b) - start)
                                     : float(std::min(end, in) - std::max<int64_t>(start, 0));
    }
    return div;
}

template <bool IsMax> Tensor pool2d(const Tensor & x, const Pool2dParams & p, const char * op) {
    Shape shape = pool2d_output_shape(x, p, op);
    check_host(x, op);
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    PoolGeom g{x.dim(2),   x.dim(3),   shape[2],   shape[3],     p.kernel_h,   p.kernel_w, p.stride_h,
               p.stride_w, p.pad_top,  p.pad_left, p.dilation_h, p.dilation_w, nullptr,    nullptr};
    std::vector<float> div_h, div_w;
    if (!IsMax) {
        div_h = avg_divisors(g.oh, g.h, g.kh, g.sh, p.pad_top, p.pad_bottom, p.count_include_pad);
        div_w = avg_divisors(g.ow, g.w, g.kw, g.sw, p.pad_left, p.pad_right, p.count_include_pad);
        g.div_h = div_h.data();
        g.div_w = div_w.data();
    }
    const float * xp = x.f32();
    float * yp = y.f32();
    int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    CpuIsa isa = cpu_isa();
    parallel_for(shape[0] * shape[1], std::max<int64_t>(1, kGrain / (out_plane * g.kh * g.kw)),
                 [&](int64_t lo, int64_t hi) {
                     std::vector<float> row(static_cast<size_t>(g.w));
                     pool_planes<IsMax>(isa, xp + lo * in_plane, yp + lo * out_plane, hi - lo, &g, row.data());
                 });
    return y;
}

}  // namespace

Tensor max_pool2d(const Tensor & x, const Pool2dParams & p) { return pool2d<true>(x, p, "max_pool2d"); }

Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p) { return pool2d<false>(x, p, "avg_pool2d"); }

}  // namespace fovea::cpu
