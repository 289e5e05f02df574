// The matrix-product kernel (gemm_kernel.h) and the gemm / linear ops, as
// native/cpu/gemm.cc.
//
// One kernel template, two axes: the B operand (a dense strided matrix, or a
// conv window gathered on the fly) and the arithmetic (fp32 SIMT with a 4x4
// register tile per thread, or tf32 tensor cores through WMMA m16n16k8 with
// fp32 accumulation). A block computes a 64x64 tile of C over 32-deep K
// slices staged in shared memory; the next slice is loaded into registers
// while the current one is multiplied. The epilogue (alpha, the broadcast add
// with beta, the activation) runs on the tile before it is stored.
//
// Split K: where the tiles of C are too few to fill the GPU (the deep layers
// of a trunk on a small image: 512 channels x 7x7 pixels is one tile), the K
// range is cut into slices that separate blocks multiply; the slices' partial
// tiles go to a workspace and a second kernel sums them in a fixed order
// (the same result on every run) and applies the epilogue.
#include <mma.h>

#include "core/op_shapes.h"
#include "cuda/gemm_kernel.h"

// WMMA tf32 exists from sm_80 on (mma.h's own condition); the host pass
// sees it too. Older targets compile the fp32 path only.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FOVEA_WMMA_TF32 1
#else
#define FOVEA_WMMA_TF32 0
#endif

namespace fovea::cuda {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32;
constexpr int kThreads = 256;
// Elements of the A tile and of the B tile each thread loads per K slice.
constexpr int kLoads = kBM * kBK / kThreads;
static_assert(kBN * kBK / kThreads == kLoads, "A and B tiles are loaded alike");
static_assert(kThreads % kBM == 0 && kThreads % kBK == 0, "a thread keeps its row or column across loads");
// Rows of the shared tiles are padded by 4 floats: WMMA needs leading
// dimensions that are multiples of 4, and the padding spreads the banks.
constexpr int kLdA = kBM + 4, kLdB = kBN + 4, kLdC = kBN + 4;
constexpr int kTileFloats = kBK * kLdA + kBK * kLdB;
constexpr int kSmemFloats = kTileFloats > kBM * kLdC ? kTileFloats : kBM * kLdC;

// The K range each z-slice of the grid multiplies: splits slices of
// k_per_split (a multiple of kBK); partial tiles go to `partial`
// [splits][problems][m][n] when splits > 1.
struct SplitK {
    int64_t splits = 1, k_per_split = 0;
    float * partial = nullptr;
};

__device__ __forceinline__ float epilogue(const GemmArgs & p, const float * add, float acc, int64_t m, int64_t n) {
    float v = acc;
    if (p.alpha != 1.0f) v = v * p.alpha;
    if (add) v = fmaf(add[m * p.add_rs + n * p.add_cs], p.beta, v);
    if (p.act == Activation::Relu) v = v > 0.0f ? v : 0.0f;  // NaN -> 0, as the CPU's max(v, 0)
    if (p.act == Activation::Sigmoid) v = 1.0f / (1.0f + expf(-v));
    return v;
}

// Operands are rounded to tf32 once, as they are staged in shared memory.
template <bool Tf32> __device__ __forceinline__ float to_operand(float v) {
#if FOVEA_WMMA_TF32
    if constexpr (Tf32) return nvcuda::wmma::__float_to_tf32(v);
#endif
    return v;
}

// Where a thread's loads fall in a tile: with kThreads a multiple of the
// tile's fast extent, each thread keeps one index of the fast axis (`fixed`)
// and steps the other by kThreads / fast extent from `first`.
struct TileWalk {
    bool k_fast;
    int fixed, first, step;
    __device__ TileWalk(bool k_is_fast, int extent, int tid)
        : k_fast(k_is_fast),
          fixed(k_is_fast ? tid % kBK : tid % extent),
          first(k_is_fast ? tid / kBK : tid / extent),
          step(k_is_fast ? kThreads / kBK : kThreads / extent) {}
    __device__ int kk(int i) const { return k_fast ? fixed : first + i * step; }
    __device__ int mn(int i) const { return k_fast ? first + i * step : fixed; }
};

template <bool Tf32>
__global__ void __launch_bounds__(kThreads) gemm_kernel(const GemmArgs p, const SplitK split) {
    __shared__ __align__(32) float smem[kSmemFloats];
    float * as = smem;               // [kBK][kLdA]: A tile, k-major
    float * bs = smem + kBK * kLdA;  // [kBK][kLdB]
    const int tid = int(threadIdx.x);
    const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
    const int64_t problems = p.batches * p.groups;
    // Coalesced loads: walk whichever index is contiguous in memory.
    const TileWalk wa(p.a_cs == 1, kBM, tid);
    const TileWalk wb(!p.conv && p.b_rs == 1 && p.b_cs != 1, kBN, tid);
    // A conv thread gathers one output pixel (its fixed column) for every K
    // slice: its window origin is computed once.
    const ConvWindow & win = p.window;
    const int32_t khw = win.kh * win.kw;
    int32_t iy0 = 0, ix0 = 0;
    if (p.conv) {
        const int32_t gn = int32_t(n0) + wb.fixed;
        const int32_t oy = gn / win.ow, ox = gn - oy * win.ow;
        iy0 = oy * win.sh - win.pt;
        ix0 = ox * win.sw - win.pl;
    }
    for (int64_t zz = blockIdx.z; zz < problems * split.splits; zz += gridDim.z) {
        const int64_t z = zz / split.splits, slice = zz % split.splits;
        const int64_t k_begin = slice * split.k_per_split;
        const int64_t k_end = k_begin + split.k_per_split < p.k ? k_begin + split.k_per_split : p.k;
        const int64_t bb = z / p.groups, g = z % p.groups;
        const float * a = p.a + g * p.a_gs;
        const float * b = p.b + bb * p.b_bs + g * p.b_gs;

        float ra[kLoads], rb[kLoads];
        auto load_slice = [&](int64_t k0) {
#pragma unroll
            for (int i = 0; i < kLoads; i++) {
                const int64_t gm = m0 + wa.mn(i), gk = k0 + wa.kk(i);
                ra[i] = gm < p.m && gk < k_end ? a[gm * p.a_rs + gk * p.a_cs] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < kLoads; i++) {
                const int64_t gn = n0 + wb.mn(i), gk = k0 + wb.kk(i);
                float v = 0.0f;
                if (gn < p.n && gk < k_end) {
                    if (!p.conv) {
                        v = b[gk * p.b_rs + gn * p.b_cs];
                    } else {
                        const int32_t c = int32_t(gk) / khw, r = int32_t(gk) - c * khw;
                        const int32_t ki = r / win.kw, kj = r - ki * win.kw;
                        const int32_t ih = iy0 + ki * win.dh, iw = ix0 + kj * win.dw;
                        if (ih >= 0 && ih < win.h && iw >= 0 && iw < win.w) v = b[(int64_t(c) * win.h + ih) * win.w + iw];
                    }
                }
                rb[i] = v;
            }
        };

        // fp32: thread (ty, tx) owns rows ty * 4 + i, columns tx * 4 + j.
        const int ty = tid / 16, tx = tid % 16;
        float acc[4][4] = {};
        // tf32: warp (wm, wn) owns rows wm * 16 and columns wn * 32 + 16 j.
        const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
#if FOVEA_WMMA_TF32
        nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> cf[2];
        if constexpr (Tf32) {
            nvcuda::wmma::fill_fragment(cf[0], 0.0f);
            nvcuda::wmma::fill_fragment(cf[1], 0.0f);
        }
#endif

        if (k_begin < k_end) load_slice(k_begin);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
            for (int i = 0; i < kLoads; i++) {
                as[wa.kk(i) * kLdA + wa.mn(i)] = to_operand<Tf32>(ra[i]);
                bs[wb.kk(i) * kLdB + wb.mn(i)] = to_operand<Tf32>(rb[i]);
            }
            __syncthreads();
            // The next slice's global loads are in flight during the products.
            if (k0 + kBK < k_end) load_slice(k0 + kBK);
            if constexpr (Tf32) {
#if FOVEA_WMMA_TF32
                using namespace nvcuda;
#pragma unroll
                for (int kk = 0; kk < kBK; kk += 8) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> af;
                    wmma::load_matrix_sync(af, as + kk * kLdA + wm * 16, kLdA);
                    for (int j = 0; j < 2; j++) {
                        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf;
                        wmma::load_matrix_sync(bf, bs + kk * kLdB + wn * 32 + j * 16, kLdB);
                        wmma::mma_sync(cf[j], af, bf, cf[j]);
                    }
                }
#else
                __trap();  // the host selects tf32 on sm_80 and newer only
#endif
            } else {
#pragma unroll
                for (int kk = 0; kk < kBK; kk++) {
                    const float4 av = *reinterpret_cast<const float4 *>(as + kk * kLdA + ty * 4);
                    const float4 bv = *reinterpret_cast<const float4 *>(bs + kk * kLdB + tx * 4);
                    const float ar[4] = {av.x, av.y, av.z, av.w}, br[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) {
#pragma unroll
                        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
                    }
                }
            }
            __syncthreads();
        }

        // A split's raw sums go to its slice of the workspace; the reduction
        // applies the epilogue.
        float * c = split.splits > 1 ? split.partial + (slice * problems + z) * p.m * p.n
                                     : p.c + bb * p.c_bs + g * p.c_gs;
        const int64_t ldc = split.splits > 1 ? p.n : p.ldc;
        const float * add = p.add ? p.add + g * p.add_gs : nullptr;
        auto store = [&](int64_t gm, int64_t gn, float v) {
            if (gm < p.m && gn < p.n) c[gm * ldc + gn] = split.splits > 1 ? v : epilogue(p, add, v, gm, gn);
        };
        if constexpr (Tf32) {
            // Through shared memory (which the tiles no longer use): the
            // fragment layout is opaque, the stored tile is not.
            float * cs = smem;  // [kBM][kLdC]
#if FOVEA_WMMA_TF32
            for (int j = 0; j < 2; j++) {
                nvcuda::wmma::store_matrix_sync(cs + wm * 16 * kLdC + wn * 32 + j * 16, cf[j], kLdC,
                                                nvcuda::wmma::mem_row_major);
            }
#endif
            __syncthreads();
            for (int e = tid; e < kBM * kBN; e += kThreads) {
                const int mm = e / kBN, nn = e % kBN;
                store(m0 + mm, n0 + nn, cs[mm * kLdC + nn]);
            }
            __syncthreads();  // the next problem's tiles overwrite cs
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) store(m0 + ty * 4 + i, n0 + tx * 4 + j, acc[i][j]);
            }
        }
    }
}

// Sums the split-K slices of every C element in slice order and applies the
// epilogue.
__global__ void splitk_reduce_kernel(const GemmArgs p, const float * partial, int64_t splits) {
    const int64_t mn = p.m * p.n, total = p.batches * p.groups * mn;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t z = i / mn, r = i - z * mn, gm = r / p.n, gn = r - gm * p.n;
        float v = 0.0f;
        for (int64_t s = 0; s < splits; s++) v += partial[s * total + i];
        const int64_t bb = z / p.groups, g = z % p.groups;
        const float * add = p.add ? p.add + g * p.add_gs : nullptr;
        p.c[bb * p.c_bs + g * p.c_gs + gm * p.ldc + gn] = epilogue(p, add, v, gm, gn);
    }
}

// How K is sliced for a problem of `tiles` C tiles: into enough slices for
// two blocks per SM, each at least 4 K steps deep (shallower ones spend more
// on the workspace than they gain), at most 32; one slice of all of K where
// the tiles already fill the GPU.
SplitK split_for(int64_t tiles, int64_t k, int multiprocessors) {
    const int64_t target = 2 * int64_t(multiprocessors), k_steps = (k + kBK - 1) / kBK;
    SplitK split;
    split.k_per_split = k_steps * kBK;
    if (tiles >= target) return split;
    int64_t s = (target + tiles - 1) / tiles;
    if (s > k_steps / 4) s = k_steps / 4;
    if (s > 32) s = 32;
    if (s < 2) return split;
    split.k_per_split = (k_steps + s - 1) / s * kBK;
    // Rounding the slices to whole K steps may leave the last ones empty.
    split.splits = (k + split.k_per_split - 1) / split.k_per_split;
    return split;
}

}  // namespace

void launch_gemm(Context & ctx, const GemmArgs & args, const char * op) {
    const int64_t kMax = int64_t(1) << 31;
    FOVEA_CHECK_INPUT(args.m < kMax && args.n < kMax && args.k < kMax,
                      op << ": matrix sizes " << args.m << "x" << args.k << "x" << args.n
                         << " exceed the CUDA backend's 2^31 limit");
    const int64_t problems = args.batches * args.groups;
    if (args.m == 0 || args.n == 0 || problems == 0) return;
    const int64_t m_tiles = (args.m + kBM - 1) / kBM, n_tiles = (args.n + kBN - 1) / kBN;
    FOVEA_CHECK_INPUT(m_tiles <= 65535, op << ": " << args.m << " rows exceed the CUDA backend's limit of "
                                           << 65535 * kBM);
    SplitK split = split_for(m_tiles * n_tiles * problems, args.k, ctx.multiprocessors);
    Tensor workspace;
    if (split.splits > 1) {
        workspace = ctx.empty({split.splits * problems * args.m * args.n});
        split.partial = workspace.f32();
    }
    const int64_t slices = problems * split.splits;
    const dim3 grid(unsigned(n_tiles), unsigned(m_tiles), unsigned(slices < 65535 ? slices : 65535));
    if (ctx.precision.load() == Precision::TF32) {
        gemm_kernel<true><<<grid, kThreads, 0, ctx.stream>>>(args, split);
    } else {
        gemm_kernel<false><<<grid, kThreads, 0, ctx.stream>>>(args, split);
    }
    check_launch(op);
    if (split.splits > 1) {
        splitk_reduce_kernel<<<grid_for(problems * args.m * args.n, 256), 256, 0, ctx.stream>>>(args, split.partial,
                                                                                             split.splits);
        check_launch(op);
    }
}

Tensor gemm(Context & ctx, const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) {
    const GemmDims d = gemm_dims(a, b, c, p);
    check_on_device(ctx, a, "gemm");
    check_on_device(ctx, b, "gemm");
    check_on_device(ctx, c, "gemm");
    Tensor y = ctx.empty({d.m, d.n});
    GemmArgs g;
    g.m = d.m;
    g.n = d.n;
    g.k = d.k;
    g.a = a.f32();
    g.a_rs = p.trans_a ? 1 : d.k;
    g.a_cs = p.trans_a ? d.m : 1;
    g.b = b.f32();
    g.b_rs = p.trans_b ? 1 : d.n;
    g.b_cs = p.trans_b ? d.k : 1;
    g.c = y.f32();
    g.ldc = d.n;
    g.alpha = p.alpha;
    g.beta = p.beta;
    g.act = p.activation;
    // BLAS convention: beta == 0 means C is not read (NaN in C is ignored).
    if (c.defined() && p.beta != 0.0f) {
        const int64_t cm = c.ndim() == 2 ? c.dim(0) : 1;
        const int64_t cn = c.ndim() >= 1 ? c.dim(-1) : 1;
        g.add = c.f32();
        g.add_rs = cm == 1 ? 0 : cn;
        g.add_cs = cn == 1 ? 0 : 1;
    }
    launch_gemm(ctx, g, "gemm");
    return y;
}

Tensor linear(Context & ctx, const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) {
    const Shape out = linear_output_shape(x, w, bias);
    check_on_device(ctx, x, "linear");
    check_on_device(ctx, w, "linear");
    check_on_device(ctx, bias, "linear");
    // y[N, M] = x[N, K] * w[M, K]^T: w is read transposed in place.
    Tensor y = ctx.empty(out);
    GemmArgs g;
    g.m = out[0];
    g.n = out[1];
    g.k = x.dim(1);
    g.a = x.f32();
    g.a_rs = g.k;
    g.a_cs = 1;
    g.b = w.f32();
    g.b_rs = 1;
    g.b_cs = g.k;
    g.c = y.f32();
    g.ldc = g.n;
    g.act = act;
    if (bias.defined()) {
        g.add = bias.f32();
        g.beta = 1.0f;
        g.add_rs = 0;
        g.add_cs = 1;
    }
    launch_gemm(ctx, g, "linear");
    return y;
}

}  // namespace fovea::cuda
