#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define FOVEA_X86 1
#endif

namespace fovea {

namespace {

#ifdef FOVEA_X86
// XCR0 tells whether the OS saves the wide registers across context switches.
unsigned long long read_xcr0() {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#ifdef FOVEA_X86
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    bool osxsave = (ecx >> 27) & 1;
    bool fma = (ecx >> 12) & 1;
    if (!osxsave) return f;
    unsigned long long xcr0 = read_xcr0();
    bool ymm_ok = (xcr0 & 0x6) == 0x6;
    bool zmm_ok = (xcr0 & 0xe6) == 0xe6;
    bool amx_ok = (xcr0 & 0x60000) == 0x60000;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
    f.fma = fma && ymm_ok;
    f.avx2 = ((ebx >> 5) & 1) && ymm_ok;
    f.avx512f = ((ebx >> 16) & 1) && zmm_ok;
    f.avx512dq = ((ebx >> 17) & 1) && zmm_ok;
    f.avx512bw = ((ebx >> 30) & 1) && zmm_ok;
    f.avx512vl = ((ebx >> 31) & 1) && zmm_ok;
    f.amx_bf16 = ((edx >> 22) & 1) && amx_ok;
    f.amx_tile = ((edx >> 24) & 1) && amx_ok;
    unsigned int eax1, ebx1, ecx1, edx1;
    if (__get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1)) f.avx512_bf16 = ((eax1 >> 5) & 1) && zmm_ok;
#endif
    return f;
}

CpuIsa best_isa(const CpuFeatures & f) {
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) return CpuIsa::Avx512;
    if (f.avx2 && f.fma) return CpuIsa::Avx2;
    return CpuIsa::Scalar;
}

CpuIsa initial_isa() {
    CpuIsa isa = best_isa(cpu_features());
    if (const char * env = std::getenv("FOVEA_CPU_ISA")) {
        CpuIsa wanted = isa;
        if (std::strcmp(env, "scalar") == 0) wanted = CpuIsa::Scalar;
        else if (std::strcmp(env, "avx2") == 0) wanted = CpuIsa::Avx2;
        else if (std::strcmp(env, "avx512") == 0) wanted = CpuIsa::Avx512;
        if (wanted < isa) isa = wanted;
    }
    return isa;
}

std::atomic<int> & isa_override() {
    static std::atomic<int> value{static_cast<int>(initial_isa())};
    return value;
}

}  // namespace

const CpuFeatures & cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

CpuIsa cpu_isa() { return static_cast<CpuIsa>(isa_override().load(std::memory_order_relaxed)); }

void set_cpu_isa(CpuIsa isa) {
    CpuIsa best = best_isa(cpu_features());
    isa_override().store(static_cast<int>(isa < best ? isa : best));
}

const char * cpu_isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::Scalar: return "scalar";
        case CpuIsa::Avx2: return "avx2";
        case CpuIsa::Avx512: return "avx512";
    }
    return "?";
}

std::string cpu_features_string() {
    const CpuFeatures & f = cpu_features();
    std::string s;
    auto add = [&](bool on, const char * name) {
        if (!on) return;
        if (!s.empty()) s += ' ';
        s += name;
    };
    add(f.avx2, "avx2");
    add(f.fma, "fma");
    add(f.avx512f, "avx512f");
    add(f.avx512bw, "avx512bw");
    add(f.avx512vl, "avx512vl");
    add(f.avx512dq, "avx512dq");
    add(f.avx512_bf16, "avx512_bf16");
    add(f.amx_tile, "amx_tile");
    add(f.amx_bf16, "amx_bf16");
    return s;
}

}  // namespace fovea
