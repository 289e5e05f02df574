// What the CPU we run on can do, detected once at run time. Kernels pick
// their instruction set from here, so one binary runs on any x86-64 CPU.
#pragma once

#include <string>

namespace fovea {

enum class CpuIsa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
    bool avx512bw = false;
    bool avx512vl = false;
    bool avx512dq = false;
    bool avx512_bf16 = false;
    bool amx_tile = false;
    bool amx_bf16 = false;
};

const CpuFeatures & cpu_features();

// The instruction set kernels use: the best the CPU supports, lowered by
// FOVEA_CPU_ISA=scalar|avx2|avx512 (tests use it to cover every path).
CpuIsa cpu_isa();
const char * cpu_isa_name(CpuIsa isa);
// Override for tests and benchmarks; clamped to what the CPU supports.
void set_cpu_isa(CpuIsa isa);

// "avx2 fma avx512f ..." for `fovea info`.
std::string cpu_features_string();

}  // namespace fovea
