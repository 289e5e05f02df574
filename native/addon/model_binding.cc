// inspectModel(path): opens a weights file and builds the model it describes
// on the CPU backend, in an AsyncWorker, so every tensor is checked against
// the architecture exactly as segment() will load it. Resolves with what
// `fovea info --model` prints; rejects with ERR_WEIGHTS naming the problem.
#include <string>

#include "addon/addon.h"
#include "models/deepmask.h"
#include "models/model_weights.h"
#include "models/multipathnet.h"
#include "models/sharpmask.h"

namespace fovea::addon {

namespace {

struct ModelSummary {
    std::string architecture;
    std::string trunk;
    int64_t parameters = 0;
    size_t tensors = 0;
};

ModelSummary inspect(const std::string & path) {
    models::ModelWeights weights = models::ModelWeights::open(path);
    ModelSummary s;
    s.architecture = weights.architecture();
    const models::Config & config = weights.config();
    if (config.has("trunk")) s.trunk = config.string("trunk");
    else if (config.has("variant")) s.trunk = config.string("variant");
    // Constructing the model validates every tensor name and shape.
    if (s.architecture == "deepmask") models::DeepMask::load(weights);
    else if (s.architecture == "sharpmask") models::SharpMask::load(weights);
    else if (s.architecture == "multipathnet") models::MultiPathNet(weights, cpu_backend());
    else throw Error(ErrorCode::Weights, path + ": unknown architecture '" + s.architecture + "'");
    s.parameters = weights.parameter_count();
    s.tensors = weights.names().size();
    return s;
}

class InspectWorker : public Napi::AsyncWorker {
  public:
    InspectWorker(Napi::Env env, std::string path)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        try {
            summary_ = inspect(path_);
        } catch (const std::exception & e) {
            const auto * fe = dynamic_cast<const Error *>(&e);
            code_ = fe ? fe->code() : ErrorCode::Internal;
            SetError(e.what());
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("architecture", summary_.architecture);
        out.Set("trunk", summary_.trunk);
        out.Set("parameters", static_cast<double>(summary_.parameters));
        out.Set("tensors", static_cast<double>(summary_.tensors));
        deferred_.Resolve(out);
    }

    void OnError(const Napi::Error & e) override { deferred_.Reject(make_error(Env(), code_, e.Message()).Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    std::string path_;
    ModelSummary summary_;
    ErrorCode code_ = ErrorCode::Internal;
};

Napi::Value inspect_model(const Napi::CallbackInfo & args) {
    Napi::Env env = args.Env();
    if (args.Length() < 1 || !args[0].IsString()) {
        auto deferred = Napi::Promise::Deferred::New(env);
        deferred.Reject(make_error(env, ErrorCode::Options, "inspectModel(path: string)").Value());
        return deferred.Promise();
    }
    auto * worker = new InspectWorker(env, args[0].As<Napi::String>().Utf8Value());
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

}  // namespace

Napi::Object init_models(Napi::Env env, Napi::Object exports) {
    exports.Set("inspectModel", Napi::Function::New(env, inspect_model, "inspectModel"));
    return exports;
}

}  // namespace fovea::addon
