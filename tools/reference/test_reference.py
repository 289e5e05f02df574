"""Tests of the reference implementation and of the committed goldens.

    python3 -m pytest tools/reference          # or
    python3 tools/reference/test_reference.py   # plain runner, no pytest needed
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_golden as mg  # noqa: E402
import safetensors_io  # noqa: E402
from common import (Calibrator, c_round, count_fixed, count_params, crop, init_weights,  # noqa: E402
                    roi_pool, roi_pool_bins, sym_pad)
from deepmask import deepmask_config  # noqa: E402
from export import CONFIG_KEY, build, describe, export, load  # noqa: E402
from multipathnet import foveal_boxes, multipathnet_config  # noqa: E402
from sharpmask import sharpmask_config  # noqa: E402

torch.set_grad_enabled(False)
GOLDEN = mg.DEFAULT_OUT


def _params(model, prefix=""):
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


# -------------------------------------------------------------------------------------------
# parameter counts against the specs (built on the meta device: nothing is allocated)

def test_param_counts_deepmask_resnet50():
    # spec deepmask-sharpmask.md 1.1/2 [inferred]: ResNet part 8.51M (8.53M with conv biases),
    # extra layers 6.69M, trunk 15.20M, mask 1.61M, score 0.53M, DeepMask 17.33M (paper ~17M).
    m = build(deepmask_config("resnet50", conv_bias=False), device="meta")
    resnet = _params(m, "trunk.") - _params(m, "trunk.proj.") - _params(m, "trunk.embed.")
    extra = _params(m, "trunk.proj.") + _params(m, "trunk.embed.")
    assert resnet == 8_512_704 and round(resnet / 1e6, 2) == 8.51
    assert extra == 6_685_312 and round(extra / 1e6, 2) == 6.69
    assert resnet + extra == 15_198_016 and round((resnet + extra) / 1e6, 2) == 15.20
    assert _params(m, "mask.") == 1_608_768 and round(_params(m, "mask.") / 1e6, 2) == 1.61
    assert _params(m, "score.") == 526_337 and round(_params(m, "score.") / 1e6, 2) == 0.53
    assert count_params(m) == 17_333_121 and round(count_params(m) / 1e6, 2) == 17.33
    # released config: convs with bias (pretrained file), spec's 8.53M
    mb = build(deepmask_config("resnet50"), device="meta")
    resnet_b = _params(mb, "trunk.") - extra
    assert resnet_b == 8_528_000 and round(resnet_b / 1e6, 2) == 8.53
    assert count_params(mb) == 17_348_417
    # fixed affines (not parameters): 53 BN layers of the truncated ResNet-50 -> 13,504 channels
    assert count_fixed(mb) == 27_008


def test_param_counts_sharpmask():
    # spec 3 [inferred]: refinement 2.75M, 1.64M of it in refs[0]; paper "< 3M".
    m = build(sharpmask_config("resnet50"), device="meta")
    ref = _params(m, "refine.")
    assert ref == 2_750_535 and round(ref / 1e6, 2) == 2.75
    assert _params(m, "refine.v0.") == 1_641_600 and round(_params(m, "refine.v0.") / 1e6, 2) == 1.64
    # SharpMask.lua prints nh + nv (neths + netvs incl. refs[0]); the final 2->1 conv (19 params)
    # lives only in refs[4], so the Lua printout would say 2,750,516.
    assert ref - _params(m, "refine.final.") == 2_750_516


def test_param_counts_multipathnet_resnet18():
    # spec multipathnet.md 1.2: exactly 11,582,762 (bias-free convs, 320 folded biases) and
    # 8,960 ConstAffine constants (4,480 channels).
    m = build(multipathnet_config("resnet18_integral"), device="meta")
    assert count_params(m) == 11_582_762
    assert count_fixed(m) == 8_960
    assert _params(m, "cls.") + _params(m, "bbox.") == 415_530
    # the alternative layout of the pretrained file (fb.resnet.torch #49: every conv has a bias,
    # no BN on the projection shortcut) would give 11,587,242 and 7,168 constants
    alt = build(multipathnet_config("resnet18_integral", conv_bias=True, shortcut_affine=False),
                device="meta")
    assert count_params(alt) == 11_587_242 and count_fixed(alt) == 7_168


def test_param_counts_multipathnet_vgg16():
    # spec multipathnet.md 2.3: ~624M = trunk 14.7M + 5 towers 600M + heads 9.3M
    m = build(multipathnet_config("vgg16_multipath"), device="meta")
    trunk, towers = _params(m, "trunk."), _params(m, "towers.")
    heads = _params(m, "cls.") + _params(m, "bbox.")
    assert trunk == 14_714_688 and round(trunk / 1e6, 1) == 14.7
    assert towers == 600_353_280 and round(towers / 1e6) == 600
    assert heads == 9_290_538 and round(heads / 1e6, 1) == 9.3
    assert count_params(m) == 624_358_506 and round(count_params(m) / 1e6) == 624


def test_param_counts_deepmask_vgga():
    # spec 1.2 [paper]: "about 75M"
    m = build(deepmask_config("vgg_a"), device="meta")
    assert count_params(m) == 75_844_545


# -------------------------------------------------------------------------------------------
# layers

def test_sym_pad_is_numpy_symmetric():
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).view(2, 3, 5, 4)
    for p in (1, 2, 3, 4):
        ref = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="symmetric")
        assert np.array_equal(sym_pad(x, p).numpy(), ref)
    # p=1 equals replicate, p=3 differs from reflect
    r = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    assert torch.equal(sym_pad(x, 1), r)
    assert not torch.equal(sym_pad(x, 3), torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"))


def test_sym_pad_backward_drops_border_gradient():
    x = torch.zeros(1, 1, 3, 3, requires_grad=True)
    with torch.enable_grad():
        sym_pad(x, 1).sum().backward()
    assert torch.equal(x.grad, torch.ones(1, 1, 3, 3))  # Torch: border grads dropped


def test_crop():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    assert torch.equal(crop(x, 2), x[:, :, 2:4, 2:4])


def test_c_round_halves_away_from_zero():
    assert list(c_round([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997])) == [1, 2, 3, -1, -3, 0]


def test_roi_pool_v2_rules():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    # ROI covering the map at scale 1/4: xs = 0, xe = round(31/4) - 1 = 7 -> 8 cells, 2 bins of 4
    y = roi_pool(x, torch.tensor([[0, 0.0, 0.0, 31.0, 31.0]]), 2, 2, 0.25)
    assert y.flatten().tolist() == [27.0, 31.0, 59.0, 63.0]
    # v1 keeps the last cell: xe = 8 -> clamped to the map; bins floor/ceil
    s, e = roi_pool_bins(0.0, 31.0, 0.25, 2, 8, v2=False)
    assert (s, e) == ([0, 4], [5, 8])
    # tie: 8 * (1/16) = 0.5 -> C round gives 1 (torch.round would give 0)
    s, e = roi_pool_bins(8.0, 40.0, 1 / 16, 1, 100)
    assert s == [1] and e == [3]  # xe = round(2.5) - 1 = 2 -> cells 1..2, bin [1, 3)
    # malformed ROI (x2 < x1) is forced to 1 cell; bins of 1/7 cell: most are empty -> 0
    s, e = roi_pool_bins(70.0, 60.0, 1 / 16, 7, 100)
    assert sum(1 for a, b in zip(s, e) if b > a) == 1
    y = roi_pool(x + 100, torch.tensor([[0, 20.0, 20.0, 10.0, 10.0]]), 7, 7, 0.25)
    assert (y == 0).sum().item() == 48 and y.max().item() == 100 + 5 * 8 + 5
    # fully outside -> all zero
    y = roi_pool(x + 1, torch.tensor([[0, 100.0, 100.0, 200.0, 200.0]]), 2, 2, 0.25)
    assert torch.count_nonzero(y) == 0


def test_foveal_boxes():
    r = torch.tensor([[0, 10.0, 12.0, 74.0, 60.0]])  # w 64, h 48
    assert foveal_boxes(r, 0.0).tolist() == [[0, 10, 12, 74, 60]]
    assert foveal_boxes(r, 0.25).tolist() == [[0, -6, 0, 90, 72]]
    assert foveal_boxes(r, 0.5).tolist() == [[0, -22, -12, 106, 84]]
    assert foveal_boxes(r, 1.5).tolist() == [[0, -86, -60, 170, 132]]


# -------------------------------------------------------------------------------------------
# model behaviour

def _small(cfg, seed, kind):
    inp = (mg.dm_inputs if kind == "dm" else mg.mpn_inputs)(cfg, seed)
    return mg.make_model(cfg, seed, kind, inp), inp


def test_fully_convolutional_equals_patch_mode():
    # On a 192x192 input the dense grid is 3x3 and cell (1,1) sees exactly the Crop(1) window,
    # so Linear-as-conv must reproduce the patch forward there (spec 2, "fully convolutional").
    for trunk in ("resnet50", "resnet18"):
        m, inp = _small(deepmask_config(trunk, 16), 5, "dm")
        p = inp["patch"][:1]
        a = m.forward_patch(p)
        b = m.forward_image(p, [(0, 1, 1)])
        assert b["score_logits"].shape == (1, 3, 3)
        assert torch.allclose(a["score_logits"][0], b["score_logits"][0, 1, 1], atol=1e-5)
        assert torch.allclose(a["mask_logits"][0], b["masks"][0], atol=1e-5)
    # VGG-A: a 224 input gives a 1x1 grid; the dilated score conv = pool + FC
    m, inp = _small(deepmask_config("vgg_a", 16), 6, "dm")
    p = inp["patch"][:1]
    a, b = m.forward_patch(p), m.forward_image(p, [(0, 0, 0)])
    assert b["score_logits"].shape == (1, 1, 1)
    assert torch.allclose(a["score_logits"][0], b["score_logits"][0, 0, 0], atol=1e-5)
    assert torch.allclose(a["mask_logits"][0], b["masks"][0], atol=1e-5)


def test_grid_size_and_sharpmask_shapes():
    m, inp = _small(sharpmask_config("resnet18", 16), 7, "dm")
    img = inp["image"]
    hh, ww = m.grid_size(img.shape[-2], img.shape[-1])
    out = m.forward_image(img, [(0, hh - 1, ww - 1)])
    assert out["score_logits"].shape == (1, hh, ww)
    assert out["masks"].shape == (1, 160, 160)
    assert m.forward_patch(inp["patch"])["mask_logits"].shape == (1, 160, 160)
    # the golden image makes the last window of h4 run past the conv1 map (zero fill, spec 4.4)
    h4 = out["h4_map"]
    assert h4.shape[-2] < (hh - 1) * 8 + 80 and h4.shape[-1] < (ww - 1) * 8 + 80


def test_export_fold_roundtrip():
    for cfg, kind in ((deepmask_config("resnet50", 16), "dm"), (sharpmask_config("resnet18", 16), "dm"),
                      (multipathnet_config("resnet18_integral", 16), "mpn"),
                      (multipathnet_config("vgg16_multipath", 16, fc_div=128), "mpn")):
        m, inp = _small(cfg, 11, kind)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.safetensors")
            export(m, path, cfg)
            f, cfg2 = load(path)
            assert cfg2["architecture"] == cfg["architecture"] and cfg2["format_version"] == 1
            names = list(safetensors_io.load(path)[0])
            assert names == list(describe(cfg))
            # no unfolded BN left except post-add affines with identity shortcut
            for n in names:
                assert ".bn" not in n and "downsample_bn" not in n
        run = mg.dm_run if kind == "dm" else mg.mpn_run
        locs = mg._grid_locations(m, inp["image"]) if kind == "dm" else []
        a, b = run(m, inp, locs), run(f, inp, locs)
        for k in a:
            assert mg.rel_err(b[k], a[k]) < 1e-5, k


def test_post_add_affine_kept_only_with_identity_shortcut():
    names = describe(deepmask_config("resnet50"))
    aff = [n for n in names if "post_affine" in n]
    # layer1: blocks 1,2; layer2: 1..3; layer3: 1..5 -> 10 blocks x (scale, bias)
    assert len(aff) == 20
    assert "trunk.layer1.0.post_affine.scale" not in names
    assert "trunk.layer3.5.post_affine.scale" in names
    # ResNet-18 trunks and MultiPathNet fold everything
    assert not [n for n in describe(deepmask_config("resnet18")) if "affine" in n]
    assert not [n for n in describe(multipathnet_config("resnet18_integral")) if "affine" in n]


def test_safetensors_writer_format():
    t = {"a": torch.arange(3, dtype=torch.float32), "b": torch.ones(2, 2, dtype=torch.float16),
         "c": torch.tensor([1, 2], dtype=torch.int64)}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        safetensors_io.save(t, p, {"k": "v"})
        raw = open(p, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        assert n % 8 == 0
        h = json.loads(raw[8:8 + n])
        assert h["__metadata__"] == {"k": "v"} and list(h)[:3] == ["a", "b", "c"]
        back, meta = safetensors_io.load(p)
        assert all(torch.equal(back[k], t[k]) for k in t) and meta == {"k": "v"}
        try:
            from safetensors.torch import load_file
        except ImportError:
            return
        other = load_file(p)
        assert all(torch.equal(other[k], t[k]) for k in t)


# -------------------------------------------------------------------------------------------
# committed goldens

def _golden_names():
    return [n for n, r in mg.RECIPES.items() if r["committed"]]


def test_goldens_present_and_small():
    total = 0
    for n in _golden_names():
        for suffix in (".safetensors", "-io.safetensors"):
            p = os.path.join(GOLDEN, n + suffix)
            assert os.path.exists(p), f"missing {p}: run tools/reference/make_golden.py"
            total += os.path.getsize(p)
    assert total < 8_000_000, total


def test_goldens_are_the_forward_of_their_weights():
    """Every stored output = float64 forward of the stored fp32 weights on the stored inputs,
    and a plain fp32 forward of the same weights is within the tolerance the C++ tests use."""
    for n in _golden_names():
        model, cfg = load(os.path.join(GOLDEN, n + ".safetensors"), dtype=torch.float64)
        io, meta = safetensors_io.load(os.path.join(GOLDEN, n + "-io.safetensors"))
        info = json.loads(meta["fovea.golden"])
        assert info["weights"] == n + ".safetensors"
        kind = mg.RECIPES[n]["kind"]
        inp = {k[len("input."):]: v for k, v in io.items() if k.startswith("input.")}
        locs = [tuple(int(x) for x in r) for r in inp.pop("locations", torch.zeros(0, 3)).tolist()]
        inp = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in inp.items()}
        run = mg.dm_run if kind == "dm" else mg.mpn_run
        out = run(model, inp, locs)
        stored = {k[len("output."):]: v for k, v in io.items() if k.startswith("output.")}
        assert set(out) == set(stored), n
        for k, v in stored.items():
            assert mg.rel_err(out[k].to(torch.float32), v) < 1e-6, (n, k)
        model32, _ = load(os.path.join(GOLDEN, n + ".safetensors"), dtype=torch.float32)
        inp32 = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in inp.items()}
        out32 = run(model32, inp32, locs)
        for k, v in stored.items():
            assert mg.rel_err(out32[k], v) < mg.REL_TOL / 4, (n, k, mg.rel_err(out32[k], v))
            if k == "cls_prob":  # probabilities: elementwise relative
                assert ((out32[k] - v).abs() <= 1e-4 * v + 1e-7).all(), (n, k)


def test_golden_configs():
    for n in _golden_names():
        _, meta = safetensors_io.load(os.path.join(GOLDEN, n + ".safetensors"))
        cfg = json.loads(meta[CONFIG_KEY])
        for key in ("architecture", "trunk", "mean", "source", "licence", "width_div", "golden"):
            assert key in cfg, (n, key)
        if cfg["architecture"] == "multipathnet":
            assert len(cfg["class_names"]) == 81 and cfg["class_names"][0] == "__background__"


def test_golden_regenerates():
    """make_golden.py reproduces a committed golden (to fp32 noise; bit-identity is expected on
    the machine that wrote them, not promised across CPUs / thread counts)."""
    n = "multipathnet-resnet18-d16"
    with tempfile.TemporaryDirectory() as d:
        torch.set_num_threads(1)
        mg.make_one(n, d, verbose=False)
        for suffix in (".safetensors", "-io.safetensors"):
            a, _ = safetensors_io.load(os.path.join(GOLDEN, n + suffix))
            b, _ = safetensors_io.load(os.path.join(d, n + suffix))
            assert list(a) == list(b)
            for k in a:
                assert mg.rel_err(b[k].float(), a[k].float()) < 1e-5, (suffix, k)


# -------------------------------------------------------------------------------------------

if __name__ == "__main__":
    from common import run_tests
    sys.exit(run_tests(globals()))
