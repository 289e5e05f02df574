"""MultiPathNet (facebookresearch/multipathnet) -- reference implementation.

Two architectures (config ``variant``):

* ``resnet18_integral`` -- the released COCO checkpoint ``resnet18_integral_coco.t7``
  (models/resnet.lua + utils.integral): ResNet-18 conv1..layer3 (stride 16, 256 ch, zero
  padding, BN folded or fixed), ROI pooling v2 14x14 @ 1/16, layer4 (first block stride 2 ->
  7x7), average pool 7x7 stride 1, 512-d; 6 class Linears 512->81 (integral loss) and one box
  Linear 512->324; eval: p = mean_k softmax(logits_k); boxes: BBoxNorm d*std + mean.
* ``vgg16_multipath`` -- the full MultiPath network (models/multipathnet.lua): VGG-16 taps
  conv3 (1/4), conv4 (1/8), conv5 (1/16); Foveal regions 1x, 1.5x, 2x, 4x; five towers
  R1(1x: conv5,conv4,conv3) R2(1.5x: conv5,conv4) R3(2x: conv5,conv4) R4(4x: conv5)
  RH(1.5x het: conv5,conv4,conv3); per tower and tap ROI pool v2 7x7, L2-normalise per ROI
  per tap (x / sqrt(sum x^2 + 1e-10)), concat (conv5, conv4, conv3), x1000, conv1x1 -> 512,
  flatten (C,H,W), fc6 + ReLU (+ dropout), fc7 + ReLU (+ dropout); class heads (6, integral)
  on concat(R1..R4) = 16384, box Linear on RH = 4096.

ROIs: [K,5] float = (batch_index, x1, y1, x2, y2), **0-based** (batch index from 0; every
coordinate = the Lua 1-based coordinate minus one), in the pixels of the network input (the
already rescaled image). The Foveal boxes commute with that shift.

Outputs of ``forward(images, rois)``:
  ``cls_logits``  [n_heads, K, 81] raw logits of each integral head,
  ``cls_prob``    [K, 81] = mean_k softmax(cls_logits[k]) (what the released test code uses),
  ``bbox_raw``    [K, 324] box Linear output,
  ``bbox_deltas`` [K, 324] after BBoxNorm: every group of 4 -> d*std + mean.
"""
from __future__ import annotations

import copy
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Conv2d, Linear, relu, roi_pool
from resnet import ResNetTrunk
from vgg import VGGTrunk

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
            27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
            52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
            78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
assert len(COCO_CLASSES) == 80 and len(COCO_IDS) == 80

SOURCE = ("facebookresearch/multipathnet (models/resnet.lua, models/multipathnet.lua, "
          "models/model_utils.lua, modules/Foveal.lua, modules/BBoxNorm.lua; HEAD 1513462); "
          "architecture only, weights from fovea tools/reference")
LICENCE_NOTE = ("Architecture: facebookresearch/multipathnet, BSD-3-Clause + PATENTS. "
                "These weights: deterministic random test weights, no trained parameters.")

FOVEAL_REGIONS = [  # (name, enlargement: the box grows by f*w on each side)
    ("1x", 0.0), ("1.5x", 0.25), ("2x", 0.5), ("4x", 1.5)]
# towers: (name, foveal region index, taps in concat order)
VGG_TOWERS = [("R1", 0, ["conv5", "conv4", "conv3"]), ("R2", 1, ["conv5", "conv4"]),
              ("R3", 2, ["conv5", "conv4"]), ("R4", 3, ["conv5"]),
              ("RH", 1, ["conv5", "conv4", "conv3"])]
TAP_SCALES = {"conv5": 1 / 16, "conv4": 1 / 8, "conv3": 1 / 4}


def multipathnet_config(variant: str = "resnet18_integral", width_div: int = 1, fc_div: int = None,
                        **over) -> dict:
    """``width_div`` divides conv widths; ``fc_div`` (VGG only, default = width_div) divides the
    4096-wide fc6/fc7. Classes stay 81."""
    d = width_div
    common = dict(
        architecture="multipathnet", variant=variant, width_div=d,
        num_classes=81, class_names=["__background__"] + COCO_CLASSES, coco_category_ids=COCO_IDS,
        integral_heads=6, integral_thresholds=[0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
        roi_pool_version=2, roi_coordinates="0-based (Lua 1-based minus one), network-input pixels",
        # BBoxNorm: class-agnostic mean/std of the normalised targets. The released values are
        # estimated on COCO; these are the test model's (fixed, non-trivial).
        bbox_norm_mean=[0.01, -0.02, 0.03, -0.04], bbox_norm_std=[0.1, 0.11, 0.2, 0.21],
        test_scale=800, test_max_size=1000, nms_threshold=0.3, max_detections=100,
        source=SOURCE, licence=LICENCE_NOTE,
    )
    if variant == "resnet18_integral":
        cfg = dict(
            trunk="resnet18", base_width=64 // d, block_layout="standard", pad_mode="zero",
            # spec 1.2: bias-free convs, projection shortcut with BN (models/resnet.lua); both
            # fold away at export, so the exported tensors do not depend on this choice.
            conv_bias=False, shortcut_affine=True,
            # conv1 + layer1 are frozen (NoBackprop) with BN folded into the conv at build
            # time (a bias each); layer2..4 keep ConstAffine (folded here only at export).
            prefold_layer1=True,
            roi_pool=[14, 14], roi_scale=1 / 16, feature_dim=512 // d,
            mean=[0.48462227599918, 0.45624044862054, 0.40588363755159],
            std=[0.22889466674951, 0.22446679341259, 0.22495548344775],
            input_transform="imagenet: RGB in [0,1], (x - mean) / std",
        )
    elif variant == "vgg16_multipath":
        fd = d if fc_div is None else fc_div
        cfg = dict(
            trunk="vgg16", pool_ceil=True, pad_mode="zero",
            stage_widths=[64 // d, 128 // d, 256 // d, 512 // d, 512 // d],
            roi_pool=[7, 7], tap_scales=TAP_SCALES, conv345_norm=True, norm_eps=1e-10,
            norm_scale=1000.0, mix_channels=512 // d, fc_dim=4096 // fd, fc_div=fd,
            foveal_regions=FOVEAL_REGIONS, towers=VGG_TOWERS, model_het=True,
            mean=[102.9801, 115.9465, 122.7717], std=None,
            input_transform="ross: RGB [0,1] -> x255 -> BGR -> minus mean (B,G,R); no std",
        )
    else:
        raise ValueError(variant)
    common.update(cfg)
    common.update(over)
    return common


def foveal_boxes(rois: torch.Tensor, f: float) -> torch.Tensor:
    """nn.Foveal region: (x1 - f w, y1 - f h, x2 + f w, y2 + f h), w = x2 - x1 (no +1).

    Computed in float64 and rounded to float32 as Foveal.lua does (Lua doubles ->
    torch.FloatTensor); no clipping."""
    r = rois.to(torch.float64)
    w = r[:, 3] - r[:, 1]
    h = r[:, 4] - r[:, 2]
    out = torch.stack([r[:, 0], r[:, 1] - f * w, r[:, 2] - f * h, r[:, 3] + f * w, r[:, 4] + f * h], 1)
    return out.to(torch.float32)


class IntegralHeads(nn.Module):
    def __init__(self, n_heads, fin_cls, fin_box, num_classes, device=None):
        super().__init__()
        self.cls = nn.ModuleList([Linear(fin_cls, num_classes, device=device) for _ in range(n_heads)])
        for m in self.cls:
            m.calib_target = 2.0
        self.bbox = Linear(fin_box, num_classes * 4, device=device)

    def forward(self, f_cls, f_box, bbox_mean, bbox_std):
        logits = torch.stack([m(f_cls) for m in self.cls])  # [H,K,C]
        prob = torch.softmax(logits, dim=-1).mean(0)
        raw = self.bbox(f_box)
        d = raw.view(raw.shape[0], -1, 4) * bbox_std.view(1, 1, 4) + bbox_mean.view(1, 1, 4)
        return dict(cls_logits=logits, cls_prob=prob, bbox_raw=raw, bbox_deltas=d.view_as(raw))


class MultiPathResNet18(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        self.folded = False
        full = ResNetTrunk("resnet18", n_layers=4, base_width=cfg["base_width"], layout="standard",
                           pad_mode=cfg["pad_mode"], conv_bias=cfg["conv_bias"],
                           shortcut_affine=cfg["shortcut_affine"],
                           prefold_layer1=cfg["prefold_layer1"], device=device)
        # features = conv1 .. layer3 ; classifier = layer4 + avgpool
        self.trunk = full
        self.tower = nn.Module()
        self.tower.layer4 = full.layer4
        del full.layer4
        full.layer_names = ["layer1", "layer2", "layer3"]
        heads = IntegralHeads(cfg["integral_heads"], cfg["feature_dim"], cfg["feature_dim"],
                              cfg["num_classes"], device)
        self.cls, self.bbox = heads.cls, heads.bbox
        self._heads = [heads]  # not a submodule (avoid double registration)
        self.bbox_norm = nn.Module()
        self.bbox_norm.register_buffer("mean", torch.tensor(cfg["bbox_norm_mean"], dtype=torch.float32, device=device))
        self.bbox_norm.register_buffer("std", torch.tensor(cfg["bbox_norm_std"], dtype=torch.float32, device=device))

    def features(self, images):
        return self.trunk(images)["layer3"]

    def forward(self, images, rois) -> Dict[str, torch.Tensor]:
        f = self.features(images)
        ph, pw = self.cfg["roi_pool"]
        p = roi_pool(f, rois, ph, pw, self.cfg["roi_scale"], v2=True)
        y = self.tower.layer4(p)
        y = F.avg_pool2d(y, 7, 1).flatten(1)  # 7x7 -> 1x1 -> [K,512]
        out = self._heads[0](y, y, self.bbox_norm.mean, self.bbox_norm.std)
        out["pooled"] = p
        out["feature"] = y
        return out


class Tower(nn.Module):
    def __init__(self, cin, mix, pool, fc, device=None):
        super().__init__()
        self.mix = Conv2d(cin, mix, 1, device=device)
        self.fc6 = Linear(mix * pool[0] * pool[1], fc, device=device)
        self.fc7 = Linear(fc, fc, device=device)


class MultiPathVGG16(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        self.folded = False
        self.trunk = VGGTrunk("vgg16", width_div=cfg["width_div"], pool_ceil=cfg["pool_ceil"],
                              pad_mode=cfg["pad_mode"], device=device)
        tc = self.trunk.tap_channels
        self.towers = nn.ModuleList([
            Tower(sum(tc[t] for t in taps), cfg["mix_channels"], cfg["roi_pool"], cfg["fc_dim"], device)
            for _, _, taps in cfg["towers"]])
        n_cls_towers = sum(1 for name, _, _ in cfg["towers"] if name != "RH")
        heads = IntegralHeads(cfg["integral_heads"], n_cls_towers * cfg["fc_dim"], cfg["fc_dim"],
                              cfg["num_classes"], device)
        self.cls, self.bbox = heads.cls, heads.bbox
        self._heads = [heads]
        self.bbox_norm = nn.Module()
        self.bbox_norm.register_buffer("mean", torch.tensor(cfg["bbox_norm_mean"], dtype=torch.float32, device=device))
        self.bbox_norm.register_buffer("std", torch.tensor(cfg["bbox_norm_std"], dtype=torch.float32, device=device))

    def forward(self, images, rois) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        taps = self.trunk(images)
        regions = [foveal_boxes(rois, f) for _, f in cfg["foveal_regions"]]
        ph, pw = cfg["roi_pool"]
        outs = []
        extra = {}
        for ti, ((name, reg, tap_names), tower) in enumerate(zip(cfg["towers"], self.towers)):
            parts = []
            for t in tap_names:
                p = roi_pool(taps[t], regions[reg], ph, pw, cfg["tap_scales"][t], v2=True)
                if cfg["conv345_norm"]:
                    flat = p.flatten(1)
                    flat = flat / torch.sqrt((flat * flat).sum(1, keepdim=True) + cfg["norm_eps"])
                    p = flat.view_as(p)
                parts.append(p)
            x = torch.cat(parts, 1)
            if cfg["conv345_norm"]:
                x = x * cfg["norm_scale"]
            x = tower.mix(x).flatten(1)
            x = F.dropout(relu(tower.fc6(x)), 0.5, self.training)  # VGG `top` dropouts
            x = F.dropout(relu(tower.fc7(x)), 0.5, self.training)
            outs.append(x)
            extra[f"tower_{name}"] = x
        names = [n for n, _, _ in cfg["towers"]]
        f_cls = torch.cat([o for n, o in zip(names, outs) if n != "RH"], 1)
        f_box = outs[names.index("RH")] if cfg["model_het"] else f_cls
        out = self._heads[0](f_cls, f_box, self.bbox_norm.mean, self.bbox_norm.std)
        out["foveal_rois"] = torch.stack(regions)  # [4,K,5]
        out.update(extra)
        return out


def build_multipathnet(cfg: dict, device=None) -> nn.Module:
    if cfg["variant"] == "resnet18_integral":
        return MultiPathResNet18(cfg, device)
    return MultiPathVGG16(cfg, device)
