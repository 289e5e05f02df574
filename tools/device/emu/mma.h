// Emulated WMMA for tools/device/emu: every thread of a warp holds the whole
// fragment (the warp-wide ops run redundantly in each thread), operands as
// given, tf32 rounding as cvt.rna. Aborts on a pointer that is not 256-bit
// aligned or a leading dimension that is not a multiple of 4, as WMMA requires.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int r = M, c = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int r = K, c = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int r = M, c = N; };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static constexpr int rows = dims<Use, M, N, K>::r, cols = dims<Use, M, N, K>::c;
    float v[rows][cols];
    using layout = Layout;
};
inline void emu_check(const void * p, unsigned ldm) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || ldm % 4 != 0) {
        std::fprintf(stderr, "WMMA misaligned: %p ldm %u\n", p, ldm);
        std::abort();
    }
}
template <class Use, int M, int N, int K, class T, class L>
void load_matrix_sync(fragment<Use, M, N, K, T, L> & f, const float * p, unsigned ldm) {
    emu_check(p, ldm);
    for (int i = 0; i < f.rows; i++)
        for (int j = 0; j < f.cols; j++)
            f.v[i][j] = std::is_same<L, col_major>::value ? p[i + j * ldm] : p[i * ldm + j];
}
template <int M, int N, int K, class T>
void fill_fragment(fragment<accumulator, M, N, K, T> & f, float x) {
    for (auto & r : f.v)
        for (auto & e : r) e = x;
}
template <int M, int N, int K, class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, M, N, K, float> & d, const fragment<matrix_a, M, N, K, TA, LA> & a,
              const fragment<matrix_b, M, N, K, TB, LB> & b, const fragment<accumulator, M, N, K, float> & c) {
    fragment<accumulator, M, N, K, float> r;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.v[i][j];
            for (int k = 0; k < K; k++) s += a.v[i][k] * b.v[k][j];
            r.v[i][j] = s;
        }
    d = r;
}
template <int M, int N, int K>
void store_matrix_sync(float * p, const fragment<accumulator, M, N, K, float> & f, unsigned ldm, layout_t l) {
    emu_check(p, ldm);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) (l == mem_row_major ? p[i * ldm + j] : p[i + j * ldm]) = f.v[i][j];
}
inline float __float_to_tf32(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0x1000u) & 0xFFFFE000u;  // round to nearest, ties away
    std::memcpy(&x, &u, 4);
    return x;
}
}  // namespace wmma
}  // namespace nvcuda
