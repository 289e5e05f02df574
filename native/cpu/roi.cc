// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor roi_max_pool(const Tensor &, const Tensor &, const RoiPoolParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
Tensor roi_align(const Tensor &, const Tensor &, const Tensor &, const RoiAlignParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
}
