#!/usr/bin/env python3
"""fovea training recipe: DeepMask -> SharpMask -> MultiPathNet, on the reference models.

The architectures are imported from tools/reference (one definition); this file only adds
initialisation, sampling, losses, optimisation, checkpoints and the run log.

    python3 tools/train/train.py deepmask     --run tools/train/runs/light --minutes 40
    python3 tools/train/train.py sharpmask    --run tools/train/runs/light --minutes 10
    python3 tools/train/train.py multipathnet --run tools/train/runs/light --minutes 10

Each call resumes from ``<run>/<stage>.pt`` when it exists (model, optimiser, step, RNG
states), trains until ``--minutes`` of wall time or ``--steps`` total steps, checkpoints
every ``--ckpt-minutes`` and at the end (atomic write; each file < 16 MB is checked), logs
every ``--log-every`` steps to ``<run>/<stage>.log.jsonl`` and appends one row per run to
tools/train/RUNS.md. ``--config`` picks the recipe (``light``: ResNet-18/4 trunk for a CPU;
``released``: the spec's ResNet-50 numbers, needs a GPU and an ImageNet trunk to be
meaningful). ``--device cuda`` trains the DeepMask and SharpMask stages on a GPU;
``--workers N`` makes their patch batches in N processes ahead of the steps (a GPU step is far
shorter than one batch of patch sampling).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import multiprocessing
import os
import platform
import signal
import socket
import sys
import threading
import time
from typing import Dict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.normpath(os.path.join(HERE, "..", "reference"))
for p in (HERE, REF):
    if p not in sys.path:
        sys.path.insert(0, p)

from common import FixedAffine, init_weights  # noqa: E402  (tools/reference)
from deepmask import deepmask_config  # noqa: E402
from export import build  # noqa: E402
from multipathnet import multipathnet_config  # noqa: E402
from sharpmask import sharpmask_config  # noqa: E402

import data  # noqa: E402
import losses  # noqa: E402
from sampler import PatchSampler  # noqa: E402

MAX_CKPT_BYTES = 16 * 1000 * 1000

RECIPES = {
    # CPU default model: ResNet-18 trunk with every DeepMask channel count / 4, same head and
    # refinement structure (km = 32, nhu2 = 64/64/64/32). Adam instead of the released SGD
    # (no BatchNorm and no pretrained trunk here: plain SGD at 1e-3 barely moves in the
    # ~40 min a CPU run has), joint loss in every batch (half positives).
    "light": dict(trunk="resnet18", width_div=4, km=32, batch=32, pos_frac=0.5,
                  optimizer="adam", lr=5e-4, weight_decay=0.0, momentum=0.9, clip=10.0,
                  score_weight=1.0, paste_p=0.3, q3_shift=False,
                  sm_batch=16, sm_optimizer="adam", sm_lr=5e-4,
                  mpn_width_div=4, mpn_images=8, mpn_rois=16, mpn_short=512, mpn_max=683,
                  mpn_optimizer="adam", mpn_lr=1e-3, mpn_init_from_deepmask=True,
                  # MultiPathNet fixes after the first run (07:07) stayed at the label prior
                  # (tools/train/README.md): half of the fg ROIs from IoU >= 0.75, 8 tight copies
                  # per GT box, classify at the training scale, images 512 (was 384), lr 1e-3
                  # (was 5e-4), trunk frozen with cached features so that a step can take 8
                  # images x 16 ROIs (was 2 x 64) at the same cost.
                  mpn_fg_hi=0.5, mpn_tight=8, mpn_freeze_layer1=True, mpn_freeze_trunk=True,
                  mpn_test_at_train_scale=True),
    # The spec's numbers (spec deepmask-sharpmask.md 5.3/5.4, multipathnet.md 5).
    "released": dict(trunk="resnet50", width_div=1, km=32, batch=32, pos_frac=0.5,
                     optimizer="sgd", lr=1e-3, weight_decay=5e-4, momentum=0.9, clip=0.0,
                     score_weight=1.0 / 32 * 16, paste_p=0.0, q3_shift=True,
                     sm_batch=32, sm_optimizer="sgd0", sm_lr=1e-3,
                     mpn_width_div=1, mpn_images=4, mpn_rois=64, mpn_short=800, mpn_max=1000,
                     mpn_optimizer="sgd", mpn_lr=1e-3, mpn_init_from_deepmask=False),
}


# ----------------------------------------------------------------------------------------
# models and init

def model_config(stage: str, r: dict) -> dict:
    if stage == "deepmask":
        return deepmask_config(r["trunk"], r["width_div"])
    if stage == "sharpmask":
        return sharpmask_config(r["trunk"], r["width_div"], km=r["km"])
    if stage == "multipathnet":
        return multipathnet_config("resnet18_integral", r["mpn_width_div"])
    raise ValueError(stage)


def calibrate_affines(model: torch.nn.Module, run_forward) -> None:
    """From-scratch init of the fixed affines (BatchNorm turned constant): each one gets the
    per-channel mean/var of its input on a calibration batch, gamma = 1 (0.35 on the last
    affine of a residual branch, ``calib_gamma`` of the reference blocks), beta = 0; i.e. a
    BatchNorm frozen at initialisation. They stay fixed afterwards (not trainable, spec 5.3)."""
    hooks = []

    def pre(m, inp):
        x = inp[0].detach()
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        lo, hi = getattr(m, "calib_gamma", (1.0, 1.0))
        gamma = torch.full_like(mean, 0.5 * (lo + hi))
        m.set_from_bn(gamma, torch.zeros_like(mean), mean, var + 1e-3, 1e-5)

    for m in model.modules():
        if isinstance(m, FixedAffine):
            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in hooks:
            h.remove()


def init_deepmask(model, x_calib: torch.Tensor, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    init_weights(model.trunk, g)  # He-normal trunk convs; heads keep torch's default init
    was = model.training
    model.eval()
    calibrate_affines(model, lambda: model.trunk_taps(x_calib, patch=True))
    model.train(was)


# ----------------------------------------------------------------------------------------
# optimisers

def make_optimizer(kind: str, params, lr: float, wd: float, momentum: float):
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adamw":  # decoupled weight decay
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if kind == "sgd":  # torch/optim sgd.lua: v <- g on first call, then 0.9 v + g (dampening 0)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    if kind == "sgd0":  # SharpMask updateParameters: vanilla SGD
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(path: str, state: dict) -> int:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    size = os.path.getsize(tmp)
    if size >= MAX_CKPT_BYTES:
        os.remove(tmp)
        raise RuntimeError(f"checkpoint {path} would be {size} bytes (>= 16 MB)")
    if os.path.exists(path):
        os.replace(path, path + ".prev")
    os.replace(tmp, path)
    return size


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(sampler) -> dict:
    return dict(torch=torch.get_rng_state(), numpy=sampler.rng.bit_generator.state if sampler else None,
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def set_rng_state(st: dict, sampler) -> None:
    torch.set_rng_state(st["torch"])
    if sampler is not None and st.get("numpy") is not None:
        sampler.rng.bit_generator.state = st["numpy"]
    if st.get("cuda") is not None and torch.cuda.is_available() and len(st["cuda"]) <= torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------------------
# patch batches made by worker processes

_worker_sampler = None


def _worker_init(images: list, sampler_args: dict) -> None:
    global _worker_sampler
    torch.set_num_threads(1)
    _worker_sampler = PatchSampler(images, **sampler_args)


def _worker_batch(seed: int, step: int, n: int, pos_frac: float) -> dict:
    _worker_sampler.rng = np.random.default_rng([seed, step])
    return {k: v.numpy() for k, v in _worker_sampler.batch(n, pos_frac).items()}


class BatchPrefetcher:
    """Patch batches made ahead by worker processes. The batch of step i comes from a sampler
    whose RNG is seeded with (seed, i), so the stream depends on the step alone: a run resumed
    at step i continues exactly as an uninterrupted one, whatever the number of workers (the
    stream differs from the in-process sampler's, which draws from one running RNG)."""

    def __init__(self, workers: int, images: list, sampler_args: dict, n: int, pos_frac: float, step: int):
        self.pool = multiprocessing.get_context("spawn").Pool(workers, _worker_init, (images, sampler_args))
        seed = sampler_args["seed"]
        self.seed, self.n, self.pos_frac, self.step = seed, n, pos_frac, step
        self.ahead = collections.deque()
        for _ in range(2 * workers):
            self._submit()

    def _submit(self) -> None:
        self.ahead.append(self.pool.apply_async(_worker_batch, (self.seed, self.step, self.n, self.pos_frac)))
        self.step += 1

    def get(self) -> dict:
        b = self.ahead.popleft().get()
        self._submit()
        return {k: torch.from_numpy(v) for k, v in b.items()}

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"{torch.get_num_threads()} thread(s), {gpu}")


# ----------------------------------------------------------------------------------------
# stage runners

def _nanmean(v) -> float:
    """Mean of the finite values (a metric is NaN in a step without the ROIs it needs); NaN if none."""
    a = np.asarray(v, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


class Stage:
    """Shared loop: build/resume, step until the budget, checkpoint, log."""

    name = "?"

    def __init__(self, args, recipe: dict):
        self.args, self.r = args, recipe
        self.run = args.run
        os.makedirs(self.run, exist_ok=True)
        self.ckpt = os.path.join(self.run, f"{self.name}.pt")
        self.log_path = os.path.join(self.run, f"{self.name}.log.jsonl")
        self.step = 0
        self.history = []
        self.device = torch.device(getattr(args, "device", "cpu"))
        self.prefetch = None

    # to implement: setup(fresh: bool) (setting self.model, self.opt, self.cfg), lr(),
    # train_step() -> dict of floats; patch stages also batch_spec() -> (n, pos_frac) and
    # sampler_args (PatchSampler's keyword arguments)

    def next_batch(self) -> dict:
        """The step's patch batch on the training device."""
        n, pos_frac = self.batch_spec()
        b = self.prefetch.get() if self.prefetch is not None else self.sampler.batch(n, pos_frac)
        return {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    def state(self):
        return dict(model=self.model.state_dict(), optim=self.opt.state_dict(), cfg=self.cfg)

    def load_state(self, st):
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optim"])
        for g in self.opt.param_groups:
            g["lr"] = self.lr()

    def run_budget(self) -> dict:
        a = self.args
        fresh = not os.path.exists(self.ckpt)
        self.setup(fresh)
        if not fresh:
            st = load_checkpoint(self.ckpt)
            self.load_state(st)
            self.step = st["step"]
            self.history = st.get("history", [])
            set_rng_state(st["rng"], getattr(self, "sampler", None))
            print(f"[{self.name}] resumed {self.ckpt} at step {self.step}", flush=True)
        if getattr(a, "workers", 0):
            n, pos_frac = self.batch_spec()
            self.prefetch = BatchPrefetcher(a.workers, self.images, self.sampler_args, n, pos_frac, self.step)
        start_step, t0 = self.step, time.time()
        t_ckpt = t0
        acc: Dict[str, list] = {}
        last = {}
        recent = []  # the last 10 log records of this run: RUNS.md gets their mean
        log = open(self.log_path, "a")
        stop = []  # SIGTERM / SIGINT: finish the step, then checkpoint and log the run as usual

        def on_signal(signum, frame):
            stop.append(signum)

        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, on_signal)
        while True:
            if a.steps and self.step >= a.steps:
                break
            if a.minutes and time.time() - t0 >= a.minutes * 60:
                break
            if stop:
                a.note = ((a.note + "; ") if a.note else "") + f"stopped early by signal {stop[0]}"
                break
            vals = self.train_step()
            self.step += 1
            for k, v in vals.items():
                acc.setdefault(k, []).append(v)
            if self.step % a.log_every == 0:
                rec = dict(step=self.step, t=round(time.time() - t0, 1),
                           **{k: round(_nanmean(v), 5) for k, v in acc.items()})
                log.write(json.dumps(rec) + "\n"); log.flush()
                print(f"[{self.name}] " + json.dumps(rec), flush=True)
                last = rec
                recent = (recent + [rec])[-10:]
                acc = {}
            if time.time() - t_ckpt >= a.ckpt_minutes * 60:
                self.save(); t_ckpt = time.time()
        if acc:
            rec = dict(step=self.step, t=round(time.time() - t0, 1),
                       **{k: round(_nanmean(v), 5) for k, v in acc.items()})
            log.write(json.dumps(rec) + "\n")
            last = rec if not last or len(next(iter(acc.values()))) >= 5 else last
        log.close()
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if recent:
            last = {k: round(_nanmean([r.get(k, float("nan")) for r in recent]), 4) for k in recent[-1] if k not in ("step", "t")}
            last["steps_averaged"] = f"{recent[0]['step'] - a.log_every + 1}-{recent[-1]['step']}"
        wall = time.time() - t0
        run_rec = dict(stage=self.name, recipe=a.config, start_utc=dt.datetime.fromtimestamp(t0, dt.timezone.utc)
                       .strftime("%Y-%m-%d %H:%M"), steps_from=start_step, steps_to=self.step,
                       wall_s=round(wall), machine=machine(), last_log=last, note=a.note)
        self.history.append(run_rec)
        size = self.save()
        run_rec["ckpt_bytes"] = size
        append_runs_md(run_rec, self)
        return run_rec

    def save(self) -> int:
        st = self.state()
        st.update(step=self.step, history=self.history, recipe=self.r, recipe_name=self.args.config,
                  rng=rng_state(getattr(self, "sampler", None)), stage=self.name)
        return save_checkpoint(self.ckpt, st)


class DeepMaskStage(Stage):
    name = "deepmask"

    def setup(self, fresh):
        r = self.r
        torch.manual_seed(self.args.seed)
        self.cfg = model_config("deepmask", r)
        self.images = data.load_split("train")
        self.sampler_args = dict(gSz=self.cfg["gSz"], paste_p=r["paste_p"], q3_shift=r["q3_shift"],
                                 seed=self.args.seed)
        self.sampler = PatchSampler(self.images, **self.sampler_args)
        self.model = build(self.cfg)
        if fresh:
            calib = self.sampler.batch(r["batch"], r["pos_frac"])["x"]
            init_deepmask(self.model, calib, self.args.seed)
        self.model.to(self.device)
        self.model.train()
        self.opt = make_optimizer(r["optimizer"], self.model.parameters(), self.lr(), r["weight_decay"],
                                  r["momentum"])

    def lr(self):
        return self.args.lr or self.r["lr"]

    def batch_spec(self):
        return self.r["batch"], self.r["pos_frac"]

    def train_step(self):
        r = self.r
        b = self.next_batch()
        out = self.model.forward_patch(b["x"])
        ml = self.model.upsample_mask(out["mask_logits"])
        L = losses.deepmask_joint_loss(ml, out["score_logits"], b["mask"], b["score"], b["pos"],
                                       r["score_weight"])
        self.opt.zero_grad(set_to_none=True)
        L["total"].backward()
        if r["clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), r["clip"])
        self.opt.step()
        with torch.no_grad():
            iou = losses.mask_iou(ml[b["pos"]], b["mask"][b["pos"]])
            acc = ((out["score_logits"] > 0).float() * 2 - 1 == b["score"]).float().mean()
        return dict(loss=L["total"].item(), mask=L["mask"].item(), score=L["score"].item(),
                    iou=iou.mean().item(), iou07=(iou >= 0.7).float().mean().item(), score_acc=acc.item())


class SharpMaskStage(DeepMaskStage):
    """SharpMask on a trained DeepMask: trunk, score and DeepMask mask heads frozen; only
    ``refine`` trains, on mask samples only (hfreq = 0), gSz = iSz = 160 (spec 3, 5.4)."""
    name = "sharpmask"

    def setup(self, fresh):
        r = self.r
        torch.manual_seed(self.args.seed + 1)
        self.cfg = model_config("sharpmask", r)
        self.images = data.load_split("train")
        self.sampler_args = dict(gSz=self.cfg["gSz"], paste_p=r["paste_p"], q3_shift=r["q3_shift"],
                                 seed=self.args.seed + 1)
        self.sampler = PatchSampler(self.images, **self.sampler_args)
        self.model = build(self.cfg)
        if fresh:
            dm_path = os.path.join(self.run, "deepmask.pt")
            dm = load_checkpoint(dm_path)
            missing, unexpected = self.model.load_state_dict(dm["model"], strict=False)
            assert not unexpected and all(k.startswith("refine.") for k in missing), (missing, unexpected)
            self.dm_step = dm["step"]
        for n, p in self.model.named_parameters():
            p.requires_grad_(n.startswith("refine."))
        self.model.to(self.device)
        self.model.eval()  # frozen DeepMask part: no dropout; refine has none
        self.opt = make_optimizer(r["sm_optimizer"], self.model.refine.parameters(), self.lr(), 0.0,
                                  r["momentum"])

    def lr(self):
        return self.args.lr or self.r["sm_lr"]

    def batch_spec(self):
        return self.r["sm_batch"], 1.0

    def train_step(self):
        r = self.r
        b = self.next_batch()
        m = self.model
        with torch.no_grad():
            taps = m.trunk_taps(b["x"], patch=True)
            e = taps["embedding"].flatten(1)
        hs = [getattr(m.refine, f"h{i}")(taps[t], patch=True)
              for i, t in enumerate(m.cfg["skip_taps"], start=1)]
        logits = m.refine.top_down(e, hs)
        loss = losses.soft_margin(logits, b["mask"]).flatten(1).mean(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if r["clip"]:
            torch.nn.utils.clip_grad_norm_(m.refine.parameters(), r["clip"])
        self.opt.step()
        with torch.no_grad():
            iou = losses.mask_iou(logits, b["mask"])
            dm_up = torch.nn.functional.interpolate(m.mask(e)[:, None], size=logits.shape[-2:], mode="bilinear",
                                                    align_corners=True)[:, 0]  # DeepMask mask, for comparison
            dm_iou = losses.mask_iou(dm_up, b["mask"])
        return dict(loss=loss.item(), iou=iou.mean().item(), iou07=(iou >= 0.7).float().mean().item(),
                    dm_iou=dm_iou.mean().item())


STAGES = {"deepmask": DeepMaskStage, "sharpmask": SharpMaskStage}


def append_runs_md(rec: dict, stage: Stage) -> None:
    path = os.path.join(HERE, "RUNS.md")
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("# Training runs\n\nOne row per invocation of `tools/train/train.py` (appended "
                    "automatically). Data: train parts only of shared/fixtures/datasets "
                    "(coco128-seg_train 100 images, coco-mini_train 80, nuts_train 15: 195 images, "
                    "1,617 instances); the held-out parts are never read by the trainer.\n\n"
                    "| start (UTC) | run dir | stage | recipe | steps | wall | losses (mean of the last 10 log records = 200 steps) | machine | ckpt | note |\n"
                    "|---|---|---|---|---|---|---|---|---|---|\n")
        ll = {k: v for k, v in (rec.get("last_log") or {}).items() if k not in ("t",)}
        f.write(f"| {rec['start_utc']} | {os.path.relpath(stage.run, os.path.join(HERE, '..', '..'))} | "
                f"{rec['stage']} | {rec['recipe']} | {rec['steps_from']}→{rec['steps_to']} | "
                f"{rec['wall_s'] / 60:.1f} min | {json.dumps(ll).replace('|', '/')} | {rec['machine']} | "
                f"{rec.get('ckpt_bytes', 0) / 1e6:.1f} MB | {rec.get('note') or ''} |\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["deepmask", "sharpmask", "multipathnet"])
    ap.add_argument("--run", required=True, help="run directory (checkpoints, logs)")
    ap.add_argument("--config", default="light", choices=sorted(RECIPES))
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of this invocation")
    ap.add_argument("--steps", type=int, default=0, help="stop at this total step count (0: no limit)")
    ap.add_argument("--lr", type=float, default=0.0, help="override the recipe's learning rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (DeepMask and SharpMask stages)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making the patch batches ahead (0: in the training process)")
    ap.add_argument("--seed", type=int, default=555)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage == "multipathnet":
        if args.device != "cpu" or args.workers:
            ap.error("the multipathnet stage runs on the CPU, in one process (--device and --workers not supported)")
        from train_mpn import MultiPathNetStage
        STAGES["multipathnet"] = MultiPathNetStage
    st = STAGES[args.stage](args, RECIPES[args.config])
    rec = st.run_budget()
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
