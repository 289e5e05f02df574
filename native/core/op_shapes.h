// Argument validation and output shapes of every op, shared by all backends.
// Each function throws Error(Input) or Error(Options) with a message naming
// the op and the offending value; none of them touches tensor memory.
#pragma once

#include <vector>

#include "core/ops.h"

namespace fovea {

Shape conv2d_output_shape(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p);
// conv2d_residual's residual (float32, shaped as the conv's output) and
// residual_scale (undefined, or float32 [OC]).
void check_conv2d_residual(const Tensor & residual, const Tensor & residual_scale, const Shape & out);
// Returns {M, N, K} after checking A, B and the broadcast of C.
struct GemmDims {
    int64_t m, n, k;
};
GemmDims gemm_dims(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p);
Shape linear_output_shape(const Tensor & x, const Tensor & w, const Tensor & bias);
Shape pool2d_output_shape(const Tensor & x, const Pool2dParams & p, const char * op);
// Returns the axis normalised to [0, ndim).
int softmax_axis(const Tensor & x, int axis);
Shape resize_output_shape(const Tensor & x, const ResizeParams & p);
Shape image_scale_output_shape(const Tensor & x, int64_t out_h, int64_t out_w);
Shape upsample_nearest_output_shape(const Tensor & x, int factor);
Shape pad2d_output_shape(const Tensor & x, const Pad2dParams & p);
// Returns the axis normalised to [0, ndim).
int concat_axis(const std::vector<Tensor> & xs, int axis);
Shape concat_output_shape(const std::vector<Tensor> & xs, int axis);
void check_same_shape(const Tensor & a, const Tensor & b, const char * op);
void check_batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                      const Tensor & var, float epsilon);
Shape roi_max_pool_output_shape(const Tensor & x, const Tensor & rois, const RoiPoolParams & p);
Shape roi_align_output_shape(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                             const RoiAlignParams & p);
void check_nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p);

// ROI coordinates every backend accepts: finite and within 2^24 once scaled.
void check_roi_coord(float v, float scale, int64_t k, const char * op);
// The bins of roi_max_pool, from the ROIs read on the host ([K,5] floats):
// per ROI its batch index, then [start, end) of every row bin and every
// column bin, clamped to the map ([K, 1 + 2 * out_h + 2 * out_w]). Validates
// batch indices and coordinates.
// One bilinear sample along one axis of roi_align, as ONNX computes it.
struct RoiAlignTap {
    int64_t lo, hi;
    float w_lo, w_hi;
};
// The in-range samples of every output cell along one axis of one ROI
// (grid samples per cell from `start`, cells `bin` apart); a sample outside
// [-1, size] is dropped (it contributes 0) and only counted.
struct RoiAlignAxis {
    std::vector<RoiAlignTap> taps;
    std::vector<int64_t> begin;  // taps of cell i: [begin[i], begin[i + 1])
};
RoiAlignAxis roi_align_axis(float start, float bin, int64_t grid, int out, int64_t size);
std::vector<int64_t> roi_max_pool_bins(const float * rois, int64_t k_rois, int64_t images, int64_t h, int64_t w,
                                       const RoiPoolParams & p);

// x must be a defined float32 tensor of `ndim` dims (ndim < 0: any).
void check_f32(const Tensor & x, const char * op, const char * what, int ndim = -1);

}  // namespace fovea
