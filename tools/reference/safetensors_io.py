"""Minimal safetensors writer/reader (no dependency beyond numpy/torch).

Format: 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
(padded with spaces to a multiple of 8, so every tensor starts 8-byte aligned), then the
raw little-endian data; the byte ranges tile the data buffer in file order, no gaps.
Tensors are written in the order given (module order), not sorted.
"""
from __future__ import annotations

import json
import struct
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

_DTYPES = {
    torch.float32: ("F32", np.float32),
    torch.float16: ("F16", np.float16),
    torch.float64: ("F64", np.float64),
    torch.int64: ("I64", np.int64),
    torch.int32: ("I32", np.int32),
    torch.uint8: ("U8", np.uint8),
}
_BY_NAME = {v[0]: (k, v[1]) for k, v in _DTYPES.items()}


def save(tensors: Mapping[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> int:
    header = OrderedDict()
    blobs = []
    off = 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("reserved name")
        t = t.detach().cpu().contiguous()
        code, npdt = _DTYPES[t.dtype]
        data = t.numpy().astype(np.dtype(npdt).newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("__metadata__ keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    hj = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return 8 + len(hj) + off


def load(path: str) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, str]]:
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = OrderedDict()
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    expect = 0
    for name, h in items:
        b, e = h["data_offsets"]
        assert b == expect, f"{name}: gap/overlap in data"
        expect = e
        tdt, npdt = _BY_NAME[h["dtype"]]
        arr = np.frombuffer(raw, dtype=np.dtype(npdt).newbyteorder("<"), count=(e - b) // np.dtype(npdt).itemsize,
                            offset=base + b).astype(npdt)
        assert arr.size == int(np.prod(h["shape"])) if h["shape"] else arr.size == 1
        out[name] = torch.from_numpy(arr.copy()).view(*h["shape"]) if h["shape"] else torch.from_numpy(arr.copy()).view(())
    assert base + expect == len(raw), "trailing bytes"
    # keep header order (as written)
    ordered = OrderedDict((k, out[k]) for k in header.keys())
    return ordered, meta
