// add (with a fused ReLU), concat along any axis, and pad2d (constant or
// symmetric padding, cropping with negative amounts), as native/cpu/
// elementwise.cc and pad.cc.
#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;

template <bool Relu>
__global__ void add_kernel(const float * __restrict__ a, const float * __restrict__ b, float * __restrict__ y,
                           int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float v = a[i] + b[i];
        y[i] = Relu && v < 0.0f ? 0.0f : v;  // NaN passes through, as in relu()
    }
}

// Copies one input, viewed as [outer, size], into columns [offset, offset +
// size) of the output viewed as [outer, row].
__global__ void concat_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t outer, int64_t size,
                              int64_t row, int64_t offset) {
    const int64_t n = outer * size;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        y[(i / size) * row + offset + i % size] = x[i];
    }
}

// Source index of output position i (already shifted by the leading pad), or
// -1 for a constant fill: the CPU's source_index.
__device__ __forceinline__ int64_t source_index(int64_t i, int64_t n, bool symmetric) {
    if (i >= 0 && i < n) return i;
    if (!symmetric) return -1;
    const int64_t period = 2 * n;
    const int64_t m = ((i % period) + period) % period;
    return m < n ? m : period - 1 - m;
}

__global__ void pad2d_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t planes, int64_t h,
                             int64_t w, int64_t oh, int64_t ow, int top, int left, bool symmetric, float value) {
    const int64_t n = planes * oh * ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t j = i % ow, r = (i / ow) % oh, plane = i / (ow * oh);
        const int64_t sr = source_index(r - top, h, symmetric), sc = source_index(j - left, w, symmetric);
        y[i] = sr < 0 || sc < 0 ? value : x[(plane * h + sr) * w + sc];
    }
}

}  // namespace

Tensor add(Context & ctx, const Tensor & a, const Tensor & b, Activation act) {
    check_same_shape(a, b, "add");
    check_on_device(ctx, a, "add");
    check_on_device(ctx, b, "add");
    FOVEA_CHECK_OPTIONS(act == Activation::None || act == Activation::Relu,
                        "add: only no activation or ReLU can be fused");
    Tensor y = ctx.empty(a.shape());
    if (y.numel() == 0) return y;
    const unsigned grid = grid_for(y.numel(), kThreads);
    if (act == Activation::Relu) {
        add_kernel<true><<<grid, kThreads, 0, ctx.stream>>>(a.f32(), b.f32(), y.f32(), y.numel());
    } else {
        add_kernel<false><<<grid, kThreads, 0, ctx.stream>>>(a.f32(), b.f32(), y.f32(), y.numel());
    }
    check_launch("add");
    return y;
}

Tensor concat(Context & ctx, const std::vector<Tensor> & xs, int axis) {
    const Shape shape = concat_output_shape(xs, axis);
    const int ax = concat_axis(xs, axis);
    for (const Tensor & x : xs) check_on_device(ctx, x, "concat");
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    int64_t outer = 1;
    for (int d = 0; d < ax; d++) outer *= shape[size_t(d)];
    const int64_t row = y.numel() / outer;
    int64_t offset = 0;
    for (const Tensor & x : xs) {
        const int64_t size = x.numel() / outer;
        if (size > 0) {
            concat_kernel<<<grid_for(x.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), outer, size,
                                                                                     row, offset);
            check_launch("concat");
        }
        offset += size;
    }
    return y;
}

Tensor pad2d(Context & ctx, const Tensor & x, const Pad2dParams & p) {
    const Shape shape = pad2d_output_shape(x, p);
    check_on_device(ctx, x, "pad2d");
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    pad2d_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(
        x.f32(), y.f32(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3), shape[2], shape[3], p.top, p.left,
        p.mode == PadMode::Symmetric, p.value);
    check_launch("pad2d");
    return y;
}

}  // namespace fovea::cuda
