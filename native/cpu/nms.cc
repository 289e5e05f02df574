// PLACEHOLDER until the real implementation lands (being written now).
#include "core/error.h"
#include "cpu/ops.h"
namespace fovea::cpu {
std::vector<int64_t> nms(const Tensor &, const Tensor &, const NmsParams &) { throw Error(ErrorCode::Internal, "not implemented"); }
}
