#!/usr/bin/env python3
"""Export the trained checkpoints of a run to weights/ with tools/reference/export.py's naming.

    python3 tools/train/export_weights.py --run tools/train/runs/light [--dtype f16|f32]

* ``<run>/sharpmask.pt`` (or, if SharpMask was never trained, ``<run>/deepmask.pt`` with an
  untrained refinement -- refused unless --allow-untrained-refine) -> weights/sharpmask.safetensors
  (architecture "sharpmask": it contains its DeepMask part);
* ``<run>/multipathnet.pt`` -> weights/multipathnet.safetensors (if present).

Tensors are folded and named by ``export.export_tensors`` (NAMING.md); ``--dtype f16`` stores
them as F16 (the C++ loader widens F16 to F32; tools/reference/export.load accepts both). The
config goes to ``__metadata__["fovea.config"]`` with the training record (steps, run history)
and honest source / licence fields.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))

import safetensors_io  # noqa: E402
from export import CONFIG_KEY, build, config_json, export_tensors  # noqa: E402

DATA_NOTE = (
    "Trained from scratch (no pretrained trunk) by fovea tools/train on the TRAIN parts only of "
    "shared/fixtures/datasets: coco128-seg (first 100 images; Ultralytics COCO128-seg, GPL-3.0 "
    "packaging, polygons derived from COCO annotations CC BY 4.0, COCO/Flickr images under their "
    "individual Flickr licences), coco-mini train2017 (80 images; COCO annotations CC BY 4.0, Flickr "
    "images BY-NC-SA/BY-NC/BY-NC-ND/BY/BY-SA/BY-ND, mostly non-commercial) and nuts (15 images; "
    "MIT-licensed repository content, Tony607/mmdetection_instance_segmentation_demo). Held-out "
    "images never used. Augmentation: jitter, flips, cut-out pasting of these objects onto these images.")
LICENCE = (
    "Architecture: facebookresearch/deepmask and facebookresearch/multipathnet, BSD-3-Clause + PATENTS "
    "(reimplemented in fovea tools/reference). Weights: produced by the fovea project; the training "
    "images are Flickr photos, most under non-commercial (NC) Creative Commons licences, and one data "
    "set is packaged under GPL-3.0. Whether weights trained on such data carry those terms is not "
    "settled: treat these weights as research / non-commercial unless that is cleared. Not the "
    "released FAIR checkpoints.")


def _write(model, cfg: dict, path: str, dtype: str) -> int:
    tensors = export_tensors(model)
    if dtype == "f16":
        for k, v in tensors.items():
            if v.is_floating_point() and v.abs().max() > 60000:
                raise ValueError(f"{k}: value out of fp16 range")
        tensors = type(tensors)((k, v.to(torch.float16)) for k, v in tensors.items())
    return safetensors_io.save(tensors, path, {CONFIG_KEY: config_json(cfg)})


def _history(st) -> list:
    return [dict(stage=h["stage"], steps=f"{h['steps_from']}-{h['steps_to']}", wall_s=h["wall_s"],
                 start_utc=h["start_utc"], machine=h.get("machine", "")) for h in st.get("history", [])]


def _proposal_state(runs: list) -> str:
    """What the proposal model's training was, from its runs' machines (train.machine())."""
    gpu = [r for r in runs if r["machine"] and not r["machine"].endswith("no GPU")]
    if not gpu:
        return f"CPU-trained ({len(runs)} runs, ~200 images); to be continued on a GPU"
    return (f"trained on ~200 images: {len(runs) - len(gpu)} CPU run(s), then {len(gpu)} GPU run(s) "
            f"({gpu[-1]['machine'].rsplit(', ', 1)[-1]})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default=os.path.join(REPO, "weights"))
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--allow-untrained-refine", action="store_true")
    ap.add_argument("--what", default="sharpmask,multipathnet", help="comma list of the files to write")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    written = {}
    sm = os.path.join(args.run, "sharpmask.pt")
    dm = os.path.join(args.run, "deepmask.pt")
    what = set(args.what.split(","))
    if "sharpmask" in what and (os.path.exists(sm) or args.allow_untrained_refine):
        import train
        st = torch.load(sm if os.path.exists(sm) else dm, map_location="cpu", weights_only=False)
        dmst = torch.load(dm, map_location="cpu", weights_only=False)
        cfg = train.model_config("sharpmask", st["recipe"])
        model = build(cfg)
        if st["stage"] == "sharpmask":
            model.load_state_dict(st["model"])
        else:
            model.load_state_dict(st["model"], strict=False)
        runs = _history(dmst) + (_history(st) if st is not dmst and st["stage"] == "sharpmask" else [])
        cfg.update(
            source=DATA_NOTE, licence=LICENCE,
            training=dict(recipe=st.get("recipe_name"), deepmask_steps=dmst["step"],
                          sharpmask_steps=st["step"] if st["stage"] == "sharpmask" else 0,
                          batch=st["recipe"]["batch"], runs=runs, state=_proposal_state(runs)),
            weights_dtype=args.dtype.upper(),
        )
        p = os.path.join(args.out, "sharpmask.safetensors")
        written[p] = _write(model, cfg, p, args.dtype)
    mp = os.path.join(args.run, "multipathnet.pt")
    if "multipathnet" in what and os.path.exists(mp):
        st = torch.load(mp, map_location="cpu", weights_only=False)
        cfg = dict(st["cfg"])
        model = build(cfg)
        model.load_state_dict(st["model"])
        cfg.update(source=DATA_NOTE.replace("and nuts (15 images; MIT-licensed repository content, "
                                            "Tony607/mmdetection_instance_segmentation_demo)",
                                            "(the nuts set has no COCO classes and was not used)"),
                   licence=LICENCE,
                   training=dict(recipe=st.get("recipe_name"), steps=st["step"], runs=_history(st),
                                 rois="ground-truth boxes, jittered ground truth and random boxes (no proposals)",
                                 trained="layer4 + heads on the frozen DeepMask trunk (features cached)"
                                 if st["recipe"].get("mpn_freeze_trunk") else
                                 ("trunk, layer4 and heads trained (conv1/layer1 frozen if mpn_freeze_layer1); "
                                  "trunk initialised from "
                                  + ("DeepMask" if st["recipe"].get("mpn_init_from_deepmask") else "scratch")),
                                 state="CPU-trained on ~180 images; fits the training ROIs but its held-out class "
                                       "accuracy is at the class-prior level (weights/MODEL_CARD.md)"),
                   weights_dtype=args.dtype.upper())
        p = os.path.join(args.out, "multipathnet.safetensors")
        written[p] = _write(model, cfg, p, args.dtype)
    for p, n in written.items():
        print(f"{p}: {n} bytes")
    if not written:
        print("nothing to export (no sharpmask.pt / multipathnet.pt in the run)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
