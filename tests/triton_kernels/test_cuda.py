"""The Triton kernels on a real GPU, at the papers' sizes, in fp32 / fp16 / bf16, against the
PyTorch references (computed in fp32 on the same rounded inputs). Skipped without a CUDA
device; `.ci/gpu` runs them (with TRITON_INTERPRET=0) wherever a GPU is lent. What only a GPU
shows: code the compiler accepts but runs wrong (a NaN cast to an index, an int32 overflow,
a cell one ULP off), autotuning (a config that accumulates twice), large grids."""

from __future__ import annotations

import sys

import pytest
import torch

import triton_kernels as tk
from mvseg.ops.local_attention import local_attention_reference
from mvseg.ops.sv_conv import sv_conv_reference
from mvseg.ops.warp import warp_reference
from triton_kernels._tuning import interpreted

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (.ci/gpu runs these where one is lent)"),
    pytest.mark.skipif(
        interpreted(sys.modules["triton_kernels.warp"]._warp_fwd),
        reason="TRITON_INTERPRET=1: the kernels would not be compiled for the GPU",
    ),
]
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # max |error| / max |reference|
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def check(fast, ref, inputs: list[torch.Tensor], dtype: torch.dtype) -> None:
    """fast(*inputs) against ref(*fp32 copies): output and every input gradient."""
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    as32 = [t.detach().float().requires_grad_(t.is_floating_point()) for t in inputs]
    out, expect = fast(*inputs), ref(*as32)
    assert out.dtype == inputs[0].dtype and torch.isfinite(out).all()
    assert rel_err(out, expect) <= TOL[dtype], rel_err(out, expect)
    g = torch.randn_like(expect)
    got = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], g.to(out.dtype))
    want = torch.autograd.grad(expect, [t for t in as32 if t.requires_grad], g.to(out.dtype).float())
    for a, b in zip(got, want):
        assert torch.isfinite(a).all() and rel_err(a, b) <= TOL[dtype] * 2, rel_err(a, b)


def randn(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "b,c,cv,h,w,k",
    [(1, 64, 64, 720, 960, 7), (1, 512, 512, 128, 256, 7), (2, 5, 3, 33, 47, 3), (1, 16, 16, 40, 60, 11)],
)
def test_local_attention(b, c, cv, h, w, k, dtype):
    torch.manual_seed(0)
    q, key, v = (
        randn(b, c, h, w, dtype=dtype, scale=0.2),
        randn(b, c, h, w, dtype=dtype, scale=0.2),
        randn(b, cv, h, w, dtype=dtype),
    )
    check(lambda *a: tk.local_attention(*a, k), lambda *a: local_attention_reference(*a, k), [q, key, v], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,c,h,w,k", [(1, 256, 128, 256, 9), (2, 3, 33, 47, 3)])
def test_sv_conv(b, c, h, w, k, dtype):
    torch.manual_seed(1)
    f, kern = randn(b, c, h, w, dtype=dtype), randn(b, k * k, h, w, dtype=dtype, scale=0.1)
    check(tk.sv_conv, sv_conv_reference, [f, kern], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "feat,cells,frame,masked",
    [
        ((1, 256, 128, 256), (256, 512), (1024, 2048), True),
        ((1, 256, 180, 240), (180, 240), (720, 960), False),
        ((2, 5, 33, 47), (17, 24), (66, 94), True),
    ],
)
def test_warp(feat, cells, frame, masked, dtype):
    torch.manual_seed(2)
    f = randn(*feat, dtype=dtype)
    off = randn(feat[0], 2, *cells, scale=6.0)
    mask = (torch.rand(feat[0], *cells, device="cuda") > 0.2).float() if masked else None
    check(lambda a, o: tk.warp(a, o, mask, frame), lambda a, o: warp_reference(a, o, mask, frame), [f, off], dtype)


def test_warp_cell_lookup_and_nan_positions_on_the_gpu():
    # features at 1/8, MVs at 1/4: every pixel centre on a cell boundary, each cell its own
    # whole-pixel motion (a wrong cell is a wrong value); NaN / inf offsets read zero
    f = randn(1, 4, 64, 128)
    off = torch.randint(-8, 9, (1, 2, 128, 256), device="cuda").float() * 8
    off[0, 0, 5, 7], off[0, 1, 9, 3], off[0, 0, 11, 11] = float("nan"), float("inf"), -1e30
    fast, ref = tk.warp(f, off, None, (512, 1024)), warp_reference(f, off, None, (512, 1024))
    torch.testing.assert_close(fast, ref, atol=0, rtol=0)


def test_window_kernels_are_deterministic():
    q, k, v = (randn(1, 32, 96, 128, scale=0.3).requires_grad_() for _ in range(3))
    runs = []
    for _ in range(2):
        out = tk.local_attention(q, k, v, 7)
        runs.append([out, *torch.autograd.grad(out, (q, k, v), torch.ones_like(out))])
    for a, b in zip(*runs):
        assert torch.equal(a, b)  # no atomics: bit for bit


def test_grid_beyond_65535_pixel_blocks():
    # 2160x3840 = 8.3 M pixels: 259,200 blocks of 32 (axis 1 stops at 65,535)
    q, k, v = randn(1, 2, 2160, 3840), randn(1, 2, 2160, 3840), randn(1, 1, 2160, 3840)
    with torch.no_grad():
        fast = tk.local_attention(q, k, v, 3)
        torch.testing.assert_close(fast, local_attention_reference(q, k, v, 3), atol=1e-5, rtol=1e-4)
    f = randn(1, 3, 2160, 3840)
    off = randn(1, 2, 540, 960, scale=4.0)
    torch.testing.assert_close(tk.warp(f, off), warp_reference(f, off), atol=1e-5, rtol=1e-4)
