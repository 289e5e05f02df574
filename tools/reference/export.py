"""Export a reference model to safetensors (the contract with the C++ loader, NAMING.md).

``export(model, path, config)``:
  * works on a deep copy: every fixed affine that directly follows a conv (or that follows a
    residual sum whose shortcut is a projection conv) is folded into the conv(s); every conv
    and Linear gets a bias (zeros where the checkpoint had none);
  * writes the folded model's tensors (parameters and buffers, fp32, in module order) under
    their module-path names, and the config as a JSON string in
    ``__metadata__["fovea.config"]``.

``load(path)`` rebuilds the folded model from such a file (strict: every tensor must be
used and every expected tensor present).
"""
from __future__ import annotations

import copy
import json
import sys
from collections import OrderedDict
from typing import Dict, Tuple

import torch
import torch.nn as nn

import safetensors_io
from common import fold_model

CONFIG_KEY = "fovea.config"
FORMAT_VERSION = 1


def build(cfg: dict, device=None) -> nn.Module:
    arch = cfg["architecture"]
    if arch == "deepmask":
        from deepmask import build_deepmask
        return build_deepmask(cfg, device)
    if arch == "sharpmask":
        from sharpmask import build_sharpmask
        return build_sharpmask(cfg, device)
    if arch == "multipathnet":
        from multipathnet import build_multipathnet
        return build_multipathnet(cfg, device)
    raise ValueError(arch)


def folded_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    if not getattr(m, "folded", False):
        fold_model(m)
    return m


def export_tensors(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    m = folded_copy(model)
    sd = m.state_dict()
    return OrderedDict((k, v.detach().to(torch.float32).contiguous()) for k, v in sd.items())


def config_json(config: dict) -> str:
    cfg = dict(config)
    cfg["format_version"] = FORMAT_VERSION
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def export(model: nn.Module, path: str, config: dict = None) -> int:
    """Fold, name, write. Returns the file size in bytes."""
    config = config if config is not None else model.cfg
    tensors = export_tensors(model)
    return safetensors_io.save(tensors, path, {CONFIG_KEY: config_json(config)})


def load(path: str, dtype=torch.float32) -> Tuple[nn.Module, dict]:
    tensors, meta = safetensors_io.load(path)
    cfg = json.loads(meta[CONFIG_KEY])
    model = build(cfg)
    fold_model(model)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    model.to(dtype)
    model.eval()
    return model, cfg


def describe(cfg: dict) -> "OrderedDict[str, Tuple[int, ...]]":
    """Name -> shape of every exported tensor for a config (built on the meta device)."""
    model = build(cfg, device="meta")
    fold_model(model)
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _main(argv):
    """python3 export.py FILE.safetensors      tensor table + config of an exported file
    python3 export.py --describe NAME         tensor table of a make_golden recipe (e.g.
                                              sharpmask-resnet50, multipathnet-vgg16), no weights"""
    if len(argv) == 2 and argv[0] == "--describe":
        import make_golden
        cfg = make_golden.RECIPES[argv[1]]["cfg"]
        print(json.dumps(cfg, indent=1))
        for k, v in describe(cfg).items():
            print(f"{k:60s} {list(v)}")
    elif len(argv) == 1:
        t, meta = safetensors_io.load(argv[0])
        print(json.dumps(json.loads(meta[CONFIG_KEY]), indent=1))
        for k, v in t.items():
            print(f"{k:60s} {str(v.dtype):14s} {list(v.shape)}")
    else:
        print(_main.__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
