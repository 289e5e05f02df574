#!/usr/bin/env bash
# Runs the CUDA backend's tests (native/test/test_cuda_ops.cc) on the CPU,
# with the kernels of native/cuda compiled as host code against the emulated
# runtime here (cuda_runtime.h, mma.h), under AddressSanitizer. For machines
# without a GPU: it checks kernel indexing, tile and fragment layouts, bounds
# and unwritten outputs, in fp32 and (emulated) tf32; timing, asynchrony and
# races need the real device (tools/device/cuda-check.sh).
#
#   bash tools/device/emu/run.sh [BUILD_DIR] [TEST_FILTER...]   # fovea_tests' filters, default cuda_
#
# BUILD_DIR (default build-cuda) must be a CUDA build (-DFOVEA_CUDA=ON) whose
# fovea_tests target is built: its core library and test objects are reused.
# The op tests take about a minute on two cores; the model and pipeline tests
# (test_pipeline.cc: cuda_models_*, cuda_pipeline_*) about 15 minutes, or
# fewer golden cases with FOVEA_CUDA_PIPELINE_QUICK=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
here="$root/tools/device/emu"
build=$(cd "${1:-$root/build-cuda}" && pwd)
filters=("${@:2}")
[ ${#filters[@]} -gt 0 ] || filters=(cuda_)
tests="$build/CMakeFiles/fovea_tests.dir/native/test"
# The CUDA op tests, and the models and pipeline on CUDA (test_pipeline.cc's
# cuda_* tests, which read the golden fixtures through fixtures.cc).
objs=("$tests/harness.cc.o" "$tests/test_cuda_ops.cc.o" "$tests/test_pipeline.cc.o" "$tests/fixtures.cc.o")
for f in "$build/libfovea_core.a" "${objs[@]}"; do
    [ -f "$f" ] || { echo "run.sh: $f missing: build fovea_tests in a -DFOVEA_CUDA=ON build first" >&2; exit 2; }
done
work="$build/cuda-emu"
rm -rf "$work"
mkdir -p "$work/src" "$work/obj"
for cu in "$root"/native/cuda/*.cu; do
    python3 "$here/launch_to_call.py" "$cu" "$work/src/$(basename "$cu" .cu).cc"
done
# -ffp-contract=off: the emulated __fmul_rn / __fadd_rn must not fuse.
# __CUDA_ARCH__=800 selects the tf32 (WMMA) code as on an Ampere/Hopper GPU.
flags=(-std=c++17 -O1 -g -fsanitize=address -fno-omit-frame-pointer -ffp-contract=off -w -I"$here"
       -I"$root/native" -D__CUDA_ARCH__=800 '-DFOVEA_CUDA_ARCHITECTURES="80"')
ls "$work"/src/*.cc | xargs -P "${JOBS:-2}" -I{} sh -c 'g++ "$@" -c {} -o "'"$work"'/obj/$(basename {} .cc).o"' _ "${flags[@]}"
ar rcs "$work/libfovea_cuda_emu.a" "$work"/obj/*.o
g++ -fsanitize=address -o "$work/fovea_tests_emu" "${objs[@]}" \
    -Wl,--start-group "$work/libfovea_cuda_emu.a" "$build/libfovea_core.a" -Wl,--end-group -lpthread
ASAN_OPTIONS=detect_leaks=0 "$work/fovea_tests_emu" "${filters[@]}"
