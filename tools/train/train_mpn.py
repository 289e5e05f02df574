"""MultiPathNet (resnet18_integral) stage of the recipe (spec multipathnet.md sections 3, 5).

Data: the train parts of coco128-seg and coco-mini (COCO-80 labels; the nuts set has no COCO
classes and is left out). Per step ``mpn_images`` images (shorter side ``mpn_short``, longer
at most ``mpn_max``, horizontal flip p = 0.5); candidate ROIs = the ground-truth boxes, 24
jittered copies of each (centre +-0.35 w/h, sides x exp(+-0.6)), ``mpn_tight`` tightly
jittered copies (centre +-0.08, sides x exp(+-0.15)) and 64 random boxes (SharpMask proposals
are what the released code used; jittered ground truth stands in for them here); IoU = max
over non-crowd GT, candidates covering a crowd box > 0.7 of their area are dropped. Per image
up to ``mpn_rois``/4 fg (IoU >= 0.5) and the rest bg (0.1 <= IoU < 0.5) are drawn with
replacement (BatchProviderBase.selectBBoxesOne); a share ``mpn_fg_hi`` of the fg draws comes
from the IoU >= 0.75 candidates (see the README: without it the u = 0.75 head saw ~2 % fg).

Integral loss (paper intent, every head every step): head k's label of a ROI = its GT
class if IoU >= u_k (0.50 .. 0.75), background if 0.1 <= IoU < u_k; mean over the 6 heads
of the cross-entropy + SmoothL1 box loss on the IoU >= 0.5 ROIs, targets (dx, dy, dw, dh)
normalised by a class-agnostic mean/std estimated at setup and stored in the model's BBoxNorm.

Init (``mpn_init_from_deepmask``): conv1..layer3 from the trained DeepMask trunk of the same
run (same ResNet-18/width layout; the DeepMask affines are folded into conv1/layer1 as the
prefolded layout requires), layer4 He-normal with frozen-BN affines calibrated on a batch,
class Linears N(0, 0.01), box Linear N(0, 0.001), biases 0. ``mpn_freeze_layer1``: conv1 and
layer1 not trained (the released NoBackprop); ``mpn_freeze_trunk``: conv1..layer3 not trained
and their features cached per (image, flip) (FeatureCache), so that a step costs only ROI
pooling, layer4 and the heads. ``mpn_test_at_train_scale``: the exported config's
test_scale / test_max_size are the training sizes (the pipeline classifies at that scale).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from common import FixedAffine, init_weights, roi_pool_bins  # tools/reference
from export import build

import data
import losses
from train import Stage, calibrate_affines, load_checkpoint, make_optimizer, model_config

THRESH = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]


def roi_pool_fast(x: torch.Tensor, rois: torch.Tensor, out_h: int, out_w: int, scale: float) -> torch.Tensor:
    """Same result as common.roi_pool (v2 bins from common.roi_pool_bins), separable max:
    max over each bin's rows, then over its columns (28 slices per ROI instead of 196)."""
    n, c, h, w = x.shape
    r = rois.detach().to(torch.float32).cpu().numpy()
    outs = []
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        hs, he = roi_pool_bins(r[k, 2], r[k, 4], scale, out_h, h, True)
        ws, we = roi_pool_bins(r[k, 1], r[k, 3], scale, out_w, w, True)
        fm = x[b]
        rows = []
        for ph in range(out_h):
            if he[ph] <= hs[ph]:
                rows.append(fm.new_full((c, w), float("-inf")))
            else:
                rows.append(fm[:, hs[ph]:he[ph], :].amax(dim=1))
        rm = torch.stack(rows, 1)  # [C, out_h, W]
        cols = []
        for pw in range(out_w):
            if we[pw] <= ws[pw]:
                cols.append(rm.new_full((c, out_h), float("-inf")))
            else:
                cols.append(rm[:, :, ws[pw]:we[pw]].amax(dim=2))
        o = torch.stack(cols, 2)
        outs.append(torch.where(torch.isinf(o), torch.zeros_like(o), o))
    return torch.stack(outs)


def mpn_forward(model, images: torch.Tensor, rois: torch.Tensor, features: torch.Tensor = None) -> dict:
    """The reference MultiPathResNet18.forward with roi_pool_fast in place of the (slow, loop)
    reference ROI pooling; identical outputs (checked in test_train.py). ``features``: the
    trunk output (conv1..layer3) if already computed (frozen trunk, FeatureCache)."""
    f = model.features(images) if features is None else features
    ph, pw = model.cfg["roi_pool"]
    p = roi_pool_fast(f, rois, ph, pw, model.cfg["roi_scale"])
    y = model.tower.layer4(p)
    y = F.avg_pool2d(y, 7, 1).flatten(1)
    return model._heads[0](y, y, model.bbox_norm.mean, model.bbox_norm.std)


class FeatureCache:
    """Trunk features (conv1..layer3, no grad) of each (image, flip) at the sampler's input size,
    computed once: with the trunk frozen (``mpn_freeze_trunk``) a step then costs only ROI
    pooling, layer4 and the heads (~5x faster on a CPU). Batches are zero-padded to the largest
    map; ROIs lie inside their own image, so the padding is never pooled... except by bins
    that round past the border, which also see zeros in the reference's zero-padded batch."""

    def __init__(self, model, sampler, mean, std):
        self.model, self.sampler, self.mean, self.std = model, sampler, mean, std
        self.maps = {}

    def get(self, key):
        f = self.maps.get(key)
        if f is None:
            im = self.sampler.images[key[0]]
            with torch.no_grad():
                f = self.model.features(self.sampler.image_tensor(im, key[1], self.mean, self.std, key[2])[None])[0]
            self.maps[key] = f
        return f

    def batch(self, keys) -> torch.Tensor:
        fs = [self.get(k) for k in keys]
        H = max(f.shape[1] for f in fs); W = max(f.shape[2] for f in fs)
        out = fs[0].new_zeros(len(fs), fs[0].shape[0], H, W)
        for i, f in enumerate(fs):
            out[i, :, :f.shape[1], :f.shape[2]] = f
        return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [N,4], b [M,4] x1y1x2y2 (continuous) -> [N,M]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


def encode(rois: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """utils.convertTo: (dx, dy, dw, dh) of gt relative to rois (x1y1x2y2)."""
    w = rois[:, 2] - rois[:, 0]; h = rois[:, 3] - rois[:, 1]
    cx = rois[:, 0] + w / 2; cy = rois[:, 1] + h / 2
    gw = gt[:, 2] - gt[:, 0]; gh = gt[:, 3] - gt[:, 1]
    gx = gt[:, 0] + gw / 2; gy = gt[:, 1] + gh / 2
    return np.stack([(gx - cx) / w, (gy - cy) / h, np.log(gw / w), np.log(gh / h)], 1)


class RoiSampler:
    def __init__(self, images, short=384, max_size=512, fg=16, bg=48, seed=0, fg_hi=0.0, n_tight=0,
                 scales=None):
        self.images = [im for im in images if any((not a["crowd"]) and a["cat"] for a in im["anns"])]
        self.short, self.max_size, self.fg, self.bg = short, max_size, fg, bg
        # fg_hi: share of the fg draws taken from IoU >= THRESH[-1] (0.75) when the image has
        # such candidates (0: all fg drawn uniformly from IoU >= 0.5, as the 0.5 loader does);
        # n_tight: extra tightly jittered copies of each GT box (more high-IoU candidates).
        self.fg_hi, self.n_tight = fg_hi, n_tight
        # scales: shorter sides drawn per image (scale augmentation); None: always ``short``
        self.scales = list(scales) if scales else None
        self.rng = np.random.default_rng(seed)

    def draw_fg(self, fg: np.ndarray, iou: np.ndarray) -> np.ndarray:
        """min(self.fg, n_fg) fg indices, with replacement; round(fg_hi * n) of them from the
        candidates with IoU >= 0.75 (every integral head's fg), the rest from [0.5, 0.75)."""
        rng = self.rng
        n = min(self.fg, len(fg))
        hi = fg[iou[fg] >= THRESH[-1]]; lo = fg[iou[fg] < THRESH[-1]]
        if self.fg_hi <= 0 or len(hi) == 0 or len(lo) == 0:
            return rng.choice(fg, n)
        n_hi = int(round(self.fg_hi * n))
        return np.concatenate([rng.choice(hi, n_hi), rng.choice(lo, n - n_hi)])

    def candidates(self, gt: np.ndarray, w: float, h: float) -> np.ndarray:
        rng = self.rng
        out = [gt]
        for g in gt:
            gw, gh = g[2] - g[0], g[3] - g[1]
            for n, dc, ds in ((24, 0.35, 0.6), (self.n_tight, 0.08, 0.15)):  # wide, then tight jitter
                if n == 0:
                    continue
                cx = (g[0] + g[2]) / 2 + rng.uniform(-dc, dc, n) * gw
                cy = (g[1] + g[3]) / 2 + rng.uniform(-dc, dc, n) * gh
                nw = gw * np.exp(rng.uniform(-ds, ds, n)); nh = gh * np.exp(rng.uniform(-ds, ds, n))
                out.append(np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], 1))
        n = 64
        bw = w * np.exp(rng.uniform(math.log(0.05), 0, n)); bh = h * np.exp(rng.uniform(math.log(0.05), 0, n))
        x0 = rng.uniform(0, 1, n) * (w - bw); y0 = rng.uniform(0, 1, n) * (h - bh)
        out.append(np.stack([x0, y0, x0 + bw, y0 + bh], 1))
        c = np.concatenate(out)
        c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, w); c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, h)
        keep = ((c[:, 2] - c[:, 0]) >= 2) & ((c[:, 3] - c[:, 1]) >= 2)
        return c[keep]

    def image_rois(self, im):
        """-> (gt boxes, gt classes, candidates, iou [Nc], best gt index [Nc]) in source pixels."""
        gt = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in im["anns"] if not a["crowd"] and a["cat"]], np.float64).reshape(-1, 4)
        cls = np.array([a["cat"] for a in im["anns"] if not a["crowd"] and a["cat"]], np.int64)
        crowd = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in im["anns"] if a["crowd"]], np.float64).reshape(-1, 4)
        cand = self.candidates(gt, im["w"], im["h"])
        iou = box_iou(cand, gt)
        best = iou.argmax(1)
        mx = iou.max(1)
        if len(crowd):
            ix = np.clip(np.minimum(cand[:, None, 2], crowd[None, :, 2]) - np.maximum(cand[:, None, 0], crowd[None, :, 0]), 0, None)
            iy = np.clip(np.minimum(cand[:, None, 3], crowd[None, :, 3]) - np.maximum(cand[:, None, 1], crowd[None, :, 1]), 0, None)
            own = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
            mx = np.where(((ix * iy) / own[:, None]).max(1) > 0.7, -1.0, mx)
        return gt, cls, cand, mx, best

    def input_size(self, im, short: int = 0):
        """-> (h, w, s) of the network input: shorter side ``short`` (default self.short), longer
        at most ``short * max_size / self.short``."""
        short = short or self.short
        max_size = self.max_size * short / self.short
        h, w = im["h"], im["w"]
        s = short / min(h, w)
        if max(h, w) * s > max_size:
            s = max_size / max(h, w)
        return int(math.floor(h * s)), int(math.floor(w * s)), s

    def image_tensor(self, im, flip: bool, mean, std, short: int = 0) -> torch.Tensor:
        """The normalised network input [3, h, w] of an image (flipped horizontally if asked)."""
        hs, ws, _ = self.input_size(im, short)
        x = torch.from_numpy(np.array(data.image_array(im))).permute(2, 0, 1).float()[None] / 255.0
        if flip:
            x = x.flip(-1)
        x = F.interpolate(x, size=(hs, ws), mode="bilinear", align_corners=False, antialias=True)[0]
        return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)

    def batch(self, n_images: int, mean, std, bbox_mean, bbox_std, with_images: bool = True):
        """ROIs and labels of ``n_images`` random images; ``keys`` = (image index, flipped) of
        each; ``images`` is None when with_images is False (features come from a cache)."""
        rng = self.rng
        ims, rois, labels, tgts, blabels, ious = [], [], [], [], [], []
        picks = []
        while len(picks) < n_images:
            idx = int(rng.integers(len(self.images)))
            im = self.images[idx]
            gt, cls, cand, iou, best = self.image_rois(im)
            fg = np.where(iou >= 0.5)[0]; bg = np.where((iou >= 0.1) & (iou < 0.5))[0]
            if len(fg) and len(bg):
                picks.append((idx, im, gt, cls, cand, iou, best, fg, bg))
        scaled, keys = [], []
        for idx, im, gt, cls, cand, iou, best, fg, bg in picks:
            short = int(rng.choice(self.scales)) if self.scales else self.short
            hs, ws, s = self.input_size(im, short)
            flip = rng.random() < 0.5
            keys.append((idx, bool(flip), short))
            x = self.image_tensor(im, flip, mean, std, short) if with_images else torch.zeros(0, hs, ws)
            sel = np.concatenate([rng.choice(bg, min(self.bg, len(bg))), self.draw_fg(fg, iou)])
            r = cand[sel] * s
            g = gt[best[sel]] * s
            if flip:
                r = np.stack([ws - r[:, 2], r[:, 1], ws - r[:, 0], r[:, 3]], 1)
                g = np.stack([ws - g[:, 2], g[:, 1], ws - g[:, 0], g[:, 3]], 1)
            bi = len(scaled)
            scaled.append(x)
            rois.append(np.concatenate([np.full((len(sel), 1), bi), r], 1))
            u = iou[sel]
            ious.append(u)
            c = cls[best[sel]]
            labels.append(np.stack([np.where(u >= t, c, 0) for t in THRESH]))
            isfg = u >= 0.5
            t = encode(r, g)
            t = (t - np.asarray(bbox_mean)) / np.asarray(bbox_std)
            tgts.append(np.where(isfg[:, None], t, 0.0))
            blabels.append(np.where(isfg, c, 0))
        imgs = None
        if with_images:
            H = max(x.shape[1] for x in scaled); W = max(x.shape[2] for x in scaled)
            imgs = torch.zeros(len(scaled), 3, H, W)
            for i, x in enumerate(scaled):
                imgs[i, :, :x.shape[1], :x.shape[2]] = x
        return dict(images=imgs, keys=keys, rois=torch.from_numpy(np.concatenate(rois)).float(),
                    labels=torch.from_numpy(np.concatenate(labels, 1)).long(),
                    bbox_targets=torch.from_numpy(np.concatenate(tgts)).float(),
                    bbox_labels=torch.from_numpy(np.concatenate(blabels)).long(),
                    iou=torch.from_numpy(np.concatenate(ious)).float())

    def bbox_stats(self, n_images: int = 200):
        """Class-agnostic mean/std (unbiased) of the un-normalised targets of fg candidates."""
        ts = []
        for im in self.images[:n_images]:
            gt, cls, cand, iou, best = self.image_rois(im)
            fg = iou >= 0.5
            if fg.any():
                ts.append(encode(cand[fg], gt[best[fg]]))
        t = np.concatenate(ts)
        return t.mean(0).tolist(), t.std(0, ddof=1).tolist()


def init_from_deepmask(mpn, dm_state: dict) -> int:
    """Copy conv1..layer3 of a DeepMask ResNet-18 state into the MPN trunk. conv1 and layer1
    of the MPN are prefolded (conv + bias, no affine): the DeepMask affine is folded in."""
    sd = mpn.state_dict()
    n = 0
    with torch.no_grad():
        for k in list(sd):
            if not k.startswith("trunk."):
                continue
            if k.startswith("trunk.conv1.") or k.startswith("trunk.layer1."):
                if not k.endswith(".weight") or "bn" in k:
                    continue
                base = k[:-len(".weight")]
                aff = base.replace("conv", "bn").replace("downsample", "downsample_bn")
                if base.endswith("conv1") and base.startswith("trunk.conv1"):
                    aff = "trunk.bn1"
                w = dm_state[k]
                a = dm_state[aff + ".scale"]; b = dm_state[aff + ".bias"]
                sd[k].copy_(w * a.view(-1, 1, 1, 1))
                sd[base + ".bias"].copy_(b)
                n += 2
            elif k in dm_state and dm_state[k].shape == sd[k].shape:
                sd[k].copy_(dm_state[k]); n += 1
    mpn.load_state_dict(sd)
    return n


class MultiPathNetStage(Stage):
    name = "multipathnet"

    def setup(self, fresh):
        r = self.r
        torch.manual_seed(self.args.seed + 2)
        images = [im for im in data.load_split("train", sets=("coco128-seg", "coco-mini"))]
        self.sampler = RoiSampler(images, r["mpn_short"], r["mpn_max"], fg=r["mpn_rois"] // 4,
                                  bg=r["mpn_rois"] - r["mpn_rois"] // 4, seed=self.args.seed + 2,
                                  fg_hi=r.get("mpn_fg_hi", 0.0), n_tight=r.get("mpn_tight", 0),
                                  scales=r.get("mpn_scales"))
        if fresh:
            bm, bs = self.sampler.bbox_stats()
            self.cfg = model_config("multipathnet", r)
            self.cfg.update(bbox_norm_mean=bm, bbox_norm_std=bs)
            if r.get("mpn_test_at_train_scale"):
                # classify at the scale the classifier was trained at (the C++ pipeline reads
                # test_scale / test_max_size from the exported config)
                self.cfg.update(test_scale=r["mpn_short"], test_max_size=r["mpn_max"])
        else:
            self.cfg = load_checkpoint(self.ckpt)["cfg"]
        self.model = build(self.cfg)
        if fresh:
            m = self.model
            g = torch.Generator().manual_seed(self.args.seed + 2)
            init_weights(m.trunk, g)
            init_weights(m.tower, g)
            dm_path = os.path.join(self.run, "deepmask.pt")
            if r["mpn_init_from_deepmask"] and os.path.exists(dm_path):
                self.n_copied = init_from_deepmask(m, load_checkpoint(dm_path)["model"])
                print(f"[multipathnet] {self.n_copied} tensors from {dm_path}", flush=True)
            with torch.no_grad():
                for lin in m.cls:
                    lin.weight.normal_(0, 0.01, generator=g); lin.bias.zero_()
                m.bbox.weight.normal_(0, 0.001, generator=g); m.bbox.bias.zero_()
            b = self.sampler.batch(1, self.cfg["mean"], self.cfg["std"], bm, bs)
            # calibrate only the affines not copied from DeepMask (layer4; all when from scratch)
            skip = set()
            if r["mpn_init_from_deepmask"] and os.path.exists(dm_path):
                skip = {id(mod) for mod in m.trunk.modules() if isinstance(mod, FixedAffine)}
            saved = {id(mod): (mod.scale.clone(), mod.bias.clone()) for mod in m.modules()
                     if isinstance(mod, FixedAffine) and id(mod) in skip}
            calibrate_affines(m, lambda: mpn_forward(m, b["images"], b["rois"]))
            for mod in m.modules():
                if id(mod) in saved:
                    mod.scale.copy_(saved[id(mod)][0]); mod.bias.copy_(saved[id(mod)][1])
        self.model.train()
        if r.get("mpn_freeze_layer1"):
            # spec: conv1 + layer1 sit in NoBackprop (prefolded, never trained)
            for n, p in self.model.named_parameters():
                if n.startswith("trunk.conv1.") or n.startswith("trunk.layer1."):
                    p.requires_grad_(False)
        self.cache = None
        if r.get("mpn_freeze_trunk"):
            # CPU deviation: the whole trunk (conv1..layer3, from DeepMask) stays fixed and its
            # features are cached; only layer4 and the heads train
            for p in self.model.trunk.parameters():
                p.requires_grad_(False)
            self.cache = FeatureCache(self.model, self.sampler, self.cfg["mean"], self.cfg["std"])
        self.opt = make_optimizer(r["mpn_optimizer"], [p for p in self.model.parameters() if p.requires_grad],
                                  self.lr(),
                                  r.get("mpn_weight_decay", r["weight_decay"] if r["mpn_optimizer"] != "sgd" else 0.0),
                                  r["momentum"])

    def lr(self):
        return self.args.lr or self.r["mpn_lr"]

    def train_step(self):
        r, m = self.r, self.model
        b = self.sampler.batch(r["mpn_images"], self.cfg["mean"], self.cfg["std"],
                               self.cfg["bbox_norm_mean"], self.cfg["bbox_norm_std"],
                               with_images=self.cache is None)
        feats = self.cache.batch(b["keys"]) if self.cache is not None else None
        out = mpn_forward(m, b["images"], b["rois"], feats)
        L = losses.integral_loss(out["cls_logits"], b["labels"], out["bbox_raw"], b["bbox_targets"],
                                 b["bbox_labels"])
        self.opt.zero_grad(set_to_none=True)
        L["total"].backward()
        if r["clip"]:
            torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], r["clip"])
        self.opt.step()
        return dict(loss=L["total"].item(), cls=L["cls"].item(), box=L["box"].item(), **roi_metrics(out, b))


def roi_metrics(out: dict, b: dict) -> dict:
    """Training-ROI accuracies. acc_fg / acc_bg: head 0 (u = 0.5) argmax against its own labels
    (fg: IoU >= 0.5). acc_fg75: argmax of the averaged probability (what the pipeline scores) on
    the IoU >= 0.75 ROIs, the only ones every head calls foreground (below 0.75 the averaged
    probability of the true class is at most (#heads with u_k <= IoU) / 6 by construction).
    p_fg75: mean averaged probability of the true class on those ROIs. acc_cls: on the IoU >= 0.5
    ROIs, argmax over the 80 classes only (background ignored): the class decision alone."""
    nan = float("nan")
    with torch.no_grad():
        lab0, lab5 = b["labels"][0], b["labels"][-1]
        p0 = out["cls_logits"][0].argmax(1)
        fg = lab0 > 0
        hi = lab5 > 0
        pm = out["cls_prob"]
        return dict(
            acc_fg=(p0[fg] == lab0[fg]).float().mean().item() if fg.any() else nan,
            acc_bg=(p0[~fg] == 0).float().mean().item() if (~fg).any() else nan,
            acc_fg75=(pm[hi].argmax(1) == lab5[hi]).float().mean().item() if hi.any() else nan,
            acc_cls=(pm[fg, 1:].argmax(1) + 1 == lab0[fg]).float().mean().item() if fg.any() else nan,
            p_fg75=pm[hi].gather(1, lab5[hi, None]).mean().item() if hi.any() else nan)
