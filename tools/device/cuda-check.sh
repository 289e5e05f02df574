#!/usr/bin/env bash
# CUDA check on the GPU machine (H100 / H200; nvcc, CMake, ninja and
# compute-sanitizer there, no Node): builds the standalone native test and
# bench executables with the CUDA backend for sm_90, runs the CUDA tests
# (every op against the CPU reference, fp32 and tf32; the models and the
# whole pipeline against the CPU backend and the golden reference, fp32),
# times Pipeline::run end to end on cuda and cpu, times the conv layers
# of the native bench on the GPU in both precisions, runs compute-sanitizer
# memcheck, racecheck and initcheck on the CUDA tests, the whole native
# suite, and last the PyTorch peer of the pipeline (bench/torch_peer.py).
# A summary and an archive of every log go to $OUT (the device tool's folder)
# or ./cuda-check-out.
#
#   bash tools/device/cuda-check.sh            # from the repository root
#
# Budget: about 6 minutes on 16 cores, never more than BUDGET (8.5 min); every step has its own timeout, and a
# failed step does not stop the later ones (the summary says which failed).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/cuda-check-out}
mkdir -p "$out"
build=build-device
jobs=${JOBS:-16}
summary="$out/summary.txt"
: >"$summary"
status=0

# The whole script stays within BUDGET seconds (default 510): each step's
# timeout is cut to what is left, and a step with under 20 s left is skipped.
budget=${BUDGET:-510}

# step NAME SECONDS COMMAND...: runs with a timeout, logs to $out/NAME.log,
# records ok / FAIL rc / SKIP in the summary.
step() {
    local name=$1 secs=$2
    shift 2
    local left=$((budget - SECONDS))
    if [ $left -lt 20 ]; then
        printf '%-22s SKIP (out of time)\n' "$name" | tee -a "$summary"
        status=1
        return 1
    fi
    [ $secs -gt $left ] && secs=$left
    printf '\n=== %s (limit %ss, %s)\n' "$name" "$secs" "$(date -u +%H:%M:%S)"
    local t0=$SECONDS
    timeout --kill-after=10 "$secs" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    if [ $rc -eq 0 ]; then
        printf '%-22s ok     %4ss\n' "$name" $((SECONDS - t0)) | tee -a "$summary"
    else
        [ $rc -eq 124 ] && echo "(timed out)"
        printf '%-22s FAIL %d %4ss\n' "$name" $rc $((SECONDS - t0)) | tee -a "$summary"
        status=1
    fi
    return $rc
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -n 2
    cmake --version 2>&1 | head -n 1
    git log -1 --format='commit %H %s' 2>/dev/null || true
    git status --short 2>/dev/null | head -n 40 || true
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
rm -rf "$build"
step configure 120 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DFOVEA_CUDA=ON \
    -DFOVEA_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$nvcc_path" || {
    cat "$summary"
    exit 1
}
step build 240 cmake --build "$build" -j "$jobs" --target fovea_tests fovea_bench || {
    cat "$summary"
    exit 1
}
# Resource report of the kernels (registers, shared memory, spills).
cuobjdump --dump-resource-usage "$build/fovea_tests" >"$out/resource-usage.txt" 2>&1 || true

# FOVEA_REQUIRE_CUDA turns "skipped: no CUDA device" into a failure here.
# The tests run every conv / gemm / linear case in fp32 and tf32 themselves.
export FOVEA_REQUIRE_CUDA=1
step cuda-tests 120 "$build/fovea_tests" cuda_
# segment()'s native pipeline end to end on a synthetic 640x480 image with the
# embedded SharpMask: ms per image on cuda (tf32, then fp32) and on the CPU.
step pipeline-bench 90 "$build/fovea_bench" --pipeline weights/sharpmask.safetensors --device cuda,cpu \
    --image 640x480 --repeats 5
step pipeline-fp32 45 "$build/fovea_bench" --pipeline weights/sharpmask.safetensors --device cuda \
    --precision fp32 --image 640x480 --repeats 5
# Conv layers of ResNet-50 / VGG-16 at 224 on the CUDA backend, both precisions.
step bench-tf32 90 "$build/fovea_bench" --device cuda --precision tf32 --size 224
step bench-fp32 90 "$build/fovea_bench" --device cuda --precision fp32 --size 224
# Sanitizers on the CUDA subset; --error-exitcode makes a finding fail the step.
# (No leak check: device contexts and their cached blocks live until exit by design.)
# The pipeline tests run their small golden cases only under the sanitizers.
export FOVEA_CUDA_PIPELINE_QUICK=1
step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$build/fovea_tests" cuda_
step racecheck 120 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 3 \
    "$build/fovea_tests" cuda_
step initcheck 120 compute-sanitizer --tool initcheck --error-exitcode 3 "$build/fovea_tests" cuda_
# The whole native suite (CPU tests and the model tests on their goldens).
unset FOVEA_CUDA_PIPELINE_QUICK
step all-tests 120 "$build/fovea_tests"
# The GPU peer: the same pipeline work in eager PyTorch with cuDNN (bench/torch_peer.py, the
# reference models of tools/reference) against fovea_bench --pipeline on the same image, per
# stage, both precisions, 640x480 and 1280x960; JSON in the archive.
for precision in tf32 fp32; do
    step "torch-peer-$precision" 75 "${PYTHON:-python3}" bench/torch_peer.py --device cuda --precision "$precision" \
        --image 640x480,1280x960 --repeats 7 --fovea-bench "$build/fovea_bench" --json "$out/torch-peer-$precision.json"
done

printf '\n=== summary\n'
cat "$summary"
# The device tool brings back at most 8 files from $OUT: the summary, and
# every log in one archive.
(cd "$out" && tar czf logs.tar.gz --exclude=summary.txt --exclude=logs.tar.gz -- * && find . -maxdepth 1 -type f \
    ! -name summary.txt ! -name logs.tar.gz -delete)
exit $status
