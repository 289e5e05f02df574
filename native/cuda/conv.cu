// conv2d as an implicit GEMM on the shared matrix kernel (gemm_kernel.h), as
// native/cpu/conv.cc: per image and group, Y[OCg, OH*OW] = W[OCg, Cg*KH*KW] *
// im2col(X)[Cg*KH*KW, OH*OW], the im2col operand gathered from the image
// tile by tile (no buffer); bias and activation run in the epilogue.
#include "core/op_shapes.h"
#include "cuda/gemm_kernel.h"

namespace fovea::cuda {

Tensor conv2d(Context & ctx, const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) {
    const Shape out = conv2d_output_shape(x, w, bias, p);
    check_on_device(ctx, x, "conv2d");
    check_on_device(ctx, w, "conv2d");
    check_on_device(ctx, bias, "conv2d");
    Tensor y = ctx.empty(out);
    if (y.numel() == 0) return y;
    const int64_t channels = x.dim(1), oc = w.dim(0), groups = p.groups;
    const int64_t cg = channels / groups, ocg = oc / groups;
    const int64_t h = x.dim(2), wd = x.dim(3), kh = w.dim(2), kw = w.dim(3);
    const int64_t oh = out[2], ow = out[3];
    // The window arithmetic runs in int32: every index inside one group's
    // image must fit, and a coordinate (at most twice the padded size).
    const int64_t kMax = int64_t(1) << 31;
    FOVEA_CHECK_INPUT(cg * h * wd < kMax && 2 * (h + p.pad_top + p.pad_bottom) < kMax &&
                          2 * (wd + p.pad_left + p.pad_right) < kMax && oh * ow < kMax && cg * kh * kw < kMax,
                      "conv2d: input " << shape_str(x.shape()) << " is too large for the CUDA backend");
    GemmArgs g;
    g.m = ocg;
    g.n = oh * ow;
    g.k = cg * kh * kw;
    g.batches = out[0];
    g.groups = groups;
    g.a = w.f32();
    g.a_rs = g.k;
    g.a_cs = 1;
    g.a_gs = ocg * g.k;
    g.b = x.f32();
    g.b_bs = channels * h * wd;
    g.b_gs = cg * h * wd;
    g.c = y.f32();
    g.ldc = g.n;
    g.c_bs = oc * g.n;
    g.c_gs = ocg * g.n;
    g.act = p.activation;
    if (bias.defined()) {
        g.add = bias.f32();
        g.beta = 1.0f;
        g.add_rs = 1;
        g.add_cs = 0;
        g.add_gs = ocg;
    }
    if (kh == 1 && kw == 1 && p.stride_h == 1 && p.stride_w == 1 && oh == h && ow == wd && p.pad_top == 0 &&
        p.pad_left == 0) {
        // A 1x1 convolution over the whole image is a plain product with the
        // image as B (k = channel, n = pixel): no window arithmetic.
        g.b_rs = h * wd;
        g.b_cs = 1;
        launch_gemm(ctx, g, "conv2d");
        return y;
    }
    g.conv = true;
    g.window.h = int32_t(h);
    g.window.w = int32_t(wd);
    g.window.kh = int32_t(kh);
    g.window.kw = int32_t(kw);
    g.window.sh = p.stride_h;
    g.window.sw = p.stride_w;
    g.window.pt = p.pad_top;
    g.window.pl = p.pad_left;
    g.window.dh = p.dilation_h;
    g.window.dw = p.dilation_w;
    g.window.ow = int32_t(ow);
    launch_gemm(ctx, g, "conv2d");
    return y;
}

}  // namespace fovea::cuda
