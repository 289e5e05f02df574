// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
Tensor relu(const Tensor &) { throw Error(ErrorCode::Internal, "relu: not implemented"); }
Tensor sigmoid(const Tensor &) { throw Error(ErrorCode::Internal, "sigmoid: not implemented"); }
Tensor softmax(const Tensor &, int) { throw Error(ErrorCode::Internal, "softmax: not implemented"); }
}
