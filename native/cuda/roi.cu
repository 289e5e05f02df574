// ROI max pooling (Caffe / ONNX MaxRoiPool and imagine-nn ROIPooling v2) and
// ROI align (ONNX RoiAlign), as native/cpu/roi.cc.
//
// The ROIs are copied to the host (K x 5 floats: one wait) and checked with
// the CPU's rules before any kernel runs; their bin edges and sample taps are
// computed there with the CPU's float arithmetic and uploaded as one table,
// so both backends pool exactly the same cells. All ROIs and channels then
// run in one launch, one thread per output cell.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kThreads = 256;
// geom per ROI: batch, then [start, end) of every row bin and column bin.
__global__ void roi_max_pool_kernel(const float * __restrict__ x, float * __restrict__ y,
                                    const int32_t * __restrict__ geom, int64_t k_rois, int64_t c, int64_t h,
                                    int64_t w, int oh, int ow) {
    const int64_t stride = 1 + 2 * int64_t(oh) + 2 * int64_t(ow);
    const int64_t n = k_rois * c * oh * ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int pw = int(i % ow), ph = int((i / ow) % oh);
        const int64_t ch = (i / (int64_t(ow) * oh)) % c, k = i / (int64_t(ow) * oh * c);
        const int32_t * g = geom + k * stride;
        const int32_t hs = g[1 + ph], he = g[1 + oh + ph], ws = g[1 + 2 * oh + pw], we = g[1 + 2 * oh + ow + pw];
        const float * plane = x + (int64_t(g[0]) * c + ch) * h * w;
        // Empty bin -> 0; otherwise from -FLT_MAX as the references, so NaN is skipped.
        float m = he <= hs || we <= ws ? 0.0f : -FLT_MAX;
        for (int64_t iy = hs; iy < he; iy++) {
            for (int64_t ix = ws; ix < we; ix++) {
                const float v = plane[iy * w + ix];
                if (v > m) m = v;
            }
        }
        y[i] = m;
    }
}

// One bilinear sample along one axis of roi_align (the CPU's Tap).
struct Tap {
    int32_t lo, hi;
    float w_lo, w_hi;
};

struct AlignHeader {
    int32_t batch;
    int32_t samples;  // grid_h * grid_w, or 0 when the grid is empty
    int32_t ys;       // index in `begins` of this ROI's oh + 1 row-tap bounds
    int32_t xs;       // ... and of its ow + 1 column-tap bounds
};

// One axis of one ROI (core's roi_align_axis) appended to the shared tables.
void append_align_axis(float start, float bin, int64_t grid, int out, int64_t size, std::vector<Tap> & taps,
                       std::vector<int32_t> & begins) {
    const RoiAlignAxis a = roi_align_axis(start, bin, grid, out, size);
    FOVEA_CHECK(taps.size() + a.taps.size() < (size_t(1) << 31), ErrorCode::OutOfMemory,
                "roi_align: too many samples (ROIs too large for the sampling ratio)");
    const int32_t base = int32_t(taps.size());
    for (int64_t b : a.begin) begins.push_back(base + int32_t(b));
    for (const RoiAlignTap & t : a.taps) taps.push_back({int32_t(t.lo), int32_t(t.hi), t.w_lo, t.w_hi});
}

// std::max's NaN behaviour (the first argument wins unless it is less), which
// fmaxf does not share.
__device__ __forceinline__ float std_max(float a, float b) { return a < b ? b : a; }

__global__ void roi_align_kernel(const float * __restrict__ x, float * __restrict__ y,
                                 const AlignHeader * __restrict__ hdr, const int32_t * __restrict__ begins,
                                 const Tap * __restrict__ taps, int64_t k_rois, int64_t c, int64_t h, int64_t w,
                                 int oh, int ow, bool max_mode) {
    const int64_t n = k_rois * c * oh * ow;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int pw = int(i % ow), ph = int((i / ow) % oh);
        const int64_t ch = (i / (int64_t(ow) * oh)) % c, k = i / (int64_t(ow) * oh * c);
        const AlignHeader a = hdr[k];
        const float * plane = x + (int64_t(a.batch) * c + ch) * h * w;
        const int32_t y0 = begins[a.ys + ph], y1 = begins[a.ys + ph + 1];
        const int32_t x0 = begins[a.xs + pw], x1 = begins[a.xs + pw + 1];
        float acc = 0.0f;
        bool first = true;
        for (int32_t iy = y0; iy < y1; iy++) {
            const Tap ty = taps[iy];
            const float * rlo = plane + int64_t(ty.lo) * w;
            const float * rhi = plane + int64_t(ty.hi) * w;
            for (int32_t ix = x0; ix < x1; ix++) {
                const Tap tx = taps[ix];
                const float v1 = ty.w_lo * tx.w_lo * rlo[tx.lo], v2 = ty.w_lo * tx.w_hi * rlo[tx.hi];
                const float v3 = ty.w_hi * tx.w_lo * rhi[tx.lo], v4 = ty.w_hi * tx.w_hi * rhi[tx.hi];
                if (!max_mode) {
                    acc += v1 + v2 + v3 + v4;
                } else {
                    // ONNX mode "max": the largest weighted corner.
                    const float v = std_max(std_max(std_max(v1, v2), v3), v4);
                    acc = first ? v : std_max(acc, v);
                    first = false;
                }
            }
        }
        // Dropped samples count in the average and are 0 in the max.
        const int64_t kept = int64_t(y1 - y0) * (x1 - x0);
        if (max_mode && kept < a.samples) acc = first ? 0.0f : std_max(acc, 0.0f);
        y[i] = max_mode ? acc : acc / float(a.samples > 1 ? a.samples : 1);
    }
}

}  // namespace

Tensor roi_max_pool(Context & ctx, const Tensor & x, const Tensor & rois, const RoiPoolParams & p) {
    const Shape shape = roi_max_pool_output_shape(x, rois, p);
    check_on_device(ctx, x, "roi_max_pool");
    check_on_device(ctx, rois, "roi_max_pool");
    const int64_t k_rois = shape[0], c = shape[1], h = x.dim(2), w = x.dim(3);
    FOVEA_CHECK_INPUT(h < (int64_t(1) << 31) && w < (int64_t(1) << 31),
                      "roi_max_pool: feature map " << shape_str(x.shape()) << " is too large");
    const int oh = p.out_h, ow = p.out_w;
    std::vector<float> r(size_t(k_rois * 5));
    ctx.download(rois, r.data());
    const std::vector<int64_t> bins = roi_max_pool_bins(r.data(), k_rois, x.dim(0), h, w, p);
    // Every entry is a batch index or a clamped map coordinate: int32 fits.
    const std::vector<int32_t> geom(bins.begin(), bins.end());
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    const Tensor d_geom = ctx.upload(geom.data(), {int64_t(geom.size())}, DType::I32);
    roi_max_pool_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(
        x.f32(), y.f32(), d_geom.data<int32_t>(), k_rois, c, h, w, oh, ow);
    check_launch("roi_max_pool");
    return y;
}

Tensor roi_align(Context & ctx, const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                 const RoiAlignParams & p) {
    const Shape shape = roi_align_output_shape(x, rois, batch_indices, p);
    check_on_device(ctx, x, "roi_align");
    check_on_device(ctx, rois, "roi_align");
    check_on_device(ctx, batch_indices, "roi_align");
    const int64_t k_rois = shape[0], c = shape[1], h = x.dim(2), w = x.dim(3);
    FOVEA_CHECK_INPUT(h < (int64_t(1) << 31) && w < (int64_t(1) << 31),
                      "roi_align: feature map " << shape_str(x.shape()) << " is too large");
    const int oh = p.out_h, ow = p.out_w;
    std::vector<float> r(size_t(k_rois * 4));
    ctx.download(rois, r.data());
    std::vector<int64_t> batch(static_cast<size_t>(k_rois));
    if (batch_indices.dtype() == DType::I64) {
        ctx.download(batch_indices, batch.data());
    } else {
        std::vector<int32_t> b32(static_cast<size_t>(k_rois));
        ctx.download(batch_indices, b32.data());
        std::copy(b32.begin(), b32.end(), batch.begin());
    }
    std::vector<AlignHeader> hdr(static_cast<size_t>(k_rois));
    std::vector<int32_t> begins;
    std::vector<Tap> taps;
    for (int64_t k = 0; k < k_rois; k++) {
        const int64_t b = batch[size_t(k)];
        FOVEA_CHECK_INPUT(b >= 0 && b < x.dim(0), "roi_align: ROI " << k << " has batch index " << b
                                                                    << ", the input has " << x.dim(0) << " images");
        for (int j = 0; j < 4; j++) check_roi_coord(r[size_t(k * 4 + j)], p.spatial_scale, k, "roi_align");
    }
    for (int64_t k = 0; k < k_rois; k++) {
        // The CPU's sample plan: aligned shifts by half a pixel and lets a ROI
        // be smaller than one cell; otherwise the ROI is at least 1x1.
        const float * roi = &r[size_t(k * 4)];
        const float offset = p.aligned ? 0.5f : 0.0f;
        const float x1 = roi[0] * p.spatial_scale - offset, y1 = roi[1] * p.spatial_scale - offset;
        const float x2 = roi[2] * p.spatial_scale - offset, y2 = roi[3] * p.spatial_scale - offset;
        float rw = x2 - x1, rh = y2 - y1;
        if (!p.aligned) {
            rw = std::max(rw, 1.0f);
            rh = std::max(rh, 1.0f);
        }
        const float bin_h = rh / float(oh), bin_w = rw / float(ow);
        int64_t gh = p.sampling_ratio > 0 ? p.sampling_ratio : int64_t(std::ceil(rh / float(oh)));
        int64_t gw = p.sampling_ratio > 0 ? p.sampling_ratio : int64_t(std::ceil(rw / float(ow)));
        gh = std::max<int64_t>(gh, 0);
        gw = std::max<int64_t>(gw, 0);
        const int64_t samples = gh * gw;
        FOVEA_CHECK(samples < (int64_t(1) << 31), ErrorCode::OutOfMemory,
                    "roi_align: ROI " << k << " needs " << samples << " samples per cell");
        AlignHeader & a = hdr[size_t(k)];
        a.batch = int32_t(batch[size_t(k)]);
        a.samples = int32_t(samples);
        a.ys = int32_t(begins.size());
        append_align_axis(y1, bin_h, samples ? gh : 0, oh, h, taps, begins);
        a.xs = int32_t(begins.size());
        append_align_axis(x1, bin_w, samples ? gw : 0, ow, w, taps, begins);
        FOVEA_CHECK(begins.size() < (size_t(1) << 31), ErrorCode::OutOfMemory, "roi_align: too many ROIs");
    }
    Tensor y = ctx.empty(shape);
    if (y.numel() == 0) return y;
    // One upload: headers, tap bounds, taps (each part 16-byte aligned).
    const size_t hdr_bytes = hdr.size() * sizeof(AlignHeader);
    const size_t begins_bytes = (begins.size() * sizeof(int32_t) + 15) / 16 * 16;
    const size_t taps_bytes = taps.size() * sizeof(Tap);
    std::vector<unsigned char> table(hdr_bytes + begins_bytes + taps_bytes);
    std::memcpy(table.data(), hdr.data(), hdr_bytes);
    std::memcpy(table.data() + hdr_bytes, begins.data(), begins.size() * sizeof(int32_t));
    if (taps_bytes) std::memcpy(table.data() + hdr_bytes + begins_bytes, taps.data(), taps_bytes);
    const Tensor d_table = ctx.upload(table.data(), {int64_t(table.size())}, DType::U8);
    const unsigned char * base = d_table.data<unsigned char>();
    roi_align_kernel<<<grid_for(y.numel(), kThreads), kThreads, 0, ctx.stream>>>(
        x.f32(), y.f32(), reinterpret_cast<const AlignHeader *>(base),
        reinterpret_cast<const int32_t *>(base + hdr_bytes), reinterpret_cast<const Tap *>(base + hdr_bytes + begins_bytes),
        k_rois, c, h, w, oh, ow, p.max_mode);
    check_launch("roi_align");
    return y;
}

}  // namespace fovea::cuda
