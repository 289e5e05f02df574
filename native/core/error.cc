#include "core/error.h"

namespace fovea {

const char * error_code_name(ErrorCode code) {
    switch (code) {
        case ErrorCode::Input: return "ERR_INPUT";
        case ErrorCode::Options: return "ERR_OPTIONS";
        case ErrorCode::Weights: return "ERR_WEIGHTS";
        case ErrorCode::Device: return "ERR_DEVICE";
        case ErrorCode::OutOfMemory: return "ERR_OUT_OF_MEMORY";
        case ErrorCode::Aborted: return "ERR_ABORTED";
        case ErrorCode::Internal: return "ERR_INTERNAL";
    }
    return "ERR_INTERNAL";
}

void throw_error(ErrorCode code, const std::string & message) { throw Error(code, message); }

}  // namespace fovea
