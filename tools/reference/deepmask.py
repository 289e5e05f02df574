"""DeepMask (facebookresearch/deepmask, DeepMask.lua) -- reference implementation.

Released model = "DeepMask-ours" of the SharpMask paper: ResNet-50 truncated after conv4_x,
BN turned into fixed affines, SymPad before every 3x3/7x7 conv, Crop(1), conv1x1 1024->128,
ReLU, Linear 12800->512 (here a 10x10 conv, identical on a 10x10 map), then head "C":
mask = Linear 512->56*56, score = Linear 512->1024, ReLU, Linear 1024->1 (dropouts are the
identity at inference; the training Threshold(0,1e-6) is a ReLU at inference).

Trunk variants (config ``trunk``):
* ``resnet50``  released (spec section 1.1),
* ``resnet18``  lighter trunk, same surgery and heads (layer3 has 256 channels),
* ``vgg_a``     NIPS'15 paper variant (spec section 1.2, **[paper]**, no released code):
  VGG-A without its last pool, 224x224 input, mask = conv1x1 512->512 + ReLU, Linear
  (512*14*14)->512, Linear 512->3136 (no nonlinearity between the two linears);
  score = maxpool 2x2, Linear 512*7*7->512, ReLU, Linear 512->1024, ReLU, Linear 1024->1.

Two forward modes:
* ``forward_patch(x)``  x: [N,3,wSz,wSz] (192 for ResNet, 224 for VGG-A), the training form.
* ``forward_image(x, locations)``  x: [N,3,H,W] a whole (already padded and normalised)
  image; fully convolutional (DeepMask:inference / linear2convTrunk): Crop and View become
  identity, every Linear a conv. Gives the dense score map [N,H',W'] and the 56x56 mask of
  each requested location (or of every location with ``dense_masks=True``).
  ResNet: H' = L3(H) - 9 with L3(n) = ceil(ceil(ceil(ceil(n/2)/2)/2)/2).
  VGG-A: H' = L(H) - 13 at stride 16; the score branch's 2x2 pool is evaluated at all four
  offsets (the paper's interleaving trick) = maxpool 2x2 stride 1 followed by the 7x7 FC as a
  7x7 conv with dilation 2.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Conv2d, Linear, crop, relu
from resnet import ResNetTrunk
from vgg import VGGTrunk

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DEEPMASK_SCALES = [2.0 ** (k / 2.0) for k in range(-5, 2)]  # 2^-2.5 .. 2^0.5

SOURCE = ("facebookresearch/deepmask (DeepMask.lua, SharpMask.lua, modelUtils.lua; HEAD 280a716); "
          "architecture only, weights from fovea tools/reference")
LICENCE_NOTE = ("Architecture: facebookresearch/deepmask, BSD-3-Clause + PATENTS. "
                "These weights: deterministic random test weights, no trained parameters.")


def deepmask_config(trunk: str = "resnet50", width_div: int = 1, **over) -> dict:
    """Config dict of a DeepMask model. ``width_div`` divides every channel count (trunk
    widths, proj/embed/score widths) to make small same-structure test models; spatial sizes
    (wSz, iSz, oSz) never change."""
    d = width_div
    if trunk in ("resnet50", "resnet18", "resnet34"):
        cfg = dict(
            trunk=trunk,
            trunk_layers=3,
            base_width=64 // d,
            block_layout="post_add" if trunk == "resnet50" else "standard",
            # spec 1.1: the pretrained ResNet-50 convs carry a bias (fb.resnet.torch #49);
            # the lighter trunk is ours, bias-free as in models/resnet.lua.
            conv_bias=(trunk == "resnet50"),
            shortcut_affine=True,
            pad_mode="symmetric",
            pool_ceil=False,
            wSz=192, iSz=160, fSz=10, trunk_crop=1, stride=16,
            proj_channels=128 // d,
            embed_dim=512 // d,
            head="C",
            oSz=56, gSz=112,
            score_hidden=1024 // d,
        )
    elif trunk == "vgg_a":
        cfg = dict(
            trunk="vgg_a", width_div=d,
            stage_widths=[64 // d, 128 // d, 256 // d, 512 // d, 512 // d],
            pad_mode="zero", pool_ceil=False, conv_bias=True,
            wSz=224, iSz=224, fSz=14, trunk_crop=0, stride=16,
            mask_conv=512 // d, embed_dim=512 // d,
            head="paper",
            oSz=56, gSz=224,
            score_fc1=512 // d, score_hidden=1024 // d,
        )
    else:
        raise ValueError(trunk)
    cfg.update(
        architecture="deepmask",
        width_div=d,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        scales=DEEPMASK_SCALES,
        image_pad=None if trunk == "vgg_a" else 80, image_pad_value=0.5,
        mask_threshold=0.2,
        source=SOURCE, licence=LICENCE_NOTE,
    )
    cfg.update(over)
    return cfg


class DeepMaskResNetTrunk(ResNetTrunk):
    """ResNet conv1..layer3 plus the DeepMask extra layers ``proj`` and ``embed``."""

    def __init__(self, cfg, device=None):
        super().__init__(cfg["trunk"], n_layers=cfg["trunk_layers"], base_width=cfg["base_width"],
                         layout=cfg["block_layout"], pad_mode=cfg["pad_mode"],
                         conv_bias=cfg["conv_bias"], shortcut_affine=cfg["shortcut_affine"],
                         device=device)
        f = cfg["fSz"]
        self.proj = Conv2d(self.out_channels, cfg["proj_channels"], 1, bias=True, device=device)
        # Linear(128*fSz*fSz -> 512) as a conv fSz x fSz (weights viewed (512,128,fSz,fSz)).
        self.embed = Conv2d(cfg["proj_channels"], cfg["embed_dim"], f, bias=True, device=device)


class DeepMaskVGGTrunk(VGGTrunk):
    def __init__(self, cfg, device=None):
        super().__init__("vgg_a", width_div=cfg["width_div"], pool_ceil=cfg["pool_ceil"],
                         pad_mode=cfg["pad_mode"], device=device)


class ScoreHeadC(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        self.fc1 = Linear(cfg["embed_dim"], cfg["score_hidden"], device=device)
        self.fc2 = Linear(cfg["score_hidden"], 1, device=device)
        self.fc2.calib_target = 2.0

    def forward(self, e):  # e: [N,512] -> [N]
        if self.training:  # Dropout(.5), Linear, Threshold(0, 1e-6), Dropout(.5), Linear
            h = self.fc1(F.dropout(e, 0.5, True))
            h = torch.where(h > 0, h, torch.full_like(h, 1e-6))
            return self.fc2(F.dropout(h, 0.5, True)).squeeze(1)
        return self.fc2(relu(self.fc1(e))).squeeze(1)

    def dense(self, e):  # e: [N,512,H,W] -> [N,H,W]
        return self.fc2.conv1x1(relu(self.fc1.conv1x1(e)))[:, 0]


class MaskHeadC(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        self.oSz = cfg["oSz"]
        self.fc = Linear(cfg["embed_dim"], cfg["oSz"] ** 2, device=device)
        self.fc.calib_target = 2.0

    def forward(self, e):  # [N,512] -> [N,oSz,oSz] (row-major)
        return self.fc(e).view(-1, self.oSz, self.oSz)


class DeepMask(nn.Module):
    def __init__(self, cfg: dict, device=None):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        self.folded = False
        if cfg["trunk"] == "vgg_a":
            self.trunk = DeepMaskVGGTrunk(cfg, device)
            c = self.trunk.out_channels
            self.mask = nn.Module()
            self.mask.conv = Conv2d(c, cfg["mask_conv"], 1, device=device)
            self.mask.fc = Conv2d(cfg["mask_conv"], cfg["embed_dim"], cfg["fSz"], device=device)
            self.mask.out = Linear(cfg["embed_dim"], cfg["oSz"] ** 2, device=device)
            self.mask.out.calib_target = 2.0
            self.score = nn.Module()
            self.score.fc1 = Conv2d(c, cfg["score_fc1"], cfg["fSz"] // 2, device=device)
            self.score.fc2 = Linear(cfg["score_fc1"], cfg["score_hidden"], device=device)
            self.score.fc3 = Linear(cfg["score_hidden"], 1, device=device)
            self.score.fc3.calib_target = 2.0
        else:
            self.trunk = DeepMaskResNetTrunk(cfg, device)
            self.mask = MaskHeadC(cfg, device)
            self.score = ScoreHeadC(cfg, device)

    @property
    def is_vgg(self):
        return self.cfg["trunk"] == "vgg_a"

    # -- building blocks shared with SharpMask ---------------------------------------------
    def trunk_taps(self, x, patch: bool) -> Dict[str, torch.Tensor]:
        """Trunk forward. ResNet taps: conv1, layer1, layer2, layer3 (layer3 cropped by
        Crop(1) in patch mode, i.e. trunk module 8), and ``embedding`` (trunk module 12)."""
        taps = self.trunk(x)
        if self.is_vgg:
            return taps
        f = taps["layer3"]
        if patch:
            f = crop(f, self.cfg["trunk_crop"])
            taps["layer3"] = f
        taps["embedding"] = self.trunk.embed(relu(self.trunk.proj(f)))
        return taps

    def mask_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        """[K,512] -> [K,oSz,oSz] (ResNet head C only)."""
        return self.mask(e)

    def upsample_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Training only: the mask branch's SpatialReSamplingEx, oSz x oSz -> gSz x gSz,
        align-corners bilinear (no antialias). [N,oSz,oSz] -> [N,gSz,gSz]."""
        g = self.cfg["gSz"]
        return F.interpolate(logits[:, None], size=(g, g), mode="bilinear", align_corners=True)[:, 0]

    # -- patch (training-size) mode -------------------------------------------------------
    def forward_patch(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        w = self.cfg["wSz"]
        assert x.shape[-2:] == (w, w), f"patch must be {w}x{w}"
        taps = self.trunk_taps(x, patch=True)
        if self.is_vgg:
            f = taps["conv5"]
            m = self.mask.fc(relu(self.mask.conv(f))).flatten(1)
            masks = self.mask.out(m).view(-1, self.cfg["oSz"], self.cfg["oSz"])
            s = F.max_pool2d(f, 2, 2)
            s = F.dropout(relu(self.score.fc1(s)).flatten(1), 0.5, self.training)
            s = F.dropout(relu(self.score.fc2(s)), 0.5, self.training)
            score = self.score.fc3(s).squeeze(1)
            return dict(mask_logits=masks, score_logits=score, embedding=m)
        e = taps["embedding"].flatten(1)
        return dict(mask_logits=self.mask(e), score_logits=self.score(e), embedding=e)

    # -- fully convolutional mode ----------------------------------------------------------
    def dense_embedding_and_scores(self, x):
        taps = self.trunk_taps(x, patch=False)
        if self.is_vgg:
            f = taps["conv5"]
            e = self.mask.fc(relu(self.mask.conv(f)))  # [N,512,H',W']
            s = F.max_pool2d(f, 2, 1)
            s = relu(F.conv2d(s, self.score.fc1.weight, self.score.fc1.bias, dilation=2))
            s = self.score.fc3.conv1x1(relu(self.score.fc2.conv1x1(s)))[:, 0]
            return taps, e, s
        e = taps["embedding"]
        return taps, e, self.score.dense(e)

    def masks_at(self, e: torch.Tensor, locations: Sequence[Tuple[int, int, int]]) -> torch.Tensor:
        """e: [N,D,H',W'] dense embedding; locations: (image, row, col) 0-based."""
        if len(locations) == 0:
            return e.new_zeros((0, self.cfg["oSz"], self.cfg["oSz"]))
        v = torch.stack([e[n, :, r, c] for n, r, c in locations])
        if self.is_vgg:
            return self.mask.out(v).view(-1, self.cfg["oSz"], self.cfg["oSz"])
        return self.mask(v)

    def forward_image(self, x: torch.Tensor, locations: Sequence[Tuple[int, int, int]] = (),
                      dense_masks: bool = False) -> Dict[str, torch.Tensor]:
        taps, e, s = self.dense_embedding_and_scores(x)
        out = dict(score_logits=s, embedding=e, masks=self.masks_at(e, locations))
        if dense_masks:
            n, d, h, w = e.shape
            locs = [(i, r, c) for i in range(n) for r in range(h) for c in range(w)]
            out["dense_masks"] = self.masks_at(e, locs).view(n, h, w, self.cfg["oSz"], self.cfg["oSz"])
        return out

    def grid_size(self, h: int, w: int) -> Tuple[int, int]:
        """Size of the dense output grid for an input of h x w pixels."""
        if self.is_vgg:
            def L(n):
                for _ in range(4):
                    n = math.ceil(n / 2) if self.cfg["pool_ceil"] else n // 2
                return n
            return L(h) - (self.cfg["fSz"] - 1), L(w) - (self.cfg["fSz"] - 1)

        def L3(n):
            for _ in range(4):
                n = -(-n // 2)
            return n
        return L3(h) - (self.cfg["fSz"] - 1), L3(w) - (self.cfg["fSz"] - 1)


def build_deepmask(cfg: dict, device=None) -> DeepMask:
    return DeepMask(cfg, device=device)
