// ROI max pooling (Caffe / ONNX MaxRoiPool, and imagine-nn ROIPooling v2 as
// used by MultiPathNet) and ROI align (ONNX RoiAlign, opset 16).
//
// Both reproduce the float32 arithmetic of their reference kernels, and both
// check every ROI before any work: coordinates must be finite and, once
// scaled, within +-2^24 (where float32 still holds every integer; beyond it
// the references' int conversions overflow), and the batch index must name an
// image of the input. Bins and samples outside the feature map are handled as
// the references do (empty max bin -> 0; align sample outside -> 0), never read.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Output cells per task.
constexpr int64_t kGrain = 1 << 12;
struct AlignRoi {
    int64_t batch = 0;
    int64_t samples = 0;  // grid_h * grid_w, or 0 when the grid is empty
    RoiAlignAxis ys, xs;
};

}  // namespace

Tensor roi_max_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) {
    Shape shape = roi_max_pool_output_shape(x, rois, p);
    check_host(x, "roi_max_pool");
    check_host(rois, "roi_max_pool");
    const int64_t k_rois = shape[0], c = shape[1], h = x.dim(2), w = x.dim(3);
    const int oh = p.out_h, ow = p.out_w;
    const int64_t stride = 1 + 2 * int64_t(oh) + 2 * int64_t(ow);
    const std::vector<int64_t> geom = roi_max_pool_bins(rois.f32(), k_rois, x.dim(0), h, w, p);
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    const float * xp = x.f32();
    float * yp = y.f32();
    parallel_for(k_rois * c, std::max<int64_t>(1, kGrain / (int64_t(oh) * ow)), [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; t++) {
            int64_t k = t / c, ch = t % c;
            const int64_t * g = &geom[size_t(k * stride)];
            const int64_t *hs = g + 1, *he = g + 1 + oh, *ws = g + 1 + 2 * oh, *we = g + 1 + 2 * oh + ow;
            const float * plane = xp + (g[0] * c + ch) * h * w;
            float * out = yp + t * oh * ow;
            for (int ph = 0; ph < oh; ph++) {
                for (int pw = 0; pw < ow; pw++) {
                    // Empty bin -> 0; otherwise start from -FLT_MAX as the
                    // references do, so NaN inputs are skipped.
                    bool empty = he[ph] <= hs[ph] || we[pw] <= ws[pw];
                    float m = empty ? 0.0f : -FLT_MAX;
                    for (int64_t iy = hs[ph]; iy < he[ph]; iy++) {
                        for (int64_t ix = ws[pw]; ix < we[pw]; ix++) {
                            float v = plane[iy * w + ix];
                            if (v > m) m = v;
                        }
                    }
                    out[ph * ow + pw] = m;
                }
            }
        }
    });
    return y;
}

Tensor roi_align(const Tensor & x, const Tensor & rois, const Tensor & batch_indices, const RoiAlignParams & p) {
    Shape shape = roi_align_output_shape(x, rois, batch_indices, p);
    check_host(x, "roi_align");
    check_host(rois, "roi_align");
    check_host(batch_indices, "roi_align");
    const int64_t k_rois = shape[0], c = shape[1], h = x.dim(2), w = x.dim(3);
    const int oh = p.out_h, ow = p.out_w;
    const float * r = rois.f32();
    std::vector<AlignRoi> plan(static_cast<size_t>(k_rois));
    for (int64_t k = 0; k < k_rois; k++) {
        int64_t b = batch_indices.dtype() == DType::I64 ? batch_indices.data<int64_t>()[k]
                                                        : batch_indices.data<int32_t>()[k];
        FOVEA_CHECK_INPUT(b >= 0 && b < x.dim(0), "roi_align: ROI " << k << " has batch index " << b
                                                                    << ", the input has " << x.dim(0) << " images");
        plan[size_t(k)].batch = b;
        for (int j = 0; j < 4; j++) check_roi_coord(r[k * 4 + j], p.spatial_scale, k, "roi_align");
    }
    // Sample tables per ROI (ONNX: aligned shifts by half a pixel and lets a
    // ROI be smaller than one cell; otherwise the ROI is at least 1x1).
    parallel_for(k_rois, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; k++) {
            const float * roi = r + k * 4;
            const float offset = p.aligned ? 0.5f : 0.0f;
            float x1 = roi[0] * p.spatial_scale - offset, y1 = roi[1] * p.spatial_scale - offset;
            float x2 = roi[2] * p.spatial_scale - offset, y2 = roi[3] * p.spatial_scale - offset;
            float rw = x2 - x1, rh = y2 - y1;
            if (!p.aligned) {
                rw = std::max(rw, 1.0f);
                rh = std::max(rh, 1.0f);
            }
            float bin_h = rh / float(oh), bin_w = rw / float(ow);
            // |rh| <= 2^25 + 1, so the adaptive grid fits easily; a negative
            // extent (aligned mode) gives no samples at all.
            int64_t gh = p.sampling_ratio > 0 ? p.sampling_ratio : int64_t(std::ceil(rh / float(oh)));
            int64_t gw = p.sampling_ratio > 0 ? p.sampling_ratio : int64_t(std::ceil(rw / float(ow)));
            gh = std::max<int64_t>(gh, 0);
            gw = std::max<int64_t>(gw, 0);
            AlignRoi & a = plan[size_t(k)];
            a.samples = gh * gw;
            a.ys = roi_align_axis(y1, bin_h, a.samples ? gh : 0, oh, h);
            a.xs = roi_align_axis(x1, bin_w, a.samples ? gw : 0, ow, w);
        }
    });
    Tensor y = Tensor::empty(shape);
    if (y.numel() == 0) return y;
    const float * xp = x.f32();
    float * yp = y.f32();
    parallel_for(k_rois * c, std::max<int64_t>(1, kGrain / (int64_t(oh) * ow)), [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; t++) {
            const AlignRoi & a = plan[size_t(t / c)];
            const float * plane = xp + (a.batch * c + t % c) * h * w;
            float * out = yp + t * oh * ow;
            const float count = float(std::max<int64_t>(a.samples, 1));
            for (int ph = 0; ph < oh; ph++) {
                for (int pw = 0; pw < ow; pw++) {
                    int64_t y0 = a.ys.begin[size_t(ph)], y1 = a.ys.begin[size_t(ph) + 1];
                    int64_t x0 = a.xs.begin[size_t(pw)], x1 = a.xs.begin[size_t(pw) + 1];
                    float acc = 0.0f;
                    bool first = true;
                    for (int64_t i = y0; i < y1; i++) {
                        const RoiAlignTap & ty = a.ys.taps[size_t(i)];
                        const float * rlo = plane + ty.lo * w;
                        const float * rhi = plane + ty.hi * w;
                        for (int64_t j = x0; j < x1; j++) {
                            const RoiAlignTap & tx = a.xs.taps[size_t(j)];
                            float v1 = ty.w_lo * tx.w_lo * rlo[tx.lo], v2 = ty.w_lo * tx.w_hi * rlo[tx.hi];
                            float v3 = ty.w_hi * tx.w_lo * rhi[tx.lo], v4 = ty.w_hi * tx.w_hi * rhi[tx.hi];
                            if (!p.max_mode) {
                                acc += v1 + v2 + v3 + v4;
                            } else {
                                // ONNX mode "max": the largest weighted corner.
                                float v = std::max(std::max(std::max(v1, v2), v3), v4);
                                acc = first ? v : std::max(acc, v);
                                first = false;
                            }
                        }
                    }
                    // Dropped samples count in the average and are 0 in the max.
                    int64_t kept = (y1 - y0) * (x1 - x0);
                    if (p.max_mode && kept < a.samples) acc = first ? 0.0f : std::max(acc, 0.0f);
                    out[ph * ow + pw] = p.max_mode ? acc : acc / count;
                }
            }
        }
    });
    return y;
}

}  // namespace fovea::cpu
