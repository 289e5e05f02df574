"""DeepMask / SharpMask training-patch sampler (spec deepmask-sharpmask.md section 5.1).

Geometry (wSz = 192 input window, iSz = 160 central label region, objSz = 92):
* a window is (centre cx, cy; side W) in source pixels, integerised as x0 = round(cx - W/2),
  Wr = round(W); the input patch is source [x0, x0+Wr) x [y0, y0+Wr) with 0.5 outside the
  image, resized to 192 x 192;
* the label covers the central 160/192 of the window (side S = 160*Wr/192), rasterised
  from the polygons (pycocotools frPoly) at gSz x gSz (112 DeepMask, 160 SharpMask), +1/-1;
  only the sampled object is foreground. ``q3_shift=True`` reproduces the released
  label offset of one source pixel (quirk Q3); default off (label centred on the input).

Positives (``positive()``, the mask samples): class-balanced (category uniformly, then an
annotation of it; crowd / area < 100 / bbox side < 5 redrawn within the category), jitter
sigma = log2(max(bw,bh)/92) + U(-0.25, 0.25), centre + U(-16,16)*2^sigma per axis, so the
object is roughly centred (+-16 window px), fully contained, max side 92*2^(+-1/4).
Optional cut-out pasting: with probability ``paste_p`` the object (its own mask at input
resolution) is pasted onto a random window of another training image.

Negatives (``negative()``): a window is negative when, for *every* object of the image
(crowd ones included), its centre is more than ``neg_shift`` = 32 window px away from the
window centre or its canonical scale is more than ``neg_octaves`` = 1 octave away (paper
definition: "at least +-32 px or 2^+-1 away from any canonical positive"). Half are random
windows (side 48..1536 px, i.e. image rescaled by 2^-3..2^2 as in the released sampler),
half are "hard": an object's window shifted by 40-96 px or rescaled by 1.1-2 octaves.
Every sample is flipped horizontally with p = 0.5 (label flipped too).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from data import image_array

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def c_round(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def poly_area(p) -> float:
    x, y = np.asarray(p[0::2]), np.asarray(p[1::2])
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def crop_window(img: np.ndarray, x0: int, y0: int, wr: int, out: int = 192) -> torch.Tensor:
    """Source [x0, x0+wr) x [y0, y0+wr) of a uint8 HxWx3 image (0.5 outside) -> [3,out,out]
    float in [0,1] (bilinear; area-like antialiasing when shrinking)."""
    h, w = img.shape[:2]
    wr = max(int(wr), 2)
    step = max(1, wr // (2 * out))  # cheap pre-decimation of very large windows
    canvas = torch.full((3, (wr + step - 1) // step, (wr + step - 1) // step), 0.5)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + wr, w), min(y0 + wr, h)
    if ix1 > ix0 and iy1 > iy0:
        # canvas index j covers source x0 + j*step
        jx0 = -(-(ix0 - x0) // step); jy0 = -(-(iy0 - y0) // step)
        sx = x0 + jx0 * step; sy = y0 + jy0 * step
        part = np.array(img[sy:iy1:step, sx:ix1:step])
        t = torch.from_numpy(part).permute(2, 0, 1).float() / 255.0
        canvas[:, jy0:jy0 + t.shape[1], jx0:jx0 + t.shape[2]] = t
    if canvas.shape[-1] == out:
        return canvas
    return F.interpolate(canvas[None], size=(out, out), mode="bilinear", align_corners=False,
                         antialias=canvas.shape[-1] > out)[0]


def rasterize(polys: List[List[float]], ox: float, oy: float, g: float, size: int) -> np.ndarray:
    """Union of polygons mapped by (p - o)*g, rasterised (COCO frPoly) on size x size."""
    ps = []
    for p in polys:
        a = np.asarray(p, np.float64).copy()
        a[0::2] = (a[0::2] - ox) * g
        a[1::2] = (a[1::2] - oy) * g
        ps.append(a.tolist())
    if not ps:
        return np.zeros((size, size), np.uint8)
    rles = mask_utils.frPyObjects(ps, size, size)
    return mask_utils.decode(mask_utils.merge(rles))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


class PatchSampler:
    def __init__(self, images: List[dict], gSz: int = 112, wSz: int = 192, iSz: int = 160,
                 objSz: int = 92, shift: float = 16, scale: float = 0.25, paste_p: float = 0.0,
                 neg_shift: float = 32, neg_octaves: float = 1.0, q3_shift: bool = False,
                 seed: int = 0):
        self.images = images
        self.gSz, self.wSz, self.iSz, self.objSz = gSz, wSz, iSz, objSz
        self.shift, self.scale, self.paste_p = shift, scale, paste_p
        self.neg_shift, self.neg_octaves, self.q3 = neg_shift, neg_octaves, q3_shift
        self.rng = np.random.default_rng(seed)
        self.by_cat: Dict[str, List[tuple]] = {}
        self.all_objs: List[np.ndarray] = []  # per image: [n, 3] (cx, cy, canonical log2 side)
        for ii, im in enumerate(images):
            rows = []
            for ai, a in enumerate(im["anns"]):
                x, y, bw, bh = a["bbox"]
                m = max(bw, bh, 1.0)
                rows.append((x + bw / 2, y + bh / 2, math.log2(m / objSz)))
                self.by_cat.setdefault(a["catkey"], []).append((ii, ai))
            self.all_objs.append(np.asarray(rows, np.float64).reshape(-1, 3))
        self.cats = sorted(self.by_cat)
        self.bg_images = [i for i in range(len(images))]

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def valid(a) -> bool:
        x, y, bw, bh = a["bbox"]
        return (not a["crowd"]) and bw >= 5 and bh >= 5 and sum(poly_area(p) for p in a["polys"]) >= 100

    def window(self, cx, cy, side):
        wr = max(c_round(side), 2)
        return c_round(cx - side / 2), c_round(cy - side / 2), wr

    def label(self, polys, x0, y0, wr) -> np.ndarray:
        s = self.iSz * wr / self.wSz
        cx = x0 + wr / 2 + (1 if self.q3 else 0)
        cy = y0 + wr / 2 + (1 if self.q3 else 0)
        return rasterize(polys, cx - s / 2, cy - s / 2, self.gSz / s, self.gSz)

    def is_negative(self, ii: int, cx: float, cy: float, side: float) -> bool:
        objs = self.all_objs[ii]
        if len(objs) == 0:
            return True
        sw = math.log2(side / self.wSz)
        d = np.hypot(objs[:, 0] - cx, objs[:, 1] - cy) / 2 ** sw  # window pixels
        close = (d <= self.neg_shift) & (np.abs(objs[:, 2] - sw) <= self.neg_octaves)
        return not bool(close.any())

    # -- samples ---------------------------------------------------------------------------
    def pick_object(self):
        cat = self.cats[self.rng.integers(len(self.cats))]
        lst = self.by_cat[cat]
        for _ in range(100):
            ii, ai = lst[self.rng.integers(len(lst))]
            if self.valid(self.images[ii]["anns"][ai]):
                return ii, ai
        return None

    def positive(self, obj=None):
        """-> (patch [3,192,192] in [0,1], label [gSz,gSz] in {0,1}, info)."""
        while obj is None:
            obj = self.pick_object()
        ii, ai = obj
        im, a = self.images[ii], self.images[ii]["anns"][obj[1]]
        x, y, bw, bh = a["bbox"]
        sig = math.log2(max(bw, bh) / self.objSz) + self.rng.uniform(-self.scale, self.scale)
        cx = x + bw / 2 + self.rng.uniform(-self.shift, self.shift) * 2 ** sig
        cy = y + bh / 2 + self.rng.uniform(-self.shift, self.shift) * 2 ** sig
        x0, y0, wr = self.window(cx, cy, self.wSz * 2 ** sig)
        img = image_array(im)
        patch = crop_window(img, x0, y0, wr, self.wSz)
        lab = self.label(a["polys"], x0, y0, wr)
        pasted = False
        if self.paste_p > 0 and self.rng.random() < self.paste_p and len(self.images) > 1:
            m = rasterize(a["polys"], x0, y0, self.wSz / wr, self.wSz).astype(np.float32)
            bi = ii
            while bi == ii:
                bi = int(self.rng.integers(len(self.images)))
            bim = self.images[bi]
            side = self.wSz * 2 ** self.rng.uniform(-1.0, 2.5)
            bx = self.rng.uniform(0, bim["w"]); by = self.rng.uniform(0, bim["h"])
            bg = crop_window(image_array(bim), *self.window(bx, by, side), self.wSz)
            mt = torch.from_numpy(m)[None]
            patch = mt * patch + (1 - mt) * bg
            pasted = True
        return patch, lab, dict(image=ii, ann=ai, window=(x0, y0, wr), pasted=pasted)

    def negative(self):
        for _ in range(100):
            ii = int(self.rng.integers(len(self.images)))
            im = self.images[ii]
            objs = self.all_objs[ii]
            if self.rng.random() < 0.5 and len(objs):
                ox, oy, osig = objs[self.rng.integers(len(objs))]
                if self.rng.random() < 0.5:  # shifted
                    sig = osig + self.rng.uniform(-self.scale, self.scale)
                    ang = self.rng.uniform(0, 2 * math.pi)
                    r = self.rng.uniform(40, 96) * 2 ** sig
                    cx, cy = ox + r * math.cos(ang), oy + r * math.sin(ang)
                else:  # rescaled
                    sig = osig + self.rng.choice([-1, 1]) * self.rng.uniform(1.1, 2.0)
                    cx = ox + self.rng.uniform(-self.shift, self.shift) * 2 ** sig
                    cy = oy + self.rng.uniform(-self.shift, self.shift) * 2 ** sig
                side = self.wSz * 2 ** sig
            else:
                side = self.wSz * 2 ** self.rng.uniform(-2.0, 3.0)
                cx, cy = self.rng.uniform(0, im["w"]), self.rng.uniform(0, im["h"])
            if side >= 16 and self.is_negative(ii, cx, cy, side):
                break
        x0, y0, wr = self.window(cx, cy, side)
        patch = crop_window(image_array(im), x0, y0, wr, self.wSz)
        return patch, np.zeros((self.gSz, self.gSz), np.uint8), dict(image=ii, window=(x0, y0, wr))

    def batch(self, n: int, pos_frac: float = 0.5, flip: bool = True):
        """-> dict(x [n,3,192,192] normalised, mask [n,gSz,gSz] +-1, score [n] +-1, pos [n] bool).
        Positives first."""
        npos = int(round(n * pos_frac))
        xs, ms, ys = [], [], []
        for k in range(n):
            p, l, _ = self.positive() if k < npos else self.negative()
            if flip and self.rng.random() < 0.5:
                p = p.flip(-1)
                l = l[:, ::-1]
            xs.append(p)
            ms.append(torch.from_numpy(np.ascontiguousarray(l)).float() * 2 - 1)
            ys.append(1.0 if k < npos else -1.0)
        pos = torch.tensor([k < npos for k in range(n)])
        return dict(x=normalise(torch.stack(xs)), mask=torch.stack(ms), score=torch.tensor(ys), pos=pos)
