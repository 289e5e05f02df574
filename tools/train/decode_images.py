#!/usr/bin/env python3
"""The Python twin of decode_images.js, for machines without Node (the GPU machine): decodes
every image listed in <datasets>/splits/*.txt into uint8 HxWx3 .npy files with Pillow, an
embedded ICC profile converted to sRGB as sharp does (no EXIF rotation: the annotations refer
to the stored pixel grid). Against sharp's cache of the 305 fixture images: 281 identical, the
rest (ICC-tagged) within 1 per value.

    python3 tools/train/decode_images.py [--part train|val|all] [OUT_DIR]
                                      # default: all parts, into $FOVEA_IMAGE_CACHE or runs/cache
"""
import argparse
import io
import os
import sys

import numpy as np
from PIL import Image, ImageCms

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402

SRGB = ImageCms.createProfile("sRGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=["train", "val", "all"],
                    help="which split files to decode (the trainer reads train only)")
    ap.add_argument("out", nargs="?", default=data.CACHE)
    a = ap.parse_args()
    out = a.out
    suffix = ".txt" if a.part == "all" else f"_{a.part}.txt"
    splits = sorted(f for f in os.listdir(os.path.join(data.DATASETS, "splits")) if f.endswith(suffix))
    n = 0
    for s in splits:
        ds = s.rsplit("_", 1)[0]
        with open(os.path.join(data.DATASETS, "splits", s)) as fh:
            files = [line.strip() for line in fh if line.strip()]
        for f in files:
            dst = os.path.join(out, ds, os.path.splitext(f)[0] + ".npy")
            if os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with Image.open(os.path.join(data.DATASETS, ds, f)) as im:
                icc = im.info.get("icc_profile")
                if icc:
                    im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
                                                   outputMode="RGB")
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            np.save(dst + ".tmp.npy", rgb)
            os.replace(dst + ".tmp.npy", dst)
            n += 1
    print(f"decoded {n} images into {out}")


if __name__ == "__main__":
    main()
