#include <cstdlib>

#include "core/device.h"
#include "core/error.h"
#include "core/ops.h"
#ifdef FOVEA_HAVE_CUDA
#include "cuda/api.h"
#endif

namespace fovea {

#ifdef FOVEA_HAVE_CUDA
CudaStatus cuda_probe();  // cuda/device.cu
#endif

namespace {

// Throws Error(Device) with the reason when CUDA device `index` is unusable.
void require_cuda(int index) {
    const CudaStatus & s = cuda_status();
    FOVEA_CHECK(s.available, ErrorCode::Device, "CUDA is not available: " << s.reason);
    FOVEA_CHECK(index >= 0 && index < int(s.devices.size()), ErrorCode::Device,
                "no CUDA device " << index << "; this machine has " << s.devices.size());
    const CudaDeviceInfo & d = s.devices[size_t(index)];
    FOVEA_CHECK(d.supported, ErrorCode::Device,
                "CUDA device " << index << " (" << d.name << ", compute " << d.compute_major << "." << d.compute_minor
                               << ") has no kernels in this build; rebuild with -DCMAKE_CUDA_ARCHITECTURES="
                               << d.compute_major << d.compute_minor);
}

}  // namespace

Tensor Backend::conv2d_residual(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                                const Tensor & residual, const Tensor & residual_scale) {
    Conv2dParams linear = p;
    linear.activation = Activation::None;
    Tensor skip = residual;
    if (residual_scale.defined()) {
        // scale * residual as a batch norm with mean 0, variance 1, epsilon 0.
        const Shape channels = residual_scale.shape();
        const Tensor zeros = to_device(Tensor::zeros(channels), device());
        skip = batch_norm(residual, residual_scale, zeros, zeros, to_device(Tensor::full(channels, 1.0f), device()),
                          0.0f);
    }
    return add(conv2d(x, w, bias, linear), skip, p.activation);
}

bool cuda_architectures_cover(const std::vector<std::string> & architectures, int major, int minor) {
    const int device = major * 10 + minor;
    for (const std::string & entry : architectures) {
        // "sm_" digits [a] [-real | -virtual]
        size_t i = entry.rfind("sm_", 0) == 0 ? 3 : 0;
        int arch = 0, digits = 0;
        while (i < entry.size() && entry[i] >= '0' && entry[i] <= '9' && digits < 4) {
            arch = arch * 10 + (entry[i++] - '0');
            digits++;
        }
        if (digits < 2) continue;
        const bool arch_specific = i < entry.size() && entry[i] == 'a';
        if (arch_specific) i++;
        const std::string suffix = entry.substr(i);
        const bool sass = suffix.empty() || suffix == "-real";
        const bool ptx = !arch_specific && (suffix.empty() || suffix == "-virtual");
        if (sass && (arch_specific ? device == arch : major == arch / 10 && minor >= arch % 10)) return true;
        if (ptx && device >= arch) return true;
    }
    return false;
}

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

Backend & cuda_backend(int index) {
    require_cuda(index);
#ifdef FOVEA_HAVE_CUDA
    return cuda::backend(index);
#else
    throw_error(ErrorCode::Internal, "CUDA reported available in a build without it");
#endif
}

Tensor to_device(const Tensor & t, Device device) {
    if (device.type == DeviceType::CPU) return to_host(t);
    require_cuda(device.index);
#ifdef FOVEA_HAVE_CUDA
    return cuda::to_device(t, device.index);
#else
    throw_error(ErrorCode::Internal, "CUDA reported available in a build without it");
#endif
}

Tensor to_host(const Tensor & t) {
    if (!t.defined() || t.device().type == DeviceType::CPU) return t;
    require_cuda(t.device().index);
#ifdef FOVEA_HAVE_CUDA
    return cuda::to_host(t);
#else
    throw_error(ErrorCode::Internal, "CUDA reported available in a build without it");
#endif
}

}  // namespace fovea
