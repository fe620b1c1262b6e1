"""Argument checks shared by the Triton launchers and the PyTorch references (mvseg.ops): one
set of rules and messages for both paths, so a mistake fails the same way on a laptop and on a
GPU. Imports torch only (no Triton), so the references can use it where Triton is absent.

Rules:
- shapes: the ops' documented shapes; batch, height and width shared where the op needs them;
- one device and (for the attention and the convolution) one dtype across the tensors;
- empty tensors (B, C, H or W = 0) are valid and give empty (or zero) results;
- dtypes: both paths take float16, bfloat16 and float32; the Triton kernels compute in fp32
  and refuse float64 (a GPU's fp64 throughput makes a fp64 kernel pointless); the references
  compute float64 in float64, which is what gradcheck needs. `mvseg.ops` routes float64 to
  the reference.
"""

from __future__ import annotations

import contextvars
import math
import numbers

import torch
from torch import Tensor

# Set by triton_kernels.compile_check while it compiles kernels without launching them: the
# launchers then accept CPU tensors, whose memory no kernel reads.
COMPILE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("COMPILE_ONLY", default=False)

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_PLANE = 2**31 - 1  # pixels of one image plane: the kernels index a plane in int32
MAX_BATCH = 65535  # the batch is grid axis 1 (pixel blocks are axis 0, limit 2**31 - 1)


def _shape(t: Tensor) -> str:
    return "x".join(map(str, t.shape))


def _tensor4(op: str, name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be 4-D, got shape {_shape(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    return t


def _same_device(op: str, **tensors: Tensor | None) -> None:
    devs = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devs.values())) > 1:
        raise ValueError(
            f"{op}: all tensors must be on one device, got " + ", ".join(f"{n} on {d}" for n, d in devs.items())
        )


def _same_dtype(op: str, **tensors: Tensor) -> None:
    dts = {n: t.dtype for n, t in tensors.items()}
    if len(set(dts.values())) > 1:
        raise TypeError(f"{op}: all tensors must have one dtype, got " + ", ".join(f"{n} {d}" for n, d in dts.items()))


def window(op: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"{op}: the window must be an odd integer >= 1, got {k!r}")
    return k


def warp_args(
    features: Tensor, offsets: Tensor, mask: Tensor | None, frame_size: tuple[int, int] | None
) -> tuple[int, int]:
    """Checks warp(features (B, C, Hf, Wf), offsets (B, 2, Hm, Wm), mask (B, Hm, Wm) | None,
    frame_size (H, W) | None); returns the frame size (default 4*Hm x 4*Wm)."""
    op = "warp"
    _tensor4(op, "features", features)
    _tensor4(op, "offsets", offsets)
    b, _, hf, wf = features.shape
    if offsets.shape[0] != b or offsets.shape[1] != 2:
        raise ValueError(f"{op}: offsets must be (B, 2, Hm, Wm) with the features' B={b}, got {_shape(offsets)}")
    hm, wm = offsets.shape[2:]
    if hf * wf and not hm * wm:
        raise ValueError(f"{op}: an offset grid of {hm}x{wm} cells has no offset for the {hf}x{wf} features")
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (b, hm, wm):
            got = _shape(mask) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{op}: mask must be (B, Hm, Wm) = {b}x{hm}x{wm}, got {got}")
    _same_device(op, features=features, offsets=offsets, mask=mask)
    if frame_size is None:
        return 4 * hm, 4 * wm
    h, w = frame_size
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in (h, w)):
        raise ValueError(f"{op}: frame_size must be two positive integers, got {frame_size!r}")
    return int(h), int(w)


def local_attention_args(q: Tensor, k: Tensor, v: Tensor, win: int) -> None:
    """Checks local_attention(q, k (B, C, H, W), v (B, Cv, H, W), window)."""
    op = "local_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor4(op, name, t)
    if q.shape != k.shape or (v.shape[0], *v.shape[2:]) != (q.shape[0], *q.shape[2:]):
        raise ValueError(f"{op}: q {_shape(q)}, k {_shape(k)} and v {_shape(v)} must share B, H, W (and q, k C)")
    window(op, win)
    _same_device(op, q=q, k=k, v=v)
    _same_dtype(op, q=q, k=k, v=v)


def sv_conv_args(features: Tensor, kernels: Tensor) -> int:
    """Checks sv_conv(features (B, C, H, W), kernels (B, K*K, H, W)); returns K."""
    op = "sv_conv"
    _tensor4(op, "features", features)
    _tensor4(op, "kernels", kernels)
    k = math.isqrt(kernels.shape[1])
    if k * k != kernels.shape[1] or k % 2 == 0:
        raise ValueError(f"{op}: kernels must have K*K channels with K odd, got {kernels.shape[1]}")
    if kernels.shape[0] != features.shape[0] or kernels.shape[2:] != features.shape[2:]:
        raise ValueError(f"{op}: features {_shape(features)} and kernels {_shape(kernels)} must share B, H, W")
    _same_device(op, features=features, kernels=kernels)
    _same_dtype(op, features=features, kernels=kernels)
    return k


def kernel_inputs(op: str, *tensors: Tensor | None, interpreted: bool) -> None:
    """What the Triton path needs beyond the shared rules: CUDA tensors (or CPU tensors under
    the interpreter), a dtype the kernels compute in, a batch and planes that fit the grid."""
    ts = [t for t in tensors if t is not None]
    dev = ts[0].device
    if dev.type != "cuda" and not interpreted and not COMPILE_ONLY.get():
        raise RuntimeError(
            f"{op}: the Triton kernels need CUDA tensors, got tensors on {dev}. On a CPU, use the PyTorch "
            "path (mvseg.ops with MVSEG_KERNELS=auto or torch), or run the kernels in Triton's interpreter "
            "(set TRITON_INTERPRET=1 before triton_kernels is imported)"
        )
    for t in ts[:1] if op == "warp" else ts:  # warp: offsets and masks of any float dtype are read as fp32
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(
                f"{op}: the Triton kernels take float32, float16 or bfloat16, got {t.dtype}; "
                "float64 runs on the PyTorch reference (mvseg.ops routes it there)"
            )
    b, _, h, w = ts[0].shape
    if b > MAX_BATCH:
        raise ValueError(f"{op}: a batch of {b} is more than the kernels' grid allows ({MAX_BATCH}); split it")
    if h * w > MAX_PLANE:
        raise ValueError(f"{op}: an image plane of {h}x{w} pixels is more than the kernels index ({MAX_PLANE})")
