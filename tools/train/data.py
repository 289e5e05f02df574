"""Fixture data sets (shared/fixtures/datasets) as one list of annotated images.

Only the images named in ``splits/<set>_<part>.txt`` are returned; the trainer asks for
``part="train"`` only (the held-out ``val`` part is for eval_proposals.py). Pixels come from
the .npy cache written once by ``node tools/train/decode_images.js`` (no JPEG decoder in
Python here).

Each image: dict(key, dataset, file, npy, h, w, anns) with each annotation
dict(polys=[[x0,y0,x1,y1,...] absolute pixel coords], rle=None | COCO RLE (crowd),
bbox=[x,y,w,h], crowd=bool, cat=COCO-80 contiguous 1..80 or None (nuts), catkey=str).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DATASETS = os.environ.get("FOVEA_DATASETS",
                          os.path.normpath(os.path.join(REPO, "..", "shared", "fixtures", "datasets")))
CACHE = os.environ.get("FOVEA_IMAGE_CACHE", os.path.join(HERE, "runs", "cache"))
SETS = ("coco128-seg", "coco-mini", "nuts")

COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
            27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
            52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
            78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
ID_TO_IDX = {cid: i + 1 for i, cid in enumerate(COCO_IDS)}


def split_files(ds: str, part: str) -> List[str]:
    with open(os.path.join(DATASETS, "splits", f"{ds}_{part}.txt")) as f:
        return [l.strip() for l in f if l.strip()]


def _bbox_of(polys):
    xs = np.concatenate([np.asarray(p[0::2], np.float64) for p in polys])
    ys = np.concatenate([np.asarray(p[1::2], np.float64) for p in polys])
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def _coco128(part):
    out = []
    root = os.path.join(DATASETS, "coco128-seg")
    for f in split_files("coco128-seg", part):
        npy = os.path.join(CACHE, "coco128-seg", f[:-4] + ".npy")
        lab = os.path.join(root, f.replace("images/", "labels/", 1)[:-4] + ".txt")
        out.append(dict(dataset="coco128-seg", file=f, npy=npy, h=None, w=None, _lab=lab, anns=[]))
    return out


def _coco_json(ds, json_path, part, nuts=False):
    with open(json_path) as fh:
        d = json.load(fh)
    by_name = {os.path.basename(im["file_name"]): im for im in d["images"]}
    anns: Dict[int, list] = {}
    for a in d["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    out = []
    for f in split_files(ds, part):
        im = by_name[os.path.basename(f)]
        lst = []
        for a in anns.get(im["id"], []):
            crowd = bool(a.get("iscrowd", 0))
            seg = a["segmentation"]
            polys = [] if crowd else [p for p in seg if len(p) >= 6]
            if not crowd and not polys:
                continue
            cat = None if nuts else ID_TO_IDX[a["category_id"]]
            lst.append(dict(polys=polys, rle=seg if crowd else None, bbox=[float(v) for v in a["bbox"]],
                            crowd=crowd, cat=cat, catkey=f"{ds}:{a['category_id']}"))
        out.append(dict(dataset=ds, file=f, npy=os.path.join(CACHE, ds, f[:-4] + ".npy"),
                        h=im["height"], w=im["width"], anns=lst))
    return out


def load_split(part: str = "train", sets=SETS) -> List[dict]:
    assert part in ("train", "val")
    imgs = []
    if "coco128-seg" in sets:
        imgs += _coco128(part)
    if "coco-mini" in sets:
        sub = "train2017" if part == "train" else "val2017"
        imgs += _coco_json("coco-mini", os.path.join(DATASETS, "coco-mini", "annotations",
                                                     f"instances_{sub}.json"), part)
    if "nuts" in sets:
        imgs += _coco_json("nuts", os.path.join(DATASETS, "nuts", "data", "trainval.json"), part, nuts=True)
    for im in imgs:
        arr = np.load(im["npy"], mmap_mode="r")
        h, w = arr.shape[:2]
        if im["h"] is not None:
            assert (im["h"], im["w"]) == (h, w), (im["file"], im["h"], im["w"], h, w)
        im["h"], im["w"] = h, w
        lab = im.pop("_lab", None)
        if lab is not None and os.path.exists(lab):
            with open(lab) as fh:
                for line in fh:
                    v = line.split()
                    if len(v) < 7:
                        continue
                    c = int(v[0])
                    xy = np.asarray(v[1:], np.float64).reshape(-1, 2) * [w, h]
                    poly = xy.flatten().tolist()
                    im["anns"].append(dict(polys=[poly], rle=None, bbox=_bbox_of([poly]), crowd=False,
                                           cat=c + 1, catkey=f"coco:{COCO_IDS[c]}"))
        for a in im["anns"]:
            if im["dataset"] == "coco-mini" and a["cat"] is not None:
                a["catkey"] = f"coco:{COCO_IDS[a['cat'] - 1]}"
        im["key"] = f"{im['dataset']}/{im['file']}"
    return imgs


def image_array(im: dict) -> np.ndarray:
    """uint8 HxWx3 (memory-mapped)."""
    return np.load(im["npy"], mmap_mode="r")
