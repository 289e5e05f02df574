// 2-D max and average pooling, as native/cpu/pool.cc: one thread per output
// cell walks its window. Padding never wins a max and adds nothing to a sum;
// NaN inputs are skipped by the max; the average divides by the CPU's
// separable divisors (count_include_pad clips the window to the padded input).
#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;

struct PoolGeom {
    int64_t planes, h, w, oh, ow;
    int kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
    bool count_include_pad;
};

// Average divisor along one axis (the CPU's avg_divisors).
__device__ __forceinline__ float avg_divisor(int64_t i, int64_t in, int64_t kernel, int64_t stride, int64_t pad_a,
                                             int64_t pad_b, bool include_pad) {
    const int64_t start = i * stride - pad_a, end = start + kernel;
    return include_pad ? float(min(end, in + pad_b) - start) : float(min(end, in) - max(start, int64_t(0)));
}

template <bool IsMax>
__global__ void pool2d_kernel(const float * __restrict__ x, float * __restrict__ y, PoolGeom g) {
    const int64_t n = g.planes * g.oh * g.ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const float * ip = x + plane * g.h * g.w;
        float acc = IsMax ? -INFINITY : 0.0f;
        for (int ki = 0; ki < g.kh; ki++) {
            const int64_t ih = oy * g.sh - g.pt + int64_t(ki) * g.dh;
            if (ih < 0 || ih >= g.h) continue;
            for (int kj = 0; kj < g.kw; kj++) {
                const int64_t iw = ox * g.sw - g.pl + int64_t(kj) * g.dw;
                if (iw < 0 || iw >= g.w) continue;
                const float v = ip[ih * g.w + iw];
                if (IsMax) {
                    acc = v > acc ? v : acc;
                } else {
                    acc += v;
                }
            }
        }
        if (!IsMax) {
            const float dy = avg_divisor(oy, g.h, g.kh, g.sh, g.pt, g.pb, g.count_include_pad);
            const float dx = avg_divisor(ox, g.w, g.kw, g.sw, g.pl, g.pr, g.count_include_pad);
            acc = acc / (dy * dx);
        }
        y[i] = acc;
    }
}

template <bool IsMax> Tensor pool2d(Context & ctx, const Tensor & x, const Pool2dParams & p, const char * op) {
    const Shape shape = pool2d_output_shape(x, p, op);
    check_on_device(ctx, x, op);
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    const PoolGeom g{shape[0] * shape[1], x.dim(2),   x.dim(3),   shape[2],     shape[3],    p.kernel_h,
                     p.kernel_w,         p.stride_h, p.stride_w, p.pad_top,    p.pad_left,  p.pad_bottom,
                     p.pad_right,        p.dilation_h, p.dilation_w, p.count_include_pad};
    pool2d_kernel<IsMax><<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), g);
    check_launch(op);
    return y;
}

}  // namespace

Tensor max_pool2d(Context & ctx, const Tensor & x, const Pool2dParams & p) {
    return pool2d<true>(ctx, x, p, "max_pool2d");
}

Tensor avg_pool2d(Context & ctx, const Tensor & x, const Pool2dParams & p) {
    return pool2d<false>(ctx, x, p, "avg_pool2d");
}

}  // namespace fovea::cuda
