"""Fast CPU tests of the training recipe (python3 -m pytest tools/train -q; < 30 s).

Synthetic images (written to a temp dir) stand in for the fixture data, so the tests need
neither the .npy cache nor the data sets."""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "reference")))

import data  # noqa: E402
import losses  # noqa: E402
import train  # noqa: E402
from sampler import PatchSampler, crop_window  # noqa: E402

torch.set_num_threads(1)


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Three 240x320 images, white axis-aligned rectangles (the objects) on dark noise."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    ims = []
    boxes = [[(100, 60, 180, 140)], [(20, 30, 110, 90), (200, 120, 300, 220)], [(150, 40, 230, 200)]]
    for i, bl in enumerate(boxes):
        img = (rng.random((240, 320, 3)) * 60).astype(np.uint8)
        anns = []
        for (x0, y0, x1, y1) in bl:
            img[y0:y1, x0:x1] = 255
            anns.append(dict(polys=[rect(x0, y0, x1, y1)], rle=None, bbox=[x0, y0, x1 - x0, y1 - y0],
                             crowd=False, cat=1 + i, catkey=f"coco:{1 + i}"))
        p = str(d / f"{i}.npy")
        np.save(p, img)
        ims.append(dict(dataset="synth", file=f"{i}.jpg", npy=p, h=240, w=320, anns=anns, key=f"synth/{i}"))
    return ims


TINY = dict(train.RECIPES["light"], width_div=16, batch=4, sm_batch=2, paste_p=0.5, mpn_width_div=16,
            mpn_images=1, mpn_rois=16, mpn_short=160, mpn_max=224)


# ----------------------------------------------------------------------------- sampler

def test_positive_label_matches_patch(synth):
    s = PatchSampler(synth, gSz=112, paste_p=0.0, seed=1)
    for _ in range(12):
        patch, lab, info = s.positive()
        assert patch.shape == (3, 192, 192) and lab.shape == (112, 112)
        # the white object in the central 160x160 of the input vs the label
        white = (patch.mean(0) > 0.8).float()[16:176, 16:176]
        white = torch.nn.functional.interpolate(white[None, None], size=(112, 112), mode="area")[0, 0] > 0.5
        lt = torch.from_numpy(lab).bool()
        inter = (white & lt).sum().item(); union = (white | lt).sum().item()
        assert inter / union > 0.8
        # roughly centred, max side ~ 92 px of 192 at +-0.25 octave
        ys, xs = np.nonzero(lab)
        g = 112 / 160
        assert abs((xs.min() + xs.max()) / 2 - 55.5) <= 16 * g + 2
        assert abs((ys.min() + ys.max()) / 2 - 55.5) <= 16 * g + 2
        side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        assert 92 * 2 ** -0.25 * g - 3 <= side <= 92 * 2 ** 0.25 * g + 3


def test_negative_definition(synth):
    s = PatchSampler(synth, seed=2)
    # image 0: object (100,60)-(180,140): centre (140,100), max side 80 -> canonical window 192*80/92
    side = 192 * 80 / 92
    assert not s.is_negative(0, 140, 100, side)                 # canonical positive
    assert not s.is_negative(0, 150, 100, side * 2 ** 0.5)     # small shift / scale: not negative
    assert s.is_negative(0, 140 + 60 * side / 192, 100, side)  # shifted 60 window px
    assert s.is_negative(0, 140, 100, side * 2 ** 1.5)         # 1.5 octaves too large
    assert s.is_negative(0, 140, 100, side * 2 ** -1.5)        # 1.5 octaves too small
    for _ in range(20):
        patch, lab, info = s.negative()
        x0, y0, wr = info["window"]
        assert lab.sum() == 0 and patch.shape == (3, 192, 192)


def test_batch_flip_and_paste(synth):
    s = PatchSampler(synth, paste_p=1.0, seed=3)
    b = s.batch(6, pos_frac=0.5)
    assert b["x"].shape == (6, 3, 192, 192) and b["mask"].shape == (6, 112, 112)
    assert b["pos"].tolist() == [True] * 3 + [False] * 3
    assert (b["mask"][3:] == -1).all() and (b["mask"][:3] == 1).any()
    assert b["score"].tolist() == [1, 1, 1, -1, -1, -1]


def test_crop_window_outside_is_grey():
    img = np.zeros((10, 10, 3), np.uint8)
    p = crop_window(img, -30, -30, 20, 8)
    assert torch.allclose(p, torch.full_like(p, 0.5))


# ----------------------------------------------------------------------------- losses

def test_deepmask_joint_loss():
    torch.manual_seed(0)
    ml, sl = torch.randn(4, 8, 8), torch.randn(4)
    mt = torch.randn(4, 8, 8).sign()
    st = torch.tensor([1.0, 1.0, -1.0, -1.0])
    pos = st > 0
    L = losses.deepmask_joint_loss(ml, sl, mt, st, pos, score_weight=0.5)
    ref_m = torch.log1p(torch.exp(-mt[:2] * ml[:2])).mean()
    ref_s = torch.log1p(torch.exp(-st * sl)).mean()
    assert torch.allclose(L["mask"], ref_m, atol=1e-6) and torch.allclose(L["score"], ref_s, atol=1e-6)
    assert torch.allclose(L["total"], ref_m + 0.5 * ref_s, atol=1e-6)
    mt2 = mt.clone(); mt2[2:] = -mt2[2:]  # negatives' mask targets do not matter
    assert torch.allclose(losses.deepmask_joint_loss(ml, sl, mt2, st, pos)["mask"], L["mask"])
    # matches nn.SoftMarginLoss
    assert torch.allclose(ref_s, torch.nn.SoftMarginLoss()(sl, st), atol=1e-6)


def test_integral_loss():
    torch.manual_seed(0)
    H, K, C = 6, 5, 4
    logits = torch.randn(H, K, C)
    labels = torch.tensor([[2, 0, -1, 1, 0]] * H)
    labels[5, 0] = 0  # at the 0.75 threshold ROI 0 is background
    raw = torch.randn(K, 4 * C)
    tg = torch.randn(K, 4)
    bl = torch.tensor([2, 0, 0, 1, 0])
    L = losses.integral_loss(logits, labels, raw, tg, bl)
    ce = torch.stack([torch.nn.functional.cross_entropy(logits[h][labels[h] >= 0], labels[h][labels[h] >= 0])
                      for h in range(H)]).mean()
    sl1 = torch.nn.functional.smooth_l1_loss(raw.view(K, C, 4)[[0, 3], [2, 1]], tg[[0, 3]], reduction="sum") / K
    assert torch.allclose(L["cls"], ce) and torch.allclose(L["box"], sl1)


# ----------------------------------------------------------------------------- training / resume

def _args(run, steps, **kw):
    return argparse.Namespace(run=str(run), config="tiny", minutes=0, steps=steps, lr=0.0, threads=1, seed=7,
                              log_every=2, ckpt_minutes=100, note="test", **kw)


@pytest.fixture()
def tiny_env(synth, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "load_split", lambda part="train", sets=None: [dict(im) for im in synth])
    monkeypatch.setattr(train, "append_runs_md", lambda rec, st: None)
    return tmp_path


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_is_exact(tiny_env):
    a = train.DeepMaskStage(_args(tiny_env / "a", 4), TINY)
    a.run_budget()
    b1 = train.DeepMaskStage(_args(tiny_env / "b", 2), TINY)
    b1.run_budget()
    assert os.path.getsize(tiny_env / "b" / "deepmask.pt") < train.MAX_CKPT_BYTES
    b2 = train.DeepMaskStage(_args(tiny_env / "b", 4), TINY)
    rec = b2.run_budget()
    assert rec["steps_from"] == 2 and rec["steps_to"] == 4 and b2.step == 4
    assert len(b2.history) == 2
    assert torch.equal(_params(a.model), _params(b2.model))


def test_resume_is_exact_with_workers(tiny_env):
    # Batches made by worker processes: the stream depends on the step alone, so 2 + 2 steps
    # with 2 workers equal 4 steps with 1 worker.
    a = train.DeepMaskStage(_args(tiny_env / "a", 4, workers=1), TINY)
    a.run_budget()
    b1 = train.DeepMaskStage(_args(tiny_env / "b", 2, workers=2), TINY)
    b1.run_budget()
    b2 = train.DeepMaskStage(_args(tiny_env / "b", 4, workers=2), TINY)
    b2.run_budget()
    assert b2.step == 4 and a.prefetch is None and b2.prefetch is None
    assert torch.equal(_params(a.model), _params(b2.model))
    # and it is a different stream from the in-process sampler's
    c = train.DeepMaskStage(_args(tiny_env / "c", 4), TINY)
    c.run_budget()
    assert not torch.equal(_params(a.model), _params(c.model))


def test_loss_falls_on_fixed_batch(synth):
    torch.manual_seed(0)
    from export import build
    model = build(train.model_config("deepmask", TINY))
    s = PatchSampler(synth, seed=5)
    b = s.batch(4, pos_frac=0.5)
    train.init_deepmask(model, b["x"], 0)
    model.eval()  # no dropout: a deterministic objective
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for i in range(25):
        out = model.forward_patch(b["x"])
        L = losses.deepmask_joint_loss(model.upsample_mask(out["mask_logits"]), out["score_logits"], b["mask"],
                                       b["score"], b["pos"])
        first = L["total"].item() if first is None else first
        opt.zero_grad(); L["total"].backward(); opt.step()
    assert L["total"].item() < 0.6 * first


def test_sharpmask_stage_freezes_deepmask(tiny_env):
    dm = train.DeepMaskStage(_args(tiny_env, 1), TINY)
    dm.run_budget()
    sm = train.SharpMaskStage(_args(tiny_env, 2), TINY)
    sm.run_budget()
    sd0 = dm.model.state_dict()
    for k, v in sm.model.state_dict().items():
        if not k.startswith("refine."):
            assert torch.equal(v, sd0[k]), k


# ----------------------------------------------------------------------------- MultiPathNet

def test_roi_pool_fast_matches_reference():
    from common import roi_pool
    from train_mpn import roi_pool_fast
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11)
    rois = torch.tensor([[0, 0.0, 0.0, 170.0, 140.0], [1, 30.5, 20.2, 60.1, 90.7], [0, 100, 100, 101, 101]])
    assert torch.equal(roi_pool_fast(x, rois, 7, 7, 1 / 16), roi_pool(x, rois, 7, 7, 1 / 16))


def test_mpn_stage_and_forward(tiny_env):
    import train_mpn
    monkey_images = data.load_split("train")
    st = train_mpn.MultiPathNetStage(_args(tiny_env, 2), TINY)
    st.run_budget()
    m = st.model.eval()
    b = st.sampler.batch(1, st.cfg["mean"], st.cfg["std"], st.cfg["bbox_norm_mean"], st.cfg["bbox_norm_std"])
    with torch.no_grad():
        ref = m(b["images"], b["rois"][:3])
        fast = train_mpn.mpn_forward(m, b["images"], b["rois"][:3])
    assert torch.allclose(ref["cls_prob"], fast["cls_prob"], atol=1e-6)
    assert b["labels"].shape[0] == 6 and (b["labels"][0] >= 0).all()
    assert len(monkey_images) == 3


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """Two 240x320 images of rectangles whose colour is their class (red 1, green 2, blue 3)."""
    d = tmp_path_factory.mktemp("mpn")
    rng = np.random.default_rng(1)
    colour = {1: (230, 30, 30), 2: (30, 220, 40), 3: (40, 50, 230)}
    layout = [[(1, 30, 40, 130, 150), (2, 170, 60, 290, 200)], [(3, 40, 30, 200, 140), (1, 210, 120, 300, 220)]]
    ims = []
    for i, objs in enumerate(layout):
        img = (rng.random((240, 320, 3)) * 90).astype(np.uint8)
        anns = []
        for c, x0, y0, x1, y1 in objs:
            img[y0:y1, x0:x1] = colour[c]
            anns.append(dict(polys=[rect(x0, y0, x1, y1)], rle=None, bbox=[x0, y0, x1 - x0, y1 - y0],
                             crowd=False, cat=c, catkey=f"coco:{c}"))
        p = str(d / f"{i}.npy")
        np.save(p, img)
        ims.append(dict(dataset="synth", file=f"{i}.jpg", npy=p, h=240, w=320, anns=anns, key=f"mpn/{i}"))
    return ims


def test_mpn_sampler_gives_every_head_foreground(coloured):
    """The collapse to background of the first CPU run: with fg drawn uniformly from IoU >= 0.5,
    the u = 0.75 head saw ~3 fg in 128 ROIs. fg_hi = 0.5 gives it half of the fg draws."""
    import train_mpn
    s = train_mpn.RoiSampler(coloured, 160, 224, fg=16, bg=48, seed=3, fg_hi=0.5, n_tight=8)
    b = s.batch(2, [0.5] * 3, [0.25] * 3, [0.0] * 4, [1.0] * 4)
    n_fg = (b["labels"] > 0).sum(1)
    assert n_fg[0] == 32 and n_fg[-1] >= 16
    assert ((b["iou"] >= 0.75) == (b["labels"][-1] > 0)).all()
    for h, u in enumerate(train_mpn.THRESH):  # per-head labels: fg iff IoU >= u_h
        assert ((b["labels"][h] > 0) == (b["iou"] >= u)).all()


def test_mpn_learns_classes_on_fixed_batch(coloured):
    """Overfit test (the first CPU run never left the label prior): on one fixed batch, with the
    recipe's frozen trunk and cached features, layer4 + the integral heads must learn the
    classes, not only background: head-0 fg accuracy, the class decision on fg ROIs and the
    averaged probability of the true class on the IoU >= 0.75 ROIs (what the pipeline scores)."""
    import train_mpn
    from common import init_weights
    from export import build
    torch.manual_seed(0)
    cfg = train.model_config("multipathnet", TINY)
    cfg.update(bbox_norm_mean=[0.0] * 4, bbox_norm_std=[0.1, 0.1, 0.2, 0.2])
    m = build(cfg)
    g = torch.Generator().manual_seed(0)
    init_weights(m.trunk, g); init_weights(m.tower, g)
    with torch.no_grad():
        for lin in m.cls:
            lin.weight.normal_(0, 0.01, generator=g); lin.bias.zero_()
        m.bbox.weight.normal_(0, 0.001, generator=g); m.bbox.bias.zero_()
    s = train_mpn.RoiSampler(coloured, 160, 224, fg=4, bg=12, seed=4, fg_hi=0.5, n_tight=8)
    b = s.batch(2, cfg["mean"], cfg["std"], cfg["bbox_norm_mean"], cfg["bbox_norm_std"])
    train.calibrate_affines(m, lambda: train_mpn.mpn_forward(m, b["images"], b["rois"]))
    cache = train_mpn.FeatureCache(m, s, cfg["mean"], cfg["std"])
    feats = cache.batch(b["keys"])
    with torch.no_grad():  # same-size images: the cached features are the batch's exactly
        assert torch.allclose(feats, m.features(b["images"]), atol=1e-5)
    for p in m.trunk.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)

    def step(train_it=True):
        out = train_mpn.mpn_forward(m, None, b["rois"], feats)
        L = losses.integral_loss(out["cls_logits"], b["labels"], out["bbox_raw"], b["bbox_targets"],
                                 b["bbox_labels"])
        if train_it:
            opt.zero_grad(); L["total"].backward(); opt.step()
        return L["cls"].item(), train_mpn.roi_metrics(out, b)

    first, met0 = step()
    for _ in range(120):
        step()
    with torch.no_grad():
        last, met = step(False)
    assert met0["acc_fg"] < 0.5 and met0["p_fg75"] < 0.05
    assert last < 0.2 * first
    assert met["acc_fg"] >= 0.85 and met["acc_bg"] >= 0.9 and met["acc_cls"] >= 0.85, met
    assert met["acc_fg75"] >= 0.9 and met["p_fg75"] >= 0.6, met


def test_export_f16_roundtrip(tiny_env):
    import export_weights
    from export import load
    dm = train.DeepMaskStage(_args(tiny_env, 1), TINY)
    dm.run_budget()
    train.SharpMaskStage(_args(tiny_env, 1), TINY).run_budget()
    out = tiny_env / "w"
    assert export_weights.main(["--run", str(tiny_env), "--out", str(out), "--dtype", "f16"]) == 0
    model, cfg = load(str(out / "sharpmask.safetensors"))
    assert cfg["architecture"] == "sharpmask" and len(cfg["scales"]) == 7 and "licence" in cfg
    st = torch.load(tiny_env / "sharpmask.pt", weights_only=False)
    ref = train.build(cfg)
    ref.load_state_dict(st["model"]); ref.eval()
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        a, b = model.forward_patch(x), ref.forward_patch(x)
    assert torch.allclose(a["mask_logits"], b["mask_logits"], atol=2e-2, rtol=2e-2)
    assert torch.allclose(a["score_logits"], b["score_logits"], atol=2e-2, rtol=2e-2)
