// runOp(name, inputs, attrs): runs one op of a backend in an AsyncWorker.
// prepareOp(name, constants, attrs): the same op with its trailing inputs
// fixed ({ run(inputs) }), as a model holds its weights. Internal surface for
// the conformance suite and the benchmarks; the worker never touches JS.
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "core/device.h"
#include "core/ops.h"

namespace fovea::addon {

namespace {

struct OpOutput {
    Tensor tensor;                  // float32 result
    std::vector<int64_t> indices;   // nms result
    bool is_indices = false;
};

// Attribute readers: missing keys take the default; wrong types are ERR_OPTIONS.
class Attrs {
  public:
    explicit Attrs(Napi::Object obj) : obj_(obj) {}
    double number(const char * key, double fallback) const {
        if (!obj_.Has(key) || obj_.Get(key).IsUndefined()) return fallback;
        Napi::Value v = obj_.Get(key);
        if (!v.IsNumber()) throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must be a number");
        return v.As<Napi::Number>().DoubleValue();
    }
    int integer(const char * key, int fallback) const {
        double v = number(key, fallback);
        if (v != static_cast<double>(static_cast<int>(v)))
            throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must be an integer");
        return static_cast<int>(v);
    }
    bool boolean(const char * key, bool fallback) const {
        if (!obj_.Has(key) || obj_.Get(key).IsUndefined()) return fallback;
        Napi::Value v = obj_.Get(key);
        if (!v.IsBoolean()) throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must be a boolean");
        return v.As<Napi::Boolean>().Value();
    }
    std::string string(const char * key, const std::string & fallback) const {
        if (!obj_.Has(key) || obj_.Get(key).IsUndefined()) return fallback;
        Napi::Value v = obj_.Get(key);
        if (!v.IsString()) throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must be a string");
        return v.As<Napi::String>().Utf8Value();
    }
    std::vector<int> ints(const char * key, std::vector<int> fallback) const {
        if (!obj_.Has(key) || obj_.Get(key).IsUndefined()) return fallback;
        Napi::Value v = obj_.Get(key);
        if (!v.IsArray()) throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must be an array");
        Napi::Array a = v.As<Napi::Array>();
        if (a.Length() != fallback.size())
            throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must have " +
                                                std::to_string(fallback.size()) + " values");
        std::vector<int> out;
        for (uint32_t i = 0; i < a.Length(); i++) {
            Napi::Value e = a.Get(i);
            if (!e.IsNumber()) throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must hold numbers");
            double d = e.As<Napi::Number>().DoubleValue();
            if (d != static_cast<double>(static_cast<int>(d)))
                throw Error(ErrorCode::Options, std::string("attribute '") + key + "' must hold integers");
            out.push_back(static_cast<int>(d));
        }
        return out;
    }

  private:
    Napi::Object obj_;
};

Activation parse_activation(const std::string & s) {
    if (s == "none") return Activation::None;
    if (s == "relu") return Activation::Relu;
    if (s == "sigmoid") return Activation::Sigmoid;
    throw Error(ErrorCode::Options, "activation must be 'none', 'relu' or 'sigmoid', got '" + s + "'");
}

ResizeCoord parse_coord(const std::string & s) {
    if (s == "align_corners") return ResizeCoord::AlignCorners;
    if (s == "half_pixel") return ResizeCoord::HalfPixel;
    if (s == "pytorch_half_pixel") return ResizeCoord::PytorchHalfPixel;
    if (s == "asymmetric") return ResizeCoord::Asymmetric;
    throw Error(ErrorCode::Options, "coord must be align_corners, half_pixel, pytorch_half_pixel or asymmetric");
}

// A JS {data, shape} as a tensor over the typed array's own memory (no copy:
// benchmarks time the op, not a memcpy). `keep_alive` receives a reference
// that stops the array from being collected while the worker runs; callers
// must not change the data until the promise settles.
Tensor read_tensor(Napi::Value v, size_t index, std::vector<Napi::Reference<Napi::Value>> & keep_alive) {
    if (v.IsNull() || v.IsUndefined()) return Tensor();
    std::string where = "input " + std::to_string(index);
    if (!v.IsObject()) throw Error(ErrorCode::Input, where + " must be {data, shape} or null");
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value data = o.Get("data");
    Napi::Value shape_v = o.Get("shape");
    if (!shape_v.IsArray()) throw Error(ErrorCode::Input, where + ": shape must be an array");
    Napi::Array shape_a = shape_v.As<Napi::Array>();
    if (shape_a.Length() > 8) throw Error(ErrorCode::Input, where + ": at most 8 dims");
    Shape shape;
    for (uint32_t i = 0; i < shape_a.Length(); i++) {
        Napi::Value d = shape_a.Get(i);
        if (!d.IsNumber()) throw Error(ErrorCode::Input, where + ": shape must hold numbers");
        double dv = d.As<Napi::Number>().DoubleValue();
        if (!(dv >= 0) || dv != static_cast<double>(static_cast<int64_t>(dv)) || dv > 9.0e15)
            throw Error(ErrorCode::Input, where + ": dims must be non-negative integers");
        shape.push_back(static_cast<int64_t>(dv));
    }
    if (!data.IsTypedArray()) throw Error(ErrorCode::Input, where + ": data must be a typed array");
    Napi::TypedArray ta = data.As<Napi::TypedArray>();
    DType dtype;
    switch (ta.TypedArrayType()) {
        case napi_float32_array: dtype = DType::F32; break;
        case napi_int32_array: dtype = DType::I32; break;
        case napi_bigint64_array: dtype = DType::I64; break;
        default: throw Error(ErrorCode::Input, where + ": data must be Float32Array, Int32Array or BigInt64Array");
    }
    int64_t n = shape_numel(shape);
    if (static_cast<int64_t>(ta.ElementLength()) != n)
        throw Error(ErrorCode::Input, where + ": " + std::to_string(ta.ElementLength()) + " values for shape " +
                                          shape_str(shape));
    uint8_t * bytes = static_cast<uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    keep_alive.push_back(Napi::Persistent(data));
    return Tensor::wrap(bytes, shape, dtype);
}

using OpFn = std::function<OpOutput(Backend &, const std::vector<Tensor> &)>;

const Tensor & input(const std::vector<Tensor> & in, size_t i) {
    static const Tensor none;
    return i < in.size() ? in[i] : none;
}

// Reads the attributes of `name` on the JS thread and returns the work to run.
OpFn make_op(const std::string & name, const Attrs & a) {
    auto single = [](Tensor t) { return OpOutput{std::move(t), {}, false}; };
    if (name == "conv2d") {
        Conv2dParams p;
        auto s = a.ints("strides", {1, 1}), d = a.ints("dilations", {1, 1}), pads = a.ints("pads", {0, 0, 0, 0});
        p.stride_h = s[0]; p.stride_w = s[1]; p.dilation_h = d[0]; p.dilation_w = d[1];
        p.pad_top = pads[0]; p.pad_left = pads[1]; p.pad_bottom = pads[2]; p.pad_right = pads[3];
        p.groups = a.integer("groups", 1);
        p.activation = parse_activation(a.string("activation", "none"));
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.conv2d(input(in, 0), input(in, 1), input(in, 2), p));
        };
    }
    if (name == "gemm") {
        GemmParams p;
        p.trans_a = a.boolean("transA", false); p.trans_b = a.boolean("transB", false);
        p.alpha = float(a.number("alpha", 1.0)); p.beta = float(a.number("beta", 1.0));
        p.activation = parse_activation(a.string("activation", "none"));
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.gemm(input(in, 0), input(in, 1), input(in, 2), p));
        };
    }
    if (name == "linear") {
        Activation act = parse_activation(a.string("activation", "none"));
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.linear(input(in, 0), input(in, 1), input(in, 2), act));
        };
    }
    if (name == "max_pool2d" || name == "avg_pool2d") {
        Pool2dParams p;
        auto k = a.ints("kernel", {1, 1}), s = a.ints("strides", {1, 1}), d = a.ints("dilations", {1, 1}),
             pads = a.ints("pads", {0, 0, 0, 0});
        p.kernel_h = k[0]; p.kernel_w = k[1]; p.stride_h = s[0]; p.stride_w = s[1];
        p.dilation_h = d[0]; p.dilation_w = d[1];
        p.pad_top = pads[0]; p.pad_left = pads[1]; p.pad_bottom = pads[2]; p.pad_right = pads[3];
        p.ceil_mode = a.boolean("ceilMode", false);
        p.count_include_pad = a.boolean("countIncludePad", false);
        bool is_max = name == "max_pool2d";
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(is_max ? b.max_pool2d(input(in, 0), p) : b.avg_pool2d(input(in, 0), p));
        };
    }
    if (name == "relu") return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.relu(input(in, 0))); };
    if (name == "sigmoid")
        return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.sigmoid(input(in, 0))); };
    if (name == "softmax") {
        int axis = a.integer("axis", -1);
        return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.softmax(input(in, 0), axis)); };
    }
    if (name == "resize_bilinear") {
        ResizeParams p;
        auto size = a.ints("size", {0, 0});
        p.out_h = size[0]; p.out_w = size[1];
        p.coord = parse_coord(a.string("coord", "align_corners"));
        p.scale_h = a.number("scaleH", 0.0); p.scale_w = a.number("scaleW", 0.0);
        return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.resize_bilinear(input(in, 0), p)); };
    }
    if (name == "upsample_nearest") {
        int factor = a.integer("factor", 2);
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.upsample_nearest(input(in, 0), factor));
        };
    }
    if (name == "pad2d") {
        Pad2dParams p;
        auto pads = a.ints("pads", {0, 0, 0, 0});
        p.top = pads[0]; p.left = pads[1]; p.bottom = pads[2]; p.right = pads[3];
        std::string mode = a.string("mode", "constant");
        if (mode != "constant" && mode != "symmetric")
            throw Error(ErrorCode::Options, "pad2d mode must be 'constant' or 'symmetric', got '" + mode + "'");
        p.mode = mode == "symmetric" ? PadMode::Symmetric : PadMode::Constant;
        p.value = float(a.number("value", 0.0));
        return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.pad2d(input(in, 0), p)); };
    }
    if (name == "concat") {
        int axis = a.integer("axis", 0);
        return [=](Backend & b, const std::vector<Tensor> & in) { return single(b.concat(in, axis)); };
    }
    if (name == "add") {
        Activation act = parse_activation(a.string("activation", "none"));
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.add(input(in, 0), input(in, 1), act));
        };
    }
    if (name == "batch_norm") {
        float eps = float(a.number("epsilon", 1e-5));
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.batch_norm(input(in, 0), input(in, 1), input(in, 2), input(in, 3), input(in, 4), eps));
        };
    }
    if (name == "roi_max_pool") {
        RoiPoolParams p;
        auto size = a.ints("size", {7, 7});
        p.out_h = size[0]; p.out_w = size[1];
        p.spatial_scale = float(a.number("spatialScale", 1.0));
        p.round_bins = a.boolean("roundBins", false);
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.roi_max_pool(input(in, 0), input(in, 1), p));
        };
    }
    if (name == "roi_align") {
        RoiAlignParams p;
        auto size = a.ints("size", {1, 1});
        p.out_h = size[0]; p.out_w = size[1];
        p.spatial_scale = float(a.number("spatialScale", 1.0));
        p.sampling_ratio = a.integer("samplingRatio", 0);
        p.aligned = a.boolean("aligned", false);
        std::string mode = a.string("mode", "avg");
        if (mode != "avg" && mode != "max") throw Error(ErrorCode::Options, "roi_align mode must be 'avg' or 'max'");
        p.max_mode = mode == "max";
        return [=](Backend & b, const std::vector<Tensor> & in) {
            return single(b.roi_align(input(in, 0), input(in, 1), input(in, 2), p));
        };
    }
    if (name == "nms") {
        NmsParams p;
        p.iou_threshold = float(a.number("iouThreshold", 0.5));
        p.score_threshold = float(a.number("scoreThreshold", -1e30));
        p.max_output = static_cast<int64_t>(a.number("maxOutput", -1));
        p.pixel_offset = float(a.number("pixelOffset", 0));
        p.center_point_box = a.boolean("centerPointBox", false);
        return [=](Backend & b, const std::vector<Tensor> & in) {
            OpOutput out;
            out.indices = b.nms(input(in, 0), input(in, 1), p);
            out.is_indices = true;
            return out;
        };
    }
    throw Error(ErrorCode::Options, "unknown op '" + name + "'");
}

OpOutput run_on_cpu(const OpFn & fn, const std::vector<Tensor> & inputs, Device device) {
    if (device.type != DeviceType::CPU) {
        throw Error(ErrorCode::Device, "runOp: only the cpu backend is available to runOp in this build");
    }
    return fn(cpu_backend(), inputs);
}

// The result's memory becomes the ArrayBuffer's: no copy; the tensor is
// released when JS collects the buffer. V8 is told its size, or it would
// collect too rarely: results would pile up and every call would get fresh
// memory from the OS (page faults on a megabyte cost more than a small layer).
Napi::Value to_js(Napi::Env env, const OpOutput & output) {
    if (output.is_indices) {
        Napi::Array arr = Napi::Array::New(env, output.indices.size());
        for (size_t i = 0; i < output.indices.size(); i++) arr.Set(i, static_cast<double>(output.indices[i]));
        return arr;
    }
    const Tensor & t = output.tensor;
    Napi::Float32Array data;
    if (t.numel() == 0) {
        data = Napi::Float32Array::New(env, 0);
    } else {
        auto * owner = new Tensor(t);
        const int64_t bytes = static_cast<int64_t>(owner->nbytes());
        Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
            env, owner->raw(), owner->nbytes(),
            [](Napi::Env finalize_env, void *, Tensor * held) {
                Napi::MemoryManagement::AdjustExternalMemory(finalize_env, -static_cast<int64_t>(held->nbytes()));
                delete held;
            },
            owner);
        Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
        data = Napi::Float32Array::New(env, static_cast<size_t>(t.numel()), buffer, 0);
    }
    Napi::Array shape = Napi::Array::New(env, t.shape().size());
    for (size_t i = 0; i < t.shape().size(); i++) shape.Set(i, static_cast<double>(t.shape()[i]));
    Napi::Object out = Napi::Object::New(env);
    out.Set("data", data);
    out.Set("shape", shape);
    return out;
}

class OpWorker : public Napi::AsyncWorker {
  public:
    OpWorker(Napi::Env env, OpFn fn, std::vector<Tensor> inputs, std::vector<Napi::Reference<Napi::Value>> arrays,
             Device device)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fn_(std::move(fn)),
          inputs_(std::move(inputs)), arrays_(std::move(arrays)), device_(device) {}

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        try {
            output_ = run_on_cpu(fn_, inputs_, device_);
        } catch (const Error & e) {
            code_ = e.code();
            SetError(e.what());
        } catch (const std::bad_alloc &) {
            code_ = ErrorCode::OutOfMemory;
            SetError("out of memory");
        } catch (const std::exception & e) {
            code_ = ErrorCode::Internal;
            SetError(e.what());
        }
    }

    void OnOK() override { deferred_.Resolve(to_js(Env(), output_)); }

    void OnError(const Napi::Error & e) override {
        deferred_.Reject(make_error(Env(), code_, e.Message()).Value());
    }

  private:
    Napi::Promise::Deferred deferred_;
    OpFn fn_;
    std::vector<Tensor> inputs_;
    std::vector<Napi::Reference<Napi::Value>> arrays_;  // keeps the inputs' memory alive
    Device device_;
    OpOutput output_;
    ErrorCode code_ = ErrorCode::Internal;
};

std::vector<Tensor> read_tensors(Napi::Value v, const char * what,
                                 std::vector<Napi::Reference<Napi::Value>> & keep_alive) {
    if (!v.IsArray()) throw Error(ErrorCode::Options, std::string(what) + " must be an array");
    Napi::Array in = v.As<Napi::Array>();
    if (in.Length() > 1024) throw Error(ErrorCode::Input, std::string(what) + ": at most 1024 inputs");
    std::vector<Tensor> tensors;
    for (uint32_t i = 0; i < in.Length(); i++) tensors.push_back(read_tensor(in.Get(i), i, keep_alive));
    return tensors;
}

Napi::Promise queue_op(Napi::Env env, OpFn fn, std::vector<Tensor> inputs,
                       std::vector<Napi::Reference<Napi::Value>> arrays, Device device) {
    auto * worker = new OpWorker(env, std::move(fn), std::move(inputs), std::move(arrays), device);
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

Napi::Promise rejected(Napi::Env env, const std::exception & e) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(make_error(env, e).Value());
    return deferred.Promise();
}

Napi::Value run_op(const Napi::CallbackInfo & args) {
    Napi::Env env = args.Env();
    try {
        if (args.Length() < 3 || !args[0].IsString() || !args[1].IsArray() || !args[2].IsObject())
            throw Error(ErrorCode::Options, "runOp(name: string, inputs: array, attrs: object)");
        std::vector<Napi::Reference<Napi::Value>> arrays;
        std::vector<Tensor> inputs = read_tensors(args[1], "runOp inputs", arrays);
        Attrs attrs(args[2].As<Napi::Object>());
        Device device = parse_device(attrs.string("device", "cpu"));
        OpFn fn = make_op(args[0].As<Napi::String>().Utf8Value(), attrs);
        return queue_op(env, std::move(fn), std::move(inputs), std::move(arrays), device);
    } catch (const std::exception & e) {
        return rejected(env, e);
    }
}

// The constants are copied into native memory marked constant (so they
// cannot change under a backend's packed copy of them); run's inputs go
// before them.
Napi::Value prepare_op(const Napi::CallbackInfo & args) {
    Napi::Env env = args.Env();
    try {
        if (args.Length() < 3 || !args[0].IsString() || !args[1].IsArray() || !args[2].IsObject())
            throw Error(ErrorCode::Options, "prepareOp(name: string, constants: array, attrs: object)");
        std::vector<Napi::Reference<Napi::Value>> borrowed;
        auto constants = std::make_shared<std::vector<Tensor>>();
        for (const Tensor & t : read_tensors(args[1], "prepareOp constants", borrowed)) {
            Tensor owned;
            if (t.defined()) {
                owned = Tensor::empty(t.shape(), t.dtype());
                if (t.nbytes() > 0) std::memcpy(owned.raw(), t.raw(), t.nbytes());
                owned.mark_constant();
            }
            constants->push_back(owned);
        }
        Attrs attrs(args[2].As<Napi::Object>());
        const Device device = parse_device(attrs.string("device", "cpu"));
        const OpFn fn = make_op(args[0].As<Napi::String>().Utf8Value(), attrs);
        // A call's inputs followed by the constants; `arrays` keeps the
        // call's typed arrays alive.
        auto inputs_of = [constants](const Napi::CallbackInfo & info, const char * usage,
                                     std::vector<Napi::Reference<Napi::Value>> & arrays) {
            if (info.Length() < 1 || !info[0].IsArray()) throw Error(ErrorCode::Options, usage);
            std::vector<Tensor> inputs = read_tensors(info[0], "run inputs", arrays);
            inputs.insert(inputs.end(), constants->begin(), constants->end());
            return inputs;
        };
        Napi::Object prepared = Napi::Object::New(env);
        prepared.Set("run", Napi::Function::New(
                                env,
                                [inputs_of, device, fn](const Napi::CallbackInfo & info) -> Napi::Value {
                                    try {
                                        std::vector<Napi::Reference<Napi::Value>> arrays;
                                        std::vector<Tensor> inputs = inputs_of(info, "run(inputs: array)", arrays);
                                        return queue_op(info.Env(), fn, std::move(inputs), std::move(arrays), device);
                                    } catch (const std::exception & e) {
                                        return rejected(info.Env(), e);
                                    }
                                },
                                "run"));
        // The same on the calling thread, blocking it: what onnxruntime-node's
        // session.run does, so a benchmark can time both without fovea's
        // hand-off to a worker thread. Not for servers.
        prepared.Set("runSync", Napi::Function::New(
                                    env,
                                    [inputs_of, device, fn](const Napi::CallbackInfo & info) -> Napi::Value {
                                        try {
                                            std::vector<Napi::Reference<Napi::Value>> arrays;
                                            const std::vector<Tensor> inputs =
                                                inputs_of(info, "runSync(inputs: array)", arrays);
                                            return to_js(info.Env(), run_on_cpu(fn, inputs, device));
                                        } catch (const std::exception & e) {
                                            make_error(info.Env(), e).ThrowAsJavaScriptException();
                                            return info.Env().Undefined();
                                        }
                                    },
                                    "runSync"));
        return prepared;
    } catch (const std::exception & e) {
        make_error(env, e).ThrowAsJavaScriptException();
        return env.Undefined();
    }
}

}  // namespace

Napi::Object init_ops(Napi::Env env, Napi::Object exports) {
    exports.Set("runOp", Napi::Function::New(env, run_op, "runOp"));
    exports.Set("prepareOp", Napi::Function::New(env, prepare_op, "prepareOp"));
    return exports;
}

}  // namespace fovea::addon
