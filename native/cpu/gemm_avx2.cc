// AVX2 + FMA instantiation of the GEMM micro-kernel. The target pragma comes
// after every standard header, so only this file's own code uses AVX2.
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace fovea::cpu::packed {
namespace {

struct Avx2 {
    using V = __m256;
    static constexpr int W = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V load(const float * p) { return _mm256_load_ps(p); }
    static V loadu(const float * p) { return _mm256_loadu_ps(p); }
    static void storeu(float * p, V v) { _mm256_storeu_ps(p, v); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
    static __m256i mask(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static V loadn(const float * p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
    static V even(V a, V b) {
        // [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit pairs reordered 0 2 1 3.
        const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
    }
    // r[i][j] -> r[j][i]: pairs interleaved, 4x4 blocks within 128-bit
    // lanes, then the lanes swapped.
    static void transpose(V (&r)[W]) {
        V t[W];
        for (int i = 0; i < W; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < W; i += 4) {
            r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int c = 0; c < 4; c++) {
            t[c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x20);
            t[4 + c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x31);
        }
        for (int i = 0; i < W; i++) r[i] = t[i];
    }
    static V load_window(const float * p, int64_t lo, int64_t hi) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i l = _mm256_set1_epi32(int(lo < -1 ? -1 : lo > W ? W : lo));
        const __m256i h = _mm256_set1_epi32(int(hi < 0 ? 0 : hi > W ? W : hi));
        // lo <= lane < hi  <=>  lane > lo - 1  and  hi > lane
        const __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_sub_epi32(l, _mm256_set1_epi32(1))),
                                           _mm256_cmpgt_epi32(h, lane));
        return _mm256_maskload_ps(p, m);
    }
    static void storen(float * p, V v, int n) {
        if (n >= W) _mm256_storeu_ps(p, v);
        else _mm256_maskstore_ps(p, mask(n), v);
    }
};

}  // namespace
}  // namespace fovea::cpu::packed

#include "cpu/gemm_microkernel.h"

namespace fovea::cpu::packed {

const Kernel * kernel_avx2() {
    // 6 x 16: 12 ymm accumulators, 2 B vectors and a broadcast in 16
    // registers. Cache blocks as for AVX-512.
    static const Kernel k = make_kernel<Avx2, 6, 2>(CpuIsa::Avx2, 256, 384);
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
const Kernel * kernel_avx2() { return nullptr; }
}  // namespace fovea::cpu::packed

#endif
