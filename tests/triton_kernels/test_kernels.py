"""Triton kernels (run in Triton's interpreter on CPU) against the PyTorch references:
forward and backward, odd sizes, borders, masks, offsets pointing outside, windows 3 and 7,
non-contiguous inputs."""

from __future__ import annotations

import pytest
import torch

import triton_kernels as tk
from mvseg.ops.local_attention import local_attention_reference
from mvseg.ops.sv_conv import sv_conv_reference
from mvseg.ops.warp import warp_reference


def grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


def assert_same(fast, ref, inputs, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(fast, ref, atol=atol, rtol=rtol)
    g = torch.randn_like(ref)
    for a, b in zip(grads(fast, inputs, g), grads(ref, inputs, g)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "b,c,hf,wf,hm,wm,frame,masked",
    [
        (2, 5, 9, 13, 5, 7, (18, 26), True),  # odd sizes, stride 2, masked cells
        (1, 3, 8, 8, 2, 2, (32, 32), False),  # offset grid 4x coarser than the features (H/16 MVs)
        (1, 4, 6, 10, 6, 10, (6, 10), True),  # dense flow (offset grid = feature grid)
        (1, 40, 5, 6, 3, 3, (10, 12), False),  # more channels than one channel block
    ],
)
def test_warp_matches_reference(b, c, hf, wf, hm, wm, frame, masked):
    torch.manual_seed(hf * wf + c)
    f = torch.randn(b, c, hf, wf, requires_grad=True)
    off = (torch.randn(b, 2, hm, wm) * frame[1] / 3).requires_grad_()  # many samples fall outside
    mask = (torch.rand(b, hm, wm) > 0.3).float() if masked else None
    assert_same(tk.warp(f, off, mask, frame), warp_reference(f, off, mask, frame), (f, off))


def test_warp_non_contiguous_inputs():
    torch.manual_seed(1)
    base = torch.randn(1, 9, 4, 7)
    f = base.transpose(2, 3).requires_grad_()  # (1, 9, 7, 4), non-contiguous view
    off = torch.randn(1, 4, 2, 3).transpose(1, 2)[:, :2].contiguous().transpose(2, 3).requires_grad_()  # (1, 2, 3, 2)
    assert not f.is_contiguous() and not off.is_contiguous()
    assert_same(tk.warp(f, off, None, (14, 8)), warp_reference(f, off, None, (14, 8)), (f, off))


def test_warp_fp16_forward():
    torch.manual_seed(2)
    f = torch.randn(1, 4, 6, 8)
    off = torch.randn(1, 2, 3, 4) * 3
    out = tk.warp(f.half(), off.half(), None, (12, 16))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), warp_reference(f, off.half().float(), None, (12, 16)), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("c,cv,h,w", [(6, 6, 7, 9), (3, 5, 5, 4)])
def test_local_attention_matches_reference(window, c, cv, h, w):
    torch.manual_seed(window * 10 + c)
    q = torch.randn(1, c, h, w, requires_grad=True)
    k = torch.randn(1, c, h, w, requires_grad=True)
    v = torch.randn(1, cv, h, w, requires_grad=True)
    assert_same(tk.local_attention(q, k, v, window, 0.7), local_attention_reference(q, k, v, window, 0.7), (q, k, v))


def test_local_attention_batch_and_non_contiguous():
    torch.manual_seed(3)
    q = torch.randn(2, 5, 6, 4).transpose(2, 3).requires_grad_()  # (2, 5, 4, 6)
    k = torch.randn(2, 5, 4, 6, requires_grad=True)
    v = torch.randn(2, 5, 6, 4).transpose(2, 3).requires_grad_()
    assert_same(tk.local_attention(q, k, v, 3), local_attention_reference(q, k, v, 3), (q, k, v))


def test_local_attention_window_one_is_identity_on_v():
    v = torch.randn(1, 3, 4, 5)
    torch.testing.assert_close(tk.local_attention(torch.randn(1, 2, 4, 5), torch.randn(1, 2, 4, 5), v, 1), v)


@pytest.mark.parametrize("k,c,h,w", [(3, 5, 7, 9), (5, 3, 4, 6), (9, 2, 10, 11)])
def test_sv_conv_matches_reference(k, c, h, w):
    torch.manual_seed(k + c)
    f = torch.randn(2, c, h, w, requires_grad=True)
    kern = torch.randn(2, k * k, h, w, requires_grad=True)
    assert_same(tk.sv_conv(f, kern), sv_conv_reference(f, kern), (f, kern))


def test_sv_conv_non_contiguous():
    f = torch.randn(1, 3, 6, 5).transpose(2, 3).requires_grad_()
    kern = torch.randn(1, 9, 5, 6, requires_grad=True)
    assert_same(tk.sv_conv(f, kern), sv_conv_reference(f, kern), (f, kern))


def test_bad_window_arguments():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="odd"):
        tk.local_attention(x, x, x, 4)
    with pytest.raises(ValueError, match="K\\*K channels"):
        tk.sv_conv(x, torch.randn(1, 8, 4, 4))


@pytest.mark.parametrize("window", [1, 5, 11])  # 11: wider than the image, 121 taps (KK_PAD 128)
def test_local_attention_other_windows(window):
    torch.manual_seed(window)
    q, k = (torch.randn(2, 3, 6, 9, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 4, 6, 9, requires_grad=True)
    assert_same(tk.local_attention(q, k, v, window, 0.5), local_attention_reference(q, k, v, window, 0.5), (q, k, v))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_against_fp32_reference(dtype, tol):
    # the kernels load fp16/bf16, compute in fp32 and round once when they store: each output is
    # within a rounding of the fp32 reference on the same (rounded) inputs
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 6, 7, 8).to(dtype).requires_grad_() for _ in range(3))
    f, kern = torch.randn(1, 5, 7, 8).to(dtype).requires_grad_(), torch.randn(1, 9, 7, 8).to(dtype).requires_grad_()
    off = (torch.randn(1, 2, 4, 4) * 3).requires_grad_()
    cases = [
        (
            lambda a, b, c: tk.local_attention(a, b, c, 3),
            lambda a, b, c: local_attention_reference(a, b, c, 3),
            (q, k, v),
        ),
        (tk.sv_conv, sv_conv_reference, (f, kern)),
        (lambda a, o: tk.warp(a, o, None, (14, 16)), lambda a, o: warp_reference(a, o, None, (14, 16)), (f, off)),
    ]
    for fast, ref, inputs in cases:
        out = fast(*inputs)
        assert out.dtype == dtype
        as32 = [t.detach().float().requires_grad_() for t in inputs]
        expect = ref(*as32)
        torch.testing.assert_close(out.float(), expect, atol=tol * 4, rtol=tol)
        g = torch.randn_like(expect)
        for a, b in zip(grads(out, inputs, g.to(dtype)), grads(expect, as32, g.to(dtype).float())):
            torch.testing.assert_close(a.float(), b, atol=tol * 8, rtol=tol * 2)


def test_unaligned_inputs():
    # a view that starts one element past an aligned address: Triton compiles another variant
    torch.manual_seed(6)
    q, k, v = (torch.randn(1 * 3 * 5 * 6 + 1)[1:].view(1, 3, 5, 6).requires_grad_() for _ in range(3))
    assert q.data_ptr() % 16
    assert_same(tk.local_attention(q, k, v, 3), local_attention_reference(q, k, v, 3), (q, k, v))
    f = torch.randn(1 * 4 * 5 * 6 + 1)[1:].view(1, 4, 5, 6).requires_grad_()
    off = torch.randn(1, 2, 3, 3, requires_grad=True)
    assert_same(tk.warp(f, off, None, (10, 12)), warp_reference(f, off, None, (10, 12)), (f, off))
