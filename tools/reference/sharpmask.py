"""SharpMask (facebookresearch/deepmask, SharpMask.lua + InferSharpMask.lua) -- reference.

A SharpMask model is a trained DeepMask (trunk, score head, DeepMask mask head kept as
``maskBranchDM``; here the same ``trunk``/``score``/``mask`` modules) plus the refinement
``refine``:

* ``refine.v0``  Linear 512 -> fSz*fSz*km, viewed (km, fSz, fSz) = M_1 (no ReLU).
* for i = 1..4 (skpos = {8, 6, 5, 3}: trunk layer3-after-Crop(1), layer2, layer1, conv1-ReLU),
  k_i = km / 2^(i-1):
  - ``refine.h{i}`` (neth): [Crop c_i in patch mode: 0, 2, 4, 8], SymPad(1)+conv3x3 f_i->nhu2_i,
    ReLU, SymPad(1)+conv3x3 nhu2_i->k_i, ReLU, SymPad(1)+conv3x3 k_i->k_i/2 (nhu2 = 64,64,64,32);
  - ``refine.v{i}`` (netv): SymPad(1)+conv3x3 k_i->k_i, ReLU, SymPad(1)+conv3x3 k_i->k_i/2;
  - M_{i+1} = Up2_nearest( ReLU( h_i(F_i) + v_i(M_i) ) ).
* ``refine.final``: SymPad(1)+conv3x3 km/16 -> 1: mask logits 160x160 for the central
  iSz x iSz of the 192 patch.

Modes:
* ``forward_patch(x)``: the training form on a 192x192 patch (crops applied).
* ``forward_image(x, locations)``: SharpMask:inference + InferSharpMask: the trunk runs fully
  convolutionally on the whole padded image, each h_i runs once on its full tap map (no crop,
  SymPad at the map edges), and for each selected location (image n, row r, col c) of the
  stride-16 grid the window of side fSz*t_j (t_j = 1,2,4,8) with top-left (r*t_j, c*t_j) is
  cut out of h_j's output, zero-filled where it runs past the map; the vertical path then
  runs on the batch of selected locations only.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Conv2d, Linear, crop, relu
from deepmask import DeepMask, deepmask_config

# SharpMask tap order i = 1..4 -> trunk tap name, crop in patch mode, nhu2
SKIP_TAPS = [("layer3", 0, 64), ("layer2", 2, 64), ("layer1", 4, 64), ("conv1", 8, 32)]


def sharpmask_config(trunk: str = "resnet50", width_div: int = 1, km: int = 32, ks: int = None,
                     **over) -> dict:
    """``width_div`` shrinks the DeepMask part only (trunk and heads); the refinement keeps
    its released widths km = ks = 32 and nhu2 = 64/64/64/32 unless given."""
    if trunk == "vgg_a":
        raise ValueError("SharpMask is defined on the ResNet trunks only")
    cfg = deepmask_config(trunk, width_div)
    ks = km if ks is None else ks
    assert km >= 16 and km % 16 == 0 and ks == km, "km, ks: >=16, multiple of 16, equal"
    cfg.update(architecture="sharpmask", km=km, ks=ks, gSz=cfg["iSz"],
               skpos=[8, 6, 5, 3], nhu2=[t[2] for t in SKIP_TAPS],
               skip_taps=[t[0] for t in SKIP_TAPS], skip_crops=[t[1] for t in SKIP_TAPS])
    cfg.update(over)
    return cfg


class NetH(nn.Module):
    def __init__(self, fin, nhu2, k, crop_, device=None):
        super().__init__()
        self.crop = crop_
        self.conv_a = Conv2d(fin, nhu2, 3, pad=1, pad_mode="symmetric", device=device)
        self.conv_b = Conv2d(nhu2, k, 3, pad=1, pad_mode="symmetric", device=device)
        self.conv_c = Conv2d(k, k // 2, 3, pad=1, pad_mode="symmetric", device=device)

    def forward(self, f, patch: bool):
        if patch:
            f = crop(f, self.crop)
        return self.conv_c(relu(self.conv_b(relu(self.conv_a(f)))))


class NetV(nn.Module):
    def __init__(self, k, device=None):
        super().__init__()
        self.conv_a = Conv2d(k, k, 3, pad=1, pad_mode="symmetric", device=device)
        self.conv_b = Conv2d(k, k // 2, 3, pad=1, pad_mode="symmetric", device=device)

    def forward(self, m):
        return self.conv_b(relu(self.conv_a(m)))


class Refinement(nn.Module):
    def __init__(self, cfg, tap_channels: Dict[str, int], device=None):
        super().__init__()
        km, f = cfg["km"], cfg["fSz"]
        self.km, self.fSz = km, f
        self.v0 = Linear(cfg["embed_dim"], f * f * km, device=device)
        for i, (tap, cr, nhu2) in enumerate(SKIP_TAPS, start=1):
            k = km // 2 ** (i - 1)
            setattr(self, f"h{i}", NetH(tap_channels[tap], nhu2, k, cr, device))
            setattr(self, f"v{i}", NetV(k, device))
        self.final = Conv2d(km // 2 ** len(SKIP_TAPS), 1, 3, pad=1, pad_mode="symmetric", device=device)
        self.final.calib_target = 2.0

    def top_down(self, e: torch.Tensor, hs: List[torch.Tensor]) -> torch.Tensor:
        """e: [K,512] embeddings; hs[i-1]: h_i outputs [K, k_i/2, fSz*2^(i-1), ...]."""
        m = self.v0(e).view(-1, self.km, self.fSz, self.fSz)
        for i in range(1, len(SKIP_TAPS) + 1):
            m = relu(hs[i - 1] + getattr(self, f"v{i}")(m))
            m = F.interpolate(m, scale_factor=2, mode="nearest")
        return self.final(m)[:, 0]


class SharpMask(DeepMask):
    def __init__(self, cfg: dict, device=None):
        super().__init__(cfg, device=device)
        self.refine = Refinement(cfg, self.trunk.tap_channels, device)

    def forward_patch(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        taps = self.trunk_taps(x, patch=True)
        e = taps["embedding"].flatten(1)
        hs = [getattr(self.refine, f"h{i}")(taps[t], patch=True)
              for i, (t, _, _) in enumerate(SKIP_TAPS, start=1)]
        return dict(
            mask_logits=self.refine.top_down(e, hs),
            dm_mask_logits=self.mask(e),
            score_logits=self.score(e),
            embedding=e,
        )

    def forward_image(self, x: torch.Tensor, locations: Sequence[Tuple[int, int, int]] = (),
                      dense_masks: bool = False) -> Dict[str, torch.Tensor]:
        taps, e, s = self.dense_embedding_and_scores(x)
        out = dict(score_logits=s, embedding=e, dm_masks=self.masks_at(e, locations))
        hmaps = [getattr(self.refine, f"h{i}")(taps[t], patch=False)
                 for i, (t, _, _) in enumerate(SKIP_TAPS, start=1)]
        for i, hm in enumerate(hmaps, start=1):
            out[f"h{i}_map"] = hm
        f = self.cfg["fSz"]
        windows = []
        for j, hm in enumerate(hmaps):
            t = 2 ** j
            side = f * t
            win = hm.new_zeros((len(locations), hm.shape[1], side, side))
            for q, (n, r, c) in enumerate(locations):
                part = hm[n, :, r * t:r * t + side, c * t:c * t + side]
                win[q, :, :part.shape[1], :part.shape[2]] = part  # zero-filled past the map
            windows.append(win)
        if len(locations):
            vecs = torch.stack([e[n, :, r, c] for n, r, c in locations])
            out["masks"] = self.refine.top_down(vecs, windows)
        else:
            out["masks"] = e.new_zeros((0, f * 16, f * 16))
        return out


def build_sharpmask(cfg: dict, device=None) -> SharpMask:
    return SharpMask(cfg, device=device)
