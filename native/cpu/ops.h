// CPU reference implementations: the one implementation of each op that every
// other backend is tested against. Arguments are validated by core/op_shapes.
#pragma once

#include <vector>

#include "core/ops.h"

namespace fovea::cpu {

Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p);   // conv.cc
Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p);          // gemm.cc
Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act);           // gemm.cc
Tensor max_pool2d(const Tensor & x, const Pool2dParams & p);                                      // pool.cc
Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p);                                      // pool.cc
Tensor relu(const Tensor & x);                                                                    // activation.cc
Tensor sigmoid(const Tensor & x);                                                                 // activation.cc
Tensor softmax(const Tensor & x, int axis);                                                       // activation.cc
Tensor resize_bilinear(const Tensor & x, const ResizeParams & p);                                 // resize.cc
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

}  // namespace fovea::cpu
