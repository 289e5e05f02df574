// Probe of the CUDA driver and devices. cudart is linked statically and loads
// libcuda itself, so a machine without a driver gets a status, not a crash.
#include <cuda_runtime.h>

#include <string>

#include "core/device.h"

namespace fovea {

namespace {

std::string cuda_error_text(cudaError_t err) {
    return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

}  // namespace

CudaStatus cuda_probe() {
    CudaStatus s;
    s.compiled = true;
#ifdef FOVEA_CUDA_ARCHITECTURES
    {
        std::string archs = FOVEA_CUDA_ARCHITECTURES;
        size_t start = 0;
        while (start < archs.size()) {
            size_t end = archs.find(',', start);
            if (end == std::string::npos) end = archs.size();
            if (end > start) s.architectures.push_back("sm_" + archs.substr(start, end - start));
            start = end + 1;
        }
    }
#endif
    cudaRuntimeGetVersion(&s.runtime_version);
    cudaError_t err = cudaDriverGetVersion(&s.driver_version);
    if (err != cudaSuccess || s.driver_version == 0) {
        s.reason = "no CUDA driver found (libcuda.so is not installed or not loadable)";
        return s;
    }
    if (s.driver_version < s.runtime_version) {
        s.reason = "the CUDA driver supports CUDA " + std::to_string(s.driver_version / 1000) + "." +
                   std::to_string(s.driver_version % 1000 / 10) + " but fovea was built with CUDA " +
                   std::to_string(s.runtime_version / 1000) + "." + std::to_string(s.runtime_version % 1000 / 10) +
                   "; update the NVIDIA driver";
        return s;
    }
    int count = 0;
    err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        s.reason = "cudaGetDeviceCount failed (" + cuda_error_text(err) + ")";
        cudaGetLastError();  // clear the sticky error state
        return s;
    }
    if (count == 0) {
        s.reason = "the CUDA driver reports no devices";
        return s;
    }
    for (int i = 0; i < count; i++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        CudaDeviceInfo info;
        info.index = i;
        info.name = prop.name;
        info.compute_major = prop.major;
        info.compute_minor = prop.minor;
        info.total_memory = prop.totalGlobalMem;
        info.multiprocessors = prop.multiProcessorCount;
        info.supported = cuda_architectures_cover(s.architectures, prop.major, prop.minor);
        s.devices.push_back(info);
    }
    for (const CudaDeviceInfo & d : s.devices) s.available = s.available || d.supported;
    if (s.devices.empty()) {
        s.reason = "no CUDA device could be queried";
    } else if (!s.available) {
        // A GPU older (or of another family) than every architecture compiled in:
        // its kernels would fail at the first launch.
        s.reason = "this build has no kernels for";
        for (const CudaDeviceInfo & d : s.devices) {
            s.reason += " " + d.name + " (compute " + std::to_string(d.compute_major) + "." +
                        std::to_string(d.compute_minor) + ")";
        }
        s.reason += "; rebuild with -DCMAKE_CUDA_ARCHITECTURES set for it";
    }
    return s;
}

}  // namespace fovea
