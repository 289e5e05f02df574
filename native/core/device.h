// Which backends this build has and which devices they can use.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/ops.h"

namespace fovea {

struct CudaDeviceInfo {
    int index = 0;
    std::string name;
    int compute_major = 0, compute_minor = 0;
    size_t total_memory = 0;
    int multiprocessors = 0;
    bool supported = true;  // this build has kernels that run on it (cuda_architectures_cover)
};

struct CudaStatus {
    bool compiled = false;       // CUDA backend compiled into this binary
    bool available = false;      // compiled, driver usable and at least one device
    std::string reason;          // why not available
    int driver_version = 0;      // e.g. 13000; 0 when no driver
    int runtime_version = 0;     // cudart linked in
    std::vector<std::string> architectures;  // sm_XX the kernels were built for
    std::vector<CudaDeviceInfo> devices;
};

// Whether kernels built for `architectures` (CudaStatus's "sm_80-real",
// "sm_90", "sm_90-virtual", "sm_90a") run on a device of compute capability
// major.minor: machine code for sm_XY runs on X.Z with Z >= Y ("-real" or no
// suffix; "a" variants on X.Y only), PTX for compute_XY is compiled by the
// driver for X.Y and newer ("-virtual" or no suffix).
bool cuda_architectures_cover(const std::vector<std::string> & architectures, int major, int minor);

// Probed once and cached; never throws (a missing driver is a status, not an error).
const CudaStatus & cuda_status();

// Backends compiled into this build, e.g. {"cpu", "cuda"}.
std::vector<std::string> compiled_backends();

// Parses "cpu", "cuda", "cuda:N"; throws Error(Options) on anything else.
Device parse_device(const std::string & spec);

// Copies a tensor to a device (any dtype). A CUDA upload is enqueued on the
// device's stream through pinned staging and returns without waiting; the
// tensor is returned as is when already there. Throws Error(Device) when the
// device is unavailable.
Tensor to_device(const Tensor & t, Device device);
// A host copy of a device tensor, after every op enqueued before on its
// device; a host tensor is returned as is.
Tensor to_host(const Tensor & t);

}  // namespace fovea
