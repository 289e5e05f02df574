"""VGG feature stacks: VGG-A (DeepMask NIPS'15 trunk) and VGG-16 (MultiPathNet trunk).

All convs are 3x3, stride 1, zero padding 1, with bias, each followed by a ReLU. Pools are
2x2 stride 2; ``pool_ceil`` selects Caffe-style ceil mode (the Caffe-converted VGG-16 that
MultiPathNet loads; the spec says to read ``ceil_mode`` from the t7, so it is a config field).
Conv names follow Caffe: conv{stage}_{index}.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Conv2d, relu

# (stage, number of convs, width); a pool follows every stage except those listed in no_pool.
VGG_CFGS = {
    "vgg_a": [(1, 1, 64), (2, 1, 128), (3, 2, 256), (4, 2, 512), (5, 2, 512)],
    "vgg16": [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)],
}


class VGGTrunk(nn.Module):
    """Stages 1..5 with pools after stages 1..4 (no pool5: both users remove it).

    ``forward`` returns taps ``conv3`` (after relu3_x, stride 4), ``conv4`` (stride 8) and
    ``conv5`` (stride 16).
    """

    def __init__(self, name="vgg16", width_div=1, pool_ceil=True, pad_mode="zero", device=None):
        super().__init__()
        self.cfg = [(s, n, w // width_div) for s, n, w in VGG_CFGS[name]]
        self.pool_ceil = pool_ceil
        cin = 3
        self.names = []
        for stage, n, width in self.cfg:
            for i in range(n):
                nm = f"conv{stage}_{i + 1}"
                setattr(self, nm, Conv2d(cin, width, 3, pad=1, pad_mode=pad_mode, bias=True, device=device))
                self.names.append((stage, nm))
                cin = width
        self.out_channels = cin
        self.tap_channels = {f"conv{s}": w for s, n, w in self.cfg}

    def forward(self, x) -> Dict[str, torch.Tensor]:
        taps = {}
        cur_stage = 1
        for stage, nm in self.names:
            if stage != cur_stage:
                x = F.max_pool2d(x, 2, 2, ceil_mode=self.pool_ceil)
                cur_stage = stage
            x = relu(getattr(self, nm)(x))
            taps[f"conv{stage}"] = x
        return taps
