"""ResNet trunks (fb.resnet.torch family) as used by DeepMask/SharpMask and MultiPathNet.

Block layouts (``layout``):

* ``"standard"``  fb.resnet.torch ``models/resnet.lua``: BN (here a fixed affine) right after
  every conv, projection shortcut = conv1x1/stride + affine, out = ReLU(main + shortcut).
  ``shortcut_affine=False`` drops the affine on the projection (the printed layout of the
  pretrained ResNet-18/34/50 files, fb.resnet.torch issue #49).
* ``"post_add"``  the pretrained ResNet-50 of fb.resnet.torch ("a batch normalization layer
  after the addition"), as the DeepMask spec infers it (section 1.1, **inferred,
  unverified**): main = conv1x1, affine, ReLU, conv3x3/stride, affine, ReLU, conv1x1 (no
  affine); shortcut = identity or a bare conv1x1/stride; out = ReLU(affine(main + shortcut)).

Stride sits on the 3x3 conv of a bottleneck. ``pad_mode='symmetric'`` gives the DeepMask
surgery (every 3x3/7x7 conv preceded by SymPad of its old padding, conv pad 0); the max-pool
keeps its ordinary -inf padding of 1 (floor mode).

Module names (= tensor names after folding, see NAMING.md):
``conv1``, ``bn1`` (folded away), ``layer{1..4}.{j}.conv{1,2,3}``, ``...downsample``,
``...post_affine`` (only in post_add blocks with an identity shortcut).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Conv2d, FixedAffine, fold_affine, relu


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, layout="standard", pad_mode="zero", conv_bias=False,
                 shortcut_affine=True, device=None):
        super().__init__()
        cout = width * 4
        self.layout = layout
        std = layout == "standard"
        self.conv1 = Conv2d(cin, width, 1, bias=conv_bias, device=device)
        self.bn1 = FixedAffine(width, device=device)
        self.conv2 = Conv2d(width, width, 3, stride=stride, pad=1, pad_mode=pad_mode, bias=conv_bias,
                            device=device)
        self.bn2 = FixedAffine(width, device=device)
        self.conv3 = Conv2d(width, cout, 1, bias=conv_bias, device=device)
        self.bn3 = FixedAffine(cout, device=device) if std else nn.Identity()
        if cin != cout:  # shortcut type 'B'
            self.downsample = Conv2d(cin, cout, 1, stride=stride, bias=conv_bias, device=device)
            self.downsample_bn = FixedAffine(cout, device=device) if (std and shortcut_affine) else nn.Identity()
        else:
            assert stride == 1
            self.downsample = None
            self.downsample_bn = nn.Identity()
        self.post_affine = FixedAffine(cout, device=device) if not std else nn.Identity()
        # golden-weight calibration: keep the residual branch small (see common.Calibrator)
        self.conv3.calib_target = 0.35
        self.bn3.calib_gamma = (0.2, 0.5)

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        sc = x if self.downsample is None else self.downsample_bn(self.downsample(x))
        return relu(self.post_affine(out + sc))

    def _fold(self):
        fold_affine(self.conv1, self.bn1); self.bn1 = nn.Identity()
        fold_affine(self.conv2, self.bn2); self.bn2 = nn.Identity()
        if isinstance(self.bn3, FixedAffine):
            fold_affine(self.conv3, self.bn3); self.bn3 = nn.Identity()
        if isinstance(self.downsample_bn, FixedAffine):
            fold_affine(self.downsample, self.downsample_bn); self.downsample_bn = nn.Identity()
        if isinstance(self.post_affine, FixedAffine) and self.downsample is not None:
            # affine(main + conv_sc(x)) = (a*main + b) + a*conv_sc(x): a on both convs, b once.
            fold_affine(self.conv3, self.post_affine, add_bias=True)
            fold_affine(self.downsample, self.post_affine, add_bias=False)
            self.post_affine = nn.Identity()
        # post_affine with an identity shortcut cannot be folded: it stays explicit.


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, layout="standard", pad_mode="zero", conv_bias=False,
                 shortcut_affine=True, prefolded=False, device=None):
        super().__init__()
        assert layout == "standard"
        # prefolded: BN already folded into the conv at build time (inn.utils.foldBatchNorm,
        # as MultiPathNet does for its frozen conv1+layer1): conv with bias, no affine.
        cb = conv_bias or prefolded
        aff = (lambda c: nn.Identity()) if prefolded else (lambda c: FixedAffine(c, device=device))
        self.conv1 = Conv2d(cin, width, 3, stride=stride, pad=1, pad_mode=pad_mode, bias=cb,
                            device=device)
        self.bn1 = aff(width)
        self.conv2 = Conv2d(width, width, 3, pad=1, pad_mode=pad_mode, bias=cb, device=device)
        self.bn2 = aff(width)
        if cin != width:
            self.downsample = Conv2d(cin, width, 1, stride=stride, bias=cb, device=device)
            self.downsample_bn = aff(width) if shortcut_affine else nn.Identity()
        else:
            assert stride == 1
            self.downsample = None
            self.downsample_bn = nn.Identity()
        # golden-weight calibration: keep the residual branch small (see common.Calibrator)
        self.conv2.calib_target = 0.35
        self.bn2.calib_gamma = (0.2, 0.5)

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.downsample is None else self.downsample_bn(self.downsample(x))
        return relu(out + sc)

    def _fold(self):
        if isinstance(self.bn1, FixedAffine):
            fold_affine(self.conv1, self.bn1); self.bn1 = nn.Identity()
        if isinstance(self.bn2, FixedAffine):
            fold_affine(self.conv2, self.bn2); self.bn2 = nn.Identity()
        if isinstance(self.downsample_bn, FixedAffine):
            fold_affine(self.downsample, self.downsample_bn); self.downsample_bn = nn.Identity()


RESNET_SPECS = {
    # name: (block, blocks per layer)
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetTrunk(nn.Module):
    """conv1 7x7/2 -> affine -> ReLU -> maxpool 3x3/2 pad 1 -> layer1 .. layer{n_layers}.

    ``forward`` returns a dict of named taps: ``conv1`` (after the ReLU, stride 2),
    ``layer1`` (stride 4), ``layer2`` (stride 8), ``layer3`` (stride 16), ``layer4`` (32).
    """

    def __init__(self, depth="resnet50", n_layers=3, base_width=64, layout=None, pad_mode="zero",
                 conv_bias=False, shortcut_affine=True, prefold_layer1=False, device=None):
        super().__init__()
        block, counts = RESNET_SPECS[depth]
        if layout is None:
            layout = "standard"
        self.depth, self.layout, self.pad_mode = depth, layout, pad_mode
        # prefold_layer1: conv1 and layer1 come with their BN already folded (bias, no affine),
        # as in MultiPathNet's released ResNet-18 (modules 1..5 in NoBackprop + foldBatchNorm).
        self.conv1 = Conv2d(3, base_width, 7, stride=2, pad=3, pad_mode=pad_mode,
                            bias=conv_bias or prefold_layer1, device=device)
        self.bn1 = nn.Identity() if prefold_layer1 else FixedAffine(base_width, device=device)
        cin = base_width
        self.layer_names = []
        for li in range(n_layers):
            width = base_width * 2 ** li
            blocks = []
            for j in range(counts[li]):
                stride = 2 if (li > 0 and j == 0) else 1
                kw = dict(prefolded=True) if (prefold_layer1 and li == 0) else {}
                blocks.append(block(cin, width, stride, layout=layout, pad_mode=pad_mode,
                                    conv_bias=conv_bias, shortcut_affine=shortcut_affine, device=device,
                                    **kw))
                cin = width * block.expansion
            name = f"layer{li + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.layer_names.append(name)
        self.out_channels = cin
        self.tap_channels = {"conv1": base_width}
        for li in range(n_layers):
            self.tap_channels[f"layer{li + 1}"] = base_width * 2 ** li * block.expansion

    def forward(self, x) -> Dict[str, torch.Tensor]:
        taps = {}
        y = relu(self.bn1(self.conv1(x)))
        taps["conv1"] = y
        y = F.max_pool2d(y, 3, 2, 1)  # floor mode, -inf padding
        for name in self.layer_names:
            y = getattr(self, name)(y)
            taps[name] = y
        return taps

    def _fold(self):
        if isinstance(self.bn1, FixedAffine):
            fold_affine(self.conv1, self.bn1)
            self.bn1 = nn.Identity()
