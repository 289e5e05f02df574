// The pipeline's N-API surface:
//   loadPipeline(proposals, classifier, device) -> Promise<Segmenter>
//   segmenter.run(pixels, width, height, options, onProgress?) -> { promise, cancel }
//   segmenter.describe() -> { device, hasClassifier, classNames, scales }
//   segmenter.close()
// Loading and every run happen in AsyncWorkers; arguments were validated by
// lib/options.ts and are re-checked here only for type, so a bad call from
// JS is an ERR_OPTIONS rejection, never a crash.
#include <atomic>
#include <memory>
#include <string>

#include "addon/addon.h"
#include "core/device.h"
#include "pipeline/pipeline.h"

namespace fovea::addon {

namespace {

struct AddonData {
    Napi::FunctionReference segmenter_constructor;
};

// CUDA out-of-memory is Error(OutOfMemory) from the device allocator (which
// clears the CUDA error state), so a Segmenter stays usable after one: a run
// holds no state between calls and its device blocks return to the cache.
ErrorCode code_of(const std::exception & e) {
    if (const auto * fe = dynamic_cast<const Error *>(&e)) return fe->code();
    if (dynamic_cast<const std::bad_alloc *>(&e)) return ErrorCode::OutOfMemory;
    return ErrorCode::Internal;
}

// The backend of a device spec ('cpu', 'cuda', 'cuda:N'). A CUDA device that
// cuda_status() does not list is ERR_DEVICE with the reason: never a silent
// fallback to the CPU.
Backend & backend_for(const std::string & device) {
    const Device d = parse_device(device);
    if (d.type == DeviceType::CPU) return cpu_backend();
    const CudaStatus & cuda = cuda_status();
    if (!cuda.available) throw Error(ErrorCode::Device, "device '" + device + "': CUDA is not available: " + cuda.reason);
    if (d.index >= int(cuda.devices.size())) {
        throw Error(ErrorCode::Device, "device '" + device + "': no CUDA device " + std::to_string(d.index) +
                                           "; this machine has " + std::to_string(cuda.devices.size()) +
                                           (cuda.devices.size() == 1 ? " (cuda:0)" : " (cuda:0 to cuda:" +
                                                std::to_string(cuda.devices.size() - 1) + ")"));
    }
    return cuda_backend(d.index);
}

class Segmenter : public Napi::ObjectWrap<Segmenter> {
  public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "Segmenter",
                           {InstanceMethod<&Segmenter::run>("run"), InstanceMethod<&Segmenter::describe>("describe"),
                            InstanceMethod<&Segmenter::close>("close")});
    }

    explicit Segmenter(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Segmenter>(info) {
        if (info.Length() != 1 || !info[0].IsExternal()) {
            throw make_error(info.Env(), ErrorCode::Options, "Segmenter cannot be constructed directly; use loadPipeline()");
        }
        // Take the pipeline out of the handle, so close() alone releases it
        // (not the handle's finalizer, which runs whenever the GC gets to it).
        pipeline_ = std::move(*info[0].As<Napi::External<std::shared_ptr<const pipeline::Pipeline>>>().Data());
    }

  private:
    Napi::Value run(const Napi::CallbackInfo & info);
    Napi::Value describe(const Napi::CallbackInfo & info);
    Napi::Value close(const Napi::CallbackInfo & info) {
        // Runs in flight hold their own reference and finish normally.
        pipeline_.reset();
        return info.Env().Undefined();
    }

    std::shared_ptr<const pipeline::Pipeline> pipeline_;
};

class LoadWorker : public Napi::AsyncWorker {
  public:
    LoadWorker(Napi::Env env, std::string proposals, std::string classifier, std::string device)
        : Napi::AsyncWorker(env),
          deferred_(Napi::Promise::Deferred::New(env)),
          proposals_(std::move(proposals)),
          classifier_(std::move(classifier)),
          device_(std::move(device)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        try {
            pipeline_ = pipeline::Pipeline::load(proposals_, classifier_, backend_for(device_));
        } catch (const std::exception & e) {
            code_ = code_of(e);
            SetError(e.what());
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        auto handle = Napi::External<std::shared_ptr<const pipeline::Pipeline>>::New(
            env, new std::shared_ptr<const pipeline::Pipeline>(pipeline_),
            [](Napi::Env, std::shared_ptr<const pipeline::Pipeline> * p) { delete p; });
        deferred_.Resolve(env.GetInstanceData<AddonData>()->segmenter_constructor.New({handle}));
    }

    void OnError(const Napi::Error & e) override { deferred_.Reject(make_error(Env(), code_, e.Message()).Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    std::string proposals_, classifier_, device_;
    std::shared_ptr<const pipeline::Pipeline> pipeline_;
    ErrorCode code_ = ErrorCode::Internal;
};

struct ProgressEvent {
    const char * stage;  // a string literal of the pipeline
    double fraction;
};

class RunWorker : public Napi::AsyncProgressQueueWorker<ProgressEvent> {
  public:
    RunWorker(Napi::Env env, std::shared_ptr<const pipeline::Pipeline> p, Napi::Uint8Array pixels, int64_t width,
              int64_t height, pipeline::Options options, Napi::Function on_progress)
        : Napi::AsyncProgressQueueWorker<ProgressEvent>(env),
          deferred_(Napi::Promise::Deferred::New(env)),
          pipeline_(std::move(p)),
          pixels_ref_(Napi::Persistent(pixels)),
          options_(std::move(options)),
          cancelled_(std::make_shared<std::atomic<bool>>(false)) {
        image_.data = pixels.Data();
        image_.width = width;
        image_.height = height;
        if (!on_progress.IsEmpty()) progress_ = Napi::Persistent(on_progress);
    }

    Napi::Promise promise() { return deferred_.Promise(); }
    std::shared_ptr<std::atomic<bool>> cancelled() const { return cancelled_; }

    void Execute(const ExecutionProgress & progress) override {
        try {
            pipeline::RunControl control;
            control.cancelled = cancelled_.get();
            if (!progress_.IsEmpty()) {
                control.progress = [&progress](const char * stage, double fraction) {
                    ProgressEvent ev{stage, fraction};
                    progress.Send(&ev, 1);
                };
            }
            result_ = pipeline_->run(image_, options_, control);
        } catch (const std::exception & e) {
            code_ = code_of(e);
            SetError(e.what());
        }
        pipeline_.reset();
    }

    void OnProgress(const ProgressEvent * events, size_t count) override {
        Napi::Env env = Env();
        if (progress_.IsEmpty()) return;
        for (size_t i = 0; i < count; i++) {
            progress_.Call({Napi::String::New(env, events[i].stage), Napi::Number::New(env, events[i].fraction)});
        }
    }

    void OnOK() override;
    void OnError(const Napi::Error & e) override { deferred_.Reject(make_error(Env(), code_, e.Message()).Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<const pipeline::Pipeline> pipeline_;
    Napi::Reference<Napi::Uint8Array> pixels_ref_;  // keeps the pixels alive while Execute reads them
    pipeline::ImageView image_;
    pipeline::Options options_;
    Napi::FunctionReference progress_;
    std::shared_ptr<std::atomic<bool>> cancelled_;
    pipeline::Result result_;
    ErrorCode code_ = ErrorCode::Internal;
};

void RunWorker::OnOK() {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("width", double(result_.width));
    out.Set("height", double(result_.height));
    out.Set("device", result_.device);
    out.Set("proposals", double(result_.proposals));
    Napi::Object timings = Napi::Object::New(env);
    for (const pipeline::Timing & t : result_.timings) timings.Set(t.stage, t.ms);
    out.Set("timings", timings);
    Napi::Array instances = Napi::Array::New(env, result_.instances.size());
    for (size_t i = 0; i < result_.instances.size(); i++) {
        const pipeline::Instance & r = result_.instances[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("label", r.label);
        o.Set("categoryId", double(r.category_id));
        o.Set("classIndex", double(r.class_index));
        o.Set("score", double(r.score));
        o.Set("objectness", double(r.objectness));
        Napi::Array box = Napi::Array::New(env, 4);
        for (uint32_t j = 0; j < 4; j++) box.Set(j, double(r.box[j]));
        o.Set("box", box);
        o.Set("counts", r.rle);
        o.Set("area", double(r.area));
        o.Set("proposal", double(r.proposal));
        instances.Set(uint32_t(i), o);
    }
    out.Set("instances", instances);
    deferred_.Resolve(out);
}

int64_t integer_option(const Napi::Object & o, const char * key, int64_t fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    if (!v.IsNumber()) throw Error(ErrorCode::Options, std::string(key) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= -9e15 && d <= 9e15) || d != double(int64_t(d))) {
        throw Error(ErrorCode::Options, std::string(key) + " must be an integer");
    }
    return int64_t(d);
}

float number_option(const Napi::Object & o, const char * key, float fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    if (!v.IsNumber()) throw Error(ErrorCode::Options, std::string(key) + " must be a number");
    return float(v.As<Napi::Number>().DoubleValue());
}

pipeline::Options parse_options(const Napi::Object & o) {
    pipeline::Options opt;
    Napi::Value mode = o.Get("mode");
    if (!mode.IsUndefined()) {
        const std::string m = mode.IsString() ? mode.As<Napi::String>().Utf8Value() : std::string();
        if (m == "proposals") opt.mode = pipeline::Mode::Proposals;
        else if (m == "instances") opt.mode = pipeline::Mode::Instances;
        else throw Error(ErrorCode::Options, "mode must be 'instances' or 'proposals'");
    }
    opt.max_proposals = integer_option(o, "maxProposals", opt.max_proposals);
    opt.max_detections = integer_option(o, "maxDetections", opt.max_detections);
    opt.max_side = integer_option(o, "maxSide", opt.max_side);
    opt.score_threshold = number_option(o, "scoreThreshold", opt.score_threshold);
    opt.nms_threshold = number_option(o, "nmsThreshold", opt.nms_threshold);
    opt.mask_threshold = number_option(o, "maskThreshold", opt.mask_threshold);
    Napi::Value scales = o.Get("scales");
    if (!scales.IsUndefined()) {
        if (!scales.IsArray()) throw Error(ErrorCode::Options, "scales must be an array of numbers");
        Napi::Array a = scales.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); i++) {
            Napi::Value s = a.Get(i);
            if (!s.IsNumber()) throw Error(ErrorCode::Options, "scales must be an array of numbers");
            opt.scales.push_back(s.As<Napi::Number>().DoubleValue());
        }
    }
    return opt;
}

Napi::Value Segmenter::run(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    try {
        if (!pipeline_) throw Error(ErrorCode::Options, "this Segmenter is closed");
        if (info.Length() < 4 || !info[0].IsTypedArray() ||
            info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || !info[1].IsNumber() ||
            !info[2].IsNumber() || !info[3].IsObject()) {
            throw Error(ErrorCode::Options, "run(pixels: Uint8Array, width, height, options[, onProgress])");
        }
        Napi::Uint8Array pixels = info[0].As<Napi::Uint8Array>();
        const double w = info[1].As<Napi::Number>().DoubleValue(), h = info[2].As<Napi::Number>().DoubleValue();
        if (!(w >= 1 && h >= 1 && w <= (1 << 20) && h <= (1 << 20)) || w != double(int64_t(w)) ||
            h != double(int64_t(h)) || double(pixels.ByteLength()) != w * h * 3) {
            throw Error(ErrorCode::Input, "pixels must be width * height * 3 bytes of RGB");
        }
        pipeline::Options options = parse_options(info[3].As<Napi::Object>());
        Napi::Function on_progress;
        if (info.Length() > 4 && info[4].IsFunction()) on_progress = info[4].As<Napi::Function>();
        auto * worker = new RunWorker(env, pipeline_, pixels, int64_t(w), int64_t(h), std::move(options), on_progress);
        std::shared_ptr<std::atomic<bool>> flag = worker->cancelled();
        Napi::Object out = Napi::Object::New(env);
        out.Set("promise", worker->promise());
        out.Set("cancel", Napi::Function::New(
                              env,
                              [flag](const Napi::CallbackInfo & ci) {
                                  flag->store(true);
                                  return ci.Env().Undefined();
                              },
                              "cancel"));
        worker->Queue();
        return out;
    } catch (const std::exception & e) {
        throw make_error(env, e);
    }
}

Napi::Value Segmenter::describe(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!pipeline_) throw make_error(env, ErrorCode::Options, "this Segmenter is closed");
    Napi::Object out = Napi::Object::New(env);
    out.Set("hasClassifier", pipeline_->has_classifier());
    Napi::Array names = Napi::Array::New(env, pipeline_->class_names().size());
    for (size_t i = 0; i < pipeline_->class_names().size(); i++) names.Set(uint32_t(i), pipeline_->class_names()[i]);
    out.Set("classNames", names);
    Napi::Array scales = Napi::Array::New(env, pipeline_->default_scales().size());
    for (size_t i = 0; i < pipeline_->default_scales().size(); i++) scales.Set(uint32_t(i), pipeline_->default_scales()[i]);
    out.Set("scales", scales);
    out.Set("device", pipeline_->device_name());
    return out;
}

Napi::Value load_pipeline(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString()) {
        auto deferred = Napi::Promise::Deferred::New(env);
        deferred.Reject(make_error(env, ErrorCode::Options, "loadPipeline(proposals, classifier, device)").Value());
        return deferred.Promise();
    }
    auto * worker = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(),
                                   info[2].As<Napi::String>().Utf8Value());
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

}  // namespace

Napi::Object init_segmenter(Napi::Env env, Napi::Object exports) {
    auto * data = new AddonData();
    data->segmenter_constructor = Napi::Persistent(Segmenter::define(env));
    env.SetInstanceData(data);
    exports.Set("loadPipeline", Napi::Function::New(env, load_pipeline, "loadPipeline"));
    return exports;
}

}  // namespace fovea::addon
