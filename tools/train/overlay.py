#!/usr/bin/env python3
"""Overlay pictures of proposals on held-out photos (for weights/MODEL_CARD.md).

    python3 tools/train/overlay.py --weights weights/sharpmask.safetensors --out weights/overlays

Runs the same inference as eval_proposals.py (top-100, SharpMask head), keeps the best
``--show`` proposals after a greedy mask-IoU 0.5 suppression (display only; the released
pipeline has no NMS), paints them (alpha 0.45, 1 px outline) and encodes JPEGs with node+sharp.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "reference")))

import data  # noqa: E402
from eval_proposals import proposals_model  # noqa: E402

PICKS = ["coco-mini/val2017/000000000139.jpg", "coco128-seg/images/train2017/000000000564.jpg",
         "nuts/data/images/8.jpg"]
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], np.float32)


def main(argv=None):
    import torch
    from export import load
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--show", type=int, default=8)
    ap.add_argument("--head", default="sharpmask")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    model, cfg = load(args.weights)
    val = {im["key"]: im for im in data.load_split("val")}
    for key in PICKS:
        im = val[key]
        img = np.array(data.image_array(im))
        props = proposals_model(model, img, 100, args.head)
        kept = []
        for score, m in props:
            mb = m.astype(bool)
            if not mb.any():
                continue
            if all((mb & k).sum() / max((mb | k).sum(), 1) < 0.5 for _, k in kept):
                kept.append((score, mb))
            if len(kept) == args.show:
                break
        out = img.astype(np.float32)
        for i, (score, mb) in enumerate(kept):
            c = COLOURS[i % len(COLOURS)]
            out[mb] = 0.55 * out[mb] + 0.45 * c
            edge = mb & ~(np.roll(mb, 1, 0) & np.roll(mb, -1, 0) & np.roll(mb, 1, 1) & np.roll(mb, -1, 1))
            out[edge] = c
        name = os.path.splitext(key.replace("/", "_"))[0] + ".jpg"
        raw = os.path.join(args.out, name + ".rgb")
        out.clip(0, 255).astype(np.uint8).tofile(raw)
        js = ("const s=require('sharp');s(require('fs').readFileSync(process.argv[1]),{raw:{width:+process.argv[2],height:+process.argv[3],channels:3}})"
              ".jpeg({quality:80}).toFile(process.argv[4]).then(()=>{})")
        subprocess.run(["node", "-e", js, raw, str(img.shape[1]), str(img.shape[0]), os.path.join(args.out, name)],
                       check=True, cwd=os.path.join(HERE, "..", ".."))
        os.remove(raw)
        print(json.dumps(dict(image=key, file=os.path.join(args.out, name),
                              shown=[round(s, 3) for s, _ in kept])))


if __name__ == "__main__":
    main()
