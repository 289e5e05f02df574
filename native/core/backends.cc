#include <cstdlib>

#include "core/device.h"
#include "core/error.h"

namespace fovea {

#ifdef FOVEA_HAVE_CUDA
CudaStatus cuda_probe();  // cuda/device.cu
#endif

const CudaStatus & cuda_status() {
    static const CudaStatus status = [] {
#ifdef FOVEA_HAVE_CUDA
        return cuda_probe();
#else
        CudaStatus s;
        s.reason = "this build of fovea has no CUDA backend (built without nvcc or with FOVEA_CUDA=OFF)";
        return s;
#endif
    }();
    return status;
}

std::vector<std::string> compiled_backends() {
    std::vector<std::string> names{"cpu"};
#ifdef FOVEA_HAVE_CUDA
    names.push_back("cuda");
#endif
    return names;
}

Device parse_device(const std::string & spec) {
    if (spec == "cpu") return Device{DeviceType::CPU, 0};
    if (spec == "cuda") return Device{DeviceType::CUDA, 0};
    if (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 && spec.size() <= 8) {
        char * end = nullptr;
        long index = std::strtol(spec.c_str() + 5, &end, 10);
        if (*end == '\0' && index >= 0) return Device{DeviceType::CUDA, static_cast<int>(index)};
    }
    throw_error(ErrorCode::Options, "device must be 'cpu', 'cuda' or 'cuda:N', got '" + spec + "'");
}

}  // namespace fovea
