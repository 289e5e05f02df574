// The packed fp32 GEMM shared by gemm, linear and conv2d: the driver
// (gemm.cc) packs B block by block through a caller-supplied function (a
// strided matrix, or im2col done while packing for conv) and hands
// cache-sized blocks to one register-blocked micro-kernel compiled per ISA
// (gemm_scalar.cc, gemm_avx2.cc, gemm_avx512.cc). A is read in place, row- or
// K-major: the broadcast operand needs no vector layout, and skipping its
// packing matters for weight-heavy layers where each weight is used only a
// few dozen times (ResNet's 7x7 stages).
#pragma once

#include <cstdint>
#include <functional>

#include "core/cpu_features.h"
#include "core/ops.h"

namespace fovea::cpu::packed {

// Applied when the last K block of a tile is stored:
// C(i,j) = act(alpha * sum_k A(i,k) B(k,j) + beta * add[i * add_rs + j * add_cs]
//              + residual_scale[i] * residual(i,j)).
// add may be null; add_cs is 0 (broadcast along a row) or 1. residual may
// be null; it is laid out as C (same offsets, row stride ldc).
// residual_scale may be null (1); it has one value per row.
struct Epilogue {
    float alpha = 1.0f;
    float beta = 0.0f;
    const float * add = nullptr;
    int64_t add_rs = 0;
    int64_t add_cs = 0;
    const float * residual = nullptr;
    const float * residual_scale = nullptr;
    Activation act = Activation::None;
};

// Where row i of A lies when A is read through per-k offsets: output pixel
// i of a stack of images, each `plane` pixels in output rows of `row_len`.
struct PixelRows {
    int64_t pixel_pitch = 0;            // floats from one pixel of an output row to the next
    int64_t row_len = 1, row_pitch = 0;  // pixels per output row; floats from one row to the next
    int64_t plane = 1, plane_pitch = 0;  // pixels per image; floats from one image to the next
    int64_t operator()(int64_t i) const {
        const int64_t in_plane = i % plane;
        return i / plane * plane_pitch + in_plane / row_len * row_pitch + in_plane % row_len * pixel_pitch;
    }
};

// One cache block for the micro-kernel. A: mc x kc read in place, A(i, k) =
// a[i * lda + k], or a[k * lda + i] when a_k_major, or, when a_offsets is
// set, a[a_offsets[k] + a_rows(a_row0 + i)]. B: ceil(nc/NR) panels,
// each [kc][NR] (64-byte aligned, zero padded past nc), or, when b_offsets
// is set, read in place: column j of the block is column n = b_col0 + j of
// B, which lies in row n / b_row_len of b at pitch b_row_pitch:
// B(k, j) = b[b_offsets[k] + (n / b_row_len) * b_row_pitch + n % b_row_len].
// No register tile spans two such rows. C: mc x nc, row stride ldc; holds
// the partial sums of the earlier K blocks unless `first`. The epilogue runs
// when `last`, with ep.add offset to the block's origin.
struct Block {
    int64_t mc = 0, nc = 0, kc = 0;
    const float * a = nullptr;
    int64_t lda = 0;
    bool a_k_major = false;
    const int64_t * a_offsets = nullptr;
    PixelRows a_rows;
    int64_t a_row0 = 0;
    const float * b = nullptr;
    const int64_t * b_offsets = nullptr;
    int64_t b_col0 = 0, b_row_len = 0, b_row_pitch = 0;
    float * c = nullptr;
    int64_t ldc = 0;
    bool first = true, last = true;
    Epilogue ep;
};

// Input geometry of one conv image group, for packing im2col blocks. The
// columns may run over several images (column n is pixel n % (oh*ow) of
// image n / (oh*ow)), which are image_stride floats apart.
struct ConvGeometry {
    int64_t c = 0, h = 0, w = 0;  // channels of the group, height, width
    int64_t kh = 1, kw = 1;
    int64_t sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
    int64_t oh = 0, ow = 0;
    int64_t image_stride = 0;
};

// The packing functions write ceil(nc/NR) panels of [kc][NR] at dst, zero
// filling columns past nc.
struct Kernel {
    CpuIsa isa;
    int mr, nr;      // register tile
    int kc, nc;      // cache blocking: B block kc x nc stays in L2, A slice MR x kc in L1
    void (*block)(const Block & blk);
    // B(k, n) = b[k * rs + n * cs], k in [k0, k0+kc), n in [n0, n0+nc).
    void (*pack_strided)(const float * b, int64_t rs, int64_t cs, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                         float * dst);
    // Rows [k0, k0+kc) x columns [n0, n0+nc) of im2col(x): row k is (channel,
    // ky, kx), column n the output pixel (n / ow, n % ow) of an image (see
    // ConvGeometry); x points at the first image's group's first channel.
    void (*pack_im2col)(const float * x, const ConvGeometry & g, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        float * dst);
    // cpu::transpose (ops.h) on this ISA's registers.
    void (*transpose)(const float * src, int64_t src_rs, int64_t rows, int64_t cols, float * dst, int64_t dst_rs);
};

const Kernel & kernel_scalar();
// Null where the build has no such kernel (non-x86 targets).
const Kernel * kernel_avx2();
const Kernel * kernel_avx512();
// The kernel for an ISA, falling back to narrower ones.
const Kernel & kernel_for(CpuIsa isa);

// Packs B(k, n) for k in [k0, k0+kc), n in [n0, n0+nc) of problem `p` with
// one of the kernel's packing functions.
using PackB = std::function<void(const Kernel & kn, int64_t p, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                                 float * dst)>;

// A batch of independent GEMMs sharing shapes: problem p = b * groups + g.
struct Problem {
    int64_t batches = 1, groups = 1;
    int64_t m = 0, n = 0, k = 0;
    // A(i, k) of problem (b, g) = a[b * a_bs + g * a_gs + i * lda + k], or
    // ...[k * lda + i] when a_k_major, or, when a_offsets is set (k entries,
    // B then packed), ...[a_offsets[k] + a_rows(i)]: the pixels of images,
    // for channels-last convs.
    const float * a = nullptr;
    int64_t a_bs = 0, a_gs = 0, lda = 0;
    bool a_k_major = false;
    const int64_t * a_offsets = nullptr;
    PixelRows a_rows;
    // B packed block by block through pack_b, or, when b_offsets is set (k
    // entries), read in place: B(k, n) of problem (b, g) =
    // b_data[b * b_bs + g * b_gs + b_offsets[k] + (n / b_row_len) * b_row_pitch + n % b_row_len]
    // (b_row_len 0: one row, B(k, n) = ...[b_offsets[k] + n]). Reading in
    // place saves the packing copy where B's rows are contiguous runs of
    // memory (shifted windows of an image for convs, whose output rows are
    // b_row_len pixels of a plane b_row_pitch wide); every read must lie
    // inside b_data.
    // Or B packed once for all calls (weights): b_prepacked + g * b_prepacked_gs,
    // laid out by prepack_b.
    PackB pack_b;
    const float * b_prepacked = nullptr;
    int64_t b_prepacked_gs = 0;
    const float * b_data = nullptr;
    int64_t b_bs = 0, b_gs = 0;
    const int64_t * b_offsets = nullptr;
    int64_t b_row_len = 0, b_row_pitch = 0;
    // C of problem (b, g) starts at c + b * c_bs + g * c_gs, row stride ldc
    // (and so does ep.residual).
    float * c = nullptr;
    int64_t c_bs = 0, c_gs = 0, ldc = 0;
    Epilogue ep;
    int64_t add_gs = 0;  // ep.add and ep.residual_scale offset per group
};

// Runs every problem on the thread pool with the kernel of cpu_isa(). Each
// C element is summed over K in the same order whatever the thread count.
void run(const Problem & pr);

// B(k, n) = b[k * rs + n * cs] packed for every later run() of a problem
// with this k and n on kernel kn: the K blocks run() uses, one after the
// other, each as ceil(n/NR) panels [kc][NR]. prepacked_b_floats is its size.
int64_t prepacked_b_floats(const Kernel & kn, int64_t k, int64_t n);
void prepack_b(const Kernel & kn, const float * b, int64_t rs, int64_t cs, int64_t k, int64_t n, float * dst);

}  // namespace fovea::cpu::packed
