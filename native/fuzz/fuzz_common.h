// Shared by the libFuzzer targets (built with -DFOVEA_FUZZ=ON, clang only).
// Expected outcome for any input: success or fovea::Error with a code other
// than Internal. Anything else (a crash, a sanitizer report, another
// exception, Error(Internal), an allocation past -malloc_limit_mb) is a bug.
#pragma once

#include <cstdlib>
#include <cstdio>

#include "core/error.h"

namespace fovea::fuzz {

// Error(Internal) means "a bug in fovea": make it a finding.
inline void check_error(const Error & e) {
    if (e.code() == ErrorCode::Internal) {
        std::fprintf(stderr, "fuzz: Error(Internal): %s\n", e.what());
        std::abort();
    }
}

// No caching in the CPU allocator, so ASan sees every tensor's lifetime.
inline void init_env() { setenv("FOVEA_CPU_CACHE_MB", "0", 1); }

}  // namespace fovea::fuzz
