"""Shared layers for the fovea reference models (PyTorch, CPU, fp32/fp64).

Everything here follows the released Torch7 code as recorded in
shared/spec/deepmask-sharpmask.md and shared/spec/multipathnet.md:

* ``sym_pad``      nn.SpatialSymmetricPadding (edge-inclusive mirror, numpy 'symmetric')
* ``crop``         nn.SpatialZeroPadding(-k,-k,-k,-k)
* ``FixedAffine``  inn.ConstAffine / nn.SpatialConstDiagonal (BN turned into y = a*x + b)
* ``Conv2d``       a conv that pads itself (zero or symmetric) and whose bias may be absent
* ``roi_pool``     inn.ROIPooling, v2 kernel (and v1), written with plain torch ops
* ``c_round``      C ``round``: halves away from zero (torch.round rounds halves to even)

Weights live in ordinary ``nn.Parameter`` / buffers so that ``state_dict()`` of a
*folded* model is exactly the tensor-naming contract (see NAMING.md).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# padding / cropping


def _sym_index(n: int, p: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-p, n + p, device=device)
    i = torch.where(i < 0, -i - 1, i)
    i = torch.where(i >= n, 2 * n - 1 - i, i)
    return i


class _SymPad(torch.autograd.Function):
    """Forward: symmetric pad. Backward as Torch's SpatialSymmetricPadding, which inherits
    SpatialZeroPadding's updateGradInput: the gradient of the padded border is dropped, not
    added back to the mirrored source cells (spec 5.4)."""

    @staticmethod
    def forward(ctx, x, p):
        ctx.p = p
        h, w = x.shape[-2], x.shape[-1]
        return x.index_select(-2, _sym_index(h, p, x.device)).index_select(-1, _sym_index(w, p, x.device))

    @staticmethod
    def backward(ctx, g):
        p = ctx.p
        return g[..., p:-p, p:-p].contiguous(), None


def sym_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Symmetric padding by ``p`` on all four sides: ``c b a | a b c d ...``."""
    if p == 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if h < p or w < p:
        raise ValueError(f"sym_pad: input {h}x{w} is smaller than the pad {p}")
    return _SymPad.apply(x, p)


def crop(x: torch.Tensor, k: int) -> torch.Tensor:
    """Remove ``k`` rows/cols on every side (Torch SpatialZeroPadding(-k,-k,-k,-k))."""
    if k == 0:
        return x
    return x[..., k:-k, k:-k]


# ----------------------------------------------------------------------------
# layers


class Conv2d(nn.Conv2d):
    """Conv whose padding is applied explicitly: ``pad_mode`` 'zero' or 'symmetric'.

    With 'symmetric' this is the released DeepMask ``Sequential{SymPad(p), conv(pad=0)}``
    (utils.updatePadding). ``bias=False`` models a checkpoint conv without bias (nil);
    folding or export always gives it one.
    """

    def __init__(self, cin, cout, k, stride=1, pad=0, pad_mode="zero", bias=True, dilation=1,
                 device=None):
        super().__init__(cin, cout, k, stride=stride, padding=0, dilation=dilation, bias=bias,
                         device=device)
        assert pad_mode in ("zero", "symmetric")
        self.pad = int(pad)
        self.pad_mode = pad_mode

    def forward(self, x):
        if self.pad:
            if self.pad_mode == "symmetric":
                x = sym_pad(x, self.pad)
            else:
                x = F.pad(x, (self.pad,) * 4)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation)


class Linear(nn.Linear):
    """nn.Linear that can also be applied per location of an NCHW map (1x1 conv form)."""

    def conv1x1(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("oc,nchw->nohw", self.weight, x)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class FixedAffine(nn.Module):
    """Per-channel y = scale*x + bias (inn.ConstAffine; BatchNorm after BNtoFixed).

    Not trainable (buffers). ``scale = gamma/sqrt(var+eps)``, ``bias = beta - mean*scale``.
    The generating BN statistics are kept in ``bn_stats`` (not exported) for the record.
    """

    def __init__(self, c: int, device=None):
        super().__init__()
        self.register_buffer("scale", torch.ones(c, device=device))
        self.register_buffer("bias", torch.zeros(c, device=device))
        self.bn_stats: Optional[Dict[str, torch.Tensor]] = None

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.bias.view(shape)

    def set_from_bn(self, gamma, beta, mean, var, eps=1e-5):
        a = gamma / torch.sqrt(var + eps)
        self.scale.copy_(a)
        self.bias.copy_(beta - mean * a)
        self.bn_stats = dict(gamma=gamma.clone(), beta=beta.clone(), running_mean=mean.clone(),
                             running_var=var.clone(), eps=torch.tensor(eps))


def relu(x):
    return torch.clamp_min(x, 0)


# ----------------------------------------------------------------------------
# folding (export form)


def fold_affine(conv: nn.Module, aff: FixedAffine, add_bias: bool = True) -> None:
    """conv <- aff(conv): W'[o] = a[o] W[o], b'[o] = a[o] b[o] (+ beta[o] if add_bias).

    ``add_bias=False`` is for the second conv of a residual sum, where the affine's
    bias must be added once only.
    """
    a, b = aff.scale.detach(), aff.bias.detach()
    w = conv.weight.detach()
    shape = (-1,) + (1,) * (w.dim() - 1)
    new_w = w * a.view(shape)
    old_b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(a)
    new_b = old_b * a + (b if add_bias else 0)
    conv.weight = nn.Parameter(new_w)
    conv.bias = nn.Parameter(new_b)


def ensure_bias(conv: nn.Module) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype,
                                             device=conv.weight.device))


def fold_model(model: nn.Module) -> nn.Module:
    """Fold every foldable FixedAffine of the model (in place) and give every conv a bias.

    Each module with foldable affines implements ``_fold()``; this calls them all.
    """
    for m in list(model.modules()):
        if m is not model and hasattr(m, "_fold"):
            m._fold()
    if hasattr(model, "_fold"):
        model._fold()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            ensure_bias(m)
    model.folded = True
    return model


# ----------------------------------------------------------------------------
# rounding and ROI pooling (inn.ROIPooling)


def c_round(v: np.ndarray) -> np.ndarray:
    """C round(): nearest integer, halves away from zero (on float64 values)."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def roi_pool_bins(lo: float, hi: float, scale: float, out: int, size: int, v2: bool = True):
    """[start, end) of each bin along one axis, in float32 as the CUDA kernel computes.

    ``lo``/``hi`` are 0-based ROI coordinates (= Lua coordinate - 1).
    """
    f32 = np.float32
    s = int(c_round(f32(lo) * f32(scale)))
    e = int(c_round(f32(hi) * f32(scale))) - (1 if v2 else 0)
    r = max(e - s + 1, 1)
    bin_ = f32(f32(r) / f32(out))
    starts, ends = [], []
    for i in range(out):
        a = f32(f32(i) * bin_)
        b = f32(f32(i + 1) * bin_)
        if v2:
            bs, be = int(c_round(a)), int(c_round(b))
        else:
            bs, be = int(math.floor(a)), int(math.ceil(b))
        starts.append(min(max(bs + s, 0), size))
        ends.append(min(max(be + s, 0), size))
    return starts, ends


def roi_pool(x: torch.Tensor, rois: torch.Tensor, out_h: int, out_w: int, scale: float,
             v2: bool = True) -> torch.Tensor:
    """inn.ROIPooling(out_w, out_h, scale) forward (v2 by default).

    x: [N,C,H,W]; rois: [K,5] = (batch_index, x1, y1, x2, y2), 0-BASED: batch index from 0
    and coordinates equal to the Lua (1-based) coordinates minus one, i.e. the kernel's
    ``bottom_rois[i] - 1``. Output [K,C,out_h,out_w]; an empty bin gives 0.
    """
    n, c, h, w = x.shape
    r = rois.detach().to(torch.float32).cpu().numpy()
    out = x.new_zeros((r.shape[0], c, out_h, out_w))
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        assert 0 <= b < n and b == r[k, 0], "bad batch index"
        hs, he = roi_pool_bins(r[k, 2], r[k, 4], scale, out_h, h, v2)
        ws, we = roi_pool_bins(r[k, 1], r[k, 3], scale, out_w, w, v2)
        for ph in range(out_h):
            for pw in range(out_w):
                if he[ph] <= hs[ph] or we[pw] <= ws[pw]:
                    continue  # empty bin -> 0
                out[k, :, ph, pw] = x[b, :, hs[ph]:he[ph], ws[pw]:we[pw]].amax(dim=(-1, -2))
    return out


# ----------------------------------------------------------------------------
# deterministic initialisation that keeps activations O(1)


class Calibrator:
    """Data-dependent init (LSUV-like) run once on a calibration input.

    * every Conv2d / Linear whose output is seen first is rescaled so that its output has
      RMS ``target`` (default 1; modules may carry ``calib_target``);
    * every FixedAffine is given random but realistic BatchNorm statistics: the
      per-channel mean/var of its actual input, perturbed (mean + 0.1*std*N(0,1),
      var * U(0.7, 1.4)), gamma ~ U(0.6, 1.4) (or U(``calib_gamma``)), beta ~ U(-0.3, 0.3),
      eps = 1e-5.

    The last layer of every residual branch is calibrated to a small output (RMS ~0.35, or
    gamma ~ U(0.2, 0.5)) so that the identity path dominates: a random deep ResNet with
    full-size branches is chaotic (fp32 rounding grows ~2x per block), which would eat the
    1e-4 tolerance of the golden tests; trained ResNets look like this too.

    Layers are processed in forward order, so each sees the already calibrated output
    of the layers before it.
    """

    def __init__(self, model: nn.Module, gen: torch.Generator):
        self.model = model
        self.gen = gen
        self.done = set()
        self.handles = []

    def _rand(self, *shape):
        return torch.rand(*shape, generator=self.gen)

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self.gen)

    def _hook_lin(self, m, inp, out):
        if id(m) in self.done:
            return None
        self.done.add(id(m))
        target = getattr(m, "calib_target", 1.0)
        if out.numel() < 64:
            # too few outputs to measure (e.g. one score logit): use the expected RMS for
            # independent inputs, |w_row| * rms(x), instead of the measured one
            rms = (m.weight.detach().flatten(1).norm(dim=1).mean() * inp[0].detach().pow(2).mean().sqrt()).item()
        else:
            rms = out.detach().pow(2).mean().sqrt().item()
        if rms == 0 or not math.isfinite(rms):
            return None
        s = target / rms
        with torch.no_grad():
            m.weight.mul_(s)
            if m.bias is not None:
                m.bias.mul_(s)
        return out * s

    def _hook_aff(self, m, inp):
        if id(m) in self.done:
            return None
        self.done.add(id(m))
        x = inp[0].detach()
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        c = mean.numel()
        run_mean = mean + 0.1 * var.sqrt() * self._randn(c)
        run_var = var * (0.7 + 0.7 * self._rand(c)) + 1e-3
        lo, hi = getattr(m, "calib_gamma", (0.6, 1.4))
        gamma = lo + (hi - lo) * self._rand(c)
        beta = 0.6 * self._rand(c) - 0.3
        m.set_from_bn(gamma, beta, run_mean, run_var, 1e-5)
        return None

    def __enter__(self):
        for m in self.model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self.handles.append(m.register_forward_hook(self._hook_lin))
            elif isinstance(m, FixedAffine):
                self.handles.append(m.register_forward_pre_hook(self._hook_aff))
        return self

    def __exit__(self, *a):
        for h in self.handles:
            h.remove()


def init_weights(model: nn.Module, gen: torch.Generator) -> None:
    """He-normal weights, small uniform biases, identity affines (before calibration)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=gen) - 0.5) * 0.2)


def count_params(model: nn.Module) -> int:
    """Learnable parameters (Torch ``parameters()``): fixed affines are buffers, not counted."""
    return sum(p.numel() for p in model.parameters())


def count_fixed(model: nn.Module) -> int:
    """Constants of the fixed affines (a and b)."""
    return sum(m.scale.numel() + m.bias.numel() for m in model.modules() if isinstance(m, FixedAffine))


def run_tests(namespace) -> int:
    """Runs every test_* callable of a module namespace without pytest (CI runs the files
    directly); prints one line per test and returns the process exit code."""
    import traceback
    tests = [(k, v) for k, v in sorted(namespace.items()) if k.startswith("test_") and callable(v)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            traceback.print_exc()
            print(f"FAIL {name}: {e!r}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
