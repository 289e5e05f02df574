#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets under OUT (one folder per
target) from the committed fixtures:

  safetensors: test/fixtures/safetensors/*.safetensors, and from every
               test/fixtures/golden/*.safetensors a small valid file with its
               header metadata and smallest few tensors (the full files are up to
               1 MB: too slow to mutate);
  json:        native/fuzz/seeds/*.json and every fixture's JSON header;
  config:      native/fuzz/seeds/*.json and every fixture's fovea.config.

Usage: make_corpus.py OUT
"""
import glob
import hashlib
import json
import os
import struct
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = sys.argv[1]
for t in ("safetensors", "json", "config"):
    os.makedirs(os.path.join(out, t), exist_ok=True)


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def split(data):
    n = struct.unpack("<Q", data[:8])[0]
    return data[8:8 + n], data[8 + n:]


def small_copy(header, body, keep=4):
    """The metadata and the `keep` smallest tensors, re-tiled in file order."""
    tensors = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0])[:keep]
    tensors.sort(key=lambda kv: kv[1]["data_offsets"][0])
    new, data, pos = {}, b"", 0
    if "__metadata__" in header:
        new["__metadata__"] = header["__metadata__"]
    for k, v in tensors:
        b, e = v["data_offsets"]
        chunk = body[b:e]
        new[k] = dict(v, data_offsets=[pos, pos + len(chunk)])
        data += chunk
        pos += len(chunk)
    h = json.dumps(new, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


seeds = sorted(glob.glob(os.path.join(root, "native/fuzz/seeds/*.json")))
for path in seeds:
    text = open(path, "rb").read()
    put("json", text)
    put("config", text)

for path in sorted(glob.glob(os.path.join(root, "test/fixtures/safetensors/*.safetensors"))) + \
        sorted(glob.glob(os.path.join(root, "test/fixtures/golden/*.safetensors"))):
    data = open(path, "rb").read()
    raw, body = split(data)
    header = json.loads(raw)
    put("json", raw)
    config = header.get("__metadata__", {}).get("fovea.config")
    if config is not None:
        put("config", config)
    put("safetensors", data if len(data) <= 4096 else small_copy(header, body))

for t in ("safetensors", "json", "config"):
    print(f"{t}: {len(os.listdir(os.path.join(out, t)))} seeds")
