"""Golden weights + input/output fixtures for the C++ forward passes.

    python3 tools/reference/make_golden.py                 # committed set -> test/fixtures/golden/
    python3 tools/reference/make_golden.py --full --out DIR  # full-size released configs (not committed)
    python3 tools/reference/make_golden.py --only deepmask-resnet50-d16 --check

For each model:
1. build it from its config, He-init with a seeded generator, then calibrate on a seeded
   input (common.Calibrator): every conv/Linear is rescaled so its output has RMS 1 (logit
   layers 2), and every fixed affine gets random but realistic BN statistics (gamma, beta,
   running mean/var) from which a = gamma/sqrt(var+eps), b = beta - mean*a;
2. export it (export.export: BN folded into the convs, explicit affine only after a residual
   sum with an identity shortcut) to ``<name>.safetensors``;
3. reload the exported fp32 tensors into the folded model, convert it to float64 and run the
   forward on deterministic inputs; the float64 outputs rounded to fp32 are the goldens, so
   they are the exact function of the stored weights (no fp32 accumulation error in them);
4. check that the unfolded fp32 model agrees with them (max |diff| / max |golden| < 1e-4
   per tensor), i.e. that folding is right, and write ``<name>-io.safetensors``.

Inputs whose size matters (patches, images) are rounded to fp16-representable values and
stored as F16 (exact, half the bytes); everything else is F32 (locations I64).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import OrderedDict
from typing import Callable, Dict, List, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import safetensors_io  # noqa: E402
from common import Calibrator, count_fixed, count_params, init_weights  # noqa: E402
from deepmask import deepmask_config  # noqa: E402
from export import CONFIG_KEY, build, export, load  # noqa: E402
from multipathnet import multipathnet_config  # noqa: E402
from sharpmask import sharpmask_config  # noqa: E402

REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "test", "fixtures", "golden")
REL_TOL = 1e-4


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def f16_exact(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def smooth_image(g: torch.Generator, h: int, w: int) -> torch.Tensor:
    """An RGB 'photo' in [0,1]: smooth random blobs plus a little noise, [3,h,w]."""
    low = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)[0]
    img = img + 0.08 * torch.randn(3, h, w, generator=g)
    return img.clamp(0, 1)


def normalise(img: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (img - m) / s


def deepmask_image(g, cfg, h, w) -> torch.Tensor:
    """A DeepMask full-image input: image (h x w) padded by 80 px of 0.5 grey on every side,
    then normalised (spec 4.1); [1,3,h+160,w+160], fp16-exact."""
    pad = cfg["image_pad"] or 0
    img = torch.full((3, h + 2 * pad, w + 2 * pad), cfg["image_pad_value"])
    img[:, pad:pad + h, pad:pad + w] = smooth_image(g, h, w)
    return f16_exact(normalise(img, cfg["mean"], cfg["std"]))[None]


def deepmask_patches(g, cfg, n) -> torch.Tensor:
    w = cfg["wSz"]
    return f16_exact(torch.stack([normalise(smooth_image(g, w, w), cfg["mean"], cfg["std"]) for _ in range(n)]))


# ---------------------------------------------------------------------------------------------
# model recipes: name -> (config, input maker, forward runner, calibration)


def _dm_inputs(cfg, seed, n_patch, raw_hw):
    g = gen(seed + 1)
    patch = deepmask_patches(g, cfg, n_patch)
    image = deepmask_image(g, cfg, *raw_hw)
    return patch, image


def _grid_locations(model, image) -> List[Tuple[int, int, int]]:
    hh, ww = model.grid_size(image.shape[-2], image.shape[-1])
    if model.cfg["architecture"] == "sharpmask":  # 160x160 masks are big: 3 locations
        cand = [(0, 0), (hh - 1, ww - 1), (hh // 2, ww // 2)]
    else:
        cand = [(0, 0), (0, ww - 1), (hh - 1, 0), (hh - 1, ww - 1), (hh // 2, ww // 2), (hh - 1, ww // 2)]
    out = []
    for r, c in cand:
        if (0, r, c) not in out:
            out.append((0, r, c))
    return out


def dm_inputs(cfg, seed, full=False):
    # ResNet: padded 181 x 205 (raw 21 x 45): not multiples of 16, odd -> ceil sizes; grid 3 x 4;
    # for SharpMask the windows of the last grid row/col run past the tap maps (zero fill).
    raw = (21, 45) if cfg["trunk"] != "vgg_a" else (241, 257)
    n_patch = 1 if cfg["architecture"] == "sharpmask" else 2
    patch, image = _dm_inputs(cfg, seed, n_patch, raw)
    return OrderedDict(patch=patch, image=image)


def dm_run(model, inp, locs) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    p = model.forward_patch(inp["patch"])
    for k in ("mask_logits", "dm_mask_logits", "score_logits", "embedding"):
        if k in p:
            out[f"patch.{k}"] = p[k]
    im = model.forward_image(inp["image"], locs)
    # (h4_map, the largest, is left out for size; the final masks cover it)
    for k in ("score_logits", "embedding", "masks", "dm_masks", "h1_map", "h2_map", "h3_map"):
        if k in im:
            out[f"image.{k}"] = im[k]
    return out


def mpn_inputs(cfg, seed, full=False):
    g = gen(seed + 1)
    h, w = 100, 132
    img = smooth_image(g, h, w)
    if cfg["variant"] == "vgg16_multipath":
        x = img * 255.0
        x = x.flip(0)  # RGB -> BGR
        x = x - torch.tensor(cfg["mean"], dtype=torch.float32).view(3, 1, 1)
    else:
        x = normalise(img, cfg["mean"], cfg["std"])
    image = f16_exact(x)[None]
    # 0-based ROIs (batch, x1, y1, x2, y2) in input pixels; Lua coordinates = these + 1.
    rois = torch.tensor([
        [0, 10.0, 12.0, 74.0, 60.0],     # ordinary box
        [0, 90.25, 40.5, 150.75, 118.0],  # partly outside the image (right and bottom)
        [0, -30.0, -20.0, 24.0, 30.0],    # partly outside (left and top)
        [0, 50.0, 50.0, 53.0, 52.0],      # tiny: under one stride-16 cell
        [0, 8.0, 24.0, 40.0, 88.0],       # coordinates * 1/16 hit .5 exactly (C round: away from 0)
        [0, 70.0, 30.0, 60.0, 20.0],      # malformed (x2 < x1, y2 < y1): forced to 1x1
        [0, 0.0, 0.0, 131.0, 99.0],       # whole image
        [0, 33.5, 17.75, 101.25, 77.5],   # fractional coordinates
    ], dtype=torch.float32)
    return OrderedDict(image=image, rois=rois)


def mpn_run(model, inp, locs) -> "OrderedDict[str, torch.Tensor]":
    o = model(inp["image"], inp["rois"])
    out = OrderedDict()
    for k in ("cls_logits", "cls_prob", "bbox_raw", "bbox_deltas", "feature", "pooled", "foveal_rois"):
        if k in o:
            out[k] = o[k]
    for k in sorted(o):
        if k.startswith("tower_"):
            out[k] = o[k]
    return out


def dm_calibrate(model, inp):
    model.forward_patch(inp["patch"])
    if hasattr(model, "refine"):
        pass  # forward_patch reaches every refinement layer


def mpn_calibrate(model, inp):
    model(inp["image"], inp["rois"])


RECIPES = OrderedDict()


def recipe(name, cfg, seed, kind, committed=True, note=""):
    RECIPES[name] = dict(cfg=cfg, seed=seed, kind=kind, committed=committed, note=note)


def _register():
    # Committed: same structure as the released / shipped configs, channel widths / 16.
    # (The 512-d embedding is cut to 16 (/32): it feeds the 3136-wide mask Linear and the
    # 3200-wide SharpMask v0, which would dominate the file sizes.)
    small = dict(embed_dim=16)
    recipe("deepmask-resnet50-d16", deepmask_config("resnet50", 16, **small), 101, "dm",
           note="released DeepMask (ResNet-50, post-add affine blocks, conv biases), channels/16, embedding 16")
    recipe("sharpmask-resnet50-d16", sharpmask_config("resnet50", 16, **small), 102, "dm",
           note="released SharpMask (km=ks=32, nhu2 64/64/64/32 as released) on that DeepMask")
    recipe("deepmask-resnet18-d16", deepmask_config("resnet18", 16, **small), 103, "dm",
           note="lighter trunk (ResNet-18 widths, standard blocks), same heads, channels/16, embedding 16")
    recipe("sharpmask-resnet18-d16", sharpmask_config("resnet18", 16, **small), 104, "dm",
           note="SharpMask (released refinement widths) on the lighter trunk")
    recipe("multipathnet-resnet18-d16", multipathnet_config("resnet18_integral", 16), 105, "mpn",
           note="released MultiPathNet (ResNet-18, integral loss), channels/16")
    recipe("multipathnet-vgg16-d16", multipathnet_config("vgg16_multipath", 16, fc_div=128, mix_channels=16),
           106, "mpn",
           note="full MultiPath VGG-16 (5 towers, foveal regions, conv3/4/5 skips), conv channels/16, "
                "tower 1x1 conv 512/32, fc6/fc7 4096/128")
    recipe("deepmask-vgga-d16", deepmask_config("vgg_a", 16), 107, "dm", committed=False,
           note="NIPS'15 VGG-A DeepMask (paper variant), channels/16 (not committed: size)")
    # Full size, on demand only (--full).
    recipe("deepmask-resnet50", deepmask_config("resnet50"), 201, "dm", committed=False)
    recipe("sharpmask-resnet50", sharpmask_config("resnet50"), 202, "dm", committed=False)
    recipe("deepmask-resnet18", deepmask_config("resnet18"), 203, "dm", committed=False)
    recipe("sharpmask-resnet18", sharpmask_config("resnet18"), 204, "dm", committed=False)
    recipe("multipathnet-resnet18", multipathnet_config("resnet18_integral"), 205, "mpn", committed=False)
    recipe("multipathnet-vgg16", multipathnet_config("vgg16_multipath"), 206, "mpn", committed=False)
    recipe("deepmask-vgga", deepmask_config("vgg_a"), 207, "dm", committed=False)


_register()


def make_model(cfg, seed, kind, inp):
    torch.manual_seed(seed)
    model = build(cfg)
    model.eval()
    init_weights(model, gen(seed))
    with torch.no_grad(), Calibrator(model, gen(seed + 7)):
        (dm_calibrate if kind == "dm" else mpn_calibrate)(model, inp)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|): the comparison the golden tests should use (every
    output here is O(1) by construction; the floor of 1 keeps near-zero scalars sane)."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def make_one(name: str, out_dir: str, check: bool = True, verbose: bool = True) -> dict:
    r = RECIPES[name]
    cfg, seed, kind = r["cfg"], r["seed"], r["kind"]
    inp = (dm_inputs if kind == "dm" else mpn_inputs)(cfg, seed)
    run = dm_run if kind == "dm" else mpn_run
    torch.set_grad_enabled(False)
    model = make_model(cfg, seed, kind, inp)
    locs = _grid_locations(model, inp["image"]) if kind == "dm" else []

    wpath = os.path.join(out_dir, f"{name}.safetensors")
    cfg_out = dict(cfg)
    cfg_out["golden"] = dict(name=name, seed=seed, note=r["note"],
                             generator="tools/reference/make_golden.py")
    wsize = export(model, wpath, cfg_out)

    folded, _ = load(wpath, dtype=torch.float64)
    inp64 = OrderedDict((k, v.to(torch.float64) if v.is_floating_point() else v) for k, v in inp.items())
    golden = run(folded, inp64, locs)
    golden = OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in golden.items())

    errs = {}
    if check:
        ref32 = run(model, inp, locs)
        for k, v in golden.items():
            errs[k] = rel_err(ref32[k], v)
        bad = {k: e for k, e in errs.items() if not e < REL_TOL}
        if bad:
            raise AssertionError(f"{name}: unfolded fp32 vs folded fp64 over {REL_TOL}: {bad}")

    io = OrderedDict()
    for k, v in inp.items():
        io[f"input.{k}"] = v.to(torch.float16) if k in ("patch", "image") else v
    if locs:
        io["input.locations"] = torch.tensor(locs, dtype=torch.int64)
    for k, v in golden.items():
        io[f"output.{k}"] = v
    meta = {
        "fovea.golden": json.dumps(dict(
            model=name, weights=f"{name}.safetensors", seed=seed,
            computed="float64 forward of the exported fp32 weights, rounded to fp32",
            tolerance_rel=REL_TOL,
            unfolded_fp32_vs_golden_max_rel=errs,
            inputs_f16="input.patch / input.image hold fp16-representable values: convert to fp32 exactly",
            rois="0-based (batch index from 0; coordinates = Lua 1-based - 1), network-input pixels",
            locations="(image, row, col) 0-based cells of the stride-16 output grid",
        ), sort_keys=True),
    }
    iopath = os.path.join(out_dir, f"{name}-io.safetensors")
    iosize = safetensors_io.save(io, iopath, meta)
    info = dict(name=name, weights_bytes=wsize, io_bytes=iosize, params=count_params(model),
                fixed=count_fixed(model), max_rel=max(errs.values()) if errs else None)
    if verbose:
        max_rel = "not checked" if info["max_rel"] is None else f"{info['max_rel']:.2e}"
        print(f"{name:30s} weights {wsize/1e6:6.3f} MB  io {iosize/1e6:6.3f} MB  params {info['params']:>11,}"
              f"  fixed {info['fixed']:>7,}  max rel (unfolded fp32 vs golden) {max_rel}")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default: test/fixtures/golden for the "
                                                "committed set; required with --full)")
    ap.add_argument("--full", action="store_true", help="the full-size configs instead (not committed)")
    ap.add_argument("--only", nargs="*", help="recipe names")
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # one summation order (reproducible bits on one machine)
    if a.only:
        names = a.only
    else:
        names = [n for n, r in RECIPES.items() if r["committed"] != a.full]
    if a.full and a.out is None:
        ap.error("--full needs --out (full-size goldens are not committed)")
    out = a.out or DEFAULT_OUT
    os.makedirs(out, exist_ok=True)
    total = 0
    for n in names:
        info = make_one(n, out, check=not a.no_check)
        total += info["weights_bytes"] + info["io_bytes"]
    print(f"total {total/1e6:.3f} MB in {out}")


if __name__ == "__main__":
    main()
