// conv2d as implicit GEMM on the packed micro-kernel: per image and group,
// Y[OCg, OH*OW] = W[OCg, Cg*KH*KW] * im2col(X)[Cg*KH*KW, OH*OW]. The im2col
// matrix is never materialised: B blocks are gathered from the image straight
// into the micro-kernel's panel layout. 1x1 stride-1 unpadded convs read the
// image as the B matrix directly. Bias and activation run in the epilogue.

#include "core/op_shapes.h"
#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"

namespace fovea::cpu {

Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) {
    const Shape out = conv2d_output_shape(x, w, bias, p);
    Tensor y = Tensor::empty(out);
    if (y.numel() == 0) return y;

    const int64_t channels = x.dim(1), oc = w.dim(0), groups = p.groups;
    packed::ConvGeometry g;
    g.c = channels / groups;
    g.h = x.dim(2);
    g.w = x.dim(3);
    g.kh = w.dim(2);
    g.kw = w.dim(3);
    g.sh = p.stride_h;
    g.sw = p.stride_w;
    g.pt = p.pad_top;
    g.pl = p.pad_left;
    g.dh = p.dilation_h;
    g.dw = p.dilation_w;
    g.oh = out[2];
    g.ow = out[3];
    const int64_t ocg = oc / groups;
    const int64_t k = g.c * g.kh * g.kw;
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;

    packed::Problem pr;
    pr.batches = out[0];
    pr.groups = groups;
    pr.m = ocg;
    pr.n = out_plane;
    pr.k = k;
    pr.a = w.f32();
    pr.a_gs = ocg * k;
    pr.lda = k;
    pr.c = y.f32();
    pr.c_bs = oc * out_plane;
    pr.c_gs = ocg * out_plane;
    pr.ldc = out_plane;
    pr.ep.act = p.activation;
    if (bias.defined()) {
        pr.ep.add = bias.f32();
        pr.ep.beta = 1.0f;
        pr.ep.add_rs = 1;
        pr.add_gs = ocg;
    }

    const float * xd = x.f32();
    const int64_t image = channels * in_plane, group_in = g.c * in_plane;
    const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
                        p.pad_bottom == 0 && p.pad_right == 0;
    if (direct) {
        pr.pack_b = [=](const packed::Kernel & kn, int64_t q, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        float * dst) {
            const float * xg = xd + (q / groups) * image + (q % groups) * group_in;
            kn.pack_strided(xg, in_plane, 1, k0, kc, n0, nc, dst);
        };
    } else {
        pr.pack_b = [=](const packed::Kernel & kn, int64_t q, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        float * dst) {
            const float * xg = xd + (q / groups) * image + (q % groups) * group_in;
            kn.pack_im2col(xg, g, k0, kc, n0, nc, dst);
        };
    }
    packed::run(pr);
    return y;
}

}  // namespace fovea::cpu
