// info(): what this binary can do, for `fovea info` and bug reports.
#include "addon/addon.h"
#include "core/allocator.h"
#include "core/cpu_features.h"
#include "core/device.h"
#include "core/thread_pool.h"
#ifdef FOVEA_HAVE_CUDA
#include "cuda/api.h"
#endif

namespace fovea::addon {

static Napi::Value info(const Napi::CallbackInfo & args) {
    Napi::Env env = args.Env();
    Napi::Object out = Napi::Object::New(env);
    Napi::Array backends = Napi::Array::New(env);
    for (const auto & name : compiled_backends()) backends.Set(backends.Length(), name);
    out.Set("backends", backends);
    out.Set("cpuFeatures", cpu_features_string());
    out.Set("cpuIsa", cpu_isa_name(cpu_isa()));
    out.Set("threads", default_thread_pool().size());
    out.Set("napiVersion", NAPI_VERSION);

    const CudaStatus & cs = cuda_status();
    Napi::Object cuda = Napi::Object::New(env);
    cuda.Set("compiled", cs.compiled);
    cuda.Set("available", cs.available);
    cuda.Set("reason", cs.reason);
    cuda.Set("driverVersion", cs.driver_version);
    cuda.Set("runtimeVersion", cs.runtime_version);
    Napi::Array archs = Napi::Array::New(env);
    for (const auto & a : cs.architectures) archs.Set(archs.Length(), a);
    cuda.Set("architectures", archs);
    Napi::Array devices = Napi::Array::New(env);
    for (const auto & d : cs.devices) {
        Napi::Object dev = Napi::Object::New(env);
        dev.Set("index", d.index);
        dev.Set("name", d.name);
        dev.Set("computeCapability", std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor));
        dev.Set("totalMemory", static_cast<double>(d.total_memory));
        dev.Set("multiprocessors", d.multiprocessors);
        dev.Set("supported", d.supported);
        devices.Set(devices.Length(), dev);
    }
    cuda.Set("devices", devices);
    out.Set("cuda", cuda);
    return out;
}

// The host allocator's counters, and each CUDA device's in use: tests check
// that every tensor of a finished, failed or aborted run, and a closed
// Segmenter's weights, were released (bytesInUse back to its level).
static Napi::Value memory_stats(const Napi::CallbackInfo & args) {
    const AllocatorStats s = cpu_allocator().stats();
    Napi::Object out = Napi::Object::New(args.Env());
    out.Set("bytesInUse", double(s.bytes_in_use));
    out.Set("bytesCached", double(s.bytes_cached));
    out.Set("peakBytesInUse", double(s.peak_bytes_in_use));
    out.Set("allocations", double(s.allocations));
    Napi::Array cuda = Napi::Array::New(args.Env());
#ifdef FOVEA_HAVE_CUDA
    for (const auto & [device, d] : cuda::allocator_stats()) {
        Napi::Object o = Napi::Object::New(args.Env());
        o.Set("device", device);
        o.Set("bytesInUse", double(d.bytes_in_use));
        o.Set("bytesCached", double(d.bytes_cached));
        o.Set("peakBytesInUse", double(d.peak_bytes_in_use));
        o.Set("deviceMallocs", double(d.device_mallocs));
        cuda.Set(cuda.Length(), o);
    }
#endif
    out.Set("cuda", cuda);
    return out;
}

Napi::Object init_info(Napi::Env env, Napi::Object exports) {
    exports.Set("info", Napi::Function::New(env, info, "info"));
    exports.Set("memoryStats", Napi::Function::New(env, memory_stats, "memoryStats"));
    return exports;
}

}  // namespace fovea::addon
