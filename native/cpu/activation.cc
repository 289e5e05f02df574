// ReLU, sigmoid and softmax. Hot loops are written once and compiled per ISA
// (cpu/isa_dispatch.h); exp is a polynomial the auto-vectoriser can handle.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Elements per task: far above the cost of waking a worker.
constexpr int64_t kGrain = 1 << 15;
// Independent partial maxima / sums per row: the vectoriser turns them into
// one register without needing -ffast-math reassociation, and every ISA path
// adds in the same order, so results agree bit for bit across paths.
constexpr int kLanes = 16;
// Columns handled together by the strided softmax (bounded stack buffers).
constexpr int64_t kTile = 256;

// exp in two steps, each its own loop over a buffer. GCC must if-convert
// the loops for AVX2, which (unlike AVX-512) cannot mask an operation that
// might trap: were the clamp and the polynomial in one loop, GCC would split
// off the constant-folded clamped path and branch around the polynomial.

// Step 1: the argument, clamped below at -104 (exp rounds to 0 there); NaN
// stays NaN.
FOVEA_ALWAYS_INLINE float exp_arg(float a) { return a < -104.0f ? -104.0f : a; }

// Step 2: exp(x) for x in [-104, 0], or NaN (propagates). exp(x) = 2^n exp(r)
// with n = round(x / ln2) and a two-part ln2 (Cody-Waite); exp(r) is the
// Cephes expf polynomial (about 1 ulp). 2^n is applied as two normal factors
// so that subnormal results are rounded once, correctly. No float-to-int
// conversion (it could trap): n is read from the bits of t.
FOVEA_ALWAYS_INLINE float exp_clamped(float x) {
    // Adding 1.5 * 2^23 rounds x / ln2 to an integer n, held in the low
    // mantissa bits of t.
    float t = x * 1.44269504088896341f + 12582912.0f;
    float fn = t - 12582912.0f;
    float r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    // n in [-150, 0]; both halves are >= -75, so each factor is a normal float.
    int32_t n = static_cast<int32_t>(__builtin_bit_cast(uint32_t, t) - 0x4B400000u);
    int32_t n1 = n >> 1;
    int32_t n2 = n - n1;
    float s1 = __builtin_bit_cast(float, static_cast<uint32_t>(n1 + 127) << 23);
    float s2 = __builtin_bit_cast(float, static_cast<uint32_t>(n2 + 127) << 23);
    return (y * s1) * s2;
}

struct ReluKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * x, float * y, int64_t n) {
        // Written so that NaN passes through (x < 0 is false), as in PyTorch.
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    }
};

struct SigmoidKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * x, float * y, int64_t n) {
        // exp of -|x| never overflows; e / (1 + e) keeps full relative
        // precision for large negative x, where 1 - 1 / (1 + e) would not.
        for (int64_t i = 0; i < n; i++) y[i] = exp_arg(-__builtin_fabsf(x[i]));
        for (int64_t i = 0; i < n; i++) {
            float e = exp_clamped(y[i]);
            y[i] = (x[i] >= 0.0f ? 1.0f : e) / (1.0f + e);
        }
    }
};

// Softmax over contiguous rows of length len (the last axis).
struct SoftmaxRowsKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * x, float * y, int64_t rows, int64_t len) {
        const float ninf = -std::numeric_limits<float>::infinity();
        const int64_t body = len - len % kLanes;
        for (int64_t row = 0; row < rows; row++) {
            const float * xr = x + row * len;
            float * yr = y + row * len;
            float m[kLanes];
            for (int j = 0; j < kLanes; j++) m[j] = ninf;
            for (int64_t i = 0; i < body; i += kLanes) {
                // Kept as a loop: fully unrolled, GCC scalarises the lanes.
#pragma GCC unroll 1
                for (int j = 0; j < kLanes; j++) m[j] = xr[i + j] > m[j] ? xr[i + j] : m[j];
            }
            float mx = ninf;
            for (int j = 0; j < kLanes; j++) mx = m[j] > mx ? m[j] : mx;
            for (int64_t i = body; i < len; i++) mx = xr[i] > mx ? xr[i] : mx;
            for (int64_t i = 0; i < len; i++) yr[i] = exp_arg(xr[i] - mx);
            float s[kLanes] = {};
            for (int64_t i = 0; i < body; i += kLanes) {
                for (int j = 0; j < kLanes; j++) {
                    float e = exp_clamped(yr[i + j]);
                    yr[i + j] = e;
                    s[j] += e;
                }
            }
            float sum = 0.0f;
            for (int j = 0; j < kLanes; j++) sum += s[j];
            for (int64_t i = body; i < len; i++) {
                yr[i] = exp_clamped(yr[i]);
                sum += yr[i];
            }
            for (int64_t i = 0; i < len; i++) yr[i] = yr[i] / sum;
        }
    }
};

// Softmax over an axis of stride `inner`, for the columns [c0, c0 + cols) of
// one outer slice: vectorised across columns, which are contiguous.
struct SoftmaxStridedKernel {
    static FOVEA_ALWAYS_INLINE void run(const float * x, float * y, int64_t len, int64_t inner, int64_t c0,
                                        int64_t cols) {
        float m[kTile];
        float s[kTile];
        for (int64_t j = 0; j < cols; j++) {
            m[j] = -std::numeric_limits<float>::infinity();
            s[j] = 0.0f;
        }
        for (int64_t a = 0; a < len; a++) {
            const float * xa = x + a * inner + c0;
            for (int64_t j = 0; j < cols; j++) m[j] = xa[j] > m[j] ? xa[j] : m[j];
        }
        for (int64_t a = 0; a < len; a++) {
            const float * xa = x + a * inner + c0;
            float * ya = y + a * inner + c0;
            for (int64_t j = 0; j < cols; j++) ya[j] = exp_arg(xa[j] - m[j]);
            for (int64_t j = 0; j < cols; j++) {
                ya[j] = exp_clamped(ya[j]);
                s[j] += ya[j];
            }
        }
        for (int64_t a = 0; a < len; a++) {
            float * ya = y + a * inner + c0;
            for (int64_t j = 0; j < cols; j++) ya[j] = ya[j] / s[j];
        }
    }
};

template <class Kernel> Tensor map_unary(const Tensor & x, const char * op) {
    check_f32(x, op, "input");
    check_host(x, op);
    Tensor y = Tensor::empty(x.shape());
    const float * xp = x.f32();
    float * yp = y.f32();
    CpuIsa isa = cpu_isa();
    parallel_for(x.numel(), kGrain,
                 [&](int64_t b, int64_t e) { run_isa<Kernel>(isa, xp + b, yp + b, e - b); });
    return y;
}

}  // namespace

Tensor relu(const Tensor & x) { return map_unary<ReluKernel>(x, "relu"); }

Tensor sigmoid(const Tensor & x) { return map_unary<SigmoidKernel>(x, "sigmoid"); }

Tensor softmax(const Tensor & x, int axis) {
    int ax = softmax_axis(x, axis);
    check_host(x, "softmax");
    Tensor y = Tensor::empty(x.shape());
    if (x.numel() == 0) return y;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= x.dim(d);
    for (int d = ax + 1; d < x.ndim(); d++) inner *= x.dim(d);
    int64_t len = x.dim(ax);
    const float * xp = x.f32();
    float * yp = y.f32();
    CpuIsa isa = cpu_isa();
    if (inner == 1) {
        parallel_for(outer, std::max<int64_t>(1, kGrain / len), [&](int64_t b, int64_t e) {
            run_isa<SoftmaxRowsKernel>(isa, xp + b * len, yp + b * len, e - b, len);
        });
        return y;
    }
    int64_t tiles = (inner + kTile - 1) / kTile;
    parallel_for(outer * tiles, std::max<int64_t>(1, kGrain / (len * std::min(inner, kTile))),
                 [&](int64_t b, int64_t e) {
                     for (int64_t t = b; t < e; t++) {
                         int64_t o = t / tiles, c0 = (t % tiles) * kTile;
                         int64_t off = o * len * inner;
                         run_isa<SoftmaxStridedKernel>(isa, xp + off, yp + off, len, inner, c0,
                                                       std::min(kTile, inner - c0));
                     }
                 });
    return y;
}

}  // namespace fovea::cpu
