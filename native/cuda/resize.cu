// Bilinear resize (ONNX Resize "linear"), torch/image's image.scale and
// integer nearest-neighbour upsampling, as native/cpu/resize.cc. Taps are
// computed per output cell with the CPU's arithmetic (double coordinates for
// the resize; float with products rounded before the sums for image.scale,
// so no fused multiply-add moves a tap to another input cell).
#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;

struct Taps {
    int64_t i0, i1;
    float w0, w1;
};

// The CPU's source_coord + axis_taps for one output index. `length` is ONNX's
// resized length (in * scale with an explicit scale, else out); `scale` is
// the explicit scale or out / in.
__device__ Taps resize_taps(int64_t dst, int64_t in, double length, double scale, ResizeCoord mode) {
    const double d = double(dst);
    double c = 0.0;
    switch (mode) {
        case ResizeCoord::AlignCorners: c = length == 1.0 ? 0.0 : d * double(in - 1) / (length - 1.0); break;
        case ResizeCoord::HalfPixel: c = (d + 0.5) / scale - 0.5; break;
        case ResizeCoord::PytorchHalfPixel: c = length == 1.0 ? 0.0 : (d + 0.5) / scale - 0.5; break;
        case ResizeCoord::Asymmetric: c = d / scale; break;
    }
    c = c > 0.0 ? c : 0.0;
    c = c < double(in - 1) ? c : double(in - 1);
    const int64_t i0 = int64_t(c);
    const double frac = c - double(i0);
    return {i0, i0 + 1 < in - 1 ? i0 + 1 : in - 1, float(1.0 - frac), float(frac)};
}

struct ResizeGeom {
    int64_t planes, h, w, oh, ow;
    double length_h, scale_h, length_w, scale_w;
    ResizeCoord coord;
};

__global__ void resize_bilinear_kernel(const float * __restrict__ x, float * __restrict__ y, ResizeGeom g) {
    const int64_t n = g.planes * g.oh * g.ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const Taps ty = resize_taps(oy, g.h, g.length_h, g.scale_h, g.coord);
        const Taps tx = resize_taps(ox, g.w, g.length_w, g.scale_w, g.coord);
        const float * r0 = x + (plane * g.h + ty.i0) * g.w;
        const float * r1 = x + (plane * g.h + ty.i1) * g.w;
        // Horizontal first, then vertical, as the CPU's separable passes.
        const float a = r0[tx.i0] * tx.w0 + r0[tx.i1] * tx.w1;
        const float b = r1[tx.i0] * tx.w0 + r1[tx.i1] * tx.w1;
        y[i] = a * ty.w0 + b * ty.w1;
    }
}

// torch/image scaleLinear_rowcol for output index o along an axis of `in`
// samples scaled to `out` (the CPU's ImageScaleAxis, computed in place):
// sum_k w_k * in[first + k] / norm. load(i) reads input sample i.
template <class Load> __device__ float image_scale_tap(int64_t o, int64_t in, int64_t out, Load load) {
    if (out > in) {
        if (o == out - 1 || in == 1) return load(o == out - 1 ? in - 1 : 0);
        const float scale = float(in - 1) / float(out - 1);
        float f = __fmul_rn(float(o), scale);
        int64_t i = int64_t(f);
        f = __fsub_rn(f, float(i));
        // Rounding can land on the last sample, whose right neighbour does not exist.
        if (i >= in - 1) {
            i = in - 2;
            f = 1.0f;
        }
        const float acc = __fmul_rn(1.0f - f, load(i));
        return __fadd_rn(acc, __fmul_rn(f, load(i + 1)));
    }
    if (out < in) {
        const float scale = float(in) / float(out);
        float f0 = __fmul_rn(float(o), scale), f1 = __fmul_rn(float(o + 1), scale);
        const int64_t i0 = int64_t(f0), i1 = int64_t(f1);
        f0 = __fsub_rn(f0, float(i0));
        f1 = __fsub_rn(f1, float(i1));
        float acc = __fmul_rn(1.0f - f0, load(i0));
        float norm = 1.0f - f0;
        for (int64_t i = i0 + 1; i < i1; i++) {
            acc = __fadd_rn(acc, load(i));
            norm += 1.0f;
        }
        if (i1 < in) {
            acc = __fadd_rn(acc, __fmul_rn(f1, load(i1)));
            norm += f1;
        }
        return acc / norm;
    }
    return load(o);
}

// One separable pass: x viewed as [outer, in_len, inner] -> y as [outer,
// out_len, inner], scaling the middle axis.
__global__ void image_scale_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t outer,
                                   int64_t in_len, int64_t out_len, int64_t inner) {
    const int64_t n = outer * out_len * inner;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t j = i % inner, o = (i / inner) % out_len, q = i / (inner * out_len);
        const float * src = x + q * in_len * inner + j;
        y[i] = image_scale_tap(o, in_len, out_len, [&](int64_t s) { return src[s * inner]; });
    }
}

__global__ void upsample_nearest_kernel(const float * __restrict__ x, float * __restrict__ y, int64_t planes,
                                        int64_t h, int64_t w, int factor) {
    const int64_t oh = h * factor, ow = w * factor, n = planes * oh * ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t ox = i % ow, oy = (i / ow) % oh, plane = i / (ow * oh);
        y[i] = x[(plane * h + oy / factor) * w + ox / factor];
    }
}

}  // namespace

Tensor resize_bilinear(Context & ctx, const Tensor & x, const ResizeParams & p) {
    const Shape shape = resize_output_shape(x, p);
    check_on_device(ctx, x, "resize_bilinear");
    FOVEA_CHECK_INPUT(x.dim(3) < (int64_t(1) << 31), "resize_bilinear: input width " << x.dim(3) << " is too large");
    FOVEA_CHECK_OPTIONS(p.coord == ResizeCoord::AlignCorners || p.coord == ResizeCoord::HalfPixel ||
                            p.coord == ResizeCoord::PytorchHalfPixel || p.coord == ResizeCoord::Asymmetric,
                        "resize_bilinear: unknown coordinate mode " << int(p.coord));
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    ResizeGeom g;
    g.planes = shape[0] * shape[1];
    g.h = x.dim(2);
    g.w = x.dim(3);
    g.oh = p.out_h;
    g.ow = p.out_w;
    g.length_h = p.scale_h > 0.0 ? double(g.h) * p.scale_h : double(g.oh);
    g.scale_h = p.scale_h > 0.0 ? p.scale_h : double(g.oh) / double(g.h);
    g.length_w = p.scale_w > 0.0 ? double(g.w) * p.scale_w : double(g.ow);
    g.scale_w = p.scale_w > 0.0 ? p.scale_w : double(g.ow) / double(g.w);
    g.coord = p.coord;
    resize_bilinear_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), y.f32(), g);
    check_launch("resize_bilinear");
    return y;
}

Tensor image_scale(Context & ctx, const Tensor & x, int64_t out_h, int64_t out_w) {
    const Shape shape = image_scale_output_shape(x, out_h, out_w);
    check_on_device(ctx, x, "image_scale");
    const int64_t h = x.dim(2), w = x.dim(3);
    FOVEA_CHECK_OPTIONS(h < (int64_t(1) << 31) && w < (int64_t(1) << 31),
                        "image_scale: sizes must be in [1, 2^31), got " << h << "x" << w);
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    const int64_t planes = shape[0] * shape[1];
    // Width pass into [planes, h, out_w], then the height pass.
    Tensor tmp = ctx.empty({planes, h, out_w});
    image_scale_kernel<<<grid_for(tmp.numel(), kThreads), kThreads, 0, ctx.stream>>>(x.f32(), tmp.f32(), planes * h,
                                                                                    w, out_w, 1);
    check_launch("image_scale");
    image_scale_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(tmp.f32(), y.f32(), planes, h,
                                                                                  out_h, out_w);
    check_launch("image_scale");
    return y;
}

Tensor upsample_nearest(Context & ctx, const Tensor & x, int factor) {
    const Shape shape = upsample_nearest_output_shape(x, factor);
    check_on_device(ctx, x, "upsample_nearest");
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    upsample_nearest_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(
        x.f32(), y.f32(), shape[0] * shape[1], x.dim(2), x.dim(3), factor);
    check_launch("upsample_nearest");
    return y;
}

}  // namespace fovea::cuda
