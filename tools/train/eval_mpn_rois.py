#!/usr/bin/env python3
"""Quick held-out check of a MultiPathNet checkpoint on ground-truth-derived ROIs (no proposals).

    python3 tools/train/eval_mpn_rois.py --ckpt tools/train/runs/light/multipathnet.pt [--part val]

The val parts of coco128-seg and coco-mini (COCO classes), at the checkpoint's training scale,
ROIs drawn by the training sampler (seeded): every ground-truth box, its jittered copies and
random boxes. Reports, like the training log: acc_cls (class argmax over the 80 classes on the
IoU >= 0.5 ROIs), acc_fg75 / p_fg75 (averaged probability on the IoU >= 0.75 ROIs), acc_bg
(head 0 on the 0.1 <= IoU < 0.5 ROIs), and the same accuracies of always answering the most
frequent training class (person) for comparison. ``--part train`` gives the same numbers on
training images (overfitting check). Not the evaluation of the model card (that is
``eval_classifier.py``, with fovea and SharpMask proposals).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "reference")))

import data  # noqa: E402
import train  # noqa: E402  (sys.path for tools/reference)
import train_mpn  # noqa: E402
from export import build  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--part", default="val")
    ap.add_argument("--images", type=int, default=0, help="at most this many images (0: all)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    st = train.load_checkpoint(a.ckpt)
    cfg, r = st["cfg"], st["recipe"]
    m = build(cfg)
    m.load_state_dict(st["model"])
    m.eval()
    ims = data.load_split(a.part, sets=("coco128-seg", "coco-mini"))
    s = train_mpn.RoiSampler(ims, r["mpn_short"], r["mpn_max"], fg=16, bg=48, seed=a.seed,
                             fg_hi=r.get("mpn_fg_hi", 0.0), n_tight=r.get("mpn_tight", 0))
    if a.images:
        s.images = s.images[:a.images]
    acc = {}
    n = 0
    with torch.no_grad():
        for idx in range(len(s.images)):
            s.rng = np.random.default_rng(a.seed + idx)
            im = s.images[idx]
            gt, cls, cand, iou, best = s.image_rois(im)
            fg = np.where(iou >= 0.5)[0]
            bg = np.where((iou >= 0.1) & (iou < 0.5))[0]
            if not len(fg):
                continue
            sel = np.concatenate([bg[:48], fg])
            hs, ws, sc = s.input_size(im)
            x = s.image_tensor(im, False, cfg["mean"], cfg["std"])[None]
            rois = torch.from_numpy(np.concatenate([np.zeros((len(sel), 1)), cand[sel] * sc], 1)).float()
            out = train_mpn.mpn_forward(m, x, rois)
            u = iou[sel]
            c = cls[best[sel]]
            labels = torch.from_numpy(np.stack([np.where(u >= t, c, 0) for t in train_mpn.THRESH])).long()
            met = train_mpn.roi_metrics(out, dict(labels=labels))
            lab0 = labels[0]
            f = lab0 > 0
            met["person_acc_cls"] = (lab0[f] == 1).float().mean().item()
            hi = int((labels[-1] > 0).sum())
            weight = dict(acc_bg=int((~f).sum()), acc_fg75=hi, p_fg75=hi)
            for k, v in met.items():
                if np.isfinite(v):
                    acc.setdefault(k, []).append((v, weight.get(k, int(f.sum()))))
            n += 1
    res = {k: round(sum(v * w for v, w in vs) / max(1, sum(w for _, w in vs)), 4) for k, vs in acc.items()}
    res.update(images=n, part=a.part, step=st["step"])
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
