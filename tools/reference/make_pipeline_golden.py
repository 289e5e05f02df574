"""Golden fixtures for the C++ segment() pipeline (native/pipeline/pipeline.h, steps 1-9).

    python3 tools/reference/make_pipeline_golden.py            # -> test/fixtures/golden/pipeline-golden.json
    python3 tools/reference/make_pipeline_golden.py --check    # recompute, compare with the file, write nothing
    python3 tools/reference/make_pipeline_golden.py --only sharpmask-proposals-default --print

Runs tools/reference/pipeline.py (an independent implementation of the contract) on the
committed golden weights (random, deterministic: the plumbing is under test, not accuracy):

* proposals: test/fixtures/golden/sharpmask-resnet18-d16.safetensors,
  test/fixtures/golden/deepmask-resnet18-d16.safetensors;
* classifier: test/fixtures/golden/multipathnet-resnet18-d16.safetensors
  (its config: test_scale 800, test_max_size 1000).

Inputs are synthetic RGB images generated here from integer formulas (no RNG) and stored in
the JSON as base64 raw RGB (row-major HWC, u8), so the C++ test needs no image decoder.

JSON layout (all numbers are float32 values written as the shortest double that round-trips,
i.e. full float precision):

    {"format": "fovea.pipeline-golden", "version": 1, "generator": ..., "notes": [...],
     "models": {"sharpmask": "sharpmask-resnet18-d16.safetensors", ...},   # relative to this folder
     "images": {NAME: {"height": H, "width": W, "rgb_base64": ...}},
     "cases": [{
        "name", "image", "proposal_model", "classifier" (null in proposals mode),
        "options": {mode, max_proposals, max_detections, score_threshold, nms_threshold,
                    mask_threshold, scales (null = the model's), max_side},
        "debug": {work_size [h, w], fy, fx, scales: [{scale, size, padded, grid, skipped}],
                  logit_threshold, mask_size,
                  margins: {max_proposals, score_threshold, nms_iou, nms_order, max_detections}
                      (distance of each discrete decision from flipping; see pipeline.py),
                  instances mode: mpn_scale (s'), mpn_input_size [h, w],
                  classified (ranks sent to MultiPathNet), duplicate_rois,
                  rois (x1, y1, x2, y2 of those, network-input pixels, float32)},
        "num_proposals": N,                      # Result::proposals
        "proposals": [{rank, scale_index, row, col, logit, objectness,
                       window [top, left, height, width], box [x, y, w, h], area, rle,
                       mask_margin (min |resized logit - threshold| over the pasted pixels)}],
        "instances": [{proposal, class_index, label, category_id, score, objectness,
                       box [x, y, w, h], area, rle}],
        "robust": every margin above the limits below (LOGIT_MARGIN, ...),
        "exact_ties": the case relies on exact ties (bit-identical inputs) and the tie rules}]}

How the C++ test should compare (see the notes in the JSON): ranking ties between
implementations can flip when logits differ by ~1e-6, so match proposals by (scale_index,
row, col), logits with a relative tolerance, masks by IoU (decode the RLE), boxes within a
pixel or so, and instances by (proposal cell, class_index).
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pipeline  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(ROOT, "test", "fixtures", "golden")
OUT = os.path.join(GOLDEN, "pipeline-golden.json")

MODELS = {
    "sharpmask": "sharpmask-resnet18-d16.safetensors",
    "deepmask": "deepmask-resnet18-d16.safetensors",
    "multipathnet": "multipathnet-resnet18-d16.safetensors",
    # The embedded default model (trained weights), relative to this folder.
    "default": "../../../weights/sharpmask.safetensors",
}
# The embedded default classifier, when one ships (weights/multipathnet.safetensors; none does
# yet, see weights/MODEL_CARD.md): its cases below are generated only if the file exists, so
# that regenerating this golden after shipping a classifier adds them.
DEFAULT_CLASSIFIER = "../../../weights/multipathnet.safetensors"
if os.path.exists(os.path.join(GOLDEN, DEFAULT_CLASSIFIER)):
    MODELS["default_classifier"] = DEFAULT_CLASSIFIER


# ------------------------------------------------------------------------------------------
# synthetic images (integer formulas only: identical on every machine and numpy version)
# ------------------------------------------------------------------------------------------
def synth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Gradient background, three filled shapes (ellipse, rectangle, triangle) in distinct
    colours, a thin diagonal line and a small hash texture. uint8 [h,w,3]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    img = np.zeros((h, w, 3), dtype=np.int64)
    img[..., 0] = 40 + (150 * x) // max(1, w - 1)
    img[..., 1] = 60 + (120 * y) // max(1, h - 1)
    img[..., 2] = 90 + (60 * (x + y)) // max(1, h + w - 2)
    # ellipse centred at (0.35 h, 0.3 w), semi-axes 0.22 h, 0.2 w (integer test)
    cy, cx, ay, ax = (35 * h) // 100, (30 * w) // 100, max(1, (22 * h) // 100), max(1, (20 * w) // 100)
    ell = ((y - cy) ** 2) * ax * ax + ((x - cx) ** 2) * ay * ay <= (ay * ax) ** 2
    img[ell] = [220, 40 + seed % 50, 30]
    # rectangle
    r0, r1, c0, c1 = (55 * h) // 100, (85 * h) // 100, (50 * w) // 100, (80 * w) // 100
    img[r0:r1, c0:c1] = [30, 170, 60 + seed % 40]
    # triangle with vertices (0.1h, 0.6w), (0.45h, 0.95w), (0.45h, 0.6w): below the hypotenuse
    t0, t1, u0, u1 = (10 * h) // 100, (45 * h) // 100, (60 * w) // 100, (95 * w) // 100
    tri = (y >= t0) & (y < t1) & (x >= u0) & ((x - u0) * max(1, t1 - t0) <= (y - t0) * max(1, u1 - u0))
    img[tri] = [240, 230, 70]
    # diagonal line
    if min(h, w) >= 8:
        line = np.abs(x * h - y * w) <= max(h, w)
        img[line] = [15, 15, 15]
    # hash texture +-8
    hsh = ((x * 73856093) ^ (y * 19349663) ^ (seed * 83492791)) & 0xFFFF
    img += (hsh % 17)[..., None] - 8
    return np.clip(img, 0, 255).astype(np.uint8)


IMAGES = {
    "img61x83": (61, 83, 1),
    "img48x56": (48, 56, 6),     # MultiPathNet s' = test_scale / min side (not capped by test_max_size)
    "img97x130": (97, 130, 2),
    "img90x70": (90, 70, 3),     # used with max_side 64: work image 64x50
    "img1x1": (1, 1, 4),
    "img1x37": (1, 37, 5),
}

# name, image, proposal model, classifier (None = proposals mode), option overrides.
# Options were chosen so that every discrete decision has a comfortable margin (see
# fragile() below); the exception is the 1x1 case, whose ties are exact by construction.
S2 = 2.0 ** 0.5
CASES = [
    # defaults (7 config scales, score 0.5, NMS 0.3, mask 0.2, max_side 600) but 12 proposals
    ("sharpmask-proposals-default", "img61x83", "sharpmask", None,
     dict(mode="proposals", max_proposals=12)),
    ("sharpmask-proposals-nms-off-scales", "img97x130", "sharpmask", None,
     dict(mode="proposals", max_proposals=8, max_detections=6, score_threshold=0.0,
          nms_threshold=1.0, scales=[0.5, 1.0])),
    ("deepmask-proposals-threshold-nms", "img97x130", "deepmask", None,
     dict(mode="proposals", max_proposals=12, score_threshold=0.2, nms_threshold=0.7)),
    # work image 64x50 (fy = 1.40625, fx = 1.4)
    ("deepmask-proposals-work-resize", "img90x70", "deepmask", None,
     dict(mode="proposals", max_proposals=6, score_threshold=0.0, nms_threshold=0.5,
          scales=[0.5, 1.0, 1.5], max_side=64)),
    # scales 0..2 give a 0-pixel side (skipped); scales 3..6 all give the same 1x1 image,
    # so their logits tie exactly and the tie rule (lower scale index, then row-major) decides
    ("sharpmask-proposals-1x1-ties", "img1x1", "sharpmask", None,
     dict(mode="proposals", max_proposals=10, score_threshold=0.0)),
    ("sharpmask-proposals-1xN", "img1x37", "sharpmask", None,
     dict(mode="proposals", max_proposals=8, score_threshold=0.0, mask_threshold=0.9,
          scales=[0.5, 1.0, 2.0])),
    # MultiPathNet s' capped by test_max_size (1000 / 83)
    ("sharpmask-instances", "img61x83", "sharpmask", "multipathnet",
     dict(mode="instances", max_proposals=10, max_detections=10, score_threshold=0.17,
          scales=[2.0, 2 * S2])),
    # s' = test_scale / min side = 800 / 48 (input 800x933)
    ("sharpmask-instances-test-scale", "img48x56", "sharpmask", "multipathnet",
     dict(mode="instances", max_proposals=10, max_detections=8, score_threshold=0.17,
          mask_threshold=0.5, scales=[4.0, 5.0])),
    ("sharpmask-instances-nms-off-work-resize", "img90x70", "sharpmask", "multipathnet",
     dict(mode="instances", max_proposals=8, max_detections=6, score_threshold=0.17,
          nms_threshold=1.0, mask_threshold=0.5, scales=[3.0, 4.0], max_side=64)),
    # every class passes (threshold 0); NMS and the max_detections cut decide
    ("deepmask-instances-threshold-0", "img97x130", "deepmask", "multipathnet",
     dict(mode="instances", max_proposals=10, max_detections=6, score_threshold=0.0,
          mask_threshold=0.95, scales=[S2 / 2, S2, 2.0])),
    # empty masks and 1-pixel masks are not classified (step 8 filter)
    ("sharpmask-instances-empty-masks", "img61x83", "sharpmask", "multipathnet",
     dict(mode="instances", max_proposals=10, max_detections=10, score_threshold=0.17,
          mask_threshold=0.9999, scales=[1.0, 1.5])),
    # every proposal is one pixel high: (xmax - xmin) * 0 <= 2, nothing is classified
    ("deepmask-instances-1xN-all-dropped", "img1x37", "deepmask", "multipathnet",
     dict(mode="instances", max_proposals=6, score_threshold=0.0, scales=[1.0])),
    # the embedded trained model, segment()'s defaults for proposals
    ("default-model-proposals", "img97x130", "default", None,
     dict(mode="proposals", max_proposals=10, score_threshold=0.0, nms_threshold=1.0)),
    ("default-model-proposals-work-resize-nms", "img90x70", "default", None,
     dict(mode="proposals", max_proposals=12, score_threshold=0.0, nms_threshold=0.5, max_side=64)),
]

# the embedded default model with the embedded classifier (instances mode, segment()'s
# defaults apart from a lower class threshold so that the cases hold several instances)
if "default_classifier" in MODELS:
    CASES += [
        ("default-model-instances", "img97x130", "default", "default_classifier",
         dict(mode="instances", max_proposals=20, score_threshold=0.05)),
        ("default-model-instances-work-resize", "img90x70", "default", "default_classifier",
         dict(mode="instances", max_proposals=12, max_detections=8, score_threshold=0.02, nms_threshold=1.0,
              max_side=64)),
    ]

EXACT_TIE_CASES = {"sharpmask-proposals-1x1-ties"}

# smallest margin (see pipeline.py, debug.margins) accepted as robust between implementations:
# logits (proposals ranking / proposals-mode NMS order and cut), probabilities, IoU
LOGIT_MARGIN, PROB_MARGIN, IOU_MARGIN = 5e-4, 5e-5, 1e-3


def fragile(case: dict) -> list:
    m = case["debug"]["margins"]
    inst = case["options"]["mode"] == "instances"
    limits = dict(max_proposals=LOGIT_MARGIN, score_threshold=PROB_MARGIN, nms_iou=IOU_MARGIN,
                  nms_order=PROB_MARGIN if inst else LOGIT_MARGIN,
                  max_detections=PROB_MARGIN if inst else LOGIT_MARGIN)
    out = [f"{k}={v:.3g}" for k, v in m.items() if v is not None and v < limits[k]]
    if case["debug"].get("duplicate_rois"):
        out.append(f"duplicate_rois={case['debug']['duplicate_rois']}")
    return out


NOTES = [
    "Contract: native/pipeline/pipeline.h steps 1-9; implementation: tools/reference/pipeline.py.",
    "Weights are random (deterministic); class probabilities are low, hence the low score thresholds.",
    "Numerics: pre/post-processing in float32 (image.scale in the C operation order, torch "
    "align-corners bilinear for the pyramid), networks in float64 with outputs rounded to float32, "
    "window geometry and IoU in double.",
    "Compare: match proposals by (scale_index, row, col) (ranking ties can flip for logits ~1e-6 "
    "apart); logits with a relative tolerance; masks by IoU of the decoded RLE (pixels at the "
    "threshold can flip); instances by (proposal cell, class_index).",
    "Boxes: proposals' box = COCO toBbox of the mask; instances' box = [x1, y1, x2 - x1, y2 - y1] "
    "of the decoded, clamped class box (x in [0, W-1], y in [0, H-1]).",
    "options.scales null = the proposal model's config scales.",
]


def f32(v) -> float:
    return float(np.float32(v))


def run_case(case, models, images):
    name, image, pname, cname, over = case
    opts = dict(pipeline.DEFAULT_OPTIONS)
    opts.update(over)
    pm, pc = models[pname]
    cm, cc = models[cname] if cname else (None, None)
    rgb = images[image]
    t = time.time()
    res = pipeline.run_pipeline(rgb, pm, pc, cm, cc, opts)
    dt = time.time() - t
    dbg = dict(res["debug"])
    dbg.pop("height", None)
    dbg.pop("width", None)
    props = [dict(rank=p["rank"], scale_index=p["scale_index"], row=p["row"], col=p["col"],
                  logit=f32(p["logit"]), objectness=f32(p["objectness"]), window=p["window"],
                  box=[f32(v) for v in p["box"]], area=p["area"], rle=p["rle"],
                  mask_margin=None if p["mask_margin"] is None else float("%.3g" % p["mask_margin"]))
             for p in res["proposal_list"]]
    inst = [dict(proposal=i["proposal"], class_index=i["class_index"], label=i["label"],
                 category_id=i["category_id"], score=f32(i["score"]), objectness=f32(i["objectness"]),
                 box=[f32(v) for v in i["box"]], area=i["area"], rle=i["rle"])
            for i in res["instances"]]
    options = dict(mode=opts["mode"], max_proposals=opts["max_proposals"],
                   max_detections=opts["max_detections"], score_threshold=opts["score_threshold"],
                   nms_threshold=opts["nms_threshold"], mask_threshold=opts["mask_threshold"],
                   scales=opts["scales"] if opts["scales"] else None, max_side=opts["max_side"])
    out = dict(name=name, image=image, proposal_model=pname, classifier=cname, options=options,
               debug=dbg, num_proposals=res["proposals"], proposals=props, instances=inst)
    return out, dt


def build(only=None, verbose=True):
    torch.set_num_threads(int(os.environ.get("FOVEA_THREADS", "1")))
    models = {}
    for key, fn in MODELS.items():
        m, c = pipeline.load_models(os.path.join(GOLDEN, fn))[:2]
        models[key] = (m, c)
    images = {k: synth_image(h, w, s) for k, (h, w, s) in IMAGES.items()}
    cases = []
    for case in CASES:
        if only and case[0] not in only:
            continue
        out, dt = run_case(case, models, images)
        fr = fragile(out)
        out["robust"] = not fr
        out["exact_ties"] = case[0] in EXACT_TIE_CASES
        if verbose:
            print(f"{case[0]:45s} {dt:5.2f}s  proposals {out['num_proposals']:3d}  "
                  f"instances {len(out['instances']):3d}" + (f"  FRAGILE {fr}" if fr else ""), file=sys.stderr)
        if fr and case[0] not in EXACT_TIE_CASES:
            raise SystemExit(f"{case[0]}: fragile golden {fr}; change its options")
        cases.append(out)
    used = sorted({c["image"] for c in cases})
    doc = dict(
        format="fovea.pipeline-golden", version=1,
        generator=dict(script="tools/reference/make_pipeline_golden.py", torch=torch.__version__,
                       numpy=np.__version__),
        notes=NOTES,
        models=MODELS,
        images={k: dict(height=int(images[k].shape[0]), width=int(images[k].shape[1]),
                        rgb_base64=base64.b64encode(images[k].tobytes()).decode("ascii"))
                for k in used},
        cases=cases,
    )
    return doc


def dumps(doc) -> str:
    """Compact JSON, one proposal / instance per line (readable diffs, small file)."""
    c = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    lines = ["{"]
    head = [k for k in doc if k != "cases"]
    for k in head:
        if k == "images":
            lines.append(f'"images":{{')
            items = list(doc["images"].items())
            for j, (n, v) in enumerate(items):
                lines.append(f"{c(n)}:{c(v)}" + ("," if j < len(items) - 1 else ""))
            lines.append("},")
        else:
            lines.append(f"{c(k)}:{c(doc[k])},")
    lines.append('"cases":[')
    for j, case in enumerate(doc["cases"]):
        lines.append("{")
        for k in case:
            if k in ("proposals", "instances"):
                lines.append(f'"{k}":[')
                for q, p in enumerate(case[k]):
                    lines.append(c(p) + ("," if q < len(case[k]) - 1 else ""))
                lines.append("]" + ("," if k != list(case)[-1] else ""))
            else:
                lines.append(f"{c(k)}:{c(case[k])}" + ("," if k != list(case)[-1] else ""))
        lines.append("}" + ("," if j < len(doc["cases"]) - 1 else ""))
    lines.append("]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the existing file, write nothing")
    ap.add_argument("--only", nargs="*", help="case names (with --print or --check)")
    ap.add_argument("--print", action="store_true", help="print the JSON instead of writing it")
    a = ap.parse_args(argv)
    doc = build(only=set(a.only) if a.only else None)
    text = dumps(doc)
    json.loads(text)  # well-formed
    if a.print:
        sys.stdout.write(text)
        return 0
    if a.check:
        old = json.load(open(a.out))
        old_cases = {c["name"]: c for c in old["cases"]}
        bad = 0
        for c in doc["cases"]:
            if old_cases.get(c["name"]) != c:
                print(f"DIFFERS: {c['name']}", file=sys.stderr)
                bad += 1
        print("ok" if not bad else f"{bad} case(s) differ", file=sys.stderr)
        return 1 if bad else 0
    if a.only:
        print("--only needs --print or --check (the file always holds every case)", file=sys.stderr)
        return 2
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes, {len(doc['cases'])} cases)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
