// Error type shared by every layer of the native core. The addon maps the code
// to FoveaError.code in JS; C++ users catch fovea::Error.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace fovea {

enum class ErrorCode {
    Input,        // bad image, bad tensor shape or value handed to an op
    Options,      // bad option or op parameter
    Weights,      // unreadable, truncated or inconsistent weights file
    Device,       // no driver, no device, unusable device
    OutOfMemory,  // allocation failed
    Aborted,      // cancelled by the caller
    Internal,     // a bug in fovea
};

// Stable string form used by the JS side ("ERR_INPUT", ...).
const char * error_code_name(ErrorCode code);

class Error : public std::runtime_error {
  public:
    Error(ErrorCode code, const std::string & message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const { return code_; }

  private:
    ErrorCode code_;
};

[[noreturn]] void throw_error(ErrorCode code, const std::string & message);

}  // namespace fovea

// FOVEA_CHECK(cond, ErrorCode::Input, "conv2d: expected 4-D input, got " << x.ndim())
#define FOVEA_CHECK(cond, code, msg)                                   \
    do {                                                               \
        if (!(cond)) {                                                 \
            std::ostringstream fovea_check_os_;                        \
            fovea_check_os_ << msg;                                    \
            ::fovea::throw_error((code), fovea_check_os_.str());       \
        }                                                              \
    } while (0)

#define FOVEA_CHECK_INPUT(cond, msg) FOVEA_CHECK(cond, ::fovea::ErrorCode::Input, msg)
#define FOVEA_CHECK_OPTIONS(cond, msg) FOVEA_CHECK(cond, ::fovea::ErrorCode::Options, msg)
