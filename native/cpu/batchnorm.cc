// Inference batch norm over axis 1, as one per-channel affine y = a * x + b.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Elements per task: far above the cost of waking a worker.
constexpr int64_t kGrain = 1 << 15;

// y[i] = x[i] * a[i * Step] + b[i * Step]: Step 0 for one channel plane,
// Step 1 for a row of channels (2-D input, one value per channel).
template <int Step> struct AffineKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * x, float * y, int64_t n, const float * a, const float * b) {
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * a[i * Step] + b[i * Step];
    }
};

}  // namespace

Tensor batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                  const Tensor & var, float epsilon) {
    check_batch_norm(x, scale, bias, mean, var, epsilon);
    for (const Tensor * t : {&x, &scale, &bias, &mean, &var}) check_host(*t, "batch_norm");
    int64_t n = x.dim(0), c = x.dim(1);
    int64_t inner = 1;
    for (int d = 2; d < x.ndim(); d++) inner *= x.dim(d);
    // Folded in double, as fold_batch_norm does, so both paths round alike.
    std::vector<float> a(static_cast<size_t>(c)), b(static_cast<size_t>(c));
    for (int64_t ch = 0; ch < c; ch++) {
        double inv_std = 1.0 / std::sqrt(double(var.f32()[ch]) + double(epsilon));
        FOVEA_CHECK_INPUT(std::isfinite(inv_std), "batch_norm: variance of channel " << ch << " gives no finite scale");
        double k = double(scale.f32()[ch]) * inv_std;
        a[size_t(ch)] = float(k);
        b[size_t(ch)] = float(double(bias.f32()[ch]) - double(mean.f32()[ch]) * k);
    }
    Tensor y = Tensor::empty(x.shape());
    if (y.numel() == 0) return y;
    const float * xp = x.f32();
    float * yp = y.f32();
    CpuIsa isa = cpu_isa();
    if (inner == 1) {
        // [N, C]: vectorise along the channels of each row.
        parallel_for(n, std::max<int64_t>(1, kGrain / c), [&](int64_t lo, int64_t hi) {
            for (int64_t i = lo; i < hi; i++) {
                run_isa<AffineKernel<1>>(isa, xp + i * c, yp + i * c, c, a.data(), b.data());
            }
        });
        return y;
    }
    parallel_for(n * c, std::max<int64_t>(1, kGrain / inner), [&](int64_t lo, int64_t hi) {
        for (int64_t p = lo; p < hi; p++) {
            const float * ap = &a[size_t(p % c)];
            const float * bp = &b[size_t(p % c)];
            run_isa<AffineKernel<0>>(isa, xp + p * inner, yp + p * inner, inner, ap, bp);
        }
    });
    return y;
}

}  // namespace fovea::cpu
