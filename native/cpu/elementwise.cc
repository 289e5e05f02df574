// concat along any axis, and elementwise add with an optional fused ReLU.
#include <algorithm>
#include <cstring>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Elements per task: far above the cost of waking a worker.
constexpr int64_t kGrain = 1 << 15;

template <bool Relu> struct AddKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * a, const float * b, float * y, int64_t n) {
        for (int64_t i = 0; i < n; i++) {
            float v = a[i] + b[i];
            y[i] = Relu && v < 0.0f ? 0.0f : v;  // NaN passes through, as in relu()
        }
    }
};

}  // namespace

Tensor concat(const std::vector<Tensor> & xs, int axis) {
    Shape shape = concat_output_shape(xs, axis);
    int ax = concat_axis(xs, axis);
    for (const Tensor & x : xs) check_host(x, "concat");
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    // View every tensor as [outer, axis * inner]: each input fills one
    // contiguous slice of every output row.
    int64_t outer = 1;
    for (int d = 0; d < ax; d++) outer *= shape[d];
    int64_t row = y.numel() / outer;
    std::vector<const float *> srcs;
    std::vector<int64_t> offsets, sizes;
    int64_t off = 0;
    for (const Tensor & x : xs) {
        int64_t n = x.numel() / outer;
        srcs.push_back(x.f32());
        offsets.push_back(off);
        sizes.push_back(n);
        off += n;
    }
    float * yp = y.f32();
    parallel_for(outer, std::max<int64_t>(1, kGrain / row), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; o++) {
            for (size_t i = 0; i < xs.size(); i++) {
                if (sizes[i] == 0) continue;
                std::memcpy(yp + o * row + offsets[i], srcs[i] + o * sizes[i], size_t(sizes[i]) * sizeof(float));
            }
        }
    });
    return y;
}

Tensor add(const Tensor & a, const Tensor & b, Activation act) {
    check_same_shape(a, b, "add");
    check_host(a, "add");
    check_host(b, "add");
    FOVEA_CHECK_OPTIONS(act == Activation::None || act == Activation::Relu,
                        "add: only no activation or ReLU can be fused");
    Tensor y = Tensor::empty(a.shape());
    const float * ap = a.f32();
    const float * bp = b.f32();
    float * yp = y.f32();
    CpuIsa isa = cpu_isa();
    bool relu = act == Activation::Relu;
    parallel_for(y.numel(), kGrain, [&](int64_t lo, int64_t hi) {
        if (relu) {
            run_isa<AddKernel<true>>(isa, ap + lo, bp + lo, yp + lo, hi - lo);
        } else {
            run_isa<AddKernel<false>>(isa, ap + lo, bp + lo, yp + lo, hi - lo);
        }
    });
    return y;
}

}  // namespace fovea::cpu
