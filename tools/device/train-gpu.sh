#!/usr/bin/env bash
# GPU continuation of the default model's training (issue 7) on the device machine, which
# has PyTorch and Pillow but no Node and no ../shared. Two steps:
#
# 1. Here, once before the call: copy the train split of the fixture data sets and the
#    DeepMask checkpoint to continue into two git-ignored folders that the call carries
#    (about 36 MB with the 13.8 MB of tracked files: under the 64 MiB a call takes):
#      bash tools/device/train-gpu.sh --prepare [RUN_DIR]   # default RUN_DIR tools/train/runs/light
# 2. The call (device tool), with a limit that leaves room for the rest of the session:
#      run(command="bash tools/device/train-gpu.sh",
#          carry=["tools/train/runs/datasets", "tools/train/runs/gpu"], timeout_s=540)
#
# There it decodes the JPEGs with Pillow (tools/train/decode_images.py), continues DeepMask
# for DM_MINUTES (default 5) with --device cuda and WORKERS (12) sampling processes,
# retrains the SharpMask refinement on the new DeepMask for SM_MINUTES (2), exports the
# proposal model as F16 safetensors and brings back under $OUT (at most 8 files of 16 MiB):
# (DEVICE=cpu WORKERS=2 THREADS=1 DM_MINUTES=0.5 SM_MINUTES=0.3 OUT=/tmp/x: a dry run here)
# both checkpoints, the exported file, the run logs, the new RUNS.md rows and the machine.
# Back here: copy the checkpoints into tools/train/runs/gpu, append the rows to RUNS.md, and
# evaluate (tools/train/README.md, "Reproduce the shipped weights") before shipping.
set -euo pipefail
cd "$(dirname "$0")/../.."
data_dir=tools/train/runs/datasets
run=tools/train/runs/gpu

if [ "${1:-}" = "--prepare" ]; then
    from=${2:-tools/train/runs/light}
    src=${FOVEA_DATASETS:-../shared/fixtures/datasets}
    [ -f "$from/deepmask.pt" ] || { echo "no $from/deepmask.pt to continue" >&2; exit 1; }
    rm -rf "$data_dir" "$run"
    mkdir -p "$data_dir/splits" "$run"
    cp "$from/deepmask.pt" "$run/"
    # The train split only: its image lists, their images and annotations.
    for list in "$src"/splits/*_train.txt; do
        set_name=$(basename "$list" _train.txt)
        cp "$list" "$data_dir/splits/"
        while read -r f; do
            [ -n "$f" ] || continue
            mkdir -p "$data_dir/$set_name/$(dirname "$f")"
            cp "$src/$set_name/$f" "$data_dir/$set_name/$f"
            if [ "$set_name" = coco128-seg ]; then
                label="${f/images\//labels/}"
                label="${label%.*}.txt"
                if [ -f "$src/$set_name/$label" ]; then
                    mkdir -p "$data_dir/$set_name/$(dirname "$label")"
                    cp "$src/$set_name/$label" "$data_dir/$set_name/$label"
                fi
            fi
        done <"$list"
    done
    mkdir -p "$data_dir/coco-mini/annotations" "$data_dir/nuts/data"
    cp "$src/coco-mini/annotations/instances_train2017.json" "$data_dir/coco-mini/annotations/"
    cp "$src/nuts/data/trainval.json" "$data_dir/nuts/data/"
    du -sh "$data_dir" "$run"
    exit 0
fi

out=${OUT:-$PWD/train-gpu-out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export FOVEA_DATASETS=$PWD/$data_dir FOVEA_IMAGE_CACHE=/tmp/fovea-image-cache
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    git log -1 --format='commit %H %s' 2>/dev/null || true
} | tee "$out/machine.txt"
rows_before=$(wc -l <tools/train/RUNS.md)
"$py" tools/train/decode_images.py --part train
common=(--run "$run" --device "${DEVICE:-cuda}" --workers "${WORKERS:-12}" --threads "${THREADS:-4}" --ckpt-minutes 2)
"$py" tools/train/train.py deepmask "${common[@]}" --minutes "${DM_MINUTES:-5}" --note "GPU continuation" \
    2>&1 | tee "$out/deepmask.stdout" | grep -v '^\[deepmask\] {' || true
# The refinement learns on the frozen DeepMask: a new trunk needs a new refinement.
rm -f "$run/sharpmask.pt" "$run/sharpmask.pt.prev"
"$py" tools/train/train.py sharpmask "${common[@]}" --minutes "${SM_MINUTES:-2}" --note "on the GPU-continued DeepMask" \
    2>&1 | tee "$out/sharpmask.stdout" | grep -v '^\[sharpmask\] {' || true
"$py" tools/train/export_weights.py --run "$run" --what sharpmask --out "$out"
tail -n +"$((rows_before + 1))" tools/train/RUNS.md >"$out/RUNS-new-rows.md"
cp "$run/deepmask.pt" "$run/sharpmask.pt" "$out/"
tar czf "$out/logs.tar.gz" -C "$run" deepmask.log.jsonl sharpmask.log.jsonl -C "$out" deepmask.stdout sharpmask.stdout
rm -f "$out/deepmask.stdout" "$out/sharpmask.stdout"
ls -la "$out"
