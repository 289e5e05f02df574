#include "addon/addon.h"

#include <new>

namespace fovea::addon {

Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, error_code_name(code)));
    return err;
}

Napi::Error make_error(Napi::Env env, const std::exception & e) {
    if (auto * fe = dynamic_cast<const Error *>(&e)) return make_error(env, fe->code(), fe->what());
    if (dynamic_cast<const std::bad_alloc *>(&e)) return make_error(env, ErrorCode::OutOfMemory, "out of memory");
    return make_error(env, ErrorCode::Internal, e.what());
}

}  // namespace fovea::addon

static Napi::Object init(Napi::Env env, Napi::Object exports) {
    fovea::addon::init_info(env, exports);
    fovea::addon::init_ops(env, exports);
    fovea::addon::init_models(env, exports);
    fovea::addon::init_segmenter(env, exports);
    return exports;
}

NODE_API_MODULE(fovea, init)
