"""Independent Python reference of the segment() pipeline contract.

The contract is the header comment of ``native/pipeline/pipeline.h`` (steps 1-9); this file
implements it from that text and from the specs it cites (shared/spec/deepmask-sharpmask.md
section 4, shared/spec/multipathnet.md section 4), not from the C++.

    run_pipeline(rgb_uint8_hwc, proposal_model, proposal_cfg,
                 classifier_model_or_None, classifier_cfg, options) -> dict

Numerics (chosen so that the result is the exact function of the contract where it can be):

* pre- and post-processing in float32: u8 / 255, ``image_scale`` (torch/image
  ``scaleLinear_rowcol``, every float32 operation in the C order), the pyramid's align-corners
  bilinear (``torch.nn.functional.interpolate``, float32 CPU), padding, normalisation,
  thresholding, box decoding;
* the networks run in **float64** on the float32 inputs and their outputs are rounded to
  float32 (as the model goldens of make_golden.py), so logits carry no fp32 accumulation error;
* window geometry (step 5), size rules (steps 1 and 8) and IoU in double, the expressions
  evaluated in the order the contract writes them.

Building blocks (tested by test_pipeline.py): ``image_scale``, ``image_scale_axis``,
``resize_ac_bilinear``, ``topk_cells``, ``nms_plus1``, ``iou_plus1``, ``paste_mask``,
``rle_encode``, ``rle_bbox``, ``decode_boxes``, ``work_size``, ``multipathnet_scale``.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

F32 = np.float32

DEFAULT_OPTIONS = dict(
    mode="instances",        # "proposals" | "instances"
    max_proposals=100,
    max_detections=100,
    score_threshold=0.5,     # instances: class probability; proposals: objectness
    nms_threshold=0.3,       # >= 1 disables NMS
    mask_threshold=0.2,      # probability
    scales=None,             # None / empty: the proposal config's "scales"
    max_side=600,            # 0: no work resize
)


# ------------------------------------------------------------------------------------------
# torch/image image.scale (bilinear): scaleLinear_rowcol per axis, width pass then height pass
# ------------------------------------------------------------------------------------------
def image_scale_axis(src: np.ndarray, out_len: int, axis: int) -> np.ndarray:
    """One ``scaleLinear_rowcol`` pass along ``axis`` of a float32 array, vectorised over the
    other axes with the C code's float32 operations in the C order:

    * grow: ``scale = (float)(in-1)/(out-1)``; for di < out-1: ``si_f = di*scale``,
      ``si_i = (long)si_f``, ``si_f -= si_i``, ``dst = (1-si_f)*src[si_i] + si_f*src[si_i+1]``;
      ``dst[out-1] = src[in-1]``; a length-1 source is copied;
    * shrink: ``scale = (float)in/out``; area average with fractional edge weights,
      ``acc``/``n`` accumulated in float32 in source order, ``dst = acc/n``;
    * equal: copy.
    """
    src = np.ascontiguousarray(np.moveaxis(np.asarray(src, dtype=F32), axis, 0))
    n_in = src.shape[0]
    if out_len < 1 or n_in < 1:
        raise ValueError(f"image_scale: bad lengths {n_in} -> {out_len}")
    if out_len == n_in:
        dst = src.copy()
    elif out_len > n_in:
        dst = np.empty((out_len,) + src.shape[1:], dtype=F32)
        if n_in == 1:
            dst[:] = src[0]
        else:
            scale = F32(n_in - 1) / F32(out_len - 1)
            one = F32(1)
            for di in range(out_len - 1):
                si_f = F32(di) * scale
                si_i = int(si_f)                  # (long) truncation, si_f >= 0
                si_f = si_f - F32(si_i)
                nxt = min(si_i + 1, n_in - 1)     # only reached with si_f == 0 in theory
                dst[di] = (one - si_f) * src[si_i] + si_f * src[nxt]
            dst[out_len - 1] = src[n_in - 1]
    else:
        dst = np.empty((out_len,) + src.shape[1:], dtype=F32)
        scale = F32(n_in) / F32(out_len)
        one = F32(1)
        si0_i, si0_f = 0, F32(0)
        for di in range(out_len):
            si1_f = F32(di + 1) * scale
            si1_i = int(si1_f)
            si1_f = si1_f - F32(si1_i)
            w0 = one - si0_f
            acc = w0 * src[si0_i]
            n = w0
            for si in range(si0_i + 1, si1_i):
                acc = acc + src[si]
                n = n + one
            if si1_i < n_in:
                acc = acc + si1_f * src[si1_i]
                n = n + si1_f
            dst[di] = acc / n
            si0_i, si0_f = si1_i, si1_f
    return np.moveaxis(dst, 0, axis)


def image_scale(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch/image ``image.scale(src, out_w, out_h, 'bilinear')`` on a float32 [H,W] or
    [C,H,W] array: width pass first (into an [H, out_w] temporary), then height."""
    a = np.asarray(src, dtype=F32)
    tmp = image_scale_axis(a, out_w, a.ndim - 1)
    return image_scale_axis(tmp, out_h, a.ndim - 2)


def resize_ac_bilinear(chw: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Align-corners bilinear, no antialias (pyramid, spec 4.1): float32 torch CPU."""
    t = torch.from_numpy(np.ascontiguousarray(chw, dtype=F32))[None]
    y = F.interpolate(t, size=(out_h, out_w), mode="bilinear", align_corners=True)
    return y[0].numpy().astype(F32, copy=False)


# ------------------------------------------------------------------------------------------
# sizes
# ------------------------------------------------------------------------------------------
def work_size(h: int, w: int, max_side: int) -> Tuple[int, int]:
    """Step 1: (max(1, floor(H r + 0.5)), max(1, floor(W r + 0.5))), r = max_side / max(H, W),
    when max_side > 0 and max(H, W) > max_side; else (H, W)."""
    if max_side > 0 and max(h, w) > max_side:
        r = max_side / max(h, w)
        return max(1, math.floor(h * r + 0.5)), max(1, math.floor(w * r + 0.5))
    return h, w


def pyramid_size(h: int, w: int, s: float) -> Tuple[int, int]:
    """Step 2: (floor(s h + 0.5), floor(s w + 0.5))."""
    return math.floor(s * h + 0.5), math.floor(s * w + 0.5)


def multipathnet_scale(h: int, w: int, test_scale: float, test_max_size: float) -> Tuple[float, int, int]:
    """Step 8: s' = test_scale / min(H, W), or test_max_size / max(H, W) when
    floor(s' max(H, W) + 0.5) > test_max_size; input size (floor(H s'), floor(W s'))."""
    s = test_scale / min(h, w)
    if math.floor(s * max(h, w) + 0.5) > test_max_size:
        s = test_max_size / max(h, w)
    return s, math.floor(h * s), math.floor(w * s)


# ------------------------------------------------------------------------------------------
# top-k, NMS, boxes, RLE
# ------------------------------------------------------------------------------------------
def topk_cells(score_maps: Sequence[Optional[np.ndarray]], k: int) -> List[Tuple[int, int, int, float]]:
    """Step 3: all (scale, row, col) ranked by logit descending; ties: lower scale index first,
    then row-major. ``score_maps[i]`` is the [H',W'] float32 logit map of scale i (None for a
    skipped scale). Returns the first k as (scale, row, col, logit)."""
    cells = []
    for si, m in enumerate(score_maps):
        if m is None:
            continue
        hh, ww = m.shape
        r, c = np.meshgrid(np.arange(hh), np.arange(ww), indexing="ij")
        cells.append(np.stack([np.full(hh * ww, si), r.ravel(), c.ravel()], 1))
    if not cells:
        return []
    idx = np.concatenate(cells)
    logits = np.concatenate([m.astype(F32).ravel() for m in score_maps if m is not None])
    # lexsort: last key is primary. Descending logit = ascending -logit (exact in float).
    order = np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0], -logits.astype(np.float64)))
    order = order[:max(0, k)]
    return [(int(idx[i, 0]), int(idx[i, 1]), int(idx[i, 2]), float(logits[i])) for i in order]


def iou_plus1(a: Sequence[float], b: Sequence[float]) -> float:
    """nms.c IoU: iw = min(x2) - max(x1) + 1, ih likewise, area = (x2-x1+1)(y2-y1+1);
    0 when iw <= 0 or ih <= 0. Double precision."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1.0
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1.0
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    return inter / (area_a + area_b - inter)


def nms_plus1(boxes: Sequence[Sequence[float]], order: Sequence[int], threshold: float) -> List[int]:
    """Greedy NMS in the given processing order (highest score first, ties already resolved
    by the caller): keep the next unsuppressed box, suppress every later box with
    IoU > threshold. Returns kept indices in processing order."""
    order = list(order)
    suppressed = [False] * len(order)
    keep = []
    for a in range(len(order)):
        if suppressed[a]:
            continue
        i = order[a]
        keep.append(i)
        for b in range(a + 1, len(order)):
            if not suppressed[b] and iou_plus1(boxes[i], boxes[order[b]]) > threshold:
                suppressed[b] = True
    return keep


def nms_margins(boxes: Sequence[Sequence[float]], scores: Sequence[float], order: Sequence[int],
                threshold: float, cutoff: float = -math.inf) -> Tuple[Optional[float], Optional[float]]:
    """Robustness of an NMS run (for the goldens, not part of the contract): over the pairs
    of candidates, (min |IoU - threshold| of the pairs whose lower score is >= cutoff,
    min score gap of the pairs with IoU > threshold and higher score >= cutoff: their
    processing order decides which one survives). ``cutoff``: the lowest score that can
    reach the output (the max_detections cut). None where there is no such pair."""
    order = list(order)
    iou_m, gap_m = None, None
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            i, j = order[a], order[b]
            if max(scores[i], scores[j]) < cutoff:
                continue
            v = iou_plus1(boxes[i], boxes[j])
            if min(scores[i], scores[j]) >= cutoff:
                d = abs(v - threshold)
                iou_m = d if iou_m is None else min(iou_m, d)
            if v > threshold:
                g = abs(scores[i] - scores[j])
                gap_m = g if gap_m is None else min(gap_m, g)
    return iou_m, gap_m


def rle_encode(mask: np.ndarray) -> str:
    """COCO compressed RLE counts string of an [H,W] binary mask (pycocotools)."""
    from pycocotools import mask as mask_util
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return r["counts"].decode("ascii")


def rle_bbox(counts: str, h: int, w: int) -> List[float]:
    """COCO toBbox [x, y, w, h] of an RLE (empty mask -> [0, 0, 0, 0])."""
    from pycocotools import mask as mask_util
    b = mask_util.toBbox({"size": [h, w], "counts": counts.encode("ascii")})
    return [float(v) for v in b]


def inclusive_box(bbox_xywh: Sequence[float]) -> Tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> inclusive pixel box (x, y, x + w - 1, y + h - 1)."""
    x, y, w, h = bbox_xywh
    return (x, y, x + w - 1.0, y + h - 1.0)


def decode_boxes(boxes: np.ndarray, deltas: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
    """multipathnet.md 4.4 (utils.convertFrom) in float32 against the unscaled 0-based
    boxes [K,4]; deltas [K,4C] (de-normalised); clamp x to [0, W-1], y to [0, H-1]
    (the released 1-based [1, W] / [1, H]). Returns [K,4C] float32."""
    b = boxes.astype(F32)
    d = deltas.astype(F32).reshape(b.shape[0], -1, 4)
    half = F32(0.5)
    w = (b[:, 2] - b[:, 0])[:, None]
    h = (b[:, 3] - b[:, 1])[:, None]
    cx = ((b[:, 0] + b[:, 2]) * half)[:, None]
    cy = ((b[:, 1] + b[:, 3]) * half)[:, None]
    ncx = cx + d[..., 0] * w
    ncy = cy + d[..., 1] * h
    nw = w * np.exp(d[..., 2])
    nh = h * np.exp(d[..., 3])
    out = np.stack([ncx - nw * half, ncy - nh * half, ncx + nw * half, ncy + nh * half], -1).astype(F32)
    out[..., 0] = np.clip(out[..., 0], F32(0), F32(img_w - 1))
    out[..., 2] = np.clip(out[..., 2], F32(0), F32(img_w - 1))
    out[..., 1] = np.clip(out[..., 1], F32(0), F32(img_h - 1))
    out[..., 3] = np.clip(out[..., 3], F32(0), F32(img_h - 1))
    return out.reshape(b.shape[0], -1)


def logit_threshold(mask_threshold: float) -> float:
    """ln(t / (1 - t)) of the float32 option value t, in double."""
    t = float(F32(mask_threshold))
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


def sigmoid_f32(x: float) -> float:
    """float32 of the exact (double) sigmoid."""
    if x >= 0:
        v = 1.0 / (1.0 + math.exp(-x))
    else:
        e = math.exp(x)
        v = e / (1.0 + e)
    return float(F32(v))


# ------------------------------------------------------------------------------------------
# step 5: paste
# ------------------------------------------------------------------------------------------
def window(r: int, c: int, s: float, fy: float, fx: float, stride: int, pad: int,
           isz: int) -> Tuple[int, int, int, int]:
    """Step 5 window (top, left, height, width) in original pixels:
    (floor((16 r - 80) / s * fy), floor((16 c - 80) / s * fx)), (floor(160 / s * fy),
    floor(160 / s * fx)), with stride / image_pad / iSz from the config."""
    top = math.floor((stride * r - pad) / s * fy)
    left = math.floor((stride * c - pad) / s * fx)
    hh = math.floor(isz / s * fy)
    ww = math.floor(isz / s * fx)
    return top, left, hh, ww


def paste_mask(logits: np.ndarray, top: int, left: int, win_h: int, win_w: int,
               img_h: int, img_w: int, thr_logit: float, margin: Optional[List[float]] = None) -> np.ndarray:
    """Resize the [m,m] logits to (win_h, win_w) with image_scale, threshold (> thr_logit)
    and paste at (top, left) into an [img_h, img_w] uint8 mask (outside pixels dropped).
    ``margin``, if given, receives min |logit - thr_logit| over the pasted pixels."""
    out = np.zeros((img_h, img_w), dtype=np.uint8)
    if win_h < 1 or win_w < 1:
        return out
    r0, r1 = max(0, top), min(img_h, top + win_h)
    c0, c1 = max(0, left), min(img_w, left + win_w)
    if r0 >= r1 or c0 >= c1:
        return out
    z = image_scale(logits.astype(F32), win_h, win_w)
    on = z.astype(np.float64) > thr_logit
    out[r0:r1, c0:c1] = on[r0 - top:r1 - top, c0 - left:c1 - left]
    if margin is not None and math.isfinite(thr_logit):
        margin.append(float(np.min(np.abs(z[r0 - top:r1 - top, c0 - left:c1 - left].astype(np.float64) - thr_logit))))
    return out


# ------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------
def _min_abs(values) -> Optional[float]:
    v = [abs(float(x)) for x in values]
    return min(v) if v else None


def _normalise(chw: np.ndarray, mean: Sequence[float], std: Optional[Sequence[float]]) -> np.ndarray:
    m = np.asarray(mean, dtype=F32).reshape(3, 1, 1)
    if std is None:
        return (chw - m).astype(F32)
    sd = np.asarray(std, dtype=F32).reshape(3, 1, 1)
    return ((chw - m) / sd).astype(F32)


def run_pipeline(rgb: np.ndarray, proposal_model, proposal_cfg: dict, classifier_model=None,
                 classifier_cfg: Optional[dict] = None, options: Optional[dict] = None) -> dict:
    """Steps 1-9 of native/pipeline/pipeline.h. ``rgb``: uint8 [H,W,3].

    Returns a dict: width, height, proposals (count), instances (list of dicts: label,
    category_id, class_index, score, objectness, box [x,y,w,h], proposal, rle, area),
    proposal_list (every top-k proposal: rank, scale_index, row, col, logit, objectness,
    box, area, rle) and debug (work size, fy/fx, per-scale sizes and grids, logit
    threshold, MultiPathNet input size and s', classified ranks and their ROIs)."""
    opt = dict(DEFAULT_OPTIONS)
    opt.update(options or {})
    mode = opt["mode"]
    if mode not in ("proposals", "instances"):
        raise ValueError(f"mode {mode!r}")
    if mode == "instances" and classifier_model is None:
        raise ValueError("instances mode needs a classifier")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError("rgb must be uint8 [H,W,3] with H, W >= 1")
    H, W = int(rgb.shape[0]), int(rgb.shape[1])
    cfg = proposal_cfg
    scales = list(opt["scales"]) if opt["scales"] else list(cfg["scales"])
    stride, pad, isz = int(cfg["stride"]), int(cfg["image_pad"]), int(cfg["iSz"])
    pad_value = F32(cfg["image_pad_value"])
    sharp = cfg["architecture"] == "sharpmask"

    # 1. work image
    img = (rgb.astype(F32) / F32(255)).transpose(2, 0, 1).copy()  # [3,H,W] float32
    hw, ww = work_size(H, W, int(opt["max_side"]))
    work = image_scale(img, hw, ww) if (hw, ww) != (H, W) else img
    fy, fx = H / hw, W / ww

    # 2. pyramid + dense forward
    score_maps: List[Optional[np.ndarray]] = []
    inputs: List[Optional[torch.Tensor]] = []
    dbg_scales = []
    for s in scales:
        sh, sw = pyramid_size(hw, ww, s)
        if sh < 1 or sw < 1:
            score_maps.append(None)
            inputs.append(None)
            dbg_scales.append(dict(scale=s, size=[sh, sw], skipped=True))
            continue
        x = resize_ac_bilinear(work, sh, sw)
        xp = np.full((3, sh + 2 * pad, sw + 2 * pad), pad_value, dtype=F32)
        xp[:, pad:pad + sh, pad:pad + sw] = x
        xn = _normalise(xp, cfg["mean"], cfg["std"])
        t = torch.from_numpy(xn)[None]
        proposal_model.to(torch.float64)
        with torch.no_grad():
            out = proposal_model.forward_image(t.to(torch.float64), [])
        proposal_model.to(torch.float32)
        sm = out["score_logits"][0].to(torch.float32).numpy()
        if sm.size == 0:
            score_maps.append(None)
            inputs.append(None)
            dbg_scales.append(dict(scale=s, size=[sh, sw], grid=list(sm.shape), skipped=True))
            continue
        score_maps.append(sm)
        inputs.append(t)
        dbg_scales.append(dict(scale=s, size=[sh, sw], padded=[sh + 2 * pad, sw + 2 * pad],
                               grid=[int(sm.shape[0]), int(sm.shape[1])], skipped=False))

    # 3. top-k
    top = topk_cells(score_maps, int(opt["max_proposals"]))

    # 4. masks at the selected cells (per scale, one batched call)
    masks: List[Optional[np.ndarray]] = [None] * len(top)
    by_scale: Dict[int, List[int]] = {}
    for q, (si, r, c, _) in enumerate(top):
        by_scale.setdefault(si, []).append(q)
    proposal_model.to(torch.float64)
    try:
        for si, qs in by_scale.items():
            locs = [(0, top[q][1], top[q][2]) for q in qs]
            with torch.no_grad():
                out = proposal_model.forward_image(inputs[si].to(torch.float64), locs)
            m = out["masks"].to(torch.float32).numpy()
            for j, q in enumerate(qs):
                masks[q] = m[j]
    finally:
        proposal_model.to(torch.float32)

    # 5./6. paste, threshold, RLE, boxes
    thr = logit_threshold(opt["mask_threshold"])
    props = []
    full_masks = []
    for q, (si, r, c, logit) in enumerate(top):
        s = scales[si]
        t0, l0, wh, wwid = window(r, c, s, fy, fx, stride, pad, isz)
        mm: List[float] = []
        bm = paste_mask(masks[q], t0, l0, wh, wwid, H, W, thr, mm)
        rle = rle_encode(bm)
        props.append(dict(rank=q, scale_index=si, row=r, col=c, logit=logit,
                          objectness=sigmoid_f32(logit), window=[t0, l0, wh, wwid],
                          box=rle_bbox(rle, H, W), area=int(bm.sum()), rle=rle,
                          mask_margin=mm[0] if mm else None))
        full_masks.append(bm)

    # margins: how far each discrete decision is from flipping (0 = an exact tie, decided by
    # the contract's tie rule; tiny = fragile between implementations). Not part of the
    # contract: they tell a test which golden decisions are robust.
    margins: Dict[str, Optional[float]] = {}
    n_cells = sum(m.size for m in score_maps if m is not None)
    if 0 < len(top) < n_cells:
        rest = sorted((float(v) for m in score_maps if m is not None for v in m.ravel()), reverse=True)
        margins["max_proposals"] = rest[len(top) - 1] - rest[len(top)]
    debug = dict(height=H, width=W, work_size=[hw, ww], fy=fy, fx=fx, scales=dbg_scales,
                 logit_threshold=thr, mask_size=(isz if sharp else int(cfg["oSz"])), margins=margins)
    instances = []
    nms_thr = float(F32(opt["nms_threshold"]))
    score_thr = F32(opt["score_threshold"])
    max_det = int(opt["max_detections"])

    if mode == "proposals":
        # 7. objectness >= threshold, rank order, class-agnostic NMS, first max_detections
        cand = [p for p in props if F32(p["objectness"]) >= score_thr]
        if float(score_thr) > 0:
            margins["score_threshold"] = _min_abs([p["objectness"] - float(score_thr) for p in props])
        if nms_thr < 1.0:
            boxes = [inclusive_box(p["box"]) for p in cand]
            keep = nms_plus1(boxes, range(len(cand)), nms_thr)
            margins["nms_iou"], margins["nms_order"] = nms_margins(
                boxes, [p["logit"] for p in cand], range(len(cand)), nms_thr)
            cand = [cand[i] for i in keep]
        if len(cand) > max_det >= 1:
            margins["max_detections"] = cand[max_det - 1]["logit"] - cand[max_det]["logit"]
        for p in cand[:max(0, max_det)]:
            instances.append(dict(label="object", category_id=1, class_index=0,
                                  score=p["objectness"], objectness=p["objectness"],
                                  box=list(p["box"]), proposal=p["rank"], rle=p["rle"], area=p["area"]))
    else:
        # 8. classifier
        ccfg = classifier_cfg
        kept = []
        for p in props:
            x1, y1, x2, y2 = inclusive_box(p["box"])
            if p["area"] == 0 or (x2 - x1) * (y2 - y1) <= 2:
                continue
            kept.append(p)
        sp, ih, iw = multipathnet_scale(H, W, ccfg["test_scale"], ccfg["test_max_size"])
        debug.update(mpn_scale=sp, mpn_input_size=[ih, iw], classified=[p["rank"] for p in kept])
        if kept:
            cls_in = image_scale(img, ih, iw)
            cls_in = _normalise(cls_in, ccfg["mean"], ccfg.get("std"))
            boxes = np.array([inclusive_box(p["box"]) for p in kept], dtype=np.float64)
            rois = np.zeros((len(kept), 5), dtype=np.float64)
            rois[:, 1:] = boxes * sp
            rois32 = rois.astype(F32)
            debug["rois"] = [[float(v) for v in row[1:]] for row in rois32]
            classifier_model.to(torch.float64)
            try:
                with torch.no_grad():
                    out = classifier_model(torch.from_numpy(cls_in)[None].to(torch.float64),
                                           torch.from_numpy(rois32).to(torch.float64))
            finally:
                classifier_model.to(torch.float32)
            prob = out["cls_prob"].to(torch.float32).numpy()
            deltas = out["bbox_deltas"].to(torch.float32).numpy()
            cboxes = decode_boxes(boxes.astype(F32), deltas, W, H)
            names = ccfg["class_names"]
            cat_ids = ccfg["coco_category_ids"]
            pairs = []  # (score, class, position in kept)
            iou_m: List[float] = []
            gap_m: List[float] = []
            if float(score_thr) > 0:
                margins["score_threshold"] = _min_abs((prob[:, 1:].astype(np.float64) - float(score_thr)).ravel())
            per_class = []
            for c in range(1, prob.shape[1]):
                cand = [k for k in range(len(kept)) if prob[k, c] >= score_thr]
                # processing order: score descending, ties by proposal rank (kept is in rank order)
                cand.sort(key=lambda k: -float(prob[k, c]))
                bc = [tuple(float(v) for v in cboxes[k, 4 * c:4 * c + 4]) for k in range(len(kept))]
                keep = nms_plus1(bc, cand, nms_thr) if nms_thr < 1.0 else cand
                per_class.append((c, cand, bc))
                pairs.extend((float(prob[k, c]), c, k) for k in keep)
            pairs.sort(key=lambda t: (-t[0], t[1], kept[t[2]]["rank"]))
            cutoff = pairs[max_det - 1][0] if len(pairs) > max_det >= 1 else -math.inf
            if nms_thr < 1.0:
                for c, cand, bc in per_class:
                    a, b = nms_margins(bc, [float(v) for v in prob[:, c]], cand, nms_thr, cutoff)
                    iou_m += [a] if a is not None else []
                    gap_m += [b] if b is not None else []
                margins["nms_iou"] = min(iou_m) if iou_m else None
                margins["nms_order"] = min(gap_m) if gap_m else None
            if len(pairs) > max_det >= 1:
                margins["max_detections"] = pairs[max_det - 1][0] - pairs[max_det][0]
            # proposals with identical boxes get identical ROIs: their scores tie exactly here,
            # and only bit-identical per-ROI arithmetic keeps the tie in another implementation
            bx = [inclusive_box(p["box"]) for p in kept]
            debug["duplicate_rois"] = len(bx) - len(set(bx))
            for score, c, k in pairs[:max(0, max_det)]:
                p = kept[k]
                x1, y1, x2, y2 = (float(v) for v in cboxes[k, 4 * c:4 * c + 4])
                box = [x1, y1, float(F32(x2) - F32(x1)), float(F32(y2) - F32(y1))]
                instances.append(dict(label=names[c], category_id=int(cat_ids[c - 1]), class_index=c,
                                      score=score, objectness=p["objectness"], box=box,
                                      box_xyxy=[x1, y1, x2, y2], proposal=p["rank"], rle=p["rle"],
                                      area=p["area"]))

    return dict(width=W, height=H, proposals=len(top), instances=instances, proposal_list=props,
                debug=debug, masks=full_masks)


def load_models(proposals_path: str, classifier_path: Optional[str] = None):
    """(proposal_model, proposal_cfg, classifier_model or None, classifier_cfg or None)."""
    from export import load
    pm, pc = load(proposals_path)
    if classifier_path:
        cm, cc = load(classifier_path)
    else:
        cm, cc = None, None
    return pm, pc, cm, cc
