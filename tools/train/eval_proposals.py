#!/usr/bin/env python3
"""Class-agnostic proposal recall (AR@10, AR@100; segm and bbox) on the HELD-OUT split.

    python3 tools/train/eval_proposals.py --weights weights/sharpmask.safetensors [--head sharpmask|deepmask]
    python3 tools/train/eval_proposals.py --ckpt tools/train/runs/light/deepmask.pt
    python3 tools/train/eval_proposals.py --untrained     # same architecture, from-scratch init, no training
    python3 tools/train/eval_proposals.py --sliding       # fixed boxes with box-shaped masks

Inference follows spec deepmask-sharpmask.md section 4 with the reference model's
``forward_image``: per scale s in 2^-2.5..2^0.5 resize (align-corners bilinear, sizes
round(s*h), round(s*w)), pad 80 px of 0.5, normalise; global top-k of the sigmoid scores over
all (scale, r, c) (no NMS, correct (r, c) decode, not the legacy Q1 one); masks (DeepMask
56x56 or SharpMask 160x160 logits) resized to floor(160/s) and pasted with top-left
floor(r*16/s - 80/s), threshold probability 0.2. Ground truth: the held-out parts of the three
fixture sets (110 images, 840 instances, crowd = ignore), all categories merged into one.
AR from pycocotools COCOeval (useCats=0, maxDets 1/10/100).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "reference")))

import data  # noqa: E402

THR_LOGIT = math.log(0.2 / 0.8)


def gt_coco(images):
    imgs, anns = [], []
    for i, im in enumerate(images):
        imgs.append(dict(id=i + 1, width=im["w"], height=im["h"], file_name=im["key"]))
        for a in im["anns"]:
            if a["crowd"]:
                rle = a["rle"]
                if isinstance(rle["counts"], list):
                    rle = mask_utils.frPyObjects(rle, im["h"], im["w"])
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(a["polys"], im["h"], im["w"]))
            area = float(mask_utils.area(rle))
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=1, iscrowd=int(a["crowd"]),
                             segmentation=rle, area=area, bbox=[float(v) for v in mask_utils.toBbox(rle)]))
    coco = COCO()
    coco.dataset = dict(images=imgs, annotations=anns, categories=[dict(id=1, name="object")])
    coco.createIndex()
    return coco


def resize_logits(m: torch.Tensor, sz: int) -> torch.Tensor:
    if sz >= m.shape[-1]:
        return F.interpolate(m[None, None], size=(sz, sz), mode="bilinear", align_corners=True)[0, 0]
    return F.interpolate(m[None, None], size=(sz, sz), mode="area")[0, 0]


def paste(logits: torch.Tensor, s: float, r: int, c: int, h: int, w: int) -> np.ndarray:
    sz = int(math.floor(160 / s))
    r0 = int(math.floor(r * 16 / s - 80 / s))
    c0 = int(math.floor(c * 16 / s - 80 / s))
    m = (resize_logits(logits, sz) > THR_LOGIT).numpy()
    out = np.zeros((h, w), np.uint8)
    y0, x0, y1, x1 = max(r0, 0), max(c0, 0), min(r0 + sz, h), min(c0 + sz, w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = m[y0 - r0:y1 - r0, x0 - c0:x1 - c0]
    return out


def prepare(img: np.ndarray, s: float, cfg: dict) -> torch.Tensor:
    h, w = img.shape[:2]
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 255.0
    hs, ws = int(math.floor(s * h + 0.5)), int(math.floor(s * w + 0.5))
    x = F.interpolate(x, size=(hs, ws), mode="bilinear", align_corners=True)
    p = cfg.get("image_pad", 80)
    x = F.pad(x, (p, p, p, p), value=cfg.get("image_pad_value", 0.5))
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def proposals_model(model, img: np.ndarray, k: int, head: str):
    cfg = model.cfg
    h, w = img.shape[:2]
    per_scale = []
    for si, s in enumerate(cfg["scales"]):
        x = prepare(img, s, cfg)
        taps, e, sc = model.dense_embedding_and_scores(x)
        per_scale.append((s, x, e, torch.sigmoid(sc[0])))
    allsc = torch.cat([p[3].flatten() for p in per_scale])
    owner = torch.cat([torch.full((p[3].numel(),), i) for i, p in enumerate(per_scale)])
    idx = torch.argsort(allsc, descending=True, stable=True)[:k]
    offs = np.cumsum([0] + [p[3].numel() for p in per_scale])
    res = []
    by_scale = {}
    for j in idx.tolist():
        si = int(owner[j]); loc = j - offs[si]; W = per_scale[si][3].shape[1]
        by_scale.setdefault(si, []).append((len(res), loc // W, loc % W))
        res.append(None)
    for si, lst in by_scale.items():
        s, x, e, scm = per_scale[si]
        locs = [(0, r, c) for _, r, c in lst]
        if head == "sharpmask":
            masks = model.forward_image(x, locs)["masks"]
        else:
            masks = model.masks_at(e, locs)
        for (q, r, c), m in zip(lst, masks):
            res[q] = (float(scm[r, c]), paste(m.float(), s, r, c, h, w))
    return res


def proposals_sliding(img: np.ndarray, k: int, scales, seed: int = 0):
    """Fixed square and 2:1 / 1:2 boxes of the canonical object size 92/s at every scale of
    the model, centres on a stride-(32/s) grid; taken round-robin over the scales (largest
    boxes first), in a fixed pseudo-random order within each scale; box-shaped masks."""
    h, w = img.shape[:2]
    rng = np.random.default_rng(seed)
    lists = []
    for s in sorted(scales):  # small s = large boxes first
        side = 92 / s
        st = 32 / s
        cand = []
        for ar in (1.0, 2.0, 0.5):
            bw, bh = side * math.sqrt(ar), side / math.sqrt(ar)
            for cy in np.arange(st / 2, h, st):
                for cx in np.arange(st / 2, w, st):
                    cand.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        rng.shuffle(cand)
        lists.append(cand)
    out = []
    i = 0
    while len(out) < k and any(i < len(l) for l in lists):
        for l in lists:
            if i < len(l) and len(out) < k:
                x0, y0, x1, y1 = l[i]
                m = np.zeros((h, w), np.uint8)
                m[max(int(round(y0)), 0):max(int(round(y1)), 0), max(int(round(x0)), 0):max(int(round(x1)), 0)] = 1
                if m.any():
                    out.append((1.0 - len(out) / (k + 1), m))
        i += 1
    return out


def evaluate(results, coco_gt):
    out = {}
    for iou_type in ("segm", "bbox"):
        dt = coco_gt.loadRes(results) if results else None
        ev = COCOeval(coco_gt, dt, iou_type)
        ev.params.useCats = 0
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate(); ev.accumulate(); ev.summarize()
        out[iou_type] = dict(AR1=ev.stats[6], AR10=ev.stats[7], AR100=ev.stats[8],
                             AR100_small=ev.stats[9], AR100_medium=ev.stats[10], AR100_large=ev.stats[11])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="exported deepmask/sharpmask .safetensors")
    g.add_argument("--ckpt", help="training checkpoint (deepmask.pt / sharpmask.pt)")
    g.add_argument("--untrained", action="store_true")
    g.add_argument("--sliding", action="store_true")
    ap.add_argument("--head", choices=["deepmask", "sharpmask"], default=None)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out images only (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--label", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = data.load_split("val")
    if args.limit:
        images = images[:args.limit]
    coco_gt = gt_coco(images)
    model, head = None, "deepmask"
    from deepmask import DEEPMASK_SCALES
    scales = DEEPMASK_SCALES
    if args.weights:
        from export import load
        model, cfg = load(args.weights)
        head = args.head or ("sharpmask" if cfg["architecture"] == "sharpmask" else "deepmask")
    elif args.ckpt:
        from export import build
        st = torch.load(args.ckpt, map_location="cpu", weights_only=False)
        model = build(st["cfg"]); model.load_state_dict(st["model"]); model.eval()
        head = args.head or ("sharpmask" if st["cfg"]["architecture"] == "sharpmask" else "deepmask")
    elif args.untrained:
        import train
        from export import build
        from sampler import PatchSampler
        r = train.RECIPES["light"]
        model = build(train.model_config("deepmask", r))
        calib = PatchSampler(data.load_split("train"), seed=555).batch(r["batch"])["x"]
        train.init_deepmask(model, calib, 555)
        model.eval()
    if model is not None:
        scales = model.cfg["scales"]
    t0 = time.time()
    results = []
    for i, im in enumerate(images):
        img = data.image_array(im)
        props = (proposals_sliding(img, args.k, scales) if args.sliding
                 else proposals_model(model, img, args.k, head))
        for score, m in props:
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(dict(image_id=i + 1, category_id=1, segmentation=rle, score=score,
                                bbox=[float(v) for v in mask_utils.toBbox(rle)]))
    wall = time.time() - t0
    res = evaluate(results, coco_gt)
    label = args.label or (args.weights or args.ckpt or ("untrained" if args.untrained else "sliding"))
    rec = dict(label=label, head=None if args.sliding else head, images=len(images),
               instances=len(coco_gt.getAnnIds()), k=args.k, wall_s=round(wall, 1), **res)
    print(json.dumps(rec, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
