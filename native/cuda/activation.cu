// ReLU, sigmoid and softmax, as native/cpu/activation.cc.
#include <cfloat>

#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;

struct ReluOp {
    // NaN passes through (x < 0 is false), as on the CPU and in PyTorch.
    __device__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};

struct SigmoidOp {
    // exp of -|x| never overflows, and e / (1 + e) keeps full relative
    // precision for large negative x (the CPU formula).
    __device__ float operator()(float x) const {
        const float e = expf(-fabsf(x));
        return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
};

template <class Op> __global__ void map_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t n, Op op) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        y[i] = op(x[i]);
    }
}

template <class Op> Tensor map_unary(Context & ctx, const Tensor & x, const char * op) {
    check_f32(x, op, "input");
    check_on_device(ctx, x, op);
    Tensor y = ctx.empty(x.shape());
    if (y.numel() == 0) return y;
    map_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), y.numel(), Op{});
    check_launch(op);
    return y;
}

// max that skips NaN inputs (v > m is false for NaN), as the CPU's.
__device__ __forceinline__ float max_skip_nan(float m, float v) { return v > m ? v : m; }

// Softmax over contiguous rows of length len: one block per row, block-wide
// max and sum through shared memory.
__global__ void softmax_rows_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t rows, int64_t len) {
    __shared__ float red[kThreads];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float * xr = x + row * len;
        float * yr = y + row * len;
        float m = -INFINITY;
        for (int64_t i = threadIdx.x; i < len; i += blockDim.x) m = max_skip_nan(m, xr[i]);
        red[threadIdx.x] = m;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (int(threadIdx.x) < s) red[threadIdx.x] = max_skip_nan(red[threadIdx.x], red[threadIdx.x + s]);
            __syncthreads();
        }
        const float mx = red[0];
        __syncthreads();
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
            const float e = expf(xr[i] - mx);
            yr[i] = e;
            sum += e;
        }
        red[threadIdx.x] = sum;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (int(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
            __syncthreads();
        }
        const float total = red[0];
        // Each thread rescales the values it wrote itself: no barrier needed.
        for (int64_t i = threadIdx.x; i < len; i += blockDim.x) yr[i] = yr[i] / total;
        __syncthreads();  // red[0] is overwritten by the next row
    }
}

// Softmax over an axis of stride `inner` > 1: one thread per (outer, column),
// neighbouring threads on neighbouring columns (coalesced).
__global__ void softmax_strided_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t outer,
                                       int64_t len, int64_t inner) {
    const int64_t columns = outer * inner;
    for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < columns;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t base = (t / inner) * len * inner + t % inner;
        float m = -INFINITY;
        for (int64_t a = 0; a < len; a++) m = max_skip_nan(m, x[base + a * inner]);
        float sum = 0.0f;
        for (int64_t a = 0; a < len; a++) {
            const float e = expf(x[base + a * inner] - m);
            y[base + a * inner] = e;
            sum += e;
        }
        for (int64_t a = 0; a < len; a++) y[base + a * inner] = y[base + a * inner] / sum;
    }
}

}  // namespace

Tensor relu(Context & ctx, const Tensor & x) { return map_unary<ReluOp>(ctx, x, "relu"); }

Tensor sigmoid(Context & ctx, const Tensor & x) { return map_unary<SigmoidOp>(ctx, x, "sigmoid"); }

Tensor softmax(Context & ctx, const Tensor & x, int axis) {
    const int ax = softmax_axis(x, axis);
    check_on_device(ctx, x, "softmax");
    Tensor y = ctx.empty(x.shape());
    if (x.numel() == 0) return y;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= x.dim(d);
    for (int d = ax + 1; d < x.ndim(); d++) inner *= x.dim(d);
    const int64_t len = x.dim(ax);
    if (inner == 1) {
        const unsigned blocks = unsigned(outer < (int64_t(1) << 20) ? outer : (int64_t(1) << 20));
        softmax_rows_kernel<<<blocks, kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), outer, len);
    } else {
        softmax_strided_kernel<<<grid_for(outer * inner, kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(),
                                                                                              outer, len, inner);
    }
    check_launch("softmax");
    return y;
}

}  // namespace fovea::cuda
