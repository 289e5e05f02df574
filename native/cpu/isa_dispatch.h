// Runtime instruction-set dispatch for the CPU kernels without per-file
// compiler flags (node-gyp cannot set them): a kernel is written once as a
// struct with a FOVEA_ALWAYS_INLINE static `run`, and run_isa<Kernel>(isa, ...)
// calls a copy of it that GCC/Clang inlined into a function carrying the
// AVX-512 or AVX2+FMA target attribute, where the auto-vectoriser uses that
// instruction set. Helpers called from a kernel must be FOVEA_ALWAYS_INLINE
// too, or they would be emitted once for the baseline ISA and break the loop.
#pragma once

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/tensor.h"

#define FOVEA_ALWAYS_INLINE inline __attribute__((always_inline))

namespace fovea::cpu {

template <class Kernel, class... Args>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void run_avx512(Args... args) {
    Kernel::run(args...);
}

template <class Kernel, class... Args> __attribute__((target("avx2,fma"))) void run_avx2(Args... args) {
    Kernel::run(args...);
}

template <class Kernel, class... Args> void run_scalar(Args... args) { Kernel::run(args...); }

// Read cpu_isa() once per op, before parallel_for, so every chunk of one call
// uses the same code path even if a test changes the ISA concurrently.
template <class Kernel, class... Args> void run_isa(CpuIsa isa, Args... args) {
    switch (isa) {
        case CpuIsa::Avx512: run_avx512<Kernel>(args...); return;
        case CpuIsa::Avx2: run_avx2<Kernel>(args...); return;
        case CpuIsa::Scalar: break;
    }
    run_scalar<Kernel>(args...);
}

// CPU kernels dereference tensor memory: a device tensor must fail cleanly.
inline void check_host(const Tensor & t, const char * op) {
    FOVEA_CHECK_INPUT(!t.defined() || t.device().type == DeviceType::CPU,
                      op << ": tensor on " << t.device().str() << " passed to the CPU backend");
}

}  // namespace fovea::cpu
