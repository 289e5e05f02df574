#!/usr/bin/env python3
"""Does fovea's C++ pipeline reproduce PyTorch on a trained classifier file? (one-off check)

    python3 tools/train/check_cpp_classifier.py --classifier tools/train/runs/light/export/multipathnet.safetensors

Runs the same raw RGB pixels (held-out photos from the .npy cache, so both sides see identical
input; no JPEG decoder involved) through ``segment()`` of the built package (dist/, the C++
pipeline, via node) and through tools/reference/pipeline.py (the independent PyTorch
implementation of the pipeline contract that the golden tests use), instances mode with the
shipped SharpMask and the given classifier, score threshold 0.05, and compares the instances:
same (label, proposal objectness), scores within 1e-4, boxes within 0.05 px.
The committed, CI-run version of this check is the pipeline golden
(tools/reference/make_pipeline_golden.py), which needs the classifier in weights/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))

NODE = r"""
const { createSegmenter } = require(process.argv[1] + '/dist/index.js');
const fs = require('fs');
(async () => {
  const jobs = JSON.parse(fs.readFileSync(0, 'utf8'));
  const seg = await createSegmenter({ model: jobs.model, classifier: jobs.classifier, device: 'cpu' });
  const out = [];
  for (const j of jobs.images) {
    const data = new Uint8Array(fs.readFileSync(j.raw));
    const r = await seg.segment({ data, width: j.width, height: j.height, channels: 3 }, jobs.options);
    out.push(r.instances.map((i) => ({ label: i.label, score: i.score, objectness: i.objectness, box: i.box })));
  }
  await seg.close();
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--model", default=os.path.join(REPO, "weights", "sharpmask.safetensors"))
    ap.add_argument("--images", nargs="*", default=[
        "coco-mini/val2017/000000000139.npy", "coco-mini/val2017/000000565607.npy",
        "coco-mini/val2017/000000000802.npy"])
    ap.add_argument("--score-threshold", type=float, default=0.05)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import pipeline
    cache = os.path.join(HERE, "runs", "cache")
    tmp = os.path.join(HERE, "runs", "eval", "mpn", "cpp-check")
    os.makedirs(tmp, exist_ok=True)
    opts = dict(mode="instances", score_threshold=a.score_threshold)
    jobs = dict(model=os.path.abspath(a.model), classifier=os.path.abspath(a.classifier),
                options=dict(mode="instances", scoreThreshold=a.score_threshold), images=[])
    rgbs = []
    for i, rel in enumerate(a.images):
        rgb = np.ascontiguousarray(np.load(os.path.join(cache, rel)))
        raw = os.path.join(tmp, f"{i}.rgb")
        rgb.tofile(raw)
        rgbs.append(rgb)
        jobs["images"].append(dict(raw=raw, width=int(rgb.shape[1]), height=int(rgb.shape[0])))
    r = subprocess.run(["node", "-e", NODE, REPO], input=json.dumps(jobs), capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        sys.stderr.write(r.stderr)
        return 1
    cpp = json.loads(r.stdout)
    pm, pc, cm, cc = pipeline.load_models(a.model, a.classifier)
    worst = dict(score=0.0, box=0.0, objectness=0.0)
    bad = 0
    for rel, rgb, ci in zip(a.images, rgbs, cpp):
        py = pipeline.run_pipeline(rgb, pm, pc, cm, cc, opts)["instances"]
        ok = len(py) == len(ci)
        for p, c in zip(py, ci):
            ok &= p["label"] == c["label"]
            worst["score"] = max(worst["score"], abs(p["score"] - c["score"]))
            worst["objectness"] = max(worst["objectness"], abs(p["objectness"] - c["objectness"]))
            worst["box"] = max(worst["box"], max(abs(x - y) for x, y in zip(p["box"], c["box"])))
        bad += not ok
        print(f"{rel}: PyTorch {len(py)} instances, C++ {len(ci)}; labels "
              f"{'equal' if ok else 'DIFFER'}; top: {[(c['label'], round(c['score'], 3)) for c in ci[:4]]}")
    print("max |diff|:", {k: float(f"{v:.3g}") for k, v in worst.items()})
    good = not bad and worst["score"] < 1e-4 and worst["objectness"] < 1e-4 and worst["box"] < 0.05
    print("C++ reproduces PyTorch" if good else "MISMATCH")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
