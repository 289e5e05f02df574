// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor batch_norm(const Tensor &, const Tensor &, const Tensor &, const Tensor &, const Tensor &, float) { throw Error(ErrorCode::Internal, "not implemented"); }
}
