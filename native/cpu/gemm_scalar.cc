// Portable instantiation of the GEMM micro-kernel: one float per "vector".
// The reference path for CPUs without AVX2 and for checking the others.
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/gemm_kernels.h"

namespace fovea::cpu::packed {
namespace {

struct Scalar {
    using V = float;
    static constexpr int W = 1;
    static V zero() { return 0.0f; }
    static V load(const float * p) { return *p; }
    static V loadu(const float * p) { return *p; }
    static void storeu(float * p, V v) { *p = v; }
    static V set1(float x) { return x; }
    static V fma(V a, V b, V c) { return a * b + c; }
    static V add(V a, V b) { return a + b; }
    static V mul(V a, V b) { return a * b; }
    static V max(V a, V b) { return a > b ? a : b; }
    static V loadn(const float * p, int) { return *p; }
    static void storen(float * p, V v, int) { *p = v; }
    static V even(V a, V) { return a; }
    static void transpose(V (&)[W]) {}
    static V load_window(const float * p, int64_t lo, int64_t hi) { return lo <= 0 && hi > 0 ? *p : 0.0f; }
};

}  // namespace
}  // namespace fovea::cpu::packed

#include "cpu/gemm_microkernel.h"

namespace fovea::cpu::packed {

const Kernel & kernel_scalar() {
    static const Kernel k = make_kernel<Scalar, 4, 4>(CpuIsa::Scalar, 256, 256);
    return k;
}

}  // namespace fovea::cpu::packed
