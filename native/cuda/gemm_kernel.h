// The one matrix-product kernel of the CUDA backend, shared by gemm, linear
// and conv2d (an implicit GEMM: the im2col matrix is gathered tile by tile
// from the image and never stored). CUDA header: .cu files only.
#pragma once

#include <cstdint>

#include "cuda/context.h"

namespace fovea::cuda {

// Window of a conv2d seen as the B operand: B(k, n) for k = (c, ki, kj) and
// n = (oy, ox) is x[c][oy * sh - pt + ki * dh][ox * sw - pl + kj * dw], or 0
// in the padding. All in-image indices fit int32 (checked by conv2d).
struct ConvWindow {
    int32_t h = 0, w = 0, kh = 0, kw = 0, sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1, ow = 1;
};

// Problems z = (batch, group), z < batches * groups, each computing
// C[m, n] = act(alpha * sum_k A(m, k) B(k, n) + beta * add(m, n)) with
//   A(m, k) = a[g * a_gs + m * a_rs + k * a_cs]
//   B(k, n) = b[bb * b_bs + g * b_gs + k * b_rs + n * b_cs]   (dense), or
//           = the conv window over the image at b + bb * b_bs + g * b_gs
//   C(m, n) at c[bb * c_bs + g * c_gs + m * ldc + n]
//   add(m, n) = add[g * add_gs + m * add_rs + n * add_cs] (add may be null).
struct GemmArgs {
    int64_t m = 0, n = 0, k = 0;
    int64_t batches = 1, groups = 1;
    const float * a = nullptr;
    int64_t a_rs = 0, a_cs = 0, a_gs = 0;
    const float * b = nullptr;
    int64_t b_rs = 0, b_cs = 0, b_bs = 0, b_gs = 0;
    float * c = nullptr;
    int64_t ldc = 0, c_bs = 0, c_gs = 0;
    const float * add = nullptr;
    int64_t add_rs = 0, add_cs = 0, add_gs = 0;
    float alpha = 1.0f, beta = 0.0f;
    Activation act = Activation::None;
    bool conv = false;  // B is the conv window
    ConvWindow window;
};

// Checks the sizes, picks the fp32 or tf32 path from ctx.precision and
// enqueues the kernel on ctx.stream. `op` names the caller in errors.
void launch_gemm(Context & ctx, const GemmArgs & args, const char * op);

}  // namespace fovea::cuda
