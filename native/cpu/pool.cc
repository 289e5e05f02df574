// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor max_pool2d(const Tensor &, const Pool2dParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
Tensor avg_pool2d(const Tensor &, const Pool2dParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
}
