// The one register-blocked GEMM micro-kernel and its B packing, written once
// over a vector type. Each gemm_<isa>.cc includes this after its standard
// headers and its target pragma, and instantiates it with its own Isa struct:
//   V, W (lanes), zero(), load(p) (aligned), loadu(p), storeu(p, v),
//   set1(x), fma(a, b, c), add(a, b), mul(a, b), max(a, b),
//   loadn(p, n), storen(p, v, n), load_window(p, lo, hi), even(a, b),
//   transpose(V (&r)[W]) (r[i] lane j becomes r[j] lane i)
// where loadn/storen touch the first min(n, W) lanes only (n >= 1),
// load_window reads lanes i with lo <= i < hi, zeroing the others, and even
// returns the even lanes of the 2W-lane concatenation a:b.
// The contents live in an anonymous namespace on purpose: every ISA's
// instantiations stay inside its own translation unit, so the linker can
// never merge an AVX-512 copy into code that runs on an older CPU.
#pragma once

namespace fovea::cpu::packed {
namespace {

using TileFn = void (*)(int64_t kc, const float * a, int64_t lda, const int64_t * a_offsets, const int64_t * a_rows,
                        const float * b, const int64_t * b_offsets, float * c, int64_t ldc, int n, bool first,
                        bool last, const Epilogue & ep, const float * add, const float * residual);

// How the tile reads A(i, k): a[i * lda + k], a[k * lda + i], or through
// per-k and per-row offsets a[a_offsets[k] + a_rows[i]] (pixels of images,
// for channels-last convs: the k offset picks the channel and tap, the row
// offset the pixel, so a tile may span output rows and images).
enum AMode { kRowMajor, kKMajor, kOffsets };

// C[M x n] (+)= A[M x kc] * B[kc x n] (NVA vectors, n columns valid). A is
// read in place (see AMode; a_rows has M entries in kOffsets mode). B is a
// packed panel [kc][NV*W], or with IN_PLACE read where it lies, B(k, j) =
// b[b_offsets[k] + j] (unaligned, nothing read past column n). The M x NVA accumulators stay in registers.
template <class Isa, int NV, int A_MODE, bool IN_PLACE, int M, int NVA>
void tile(int64_t kc, const float * __restrict a, int64_t lda, const int64_t * __restrict a_offsets,
          const int64_t * __restrict a_rows, const float * __restrict b, const int64_t * __restrict b_offsets,
          float * __restrict c, int64_t ldc, int n, bool first, bool last, const Epilogue & ep, const float * add,
          const float * residual) {
    using V = typename Isa::V;
    constexpr int W = Isa::W;
    constexpr int NR = NV * W;
    const int last_lanes = n - (NVA - 1) * W;
    V acc[M][NVA];
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) {
#pragma GCC unroll 8
        for (int j = 0; j < NVA; j++) acc[i][j] = Isa::zero();
    }
    int64_t rows[M];  // kept in registers across the k loop
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) rows[i] = A_MODE == kOffsets ? a_rows[i] : 0;
    for (int64_t k = 0; k < kc; k++) {
        V bv[NVA];
        if constexpr (IN_PLACE) {
            const float * bk = b + b_offsets[k];
#pragma GCC unroll 8
            for (int j = 0; j < NVA - 1; j++) bv[j] = Isa::loadu(bk + j * W);
            bv[NVA - 1] = Isa::loadn(bk + (NVA - 1) * W, last_lanes);
        } else {
#pragma GCC unroll 8
            for (int j = 0; j < NVA; j++) bv[j] = Isa::load(b + j * W);
            b += NR;
        }
        const float * ak = A_MODE == kOffsets ? a + a_offsets[k] : nullptr;
#pragma GCC unroll 16
        for (int i = 0; i < M; i++) {
            V av = Isa::set1(A_MODE == kKMajor ? a[k * lda + i] : A_MODE == kRowMajor ? a[i * lda + k] : ak[rows[i]]);
#pragma GCC unroll 8
            for (int j = 0; j < NVA; j++) acc[i][j] = Isa::fma(av, bv[j], acc[i][j]);
        }
    }

    const V alpha = Isa::set1(ep.alpha);
    const V beta = Isa::set1(ep.beta);
    const V zero = Isa::zero();
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) {
        float * crow = c + i * ldc;
#pragma GCC unroll 8
        for (int j = 0; j < NVA; j++) {
            const int cols = n - j * W;  // >= 1 by the choice of NVA
            V v = acc[i][j];
            if (!first) v = Isa::add(v, Isa::loadn(crow + j * W, cols));
            if (last) {
                if (ep.alpha != 1.0f) v = Isa::mul(v, alpha);
                if (add) {
                    const float * arow = add + i * ep.add_rs;
                    V t = ep.add_cs == 0 ? Isa::set1(arow[0]) : Isa::loadn(arow + j * W, cols);
                    v = Isa::fma(t, beta, v);
                }
                if (residual) {
                    const V r = Isa::loadn(residual + i * ldc + j * W, cols);
                    v = ep.residual_scale ? Isa::fma(r, Isa::set1(ep.residual_scale[i]), v) : Isa::add(v, r);
                }
                if (ep.act == Activation::Relu) v = Isa::max(v, zero);
            }
            Isa::storen(crow + j * W, v, cols);
        }
    }
    if (last && ep.act == Activation::Sigmoid) {
        for (int i = 0; i < M; i++) {
            float * crow = c + i * ldc;
            for (int j = 0; j < n; j++) crow[j] = 1.0f / (1.0f + std::exp(-crow[j]));
        }
    }
}

// Index (m - 1) * NV + (nva - 1): one instantiation per edge shape, so
// partial tiles do no wasted multiply-adds beyond the last vector.
template <class Isa, int NV, int A_MODE, bool IN_PLACE, int... I>
const TileFn * tile_table(std::integer_sequence<int, I...>) {
    static constexpr TileFn table[] = {&tile<Isa, NV, A_MODE, IN_PLACE, I / NV + 1, I % NV + 1>...};
    return table;
}

// A through offsets comes with packed B only (run() checks).
template <class Isa, int MR, int NV>
const TileFn * tile_table(const Block & blk) {
    constexpr auto tiles = std::make_integer_sequence<int, MR * NV>();
    if (blk.a_offsets) return tile_table<Isa, NV, kOffsets, false>(tiles);
    if (blk.b_offsets) {
        return blk.a_k_major ? tile_table<Isa, NV, kKMajor, true>(tiles) : tile_table<Isa, NV, kRowMajor, true>(tiles);
    }
    return blk.a_k_major ? tile_table<Isa, NV, kKMajor, false>(tiles) : tile_table<Isa, NV, kRowMajor, false>(tiles);
}

// Walks a cache block: each MR-row slice of A (MR x kc, L1 resident) against
// every B panel of the block (kc x nc, L2 resident).
template <class Isa, int MR, int NV>
void block(const Block & blk) {
    constexpr int W = Isa::W;
    constexpr int NR = NV * W;
    const bool in_place = blk.b_offsets != nullptr;
    const TileFn * table = tile_table<Isa, MR, NV>(blk);
    const int64_t a_row = blk.a_k_major ? 1 : blk.lda;
    int64_t rows[MR] = {};
    for (int64_t ir = 0; ir < blk.mc;) {
        int m = blk.mc - ir < MR ? int(blk.mc - ir) : MR;
        const float * ap = blk.a + ir * a_row;
        if (blk.a_offsets) {
            // Rows through offsets: tiles split the block evenly (49 rows:
            // 6 + 6 + 6 + 6 + 5 + 5 + 5 + 5 + 5, not 8 x 6 + 1; a thin tile
            // is bound by its loads of B, not by its multiply-adds), each
            // row at its own offset.
            const int64_t left = blk.mc - ir, tiles = (left + MR - 1) / MR;
            m = int((left + tiles - 1) / tiles);
            ap = blk.a;
            for (int i = 0; i < m; i++) rows[i] = blk.a_rows(blk.a_row0 + ir + i);
        }
        Epilogue ep = blk.ep;  // residual_scale from this tile's first row
        if (ep.residual_scale) ep.residual_scale += ir;
        for (int64_t jr = 0; jr < blk.nc;) {
            int n = blk.nc - jr < NR ? int(blk.nc - jr) : NR;
            const float * bp;
            if (in_place) {
                const int64_t col = blk.b_col0 + jr, in_row = col % blk.b_row_len;
                if (blk.b_row_len - in_row < n) n = int(blk.b_row_len - in_row);
                bp = blk.b + (col / blk.b_row_len) * blk.b_row_pitch + in_row;
            } else {
                bp = blk.b + (jr / NR) * blk.kc * NR;
            }
            const float * add = blk.ep.add ? blk.ep.add + ir * blk.ep.add_rs + jr * blk.ep.add_cs : nullptr;
            const float * residual = blk.ep.residual ? blk.ep.residual + ir * blk.ldc + jr : nullptr;
            table[(m - 1) * NV + (n + W - 1) / W - 1](blk.kc, ap, blk.lda, blk.a_offsets, rows, bp, blk.b_offsets,
                                                      blk.c + ir * blk.ldc + jr, blk.ldc, n, blk.first, blk.last,
                                                      ep, add, residual);
            jr += n;
        }
        ir += m;
    }
}

// ---- B packing --------------------------------------------------------------

template <class Isa>
inline void copy_run(float * d, const float * s, int64_t n) {
    for (; n >= Isa::W; n -= Isa::W, d += Isa::W, s += Isa::W) Isa::storeu(d, Isa::loadu(s));
    if (n > 0) Isa::storen(d, Isa::loadn(s, int(n)), int(n));
}

template <class Isa>
inline void zero_run(float * d, int64_t n) {
    for (; n >= Isa::W; n -= Isa::W, d += Isa::W) Isa::storeu(d, Isa::zero());
    if (n > 0) Isa::storen(d, Isa::zero(), int(n));
}

template <class Isa, int NR>
void pack_strided(const float * b, int64_t rs, int64_t cs, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                  float * dst) {
    for (int64_t j0 = 0; j0 < nc; j0 += NR) {
        const int64_t cols = nc - j0 < NR ? nc - j0 : NR;
        float * panel = dst + (j0 / NR) * kc * NR;
        if (cs == 1) {
            // Rows of B contiguous along N: one short copy per k.
            const float * src = b + k0 * rs + n0 + j0;
            for (int64_t kk = 0; kk < kc; kk++) {
                copy_run<Isa>(panel + kk * NR, src + kk * rs, cols);
                if (cols < NR) zero_run<Isa>(panel + kk * NR + cols, NR - cols);
            }
        } else {
            // B^T: walk each column along K, the direction memory runs in.
            for (int64_t c = 0; c < cols; c++) {
                const float * src = b + (n0 + j0 + c) * cs + k0 * rs;
                for (int64_t kk = 0; kk < kc; kk++) panel[kk * NR + c] = src[kk * rs];
            }
            if (cols < NR) {
                for (int64_t kk = 0; kk < kc; kk++) zero_run<Isa>(panel + kk * NR + cols, NR - cols);
            }
        }
    }
}

// d[0, len) = s[i] for i in [lo, hi), zero elsewhere. Lanes outside
// [lo, hi) are never read, so s may point before or past its row.
template <class Isa>
inline void copy_window(float * d, const float * s, int64_t len, int64_t lo, int64_t hi) {
    if (lo == 0 && hi == len) {
        copy_run<Isa>(d, s, len);
        return;
    }
    for (int64_t j = 0; j < len; j += Isa::W) {
        const int n = len - j < Isa::W ? int(len - j) : Isa::W;
        Isa::storen(d + j, Isa::load_window(s + j, lo - j, hi - j), n);
    }
}

// As copy_window with source stride 2 (d[t] = s[2 t]): stride-2 convs.
template <class Isa>
inline void copy_window_stride2(float * d, const float * s, int64_t len, int64_t lo, int64_t hi) {
    constexpr int W = Isa::W;
    for (int64_t j = 0; j < len; j += W) {
        const int n = len - j < W ? int(len - j) : W;
        // Source lanes 2t for t in [lo, hi) of this vector, split over two loads.
        const int64_t first = 2 * (lo - j), end = 2 * (hi - j) - 1;
        const typename Isa::V a = Isa::load_window(s + 2 * j, first, end);
        const typename Isa::V b = Isa::load_window(s + 2 * j + W, first - W, end - W);
        Isa::storen(d + j, Isa::even(a, b), n);
    }
}

template <class Isa, int NR>
void pack_im2col(const float * x, const ConvGeometry & g, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                 float * dst) {
    // Segments: maximal runs of columns inside one output row and one panel.
    // They are the same for every k, so they are found once per block.
    struct Segment {
        int64_t dst, len, oy, ox;
        const float * image;
    };
    std::vector<Segment> segs;
    segs.reserve(size_t(nc / NR + nc / g.ow + 2));
    const int64_t out_plane = g.oh * g.ow;
    for (int64_t l = 0; l < nc;) {
        const int64_t n = n0 + l, pixel = n % out_plane, oy = pixel / g.ow, ox = pixel % g.ow, col = l % NR;
        int64_t len = g.ow - ox < nc - l ? g.ow - ox : nc - l;
        len = len < NR - col ? len : NR - col;
        segs.push_back({(l / NR) * kc * NR + col, len, oy, ox, x + (n / out_plane) * g.image_stride});
        l += len;
    }
    const int64_t taps = g.kh * g.kw;
    for (int64_t kk = 0; kk < kc; kk++) {
        const int64_t k = k0 + kk;
        const int64_t c = k / taps, ky = (k % taps) / g.kw, kx = k % g.kw;
        const int64_t plane = c * g.h * g.w;
        const int64_t dy = ky * g.dh - g.pt, dx = kx * g.dw - g.pl;
        for (const Segment & sg : segs) {
            float * d = dst + sg.dst + kk * NR;
            const int64_t iy = sg.oy * g.sh + dy;
            if (iy < 0 || iy >= g.h) {
                zero_run<Isa>(d, sg.len);
                continue;
            }
            const float * row = sg.image + plane + iy * g.w;
            const int64_t ix0 = sg.ox * g.sw + dx;
            if (g.sw <= 2) {
                // Columns t in [lo, hi) of the segment read inside the row:
                // 0 <= ix0 + sw * t < w.
                int64_t lo = ix0 >= 0 ? 0 : (-ix0 + g.sw - 1) / g.sw;
                int64_t hi = ix0 >= g.w ? 0 : (g.w - ix0 + g.sw - 1) / g.sw;
                lo = lo < sg.len ? lo : sg.len;
                hi = hi < lo ? lo : hi < sg.len ? hi : sg.len;
                if (g.sw == 1) copy_window<Isa>(d, row + ix0, sg.len, lo, hi);
                else copy_window_stride2<Isa>(d, row + ix0, sg.len, lo, hi);
            } else {
                for (int64_t t = 0; t < sg.len; t++) {
                    const int64_t ix = ix0 + t * g.sw;
                    d[t] = ix >= 0 && ix < g.w ? row[ix] : 0.0f;
                }
            }
        }
    }
    // Columns past nc in the last panel must be zero for the full-width kernel.
    const int64_t tail = nc % NR;
    if (tail != 0) {
        float * panel = dst + (nc / NR) * kc * NR;
        for (int64_t kk = 0; kk < kc; kk++) zero_run<Isa>(panel + kk * NR + tail, NR - tail);
    }
}

// dst[j * dst_rs + i] = src[i * src_rs + j] in W x W blocks transposed in
// registers; partial blocks at the edges load and store fewer lanes.
template <class Isa>
void transpose(const float * src, int64_t src_rs, int64_t rows, int64_t cols, float * dst, int64_t dst_rs) {
    constexpr int W = Isa::W;
    for (int64_t i0 = 0; i0 < rows; i0 += W) {
        const int nr = rows - i0 < W ? int(rows - i0) : W;
        for (int64_t j0 = 0; j0 < cols; j0 += W) {
            const int nc = cols - j0 < W ? int(cols - j0) : W;
            typename Isa::V r[W];
            for (int i = 0; i < W; i++) r[i] = i < nr ? Isa::loadn(src + (i0 + i) * src_rs + j0, nc) : Isa::zero();
            Isa::transpose(r);
            for (int j = 0; j < nc; j++) Isa::storen(dst + (j0 + j) * dst_rs + i0, r[j], nr);
        }
    }
}

// The kernel table entry of one instantiation.
template <class Isa, int MR, int NV>
constexpr Kernel make_kernel(CpuIsa isa, int kc, int nc) {
    return Kernel{isa,
                  MR,
                  NV * Isa::W,
                  kc,
                  nc,
                  &block<Isa, MR, NV>,
                  &pack_strided<Isa, NV * Isa::W>,
                  &pack_im2col<Isa, NV * Isa::W>,
                  &transpose<Isa>};
}

}  // namespace
}  // namespace fovea::cpu::packed
