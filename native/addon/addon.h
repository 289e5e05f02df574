// Shared helpers of the N-API surface. The addon only checks arguments,
// copies them into plain C++ values, runs AsyncWorkers and maps errors.
#pragma once

#include <napi.h>

#include "core/error.h"

namespace fovea::addon {

// A JS Error carrying `code` (ERR_INPUT, ...) that lib/errors.ts turns into FoveaError.
Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string & message);
Napi::Error make_error(Napi::Env env, const std::exception & e);

Napi::Object init_info(Napi::Env env, Napi::Object exports);
Napi::Object init_ops(Napi::Env env, Napi::Object exports);
Napi::Object init_models(Napi::Env env, Napi::Object exports);
Napi::Object init_segmenter(Napi::Env env, Napi::Object exports);

}  // namespace fovea::addon
