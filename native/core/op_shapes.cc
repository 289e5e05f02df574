#include "core/op_shapes.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace fovea {

namespace {

// Output length of a sliding window; throws when the window does not fit.
int64_t window_out(int64_t in, int pad_a, int pad_b, int kernel, int stride, int dilation, bool ceil_mode,
                   const char * op, const char * axis) {
    int64_t padded = in + pad_a + pad_b;
    int64_t span = int64_t(dilation) * (kernel - 1) + 1;
    FOVEA_CHECK_INPUT(padded >= span, op << ": window of " << span << " does not fit the padded " << axis << " of "
                                         << padded);
    int64_t num = padded - span;
    int64_t out = (ceil_mode ? (num + stride - 1) / stride : num / stride) + 1;
    // The last window must start inside the input or the leading padding
    // (Torch7 and PyTorch rule for ceil mode).
    if (ceil_mode && (out - 1) * stride >= in + pad_a) out--;
    return out;
}

void check_window_params(int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr, int dh, int dw,
                         const char * op) {
    FOVEA_CHECK_OPTIONS(kh >= 1 && kw >= 1 && kh <= 4096 && kw <= 4096,
                        op << ": kernel must be in [1, 4096], got " << kh << "x" << kw);
    FOVEA_CHECK_OPTIONS(sh >= 1 && sw >= 1 && sh <= 4096 && sw <= 4096,
                        op << ": stride must be in [1, 4096], got " << sh << "x" << sw);
    FOVEA_CHECK_OPTIONS(pt >= 0 && pl >= 0 && pb >= 0 && pr >= 0 && pt <= 4096 && pl <= 4096 && pb <= 4096 &&
                            pr <= 4096,
                        op << ": padding must be in [0, 4096], got " << pt << "," << pl << "," << pb << "," << pr);
    FOVEA_CHECK_OPTIONS(dh >= 1 && dw >= 1 && dh <= 4096 && dw <= 4096,
                        op << ": dilation must be in [1, 4096], got " << dh << "x" << dw);
}

}  // namespace

void check_f32(const Tensor & x, const char * op, const char * what, int ndim) {
    FOVEA_CHECK_INPUT(x.defined(), op << ": " << what << " is missing");
    FOVEA_CHECK_INPUT(x.dtype() == DType::F32, op << ": " << what << " must be float32, got " << dtype_name(x.dtype()));
    FOVEA_CHECK_INPUT(ndim < 0 || x.ndim() == ndim,
                      op << ": " << what << " must be " << ndim << "-D, got shape " << shape_str(x.shape()));
}

void check_conv2d_residual(const Tensor & residual, const Tensor & residual_scale, const Shape & out) {
    check_f32(residual, "conv2d", "residual", int(out.size()));
    FOVEA_CHECK_INPUT(residual.shape() == out, "conv2d: residual has shape " << shape_str(residual.shape())
                                                   << ", the output " << shape_str(out));
    if (!residual_scale.defined()) return;
    check_f32(residual_scale, "conv2d", "residual scale", 1);
    FOVEA_CHECK_INPUT(residual_scale.dim(0) == out[1], "conv2d: residual scale has " << residual_scale.dim(0)
                                                           << " values for " << out[1] << " output channels");
}

Shape conv2d_output_shape(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) {
    check_f32(x, "conv2d", "input", 4);
    check_f32(w, "conv2d", "weight", 4);
    check_window_params(int(w.dim(2)), int(w.dim(3)), p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.pad_bottom,
                        p.pad_right, p.dilation_h, p.dilation_w, "conv2d");
    FOVEA_CHECK_OPTIONS(p.groups >= 1, "conv2d: groups must be >= 1, got " << p.groups);
    int64_t c = x.dim(1), oc = w.dim(0);
    FOVEA_CHECK_INPUT(c % p.groups == 0 && oc % p.groups == 0,
                      "conv2d: channels " << c << " in and " << oc << " out must divide by groups " << p.groups);
    FOVEA_CHECK_INPUT(w.dim(1) * p.groups == c, "conv2d: weight " << shape_str(w.shape()) << " expects "
                                                                   << w.dim(1) * p.groups << " input channels, got "
                                                                   << c);
    if (bias.defined()) {
        check_f32(bias, "conv2d", "bias", 1);
        FOVEA_CHECK_INPUT(bias.dim(0) == oc, "conv2d: bias has " << bias.dim(0) << " values for " << oc << " outputs");
    }
    int64_t oh = window_out(x.dim(2), p.pad_top, p.pad_bottom, int(w.dim(2)), p.stride_h, p.dilation_h, false,
                            "conv2d", "height");
    int64_t ow = window_out(x.dim(3), p.pad_left, p.pad_right, int(w.dim(3)), p.stride_w, p.dilation_w, false,
                            "conv2d", "width");
    return {x.dim(0), oc, oh, ow};
}

GemmDims gemm_dims(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) {
    check_f32(a, "gemm", "A", 2);
    check_f32(b, "gemm", "B", 2);
    int64_t m = p.trans_a ? a.dim(1) : a.dim(0);
    int64_t k = p.trans_a ? a.dim(0) : a.dim(1);
    int64_t kb = p.trans_b ? b.dim(1) : b.dim(0);
    int64_t n = p.trans_b ? b.dim(0) : b.dim(1);
    FOVEA_CHECK_INPUT(k == kb, "gemm: inner dimensions differ: A " << shape_str(a.shape()) << (p.trans_a ? "^T" : "")
                                                                  << ", B " << shape_str(b.shape())
                                                                  << (p.trans_b ? "^T" : ""));
    if (c.defined()) {
        check_f32(c, "gemm", "C");
        FOVEA_CHECK_INPUT(c.ndim() <= 2, "gemm: C must have at most 2 dims, got " << shape_str(c.shape()));
        int64_t cm = c.ndim() == 2 ? c.dim(0) : 1;
        int64_t cn = c.ndim() >= 1 ? c.dim(-1) : 1;
        FOVEA_CHECK_INPUT((cm == 1 || cm == m) && (cn == 1 || cn == n),
                          "gemm: C " << shape_str(c.shape()) << " does not broadcast to [" << m << ", " << n << "]");
    }
    return {m, n, k};
}

Shape linear_output_shape(const Tensor & x, const Tensor & w, const Tensor & bias) {
    check_f32(x, "linear", "input", 2);
    check_f32(w, "linear", "weight", 2);
    FOVEA_CHECK_INPUT(x.dim(1) == w.dim(1), "linear: input has " << x.dim(1) << " features, weight "
                                                                 << shape_str(w.shape()) << " expects " << w.dim(1));
    if (bias.defined()) {
        check_f32(bias, "linear", "bias", 1);
        FOVEA_CHECK_INPUT(bias.dim(0) == w.dim(0), "linear: bias has " << bias.dim(0) << " values for " << w.dim(0)
                                                                       << " outputs");
    }
    return {x.dim(0), w.dim(0)};
}

Shape pool2d_output_shape(const Tensor & x, const Pool2dParams & p, const char * op) {
    check_f32(x, op, "input", 4);
    check_window_params(p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.pad_bottom,
                        p.pad_right, p.dilation_h, p.dilation_w, op);
    // A window made only of padding has no value to take.
    FOVEA_CHECK_OPTIONS(p.pad_top < p.kernel_h && p.pad_bottom < p.kernel_h && p.pad_left < p.kernel_w &&
                            p.pad_right < p.kernel_w,
                        op << ": padding must be smaller than the kernel");
    FOVEA_CHECK_INPUT(x.dim(2) >= 1 && x.dim(3) >= 1, op << ": empty image " << shape_str(x.shape()));
    // Dilation is a max-pool parameter (ONNX AveragePool has none before opset 19).
    FOVEA_CHECK_OPTIONS(std::strcmp(op, "avg_pool2d") != 0 || (p.dilation_h == 1 && p.dilation_w == 1),
                        op << ": dilation must be 1, got " << p.dilation_h << "x" << p.dilation_w);
    int64_t oh = window_out(x.dim(2), p.pad_top, p.pad_bottom, p.kernel_h, p.stride_h, p.dilation_h, p.ceil_mode, op,
                            "height");
    int64_t ow = window_out(x.dim(3), p.pad_left, p.pad_right, p.kernel_w, p.stride_w, p.dilation_w, p.ceil_mode, op,
                            "width");
    return {x.dim(0), x.dim(1), oh, ow};
}

int softmax_axis(const Tensor & x, int axis) {
    check_f32(x, "softmax", "input");
    int n = x.ndim();
    FOVEA_CHECK_OPTIONS(n >= 1 && axis >= -n && axis < n,
                        "softmax: axis " << axis << " out of range for shape " << shape_str(x.shape()));
    return axis < 0 ? axis + n : axis;
}

Shape resize_output_shape(const Tensor & x, const ResizeParams & p) {
    check_f32(x, "resize_bilinear", "input", 4);
    FOVEA_CHECK_OPTIONS(p.out_h >= 1 && p.out_w >= 1 && p.out_h <= (1 << 20) && p.out_w <= (1 << 20),
                        "resize_bilinear: output size must be in [1, 2^20], got " << p.out_h << "x" << p.out_w);
    FOVEA_CHECK_INPUT(x.dim(2) >= 1 && x.dim(3) >= 1, "resize_bilinear: empty input " << shape_str(x.shape()));
    FOVEA_CHECK_OPTIONS(p.scale_h >= 0 && p.scale_w >= 0 && std::isfinite(p.scale_h) && std::isfinite(p.scale_w),
                        "resize_bilinear: scales must be finite and >= 0");
    return {x.dim(0), x.dim(1), p.out_h, p.out_w};
}

Shape image_scale_output_shape(const Tensor & x, int64_t out_h, int64_t out_w) {
    check_f32(x, "image_scale", "input", 4);
    FOVEA_CHECK_OPTIONS(out_h >= 1 && out_w >= 1 && out_h <= (1 << 20) && out_w <= (1 << 20),
                        "image_scale: output size must be in [1, 2^20], got " << out_h << "x" << out_w);
    FOVEA_CHECK_INPUT(x.dim(2) >= 1 && x.dim(3) >= 1, "image_scale: empty input " << shape_str(x.shape()));
    return {x.dim(0), x.dim(1), out_h, out_w};
}

Shape upsample_nearest_output_shape(const Tensor & x, int factor) {
    check_f32(x, "upsample_nearest", "input", 4);
    FOVEA_CHECK_OPTIONS(factor >= 1 && factor <= 64, "upsample_nearest: factor must be in [1, 64], got " << factor);
    return {x.dim(0), x.dim(1), x.dim(2) * factor, x.dim(3) * factor};
}

Shape pad2d_output_shape(const Tensor & x, const Pad2dParams & p) {
    check_f32(x, "pad2d", "input", 4);
    for (int v : {p.top, p.left, p.bottom, p.right}) {
        FOVEA_CHECK_OPTIONS(v >= -(1 << 20) && v <= (1 << 20), "pad2d: padding must be in [-2^20, 2^20], got " << v);
    }
    int64_t oh = x.dim(2) + p.top + p.bottom, ow = x.dim(3) + p.left + p.right;
    FOVEA_CHECK_INPUT(oh >= 1 && ow >= 1, "pad2d: cropping " << shape_str(x.shape()) << " by " << p.top << ","
                                                             << p.left << "," << p.bottom << "," << p.right
                                                             << " leaves nothing");
    FOVEA_CHECK_INPUT(p.mode == PadMode::Constant || (x.dim(2) >= 1 && x.dim(3) >= 1),
                      "pad2d: cannot mirror an empty input " << shape_str(x.shape()));
    return {x.dim(0), x.dim(1), oh, ow};
}

int concat_axis(const std::vector<Tensor> & xs, int axis) {
    FOVEA_CHECK_INPUT(!xs.empty(), "concat: no inputs");
    check_f32(xs[0], "concat", "input 0");
    int n = xs[0].ndim();
    FOVEA_CHECK_OPTIONS(n >= 1 && axis >= -n && axis < n,
                        "concat: axis " << axis << " out of range for shape " << shape_str(xs[0].shape()));
    return axis < 0 ? axis + n : axis;
}

Shape concat_output_shape(const std::vector<Tensor> & xs, int axis) {
    int ax = concat_axis(xs, axis);
    Shape out = xs[0].shape();
    for (size_t i = 1; i < xs.size(); i++) {
        check_f32(xs[i], "concat", "input", xs[0].ndim());
        for (int d = 0; d < xs[0].ndim(); d++) {
            FOVEA_CHECK_INPUT(d == ax || xs[i].dim(d) == out[d],
                              "concat: input " << i << " has shape " << shape_str(xs[i].shape()) << ", expected "
                                               << shape_str(xs[0].shape()) << " except on axis " << ax);
        }
        out[ax] += xs[i].dim(ax);
    }
    return out;
}

void check_same_shape(const Tensor & a, const Tensor & b, const char * op) {
    check_f32(a, op, "first input");
    check_f32(b, op, "second input");
    FOVEA_CHECK_INPUT(a.shape() == b.shape(),
                      op << ": shapes differ: " << shape_str(a.shape()) << " and " << shape_str(b.shape()));
}

void check_batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                      const Tensor & var, float epsilon) {
    check_f32(x, "batch_norm", "input");
    FOVEA_CHECK_INPUT(x.ndim() >= 2, "batch_norm: input must be at least 2-D, got " << shape_str(x.shape()));
    int64_t c = x.dim(1);
    const Tensor * params[] = {&scale, &bias, &mean, &var};
    const char * names[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++) {
        check_f32(*params[i], "batch_norm", names[i], 1);
        FOVEA_CHECK_INPUT(params[i]->dim(0) == c,
                          "batch_norm: " << names[i] << " has " << params[i]->dim(0) << " values for " << c << " channels");
    }
    FOVEA_CHECK_OPTIONS(epsilon >= 0 && std::isfinite(epsilon), "batch_norm: epsilon must be finite and >= 0");
}

Shape roi_max_pool_output_shape(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) {
    check_f32(x, "roi_max_pool", "input", 4);
    check_f32(rois, "roi_max_pool", "rois", 2);
    FOVEA_CHECK_INPUT(rois.dim(1) == 5, "roi_max_pool: rois must be [K, 5] (batch, x1, y1, x2, y2), got "
                                            << shape_str(rois.shape()));
    FOVEA_CHECK_OPTIONS(p.out_h >= 1 && p.out_w >= 1 && p.out_h <= 1024 && p.out_w <= 1024,
                        "roi_max_pool: output size must be in [1, 1024]");
    FOVEA_CHECK_OPTIONS(p.spatial_scale > 0 && std::isfinite(p.spatial_scale),
                        "roi_max_pool: spatial_scale must be finite and > 0");
    return {rois.dim(0), x.dim(1), p.out_h, p.out_w};
}

Shape roi_align_output_shape(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                             const RoiAlignParams & p) {
    check_f32(x, "roi_align", "input", 4);
    check_f32(rois, "roi_align", "rois", 2);
    FOVEA_CHECK_INPUT(rois.dim(1) == 4, "roi_align: rois must be [K, 4] (x1, y1, x2, y2), got "
                                            << shape_str(rois.shape()));
    FOVEA_CHECK_INPUT(batch_indices.defined() && batch_indices.ndim() == 1 && batch_indices.dim(0) == rois.dim(0) &&
                          (batch_indices.dtype() == DType::I64 || batch_indices.dtype() == DType::I32),
                      "roi_align: batch_indices must be int32/int64 [" << rois.dim(0) << "]");
    FOVEA_CHECK_OPTIONS(p.out_h >= 1 && p.out_w >= 1 && p.out_h <= 1024 && p.out_w <= 1024,
                        "roi_align: output size must be in [1, 1024]");
    FOVEA_CHECK_OPTIONS(p.sampling_ratio >= 0 && p.sampling_ratio <= 64, "roi_align: sampling_ratio must be in [0, 64]");
    FOVEA_CHECK_OPTIONS(p.spatial_scale > 0 && std::isfinite(p.spatial_scale),
                        "roi_align: spatial_scale must be finite and > 0");
    return {rois.dim(0), x.dim(1), p.out_h, p.out_w};
}

void check_nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p) {
    check_f32(boxes, "nms", "boxes", 2);
    check_f32(scores, "nms", "scores", 1);
    FOVEA_CHECK_INPUT(boxes.dim(1) == 4 && boxes.dim(0) == scores.dim(0),
                      "nms: boxes " << shape_str(boxes.shape()) << " and scores " << shape_str(scores.shape())
                                    << " must be [N, 4] and [N]");
    FOVEA_CHECK_OPTIONS(p.iou_threshold >= 0 && p.iou_threshold <= 1, "nms: iou_threshold must be in [0, 1]");
    FOVEA_CHECK_OPTIONS(p.pixel_offset == 0 || p.pixel_offset == 1, "nms: pixel_offset must be 0 or 1");
    FOVEA_CHECK_OPTIONS(p.max_output >= -1, "nms: max_output must be >= -1 (-1: no limit), got " << p.max_output);
}

namespace {

constexpr float kMaxScaledCoord = 16777216.0f;  // 2^24

void check_roi_batch_index(double b, int64_t n, int64_t k, const char * op) {
    FOVEA_CHECK_INPUT(std::isfinite(b) && b >= 0 && b < double(n) && b == std::floor(b),
                      op << ": ROI " << k << " has batch index " << b << ", the input has " << n << " images");
}

// Bin edges [start, end) along one axis of roi_max_pool, clamped to [0, size].
// Caffe: the ROI spans round(lo*s) .. round(hi*s) inclusive, bins use
// floor/ceil. imagine-nn v2: the ROI ends one cell earlier and bins are
// rounded, so neighbouring bins do not overlap.
void roi_pool_edges(float lo, float hi, float scale, int out, int64_t size, bool round_bins, int64_t * start,
                    int64_t * end) {
    const int64_t s = int64_t(std::round(lo * scale));
    const int64_t e = int64_t(std::round(hi * scale)) - (round_bins ? 1 : 0);
    const float bin = float(std::max<int64_t>(e - s + 1, 1)) / float(out);
    for (int i = 0; i < out; i++) {
        const float a = float(i) * bin, b = float(i + 1) * bin;
        const int64_t bs = int64_t(round_bins ? std::round(a) : std::floor(a));
        const int64_t be = int64_t(round_bins ? std::round(b) : std::ceil(b));
        start[i] = std::clamp<int64_t>(bs + s, 0, size);
        end[i] = std::clamp<int64_t>(be + s, 0, size);
    }
}

}  // namespace

void check_roi_coord(float v, float scale, int64_t k, const char * op) {
    FOVEA_CHECK_INPUT(std::isfinite(v) && std::fabs(v * scale) <= kMaxScaledCoord,
                      op << ": ROI " << k << " has coordinate " << v << " (scaled by " << scale
                         << "), which is not finite or beyond 2^24");
}

std::vector<int64_t> roi_max_pool_bins(const float * rois, int64_t k_rois, int64_t images, int64_t h, int64_t w,
                                       const RoiPoolParams & p) {
    const int oh = p.out_h, ow = p.out_w;
    const int64_t stride = 1 + 2 * int64_t(oh) + 2 * int64_t(ow);
    std::vector<int64_t> geom(size_t(k_rois * stride));
    for (int64_t k = 0; k < k_rois; k++) {
        const float * roi = rois + k * 5;
        check_roi_batch_index(roi[0], images, k, "roi_max_pool");
        for (int j = 1; j < 5; j++) check_roi_coord(roi[j], p.spatial_scale, k, "roi_max_pool");
        int64_t * g = &geom[size_t(k * stride)];
        g[0] = int64_t(roi[0]);
        roi_pool_edges(roi[2], roi[4], p.spatial_scale, oh, h, p.round_bins, g + 1, g + 1 + oh);
        roi_pool_edges(roi[1], roi[3], p.spatial_scale, ow, w, p.round_bins, g + 1 + 2 * oh, g + 1 + 2 * oh + ow);
    }
    return geom;
}

RoiAlignAxis roi_align_axis(float start, float bin, int64_t grid, int out, int64_t size) {
    RoiAlignAxis a;
    a.begin.push_back(0);
    for (int i = 0; i < out; i++) {
        for (int64_t s = 0; s < grid; s++) {
            // Same operation order as ONNX Runtime, so the float rounding agrees.
            float v = start + float(i) * bin + (float(s) + 0.5f) * bin / float(grid);
            if (v < -1.0f || v > float(size)) continue;
            if (v <= 0.0f) v = 0.0f;
            int64_t lo = int64_t(v), hi;
            if (lo >= size - 1) {
                hi = lo = size - 1;
                v = float(lo);
            } else {
                hi = lo + 1;
            }
            const float l = v - float(lo);
            a.taps.push_back({lo, hi, 1.0f - l, l});
        }
        a.begin.push_back(int64_t(a.taps.size()));
    }
    return a;
}

}  // namespace fovea
