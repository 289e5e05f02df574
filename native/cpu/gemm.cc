// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor gemm(const Tensor &, const Tensor &, const Tensor &, const GemmParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
Tensor linear(const Tensor &, const Tensor &, const Tensor &, Activation) { throw Error(ErrorCode::Internal, "not implemented"); }
}
