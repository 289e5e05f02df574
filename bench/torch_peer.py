#!/usr/bin/env python3
"""PyTorch peer of fovea's segment() pipeline, timed per stage on the same
image and weights, for the GPU machine (which has PyTorch but no Node) and,
as a further CPU peer, here.

The models are the reference definitions of tools/reference (one definition
of each architecture), loaded from fovea's own safetensors files; around
them, eager PyTorch does the pipeline's work on the device in float32:
pyramid (area shrink, align-corners bilinear, pad, normalise), the dense
trunk + heads + h-nets per scale, one top-k over all score maps, the
refinement of the selected cells (windows gathered by indexing), pasting
(bilinear up-sampling per scale, threshold, placement), boxes and RLE runs
from the binary masks, MultiPathNet (ROI max pooling through torchvision
where installed, else per-ROI adaptive max pooling) and the class-wise NMS.
The image is fovea_bench --pipeline's synthetic one, uploaded once as
uint8. It is the same work, not the same bits: the pooling bins and
resampling kernels differ in detail from fovea's, so counts of instances
may differ slightly (both are printed).

    python3 bench/torch_peer.py --model weights/sharpmask.safetensors \
        [--classifier c.safetensors] [--device cpu|cuda] [--precision fp32|tf32] \
        [--image 640x480,1280x960] [--repeats 7] [--threads N] \
        [--fovea-bench build-bench/fovea_bench] [--json out.json]

With --fovea-bench, fovea_bench --pipeline runs before and after the PyTorch
runs on the same device, precision and image, and the table gives the ratio
fovea/PyTorch per stage (the lower of fovea's two medians).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from export import load  # noqa: E402
from pipeline import DEFAULT_OPTIONS, logit_threshold, multipathnet_scale, pyramid_size, window, work_size  # noqa: E402
from sharpmask import SKIP_TAPS  # noqa: E402

try:
    from torchvision.ops import batched_nms, roi_pool
except ImportError:  # this machine has no torchvision; the GPU machine does
    batched_nms = roi_pool = None

STAGES = ["pyramid", "trunk", "proposals", "refine", "paste", "classify", "postprocess"]


def synthetic_image(w: int, h: int) -> np.ndarray:
    """fovea_bench --pipeline's image (uint8 [h, w, 3]): colour gradients and four discs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    p = np.empty((h, w, 3), np.uint8)
    p[..., 0] = 40 + (150 * x) // w
    p[..., 1] = 60 + (120 * y) // h
    p[..., 2] = 90 + ((x + y) * 7) % 50
    for k in range(4):
        cx, cy, r = w * (k + 1) // 5, h * (1 if k % 2 else 2) // 3, max(2, w // 10)
        p[..., k % 3][(x - cx) ** 2 + (y - cy) ** 2 < r * r] = 230 - 30 * k
    return p


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """image.scale's kind of resampling: area average to shrink, align-corners bilinear to grow."""
    if (h, w) == tuple(x.shape[-2:]):
        return x
    if h <= x.shape[-2] and w <= x.shape[-1]:
        return F.interpolate(x, size=(h, w), mode="area")
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)


def nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS per group with fovea's +1 box areas; kept indices by descending score."""
    if batched_nms is not None and boxes.is_cuda:
        # torchvision's IoU has no +1: widen by one pixel to match.
        return batched_nms(boxes + torch.tensor([0, 0, 1, 1], device=boxes.device), scores, groups, threshold)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    over = (inter / (area[:, None] + area[None, :] - inter) > threshold) & (groups[order][:, None] == groups[order][None, :])
    over = over.cpu().numpy()
    suppressed = np.zeros(len(order), bool)
    keep = []
    for a in range(len(order)):
        if suppressed[a]:
            continue
        keep.append(a)
        suppressed |= over[a]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class Peer:
    def __init__(self, model: str, classifier: Optional[str], device: torch.device, options: dict):
        self.device = device
        self.pm, self.pc = load(model)
        self.pm.to(device)
        self.cm, self.cc = load(classifier) if classifier else (None, None)
        if self.cm is not None:
            if self.cc["variant"] != "resnet18_integral":
                raise SystemExit(f"torch_peer: MultiPathNet variant {self.cc['variant']} not covered (resnet18_integral is)")
            self.cm.to(device)
        self.opt = dict(DEFAULT_OPTIONS, mode="instances" if classifier else "proposals", **options)
        self.sharp = self.pc["architecture"] == "sharpmask"
        if self.pm.is_vgg:
            raise SystemExit("torch_peer: the VGG DeepMask trunk is not covered")

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def run(self, rgb: torch.Tensor) -> dict:
        """rgb: uint8 [H, W, 3] on the device. Returns stage times (ms), the top-k cells
        (scale, row, col, logit), the number of instances and of RLE run ends."""
        cfg, opt, dev = self.pc, self.opt, self.device
        times: Dict[str, float] = {}
        t = [time.perf_counter()]

        def mark(stage):
            self.sync()
            t.append(time.perf_counter())
            times[stage] = (t[-1] - t[-2]) * 1e3

        H, W = rgb.shape[0], rgb.shape[1]
        img = rgb.permute(2, 0, 1)[None].float() / 255
        hw, ww = work_size(H, W, int(opt["max_side"]))
        work = resize(img, hw, ww)
        fy, fx = H / hw, W / ww
        stride, pad, isz = int(cfg["stride"]), int(cfg["image_pad"]), int(cfg["iSz"])
        mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)
        scales = list(opt["scales"] or cfg["scales"])
        inputs = []
        for s in scales:
            sh, sw = pyramid_size(hw, ww, s)
            if sh < 1 or sw < 1:
                inputs.append(None)
                continue
            x = F.interpolate(work, size=(sh, sw), mode="bilinear", align_corners=True)
            x = F.pad(x, (pad, pad, pad, pad), value=float(cfg["image_pad_value"]))
            inputs.append((x - mean) / std)
        mark("pyramid")

        per_scale = []  # (embedding, score map, h-maps)
        for x in inputs:
            if x is None:
                per_scale.append(None)
                continue
            taps, e, sc = self.pm.dense_embedding_and_scores(x)
            hmaps = ([getattr(self.pm.refine, f"h{i}")(taps[tap], patch=False)
                      for i, (tap, _, _) in enumerate(SKIP_TAPS, start=1)] if self.sharp else [])
            per_scale.append((e, sc[0], hmaps))
        mark("trunk")

        maps = [(si, p[1]) for si, p in enumerate(per_scale) if p is not None and p[1].numel() > 0]
        flat = torch.cat([m.flatten() for _, m in maps])
        k = min(int(opt["max_proposals"]), flat.numel())
        logits, idx = torch.topk(flat, k)
        starts = np.cumsum([0] + [m.numel() for _, m in maps])
        idx_host, logits_host = idx.cpu().numpy(), logits.cpu().numpy()
        cells = []  # (scale, row, col, logit) in rank order
        for i, lg in zip(idx_host, logits_host):
            j = int(np.searchsorted(starts, i, side="right") - 1)
            si, m = maps[j]
            r, c = divmod(int(i - starts[j]), m.shape[1])
            cells.append((si, r, c, float(lg)))
        mark("proposals")

        by_scale: Dict[int, List[int]] = {}
        for q, (si, _, _, _) in enumerate(cells):
            by_scale.setdefault(si, []).append(q)
        masks: Dict[int, torch.Tensor] = {}
        f = int(cfg["fSz"]) if self.sharp else 0
        for si, qs in by_scale.items():
            e, _, hmaps = per_scale[si]
            r = torch.tensor([cells[q][1] for q in qs], device=dev)
            c = torch.tensor([cells[q][2] for q in qs], device=dev)
            vecs = e[0][:, r, c].T.contiguous()
            if not self.sharp:
                masks[si] = self.pm.mask(vecs)
                continue
            windows = []
            for j, hm in enumerate(hmaps):
                step = 2 ** j
                side = f * step
                hp = F.pad(hm[0], (0, side, 0, side))  # zero past the map
                ar = torch.arange(side, device=dev)
                ys, xs = r[:, None] * step + ar, c[:, None] * step + ar
                windows.append(hp[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3))
            masks[si] = self.pm.refine.top_down(vecs, windows)
        mark("refine")

        thr = logit_threshold(opt["mask_threshold"])
        canvas = torch.zeros((len(cells), H, W), dtype=torch.bool, device=dev)
        for si, qs in by_scale.items():
            s = scales[si]
            _, _, wh, wwid = window(0, 0, s, fy, fx, stride, pad, isz)
            if wh < 1 or wwid < 1:
                continue
            on = F.interpolate(masks[si][:, None], size=(wh, wwid), mode="bilinear", align_corners=True)[:, 0] > thr
            for j, q in enumerate(qs):
                top, left, _, _ = window(cells[q][1], cells[q][2], s, fy, fx, stride, pad, isz)
                r0, r1, c0, c1 = max(0, top), min(H, top + wh), max(0, left), min(W, left + wwid)
                if r0 < r1 and c0 < c1:
                    canvas[q, r0:r1, c0:c1] = on[j, r0 - top:r1 - top, c0 - left:c1 - left]
        rows, cols = canvas.any(2), canvas.any(1)
        ar_h, ar_w = torch.arange(H, device=dev), torch.arange(W, device=dev)
        boxes = torch.stack([torch.where(cols, ar_w, W).amin(1), torch.where(rows, ar_h, H).amin(1),
                             torch.where(cols, ar_w, -1).amax(1), torch.where(rows, ar_h, -1).amax(1)], 1).float()
        area = canvas.sum((1, 2))
        col_major = canvas.transpose(1, 2).reshape(len(cells), -1)
        changes = (col_major[:, 1:] != col_major[:, :-1]).nonzero().cpu().numpy()  # RLE run ends
        boxes_host, area_host = boxes.cpu().numpy(), area.cpu().numpy()
        runs = np.split(changes[:, 1], np.searchsorted(changes[:, 0], np.arange(1, len(cells))))
        mark("paste")

        def result(instances: int) -> dict:
            return dict(times=times, proposals=len(cells), cells=cells, instances=instances,
                        runs=sum(len(x) for x in runs))

        objectness = torch.sigmoid(logits)
        if opt["mode"] == "proposals":
            keep = torch.nonzero(objectness >= opt["score_threshold"])[:, 0]
            if opt["nms_threshold"] < 1 and len(keep):
                keep = keep[nms(boxes[keep], logits[keep], torch.zeros_like(keep), opt["nms_threshold"])]
            keep = keep[: int(opt["max_detections"])].cpu().numpy()
            mark("postprocess")
            return result(len(keep))

        kept = [q for q in range(len(cells)) if area_host[q] > 0 and
                (boxes_host[q, 2] - boxes_host[q, 0]) * (boxes_host[q, 3] - boxes_host[q, 1]) > 2]
        if not kept:
            mark("classify")
            mark("postprocess")
            return result(0)
        sp, ih, iw = multipathnet_scale(H, W, self.cc["test_scale"], self.cc["test_max_size"])
        x = resize(img, ih, iw)
        x = (x - torch.tensor(self.cc["mean"], device=dev).view(1, 3, 1, 1)) / \
            torch.tensor(self.cc["std"], device=dev).view(1, 3, 1, 1)
        kb = boxes[kept]
        rois = torch.cat([torch.zeros((len(kept), 1), device=dev), kb * sp], 1)
        feats = self.cm.features(x)
        ph, pw = self.cc["roi_pool"]
        if roi_pool is not None:
            pooled = roi_pool(feats, rois, (ph, pw), self.cc["roi_scale"])
        else:
            scale, fh, fw = self.cc["roi_scale"], feats.shape[2], feats.shape[3]
            pooled = torch.stack([
                F.adaptive_max_pool2d(feats[0, :, min(fh - 1, round(y1 * scale)):max(round(y1 * scale), round(y2 * scale)) + 1,
                                      min(fw - 1, round(x1 * scale)):max(round(x1 * scale), round(x2 * scale)) + 1], (ph, pw))
                for x1, y1, x2, y2 in rois[:, 1:].tolist()])
        y = F.avg_pool2d(self.cm.tower.layer4(pooled), 7, 1).flatten(1)
        out = self.cm._heads[0](y, y, self.cm.bbox_norm.mean, self.cm.bbox_norm.std)
        prob, deltas = out["cls_prob"], out["bbox_deltas"]
        mark("classify")

        d = deltas.view(len(kept), -1, 4)
        w, h = (kb[:, 2] - kb[:, 0])[:, None], (kb[:, 3] - kb[:, 1])[:, None]
        cx, cy = ((kb[:, 0] + kb[:, 2]) / 2)[:, None], ((kb[:, 1] + kb[:, 3]) / 2)[:, None]
        ncx, ncy = cx + d[..., 0] * w, cy + d[..., 1] * h
        nw, nh = w * torch.exp(d[..., 2]), h * torch.exp(d[..., 3])
        cb = torch.stack([(ncx - nw / 2).clamp(0, W - 1), (ncy - nh / 2).clamp(0, H - 1),
                          (ncx + nw / 2).clamp(0, W - 1), (ncy + nh / 2).clamp(0, H - 1)], -1)
        k_idx, c_idx = torch.nonzero(prob[:, 1:] >= opt["score_threshold"], as_tuple=True)
        c_idx = c_idx + 1
        scores = prob[k_idx, c_idx]
        keep = nms(cb[k_idx, c_idx], scores, c_idx, opt["nms_threshold"]) if len(k_idx) else k_idx
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][: int(opt["max_detections"])]
        instances = keep.cpu().numpy()
        mark("postprocess")
        return result(len(instances))


FOVEA_LINE = re.compile(r"^\s+(\S+)\s+(\S+)\s+([\d.]+) ms/image \(median of \d+\), (\d+) instances;(.*)$")


def fovea_bench(exe: str, model: str, classifier: Optional[str], device: str, precision: str, image: str,
                repeats: int) -> dict:
    cmd = [exe, "--pipeline", model, "--device", device, "--image", image, "--repeats", str(repeats)]
    if classifier:
        cmd += ["--classifier", classifier]
    if device == "cuda":
        cmd += ["--precision", precision]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = FOVEA_LINE.match(line)
        if m:
            stages = m.group(5).split()
            times = {stages[i]: float(stages[i + 1]) for i in range(0, len(stages), 2)}
            return dict(command=" ".join(cmd), total=float(m.group(3)), instances=int(m.group(4)), times=times)
    raise SystemExit(f"torch_peer: no result line in fovea_bench's output:\n{out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "weights", "sharpmask.safetensors"))
    ap.add_argument("--classifier")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32"], help="CUDA only")
    ap.add_argument("--image", default="640x480", help="WxH list, comma separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--fovea-bench", help="fovea_bench executable: also time fovea on the same work")
    ap.add_argument("--json")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("torch_peer: CUDA is not available to PyTorch here")
        torch.backends.cudnn.benchmark = True  # algorithms chosen once per shape, as fovea caches its own
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    precision = a.precision if a.device == "cuda" else "fp32"
    peer = Peer(a.model, a.classifier, device, {})
    name = torch.cuda.get_device_name(device) if a.device == "cuda" else platform.processor() or platform.machine()
    print(f"PyTorch {torch.__version__} on {a.device} ({name}), {precision}, {a.threads} CPU threads; "
          f"torchvision ops: {'yes' if roi_pool is not None else 'no'}")
    report = dict(command=" ".join(["python3", "bench/torch_peer.py"] + sys.argv[1:]), torch=torch.__version__,
                  device=a.device, device_name=name, precision=precision, threads=a.threads, results=[])
    for size in a.image.split(","):
        w, h = (int(v) for v in size.split("x"))
        fovea_runs = []
        if a.fovea_bench:
            fovea_runs.append(fovea_bench(a.fovea_bench, a.model, a.classifier, a.device, precision, size, a.repeats))
        rgb = torch.from_numpy(synthetic_image(w, h)).to(device)
        runs = []
        for i in range(a.warmup + a.repeats):
            t0 = time.perf_counter()
            r = peer.run(rgb)
            r["times"]["total"] = (time.perf_counter() - t0) * 1e3
            if i >= a.warmup:
                runs.append(r)
        if a.fovea_bench:
            fovea_runs.append(fovea_bench(a.fovea_bench, a.model, a.classifier, a.device, precision, size, a.repeats))
        med = {s: statistics.median(r["times"].get(s, 0.0) for r in runs) for s in STAGES + ["total"]}
        res = dict(width=w, height=h, torch_ms=med, torch_spread=[min(r["times"]["total"] for r in runs),
                                                                    max(r["times"]["total"] for r in runs)],
                   torch_instances=runs[-1]["instances"], torch_proposals=runs[-1]["proposals"])
        print(f"\n{w}x{h}: PyTorch {med['total']:.1f} ms/image (median of {a.repeats}), "
              f"{res['torch_proposals']} proposals, {res['torch_instances']} instances")
        if fovea_runs:
            best = min(fovea_runs, key=lambda f: f["total"])
            res["fovea"] = fovea_runs
            print(f"fovea   {best['total']:.1f} ms/image ({best['instances']} instances; the lower median of "
                  f"{len(fovea_runs)} runs of fovea_bench)")
            print(f"{'stage':14s} {'fovea ms':>10s} {'torch ms':>10s} {'fovea/torch':>12s}")
            for s in STAGES + ["total"]:
                fv = best["total"] if s == "total" else best["times"].get(s)
                if fv is None or med[s] == 0:
                    continue
                print(f"{s:14s} {fv:10.2f} {med[s]:10.2f} {fv / med[s]:12.2f}")
        else:
            for s in STAGES + ["total"]:
                print(f"  {s:14s} {med[s]:10.2f} ms")
        report["results"].append(res)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
