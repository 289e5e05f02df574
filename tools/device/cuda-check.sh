#!/usr/bin/env bash
# CUDA check on the GPU machine (H100 / H200; nvcc, CMake, ninja, PyTorch and
# compute-sanitizer there, no Node): builds the standalone native test and
# bench executables with the CUDA backend for sm_90, runs the CUDA tests
# (every op against the CPU reference, fp32 and tf32; the models and the
# whole pipeline against the CPU backend and the golden reference, fp32),
# segment() through the addon on cuda against cpu on four photos (with a
# carried node binary), the PyTorch peer of the pipeline side by side with
# fovea_bench --pipeline (bench/torch_peer.py; the released-size models and
# the embedded one), compute-sanitizer memcheck, racecheck and initcheck on
# the CUDA tests, and the conv layers of the native bench in both precisions.
# A summary and an archive of every log go to $OUT (the device tool's folder)
# or ./cuda-check-out.
#
#   bash tools/device/cuda-check.sh --prepare-e2e   # here, before the call: packs .device/
#   run(command="bash tools/device/cuda-check.sh", carry=[".device", "dist"], timeout_s=540)
#
# --prepare-e2e builds the addon with CUDA for sm_90 (build-addon-cuda/), compiles
# the TypeScript (dist/) and packs node, that addon and the runtime packages of
# dist/ into .device/e2e.tar.xz (about 34 MB), with four photos in .device/photos
# (the three held-out photos of the model card's overlays and dog.jpg). Add
# /.device/ to .git/info/exclude so that only `carry` takes it along.
#
# Budget: never more than BUDGET seconds (default 480); every step has its own timeout,
# later steps are skipped when the time is spent, and a failed step does not stop the
# later ones (the summary says which failed or were skipped). Steps run in order of value.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--prepare-base" ]; then
    # Sources of earlier commits for a same-run A/B of the native code (below).
    shift
    mkdir -p .device
    rm -f .device/base-*.tar
    for commit in "$@"; do
        git archive --format=tar -o ".device/base-$(git rev-parse --short "$commit").tar" "$commit" CMakeLists.txt native
    done
    ls -la .device/base-*.tar
    exit 0
fi

if [ "${1:-}" = "--prepare-e2e" ]; then
    set -e
    shared=${FOVEA_SHARED:-../shared}/fixtures/datasets
    npx cmake-js compile -O build-addon-cuda --CDFOVEA_CUDA=ON --CDCMAKE_CUDA_ARCHITECTURES=90
    npm run build:ts
    rm -rf .device/photos .device/e2e.tar.xz
    mkdir -p .device/photos .device/pkg/node_modules
    cp "$shared/coco-mini/val2017/000000000139.jpg" .device/photos/coco-mini_139.jpg
    cp "$shared/coco128-seg/images/train2017/000000000564.jpg" .device/photos/coco128_564.jpg
    cp "$shared/nuts/data/images/8.jpg" .device/photos/nuts_8.jpg
    cp test/fixtures/photos/dog.jpg .device/photos/
    # dist/ needs these at run time (sharp and its libvips, the addon loader, the ONNX protobuf).
    for m in sharp @img detect-libc semver node-gyp-build onnx-proto protobufjs @protobufjs long; do
        cp -r "node_modules/$m" .device/pkg/node_modules/
    done
    cp build-addon-cuda/Release/fovea.node "$(command -v node)" .device/pkg/
    tar cf - -C .device/pkg . | xz -T0 -6 >.device/e2e.tar.xz
    rm -rf .device/pkg
    du -sh .device
    exit 0
fi
out=${OUT:-$PWD/cuda-check-out}
mkdir -p "$out"
build=build-device
jobs=${JOBS:-16}
summary="$out/summary.txt"
: >"$summary"
status=0

# The whole script stays within BUDGET seconds: each step's timeout is cut to
# what is left, and a step with under 20 s left is skipped.
budget=${BUDGET:-480}

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
# build_tree NAME SOURCE_DIR BUILD_DIR: the CUDA test and bench executables for sm_90.
build_tree() {
    rm -rf "$3"
    step "$1-configure" 120 cmake -S "$2" -B "$3" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DFOVEA_CUDA=ON \
        -DFOVEA_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$nvcc_path" &&
        step "$1-build" 240 cmake --build "$3" -j "$jobs" --target fovea_tests fovea_bench
}
build_tree this . "$build" || {
    cat "$summary"
    exit 1
}
# Resource report of the kernels (registers, shared memory, spills).
cuobjdump --dump-resource-usage "$build/fovea_tests" >"$out/resource-usage.txt" 2>&1 || true

# FOVEA_REQUIRE_CUDA turns "skipped: no CUDA device" into a failure here.
# The tests run every conv / gemm / linear case in fp32 and tf32 themselves.
export FOVEA_REQUIRE_CUDA=1
step cuda-tests 100 "$build/fovea_tests" cuda_
# The released-size models (SharpMask ResNet-50, MultiPathNet ResNet-18; random weights) for
# the side-by-side timings: the embedded model is too light to load a GPU.
full=/tmp/full
step full-models 60 "${PYTHON:-python3}" tools/reference/make_golden.py --full --only sharpmask-resnet50 \
    multipathnet-resnet18 --out "$full" --no-check
# Same-run A/B of the native code against earlier commits packed by --prepare-base: each is
# built and its CUDA op tests run; then the released-size pipeline (tf32) and the conv layers
# at 224 alternate between the builds, two rounds.
benches=("$build/fovea_bench")
for tarball in .device/base-*.tar; do
    [ -f "$tarball" ] || continue
    name=$(basename "$tarball" .tar)
    rm -rf "/tmp/$name" && mkdir -p "/tmp/$name" && tar xf "$tarball" -C "/tmp/$name"
    build_tree "$name" "/tmp/$name" "/tmp/$name/build" &&
        step "$name-op-tests" 60 "/tmp/$name/build/fovea_tests" cuda_ -cuda_models -cuda_pipeline &&
        benches+=("/tmp/$name/build/fovea_bench")
done
if [ ${#benches[@]} -gt 1 ]; then
    step ab-pipeline-layers 120 bash -c 'full=$1; shift
        for round in 1 2; do
            for exe in "$@"; do
                for image in 640x480 1280x960; do
                    echo "=== round $round: $exe $image"
                    "$exe" --pipeline "$full/sharpmask-resnet50.safetensors" --classifier \
                        "$full/multipathnet-resnet18.safetensors" --device cuda --precision tf32 --image $image --repeats 7
                done
                echo "=== round $round: $exe conv layers at 224, tf32"
                "$exe" --device cuda --precision tf32 --size 224 | tail -n 3
            done
        done' _ "$full" "${benches[@]}"
fi
# segment() through the addon, cuda against cpu, on photos: needs what --prepare-e2e
# packs here (node, the addon built with CUDA for sm_90, sharp) and the carried dist/.
if [ -f .device/e2e.tar.xz ] && [ -f dist/index.js ]; then
    step e2e-unpack 60 python3 -c 'import tarfile; tarfile.open(".device/e2e.tar.xz").extractall("/tmp/e2e")' &&
        mkdir -p build/Release && cp /tmp/e2e/fovea.node build/Release/fovea.node
    for precision in tf32 fp32; do
        step "addon-e2e-$precision" 60 env FOVEA_CUDA_PRECISION=$precision NODE_PATH=/tmp/e2e/node_modules \
            /tmp/e2e/node tools/device/addon-e2e.js --photos .device/photos --json "$out/addon-e2e-$precision.json"
    done
else
    printf '%-22s SKIP (no .device/e2e.tar.xz or dist/: run --prepare-e2e here first)\n' addon-e2e | tee -a "$summary"
fi
# The GPU peer: the same pipeline work in eager PyTorch with cuDNN (bench/torch_peer.py, the
# reference models of tools/reference) against fovea_bench --pipeline on the same image, per
# stage, 640x480 and 1280x960; JSON in the archive.
peer() {
    local name=$1 precision=$2
    shift 2
    step "$name" 90 "${PYTHON:-python3}" bench/torch_peer.py --device cuda --precision "$precision" \
        --image 640x480,1280x960 --repeats 7 --fovea-bench "$build/fovea_bench" --json "$out/$name.json" "$@"
}
peer torch-peer-full-tf32 tf32 --model "$full/sharpmask-resnet50.safetensors" \
    --classifier "$full/multipathnet-resnet18.safetensors"
peer torch-peer-tf32 tf32
# Sanitizers on the CUDA subset; --error-exitcode makes a finding fail the step.
# (No leak check: device contexts and their cached blocks live until exit by design.)
# The pipeline tests run their small golden cases only under the sanitizers.
export FOVEA_CUDA_PIPELINE_QUICK=1
# The out-of-memory test is left out of memcheck: its failed cudaMalloc calls are
# intended and memcheck reports them. racecheck takes the op tests only: the models
# run the same kernels, 100 times slower under it.
step memcheck 75 compute-sanitizer --tool memcheck --error-exitcode 3 "$build/fovea_tests" cuda_ -cuda_out_of_memory
step racecheck 75 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 3 \
    "$build/fovea_tests" cuda_ -cuda_models -cuda_pipeline
unset FOVEA_CUDA_PIPELINE_QUICK
peer torch-peer-full-fp32 fp32 --model "$full/sharpmask-resnet50.safetensors" \
    --classifier "$full/multipathnet-resnet18.safetensors"
# Conv layers of ResNet-50 / VGG-16 at 224 on the CUDA backend, both precisions.
step bench-tf32 60 "$build/fovea_bench" --device cuda --precision tf32 --size 224
step bench-fp32 60 "$build/fovea_bench" --device cuda --precision fp32 --size 224
# Every other op family: ms, GB/s and the share of the DRAM peak.
step ops-cuda 60 "$build/fovea_bench" --ops --device cuda
# Where the GPU time of a released-size run goes, kernel by kernel (nsys where installed, else
# ncu on the first 600 kernels of one run).
profile_args=("$build/fovea_bench" --pipeline "$full/sharpmask-resnet50.safetensors" --classifier
    "$full/multipathnet-resnet18.safetensors" --device cuda --image 640x480 --repeats 1)
if command -v nsys >/dev/null; then
    step profile 90 nsys profile --stats=true --force-overwrite true -o /tmp/fovea-profile "${profile_args[@]}"
else
    step profile 90 ncu --metrics gpu__time_duration.sum --print-summary per-kernel --launch-count 600 "${profile_args[@]}"
fi
FOVEA_CUDA_PIPELINE_QUICK=1 step initcheck 75 compute-sanitizer --tool initcheck --error-exitcode 3 \
    "$build/fovea_tests" cuda_

printf '\n=== summary\n'
cat "$summary"
# The device tool brings back at most 8 files from $OUT: the summary, and
# every log in one archive.
(cd "$out" && tar czf logs.tar.gz --exclude=summary.txt --exclude=logs.tar.gz -- * && find . -maxdepth 1 -type f \
    ! -name summary.txt ! -name logs.tar.gz -delete)
exit $status
