// CPU reference implementations: the one implementation of each op that every
// other backend is tested against. Arguments are validated by core/op_shapes.
#pragma once

#include <vector>

#include "core/ops.h"

namespace fovea::cpu {

// How conv2d maps onto the GEMM (conv.cc and conv_winograd.cc explain
// each); Auto picks per layer. Tests and benchmarks force one to check each
// against the others. Winograd takes only what conv2d_winograd_applies to.
enum class ConvAlgo { Auto, Shifted, Im2col, Im2colMerged, ChannelsLast, Winograd };
// With `residual` (shaped as the output): act(conv + bias + residual_scale *
// residual), residual_scale [OC] or undefined (1), the addition done where
// each output is stored.
Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
              ConvAlgo algo = ConvAlgo::Auto, const Tensor & residual = Tensor(),
              const Tensor & residual_scale = Tensor());                                           // conv.cc
// What Auto picks for these arguments (w's constness included), and its name
// as benchmarks report it ("winograd", "channels-last", ...).
ConvAlgo conv2d_auto_algo(const Tensor & x, const Tensor & w, const Conv2dParams & p);       // conv.cc
const char * conv_algo_name(ConvAlgo algo);                                                   // conv.cc
// 3x3 kernels at stride 1 or 2 (the same both ways), no dilation, one group.
bool conv2d_winograd_applies(const Shape & w_shape, const Conv2dParams & p);                   // conv_winograd.cc
Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p);          // gemm.cc
Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act);           // gemm.cc
Tensor max_pool2d(const Tensor & x, const Pool2dParams & p);                                      // pool.cc
Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p);                                      // pool.cc
Tensor relu(const Tensor & x);                                                                    // activation.cc
Tensor sigmoid(const Tensor & x);                                                                 // activation.cc
Tensor softmax(const Tensor & x, int axis);                                                       // activation.cc
Tensor resize_bilinear(const Tensor & x, const ResizeParams & p);                                 // resize.cc
Tensor image_scale(const Tensor & x, int64_t out_h, int64_t out_w);                             // resize.cc
Tensor upsample_nearest(const Tensor & x, int factor);                                            // resize.cc
Tensor pad2d(const Tensor & x, const Pad2dParams & p);                                          // pad.cc
Tensor concat(const std::vector<Tensor> & xs, int axis);                                          // elementwise.cc
Tensor add(const Tensor & a, const Tensor & b, Activation act);                                   // elementwise.cc
Tensor batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                  const Tensor & var, float epsilon);                                             // batchnorm.cc
Tensor roi_max_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p);              // roi.cc
Tensor roi_align(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                 const RoiAlignParams & p);                                                       // roi.cc
std::vector<int64_t> nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p);       // nms.cc

// dst[j * dst_rs + i] = src[i * src_rs + j] for i < rows, j < cols, in
// blocks transposed in vector registers; single-threaded (callers split the
// work).                                                              // gemm.cc
void transpose(const float * src, int64_t src_rs, int64_t rows, int64_t cols, float * dst, int64_t dst_rs);

// torch image.scale along one axis: out[o] = sum_k weights[offset[o] + k] *
// in[first[o] + k] / norm[o], k < offset[o + 1] - offset[o].
struct ImageScaleAxis {
    ImageScaleAxis(int64_t in, int64_t out);
    std::vector<int32_t> first;
    std::vector<int64_t> offset;
    std::vector<float> weights;
    std::vector<float> norm;
};

// One plane through image.scale, computing only output rows [row_begin,
// row_end) and columns [col_begin, col_end) into `out` (rows x cols, packed);
// tmp holds in_h * (col_end - col_begin) floats. Mask pasting uses the
// window to skip the parts of a mask that fall outside the image.
void image_scale_plane(const float * in, int64_t in_h, int64_t in_w, const ImageScaleAxis & ay,
                       const ImageScaleAxis & ax, int64_t row_begin, int64_t row_end, int64_t col_begin,
                       int64_t col_end, float * out, float * tmp);

}  // namespace fovea::cpu
