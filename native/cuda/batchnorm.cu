// Inference batch norm over axis 1 as one per-channel affine y = a * x + b,
// as native/cpu/batchnorm.cc. The per-channel factors are folded on the host
// in double, exactly as there, which also lets a non-finite variance fail
// with the CPU's error; the parameters are small, so this costs one wait.
#include <cmath>
#include <vector>

#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;

// x viewed as [n, c, inner]; ab holds a[c] then b[c].
__global__ void affine_kernel(const float * __restrict__ x, float * __restrict__ y, const float * __restrict__ ab,
                              int64_t total, int64_t c, int64_t inner) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t ch = (i / inner) % c;
        y[i] = x[i] * ab[ch] + ab[c + ch];
    }
}

}  // namespace

Tensor batch_norm(Context & ctx, const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                  const Tensor & var, float epsilon) {
    check_batch_norm(x, scale, bias, mean, var, epsilon);
    for (const Tensor * t : {&x, &scale, &bias, &mean, &var}) check_on_device(ctx, *t, "batch_norm");
    const int64_t c = x.dim(1);
    int64_t inner = 1;
    for (int d = 2; d < x.ndim(); d++) inner *= x.dim(d);
    std::vector<float> s(static_cast<size_t>(c)), b(static_cast<size_t>(c)), m(static_cast<size_t>(c)), v(static_cast<size_t>(c));
    ctx.download(scale, s.data());
    ctx.download(bias, b.data());
    ctx.download(mean, m.data());
    ctx.download(var, v.data());
    std::vector<float> ab(size_t(2 * c));
    for (int64_t ch = 0; ch < c; ch++) {
        const double inv_std = 1.0 / std::sqrt(double(v[size_t(ch)]) + double(epsilon));
        FOVEA_CHECK_INPUT(std::isfinite(inv_std), "batch_norm: variance of channel " << ch << " gives no finite scale");
        const double k = double(s[size_t(ch)]) * inv_std;
        ab[size_t(ch)] = float(k);
        ab[size_t(c + ch)] = float(double(b[size_t(ch)]) - double(m[size_t(ch)]) * k);
    }
    Tensor y = ctx.empty(x.shape());
    if (y.numel() == 0) return y;
    const Tensor d_ab = ctx.upload(ab.data(), {2 * c}, DType::F32);
    affine_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), d_ab.f32(),
                                                                             y.numel(), c, inner);
    check_launch("batch_norm");
    return y;
}

}  // namespace fovea::cuda
