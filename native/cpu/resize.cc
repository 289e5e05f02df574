// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor resize_bilinear(const Tensor &, const ResizeParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
Tensor upsample_nearest(const Tensor &, int) { throw Error(ErrorCode::Internal, "not implemented"); }
}
