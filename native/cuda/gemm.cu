// The matrix-product kernel (gemm_kernel.h) and the gemm / linear ops, as
// native/cpu/gemm.cc.
//
// One kernel template, two axes: the B operand (a dense strided matrix, or a
// conv window gathered on the fly) and the arithmetic (fp32 SIMT with a 4x4
// register tile per thread, or tf32 tensor cores through WMMA m16n16k8 with
// fp32 accumulation). A block computes a 64x64 tile of C over 16-deep K
// slices staged in shared memory; the epilogue (alpha, the broadcast add
// with beta, the activation) runs on the tile before it is stored.
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

constexpr int kBM = 64, kBN = 64, kBK = 16;
constexpr int kThreads = 256;
// Rows of the shared tiles are padded by 4 floats: WMMA needs leading
// dimensions that are multiples of 4, and the padding spreads the banks.
constexpr int kLdA = kBM + 4, kLdB = kBN + 4, kLdC = kBN + 4;
constexpr int kTileFloats = kBK * kLdA + kBK * kLdB;
constexpr int kSmemFloats = kTileFloats > kBM * kLdC ? kTileFloats : kBM * kLdC;

__device__ __forceinline__ float load_b(const GemmArgs & p, const float * b, int64_t gk, int64_t gn) {
    if (!p.conv) return b[gk * p.b_rs + gn * p.b_cs];
    const ConvWindow & g = p.window;
    const int32_t khw = g.kh * g.kw;
    const int32_t c = int32_t(gk) / khw, r = int32_t(gk) - c * khw;
    const int32_t ki = r / g.kw, kj = r - ki * g.kw;
    const int32_t oy = int32_t(gn) / g.ow, ox = int32_t(gn) - oy * g.ow;
    const int32_t ih = oy * g.sh - g.pt + ki * g.dh, iw = ox * g.sw - g.pl + kj * g.dw;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return 0.0f;
    return b[(int64_t(c) * g.h + ih) * g.w + iw];
}

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

template <bool Tf32>
__global__ void __launch_bounds__(kThreads) gemm_kernel(const GemmArgs p) {
    __shared__ __align__(32) float smem[kSmemFloats];
    float * as = smem;               // [kBK][kLdA]: A tile, k-major
    float * bs = smem + kBK * kLdA;  // [kBK][kLdB]
    const int tid = int(threadIdx.x);
    const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
    const int64_t problems = p.batches * p.groups;
    // Coalesced loads: walk whichever index is contiguous in memory.
    const bool a_k_fast = p.a_cs == 1;
    const bool b_k_fast = !p.conv && p.b_rs == 1 && p.b_cs != 1;
    for (int64_t z = blockIdx.z; z < problems; z += gridDim.z) {
        const int64_t bb = z / p.groups, g = z % p.groups;
        const float * a = p.a + g * p.a_gs;
        const float * b = p.b + bb * p.b_bs + g * p.b_gs;
        float * c = p.c + bb * p.c_bs + g * p.c_gs;
        const float * add = p.add ? p.add + g * p.add_gs : nullptr;

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

        for (int64_t k0 = 0; k0 < p.k; k0 += kBK) {
            for (int e = tid; e < kBM * kBK; e += kThreads) {
                const int mm = a_k_fast ? e / kBK : e % kBM, kk = a_k_fast ? e % kBK : e / kBM;
                const int64_t gm = m0 + mm, gk = k0 + kk;
                const float v = gm < p.m && gk < p.k ? a[gm * p.a_rs + gk * p.a_cs] : 0.0f;
                as[kk * kLdA + mm] = to_operand<Tf32>(v);
            }
            for (int e = tid; e < kBN * kBK; e += kThreads) {
                const int nn = b_k_fast ? e / kBK : e % kBN, kk = b_k_fast ? e % kBK : e / kBN;
                const int64_t gn = n0 + nn, gk = k0 + kk;
                const float v = gn < p.n && gk < p.k ? load_b(p, b, gk, gn) : 0.0f;
                bs[kk * kLdB + nn] = to_operand<Tf32>(v);
            }
            __syncthreads();
            if constexpr (Tf32) {
#if FOVEA_WMMA_TF32
                using namespace nvcuda;
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
                const int64_t gm = m0 + mm, gn = n0 + nn;
                if (gm < p.m && gn < p.n) c[gm * p.ldc + gn] = epilogue(p, add, cs[mm * kLdC + nn], gm, gn);
            }
            __syncthreads();  // the next problem's tiles overwrite cs
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int64_t gm = m0 + ty * 4 + i;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int64_t gn = n0 + tx * 4 + j;
                    if (gm < p.m && gn < p.n) c[gm * p.ldc + gn] = epilogue(p, add, acc[i][j], gm, gn);
                }
            }
        }
    }
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
    const dim3 grid(unsigned(n_tiles), unsigned(m_tiles), unsigned(problems < 65535 ? problems : 65535));
    if (ctx.precision.load() == Precision::TF32) {
        gemm_kernel<true><<<grid, kThreads, 0, ctx.stream>>>(args);
    } else {
        gemm_kernel<false><<<grid, kThreads, 0, ctx.stream>>>(args);
    }
    check_launch(op);
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
