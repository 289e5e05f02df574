// AVX-512 instantiation of the GEMM micro-kernel. The target pragma comes
// after every standard header, so only this file's own code uses AVX-512.
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#endif

namespace fovea::cpu::packed {
namespace {

struct Avx512 {
    using V = __m512;
    static constexpr int W = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V load(const float * p) { return _mm512_load_ps(p); }
    static V loadu(const float * p) { return _mm512_loadu_ps(p); }
    static void storeu(float * p, V v) { _mm512_storeu_ps(p, v); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    // The masked form avoids a GCC 12 false -Wmaybe-uninitialized in _mm512_max_ps.
    static V max(V a, V b) { return _mm512_maskz_max_ps(__mmask16(0xffff), a, b); }
    static __mmask16 mask(int n) { return n >= W ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
    static V loadn(const float * p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
    static void storen(float * p, V v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
    static V even(V a, V b) {
        return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
    }
    // r[i][j] -> r[j][i]: pairs interleaved, then 4x4 blocks within 128-bit
    // lanes, then the 4x4 grid of lanes. Masked forms for the same GCC 12
    // warning as max.
    static void transpose(V (&r)[W]) {
        constexpr __mmask16 kAll = 0xffff;
        V t[W];
        for (int i = 0; i < W; i += 2) {
            t[i] = _mm512_maskz_unpacklo_ps(kAll, r[i], r[i + 1]);
            t[i + 1] = _mm512_maskz_unpackhi_ps(kAll, r[i], r[i + 1]);
        }
        // s[4i + c], lane L: column 4L + c of rows 4i..4i+3.
        for (int i = 0; i < W; i += 4) {
            r[i] = _mm512_maskz_shuffle_ps(kAll, t[i], t[i + 2], 0x44);
            r[i + 1] = _mm512_maskz_shuffle_ps(kAll, t[i], t[i + 2], 0xEE);
            r[i + 2] = _mm512_maskz_shuffle_ps(kAll, t[i + 1], t[i + 3], 0x44);
            r[i + 3] = _mm512_maskz_shuffle_ps(kAll, t[i + 1], t[i + 3], 0xEE);
        }
        for (int c = 0; c < 4; c++) {
            const V p = _mm512_maskz_shuffle_f32x4(kAll, r[c], r[4 + c], 0x88);
            const V q = _mm512_maskz_shuffle_f32x4(kAll, r[c], r[4 + c], 0xDD);
            const V u = _mm512_maskz_shuffle_f32x4(kAll, r[8 + c], r[12 + c], 0x88);
            const V v = _mm512_maskz_shuffle_f32x4(kAll, r[8 + c], r[12 + c], 0xDD);
            t[c] = _mm512_maskz_shuffle_f32x4(kAll, p, u, 0x88);
            t[8 + c] = _mm512_maskz_shuffle_f32x4(kAll, p, u, 0xDD);
            t[4 + c] = _mm512_maskz_shuffle_f32x4(kAll, q, v, 0x88);
            t[12 + c] = _mm512_maskz_shuffle_f32x4(kAll, q, v, 0xDD);
        }
        for (int i = 0; i < W; i++) r[i] = t[i];
    }
    static V load_window(const float * p, int64_t lo, int64_t hi) {
        const __mmask16 below_lo = lo <= 0 ? 0 : lo >= W ? 0xffff : __mmask16((1u << lo) - 1);
        return _mm512_maskz_loadu_ps(__mmask16(mask(int(hi < 0 ? 0 : hi > W ? W : hi)) & ~below_lo), p);
    }
};

}  // namespace
}  // namespace fovea::cpu::packed

#include "cpu/gemm_microkernel.h"

namespace fovea::cpu::packed {

const Kernel * kernel_avx512() {
    // 6 x 64: 24 zmm accumulators, 4 B vectors and a broadcast (29 of the 32
    // registers); 10 loads per 24 FMAs (8 x 48 needs 11). The 64-wide panel
    // also covers a 7x7 output (49 columns) in one tile where 8 x 48 needs a
    // second, 1-vector tile that re-reads the A slice. Against 8 x 48 on the
    // ResNet-50 224 layers (2 threads, Zen 4, best of 3 on a noisy VM): 6%
    // faster in geometric mean, 4-6% on layer4, within noise on the layer3
    // and stride-2 3x3s. Row counts not divisible by 6 end in a 2- or 4-row
    // edge tile (no wasted FMAs). A B block of 256 x 384 (384 KB) stays in a
    // 1 MB L2, an A slice (6 KB) in L1.
    static const Kernel k = make_kernel<Avx512, 6, 4>(CpuIsa::Avx512, 256, 384);
    return &k;
}

}  // namespace fovea::cpu::packed

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else

namespace fovea::cpu::packed {
const Kernel * kernel_avx512() { return nullptr; }
}  // namespace fovea::cpu::packed

#endif
