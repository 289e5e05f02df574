"""Tests of tools/reference/pipeline.py (the Python reference of native/pipeline/pipeline.h)
and of test/fixtures/golden/pipeline-golden.json.

    python3 -m pytest tools/reference/test_pipeline.py   # or
    python3 tools/reference/test_pipeline.py             # plain runner, no pytest needed
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pipeline as P  # noqa: E402

F32 = np.float32
GOLDEN_JSON = os.path.join(os.path.dirname(os.path.dirname(HERE)), "test", "fixtures", "golden",
                           "pipeline-golden.json")


def _area_average_f64(src, n_out):
    """Exact area (box-filter) resampling in double: output i covers [i*r, (i+1)*r), r = n/m."""
    src = np.asarray(src, dtype=np.float64)
    n = len(src)
    r = n / n_out
    out = []
    for i in range(n_out):
        a, b = i * r, (i + 1) * r
        acc = 0.0
        for j in range(n):
            w = max(0.0, min(b, j + 1) - max(a, j))
            acc += w * src[j]
        out.append(acc / (b - a))
    return np.array(out)


# ---- image.scale (torch/image scaleLinear_rowcol) -------------------------------------------

def test_image_scale_up_3_to_5_exact():
    # scale = 2/4 = 0.5; positions 0, .5, 1, 1.5 and the last sample copied
    y = P.image_scale_axis(np.array([0, 1, 4], F32), 5, 0)
    assert y.dtype == F32
    assert y.tolist() == [0.0, 0.5, 1.0, 2.5, 4.0]


def test_image_scale_up_last_sample_copied_and_length_one():
    src = np.array([0.1, 0.7, 0.3], F32)
    y = P.image_scale_axis(src, 7, 0)
    assert y[-1] == src[-1] and y[0] == src[0]
    assert P.image_scale_axis(np.array([7], F32), 3, 0).tolist() == [7.0, 7.0, 7.0]


def test_image_scale_down_5_to_2_fractional_weights():
    # scale 2.5: out0 = (1 + 2 + .5*3) / 2.5, out1 = (.5*3 + 4 + 5) / 2.5 (the edge sample
    # src[5] does not exist: weight 0 skipped)
    y = P.image_scale_axis(np.array([1, 2, 3, 4, 5], F32), 2, 0)
    assert y.tolist() == [float(F32(4.5) / F32(2.5)), float(F32(10.5) / F32(2.5))]
    assert np.allclose(y, [1.8, 4.2], atol=1e-6)


def test_image_scale_down_4_to_3_float32_scale():
    # scale = (float)4/3 is not exact: the C arithmetic gives (1.25, 3, 7) up to rounding
    src = np.array([1, 2, 4, 8], F32)
    y = P.image_scale_axis(src, 3, 0)
    assert np.allclose(y, [1.25, 3.0, 7.0], rtol=0, atol=2e-6), y
    assert np.allclose(y, _area_average_f64(src, 3), atol=2e-6)


def test_image_scale_equal_is_copy():
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(F32)
    assert np.array_equal(P.image_scale(x, 4, 5), x)


def test_image_scale_down_matches_area_average():
    rng = np.random.default_rng(1)
    for n, m in [(160, 113), (160, 56), (90, 64), (70, 50), (7, 3), (11, 10)]:
        src = rng.standard_normal(n).astype(F32)
        y = P.image_scale_axis(src, m, 0)
        assert np.allclose(y, _area_average_f64(src, m), atol=2e-5 * max(1, n / m)), (n, m)


def test_image_scale_up_matches_align_corners_linear():
    rng = np.random.default_rng(2)
    for n, m in [(56, 226), (160, 320), (2, 9), (61, 734)]:
        src = rng.standard_normal(n).astype(F32)
        y = P.image_scale_axis(src, m, 0)
        t = torch.nn.functional.interpolate(torch.from_numpy(src)[None, None], size=m, mode="linear",
                                            align_corners=True)[0, 0].numpy()
        assert np.allclose(y, t, atol=1e-5), (n, m)


def test_image_scale_2d_width_then_height():
    # grow width, shrink height: output = height pass of the width pass
    x = np.random.default_rng(3).standard_normal((9, 4)).astype(F32)
    y = P.image_scale(x, 4, 7)
    assert y.shape == (4, 7)
    tmp = np.stack([P.image_scale_axis(r, 7, 0) for r in x])           # [9,7] rows first
    ref = np.stack([P.image_scale_axis(tmp[:, j], 4, 0) for j in range(7)], 1)
    assert np.array_equal(y, ref)
    # channels are independent
    z = P.image_scale(np.stack([x, 2 * x]), 4, 7)
    assert np.array_equal(z[0], y)


# ---- sizes and windows --------------------------------------------------------------------

def test_sizes():
    assert P.work_size(90, 70, 64) == (64, 50)
    assert P.work_size(90, 70, 0) == (90, 70)
    assert P.work_size(90, 70, 90) == (90, 70)
    assert P.work_size(1, 700, 600) == (1, 600)       # floor(1 * 600/700 + .5) = 1
    assert P.work_size(1, 2000, 600) == (1, 600)      # max(1, floor(0.3 + .5) = 0) = 1
    assert P.pyramid_size(1, 1, 0.25) == (0, 0)        # skipped scale
    assert P.pyramid_size(480, 640, 2 ** 0.5) == (679, 905)   # spec 4.1 worked example
    s, h, w = P.multipathnet_scale(61, 83, 800, 1000)  # round(800/61*83) = 1089 > 1000
    assert s == 1000 / 83 and (h, w) == (math.floor(61 * s), math.floor(83 * s))
    s, h, w = P.multipathnet_scale(48, 56, 800, 1000)
    assert s == 800 / 48 and (h, w) == (800, 933)


def test_window():
    # spec 4.5: s = 1 -> top-left (16r - 80, 16c - 80), side 160
    assert P.window(0, 0, 1.0, 1.0, 1.0, 16, 80, 160) == (-80, -80, 160, 160)
    assert P.window(3, 7, 0.5, 1.0, 1.0, 16, 80, 160) == (-64, 64, 320, 320)
    # work resize 90x70 -> 64x50: fy = 1.40625, fx = 1.4
    t, l, h, w = P.window(2, 1, 2.0, 90 / 64, 70 / 50, 16, 80, 160)
    assert (t, l) == (math.floor(-48 / 2.0 * 1.40625), math.floor(-64 / 2.0 * 1.4)) == (-34, -45)
    assert (h, w) == (112, 112)


def test_paste_mask_clipped_window_and_threshold():
    logits = np.array([[2.0, -3.0], [-1.0, 0.5]], F32)   # > ln(.2/.8) = -1.386 except -3
    m = P.paste_mask(logits, -1, -1, 2, 2, 3, 4, P.logit_threshold(0.2))
    assert m.shape == (3, 4) and m.dtype == np.uint8
    assert m.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]   # only logits[1,1] is inside
    m = P.paste_mask(logits, 1, 2, 2, 2, 3, 4, P.logit_threshold(0.2))
    assert m.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert not P.paste_mask(logits, 5, 5, 2, 2, 3, 4, 0.0).any()      # fully outside
    assert P.logit_threshold(0.5) == 0.0
    assert abs(P.logit_threshold(0.2) - math.log(0.25)) < 1e-7         # t is float32(0.2)


# ---- top-k ---------------------------------------------------------------------------------

def test_topk_tie_order():
    a = np.array([[1.0, 2.0], [2.0, 0.0]], F32)
    b = np.array([[2.0]], F32)
    c = np.array([[3.0, 2.0]], F32)
    top = P.topk_cells([a, None, b, c], 10)
    # logit 3 first; then the 2s: lower scale index first, then row-major inside a scale
    assert [t[:3] for t in top] == [(3, 0, 0), (0, 0, 1), (0, 1, 0), (2, 0, 0), (3, 0, 1),
                                    (0, 0, 0), (0, 1, 1)]
    assert [t[:3] for t in P.topk_cells([a, None, b, c], 3)] == [(3, 0, 0), (0, 0, 1), (0, 1, 0)]
    assert P.topk_cells([None], 5) == [] and P.topk_cells([a], 0) == []


# ---- NMS (+1 rule of nms.c) -----------------------------------------------------------------

def test_iou_plus1():
    A, B = (0, 0, 9, 9), (5, 0, 14, 9)
    # +1: inter 5*10 = 50, areas 100 -> 50/150 = 1/3 (without +1: 36/126 = 0.286)
    assert abs(P.iou_plus1(A, B) - 1 / 3) < 1e-12
    assert P.iou_plus1(A, (10, 0, 19, 9)) == 0.0                 # adjacent: iw = 0
    assert abs(P.iou_plus1(A, (9, 0, 18, 9)) - 10 / 190) < 1e-12  # one shared column
    assert P.iou_plus1(A, A) == 1.0
    assert P.iou_plus1((0, 0, -1, -1), (0, 0, -1, -1)) == 0.0    # empty-mask boxes never overlap


def test_nms_plus1_rule_and_strict_threshold():
    A, B = (0, 0, 9, 9), (5, 0, 14, 9)
    assert P.nms_plus1([A, B], [0, 1], 0.3) == [0]          # 1/3 > 0.3: suppressed (+1 rule)
    assert P.nms_plus1([A, B], [0, 1], 0.34) == [0, 1]
    assert P.nms_plus1([A, B], [1, 0], 0.3) == [1]          # processing order decides
    D = (0, 0, 9, 4)                                         # IoU exactly 0.5: kept (IoU > thr drops)
    assert P.iou_plus1(A, D) == 0.5 and P.nms_plus1([A, D], [0, 1], 0.5) == [0, 1]
    # a suppressed box does not suppress: A kills B, B would kill C, C survives
    C = (10, 0, 19, 9)
    assert P.nms_plus1([A, B, C], [0, 1, 2], 0.3) == [0, 2]


# ---- boxes, RLE --------------------------------------------------------------------------------

def test_rle_bbox_empty_and_pixel():
    z = np.zeros((4, 5), np.uint8)
    r = P.rle_encode(z)
    assert P.rle_bbox(r, 4, 5) == [0.0, 0.0, 0.0, 0.0]
    assert P.inclusive_box([0, 0, 0, 0]) == (0, 0, -1, -1)
    z[2, 3] = 1
    r = P.rle_encode(z)
    assert P.rle_bbox(r, 4, 5) == [3.0, 2.0, 1.0, 1.0]
    from pycocotools import mask as mask_util
    d = mask_util.decode({"size": [4, 5], "counts": r.encode()})
    assert np.array_equal(d, z)


def test_decode_boxes():
    boxes = np.array([[10, 20, 30, 60]], F32)                 # w = 20, h = 40 (no +1)
    d = np.zeros((1, 8), F32)
    d[0, 4:8] = [0.5, -0.25, math.log(2), 0]                  # class 1
    out = P.decode_boxes(boxes, d, 100, 100)
    assert np.allclose(out[0, :4], [10, 20, 30, 60])          # class 0: zero deltas
    # cx = 20 + .5*20 = 30, cy = 40 - .25*40 = 30, w = 40, h = 40
    assert np.allclose(out[0, 4:], [10, 10, 50, 50], atol=1e-5)
    out = P.decode_boxes(boxes, d, 45, 35)                    # clamp x to [0, 44], y to [0, 34]
    assert np.allclose(out[0, 4:], [10, 10, 44, 34], atol=1e-5)


# ---- the golden file ---------------------------------------------------------------------------

def _golden():
    with open(GOLDEN_JSON) as f:
        return json.load(f)


def test_golden_file_consistency():
    from pycocotools import mask as mask_util
    import base64
    assert os.path.getsize(GOLDEN_JSON) < 300_000
    doc = _golden()
    for case in doc["cases"]:
        img = doc["images"][case["image"]]
        H, W = img["height"], img["width"]
        assert len(base64.b64decode(img["rgb_base64"])) == H * W * 3
        o = case["options"]
        props = case["proposals"]
        assert len(props) == case["num_proposals"] <= o["max_proposals"]
        logits = [p["logit"] for p in props]
        assert logits == sorted(logits, reverse=True)
        for p in props:
            m = mask_util.decode({"size": [H, W], "counts": p["rle"].encode()})
            assert int(m.sum()) == p["area"]
            assert P.rle_bbox(p["rle"], H, W) == p["box"]
        assert len(case["instances"]) <= o["max_detections"]
        scores = [i["score"] for i in case["instances"]]
        assert scores == sorted(scores, reverse=True)
        for i in case["instances"]:
            assert i["rle"] == props[i["proposal"]]["rle"] and i["area"] == props[i["proposal"]]["area"]
            assert i["score"] >= o["score_threshold"]
            if o["mode"] == "proposals":
                assert i["class_index"] == 0 and i["category_id"] == 1 and i["box"] == props[i["proposal"]]["box"]
            else:
                assert i["class_index"] >= 1 and i["area"] > 0


def test_golden_small_cases_reproduce():
    """Re-run the cheap cases (1-pixel-high images) and compare with the file exactly."""
    import make_pipeline_golden as mpg
    names = {"sharpmask-proposals-1x1-ties", "sharpmask-proposals-1xN", "deepmask-instances-1xN-all-dropped"}
    doc = mpg.build(only=names, verbose=False)
    old = {c["name"]: c for c in _golden()["cases"]}
    assert len(doc["cases"]) == len(names)
    for c in doc["cases"]:
        assert c == old[c["name"]], c["name"]


# -------------------------------------------------------------------------------------------

if __name__ == "__main__":
    from common import run_tests
    sys.exit(run_tests(globals()))
