// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor conv2d(const Tensor &, const Tensor &, const Tensor &, const Conv2dParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
}
