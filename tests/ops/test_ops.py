"""mvseg.ops: the memory-lean references (against unfold and gradcheck) and the dispatch."""

from __future__ import annotations

import pytest
import torch

import mvseg.ops as ops
from mvseg.ops.local_attention import local_attention_reference, local_attention_unfold
from mvseg.ops.sv_conv import sv_conv_reference, sv_conv_unfold
from mvseg.ops.window import shift, window_offsets


def test_shift_and_offsets():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert shift(x, 1, 0)[0, 0, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert shift(x, 0, -1)[0, 0, :, 0].tolist() == [0.0, 0.0, 0.0]
    assert window_offsets(3)[0] == (-1, -1) and window_offsets(3)[4] == (0, 0)


@pytest.mark.parametrize("window", [1, 3, 7])
def test_local_attention_reference_equals_unfold(window):
    torch.manual_seed(window)
    q, k, v = (torch.randn(2, 4, 6, 5) for _ in range(3))
    torch.testing.assert_close(local_attention_reference(q, k, v, window), local_attention_unfold(q, k, v, window))


def test_local_attention_window_one_and_no_scale():
    q, k, v = (torch.randn(1, 3, 4, 4) for _ in range(3))
    torch.testing.assert_close(local_attention_reference(q, k, v, 1), v)  # a single neighbour: itself
    # scale None means 1.0 (AR-Seg's code: no 1/sqrt(C))
    torch.testing.assert_close(local_attention_reference(q, k, v, 3), local_attention_reference(q, k, v, 3, 1.0))


def test_gradcheck_references_float64():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: local_attention_reference(a, b, c, 3, 0.8), (q, k, v))
    f = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    kern = torch.randn(1, 9, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sv_conv_reference, (f, kern))


def test_sv_conv_reference_equals_unfold_and_centre_kernel_is_identity():
    torch.manual_seed(1)
    f, kern = torch.randn(2, 3, 5, 7), torch.randn(2, 25, 5, 7)
    torch.testing.assert_close(sv_conv_reference(f, kern), sv_conv_unfold(f, kern))
    centre = torch.zeros(2, 9, 5, 7)
    centre[:, 4] = 1.0  # one-hot centre tap
    torch.testing.assert_close(sv_conv_reference(f, centre), f)


def test_dispatch(monkeypatch):
    x = torch.randn(1, 2, 4, 4)
    monkeypatch.setenv("MVSEG_KERNELS", "auto")
    assert ops.backend(x) == "torch"  # CPU tensors take the reference
    monkeypatch.setenv("MVSEG_KERNELS", "triton")  # forced (interpreter mode in the tests)
    assert ops.backend(x) == "triton"
    kern = torch.randn(1, 9, 4, 4)
    torch.testing.assert_close(ops.sv_conv(x, kern), sv_conv_reference(x, kern))
    monkeypatch.setenv("MVSEG_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="MVSEG_KERNELS must be auto, torch or triton"):
        ops.backend(x)


@pytest.mark.parametrize("window,block,rows", [(1, 8, 32), (3, 1, 1), (7, 8, 2), (7, 16, 32), (5, 3, 100), (9, 2, 4)])
def test_local_attention_blocked_equals_reference(window, block, rows):
    # blocks narrower and wider than the image, bands of 1, 2 or all rows, odd sizes, a batch,
    # v with other channels than q and k, a scale, a window wider than the image
    torch.manual_seed(window)
    q, k = torch.randn(2, 4, 9, 7), torch.randn(2, 4, 9, 7)
    v = torch.randn(2, 3, 9, 7)
    out = ops.local_attention_blocked(q, k, v, window, 0.7, block=block, rows=rows)
    torch.testing.assert_close(out, local_attention_reference(q, k, v, window, 0.7))
    # channels-last inputs (CReFF's convs give them on a CPU)
    qt, kt, vt = (t.contiguous(memory_format=torch.channels_last) for t in (q, k, v))
    torch.testing.assert_close(ops.local_attention_blocked(qt, kt, vt, window, 0.7, block=block, rows=rows), out)


def test_local_attention_dispatch_blocked_only_without_grad(monkeypatch):
    from mvseg.ops.local_attention import local_attention_blocked as blocked

    calls = []
    monkeypatch.setattr(ops, "local_attention_blocked", lambda *a: calls.append("blocked") or blocked(*a))
    q, k, v = (torch.randn(1, 2, 5, 6, requires_grad=True) for _ in range(3))
    out = ops.local_attention(q, k, v, 3)  # training: the reference, with its backward
    out.sum().backward()
    assert calls == [] and q.grad is not None and v.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(ops.local_attention(q, k, v, 3), out.detach())
    assert calls == ["blocked"]


@pytest.mark.parametrize("h,w", [(1, 7), (6, 1), (1, 1)])
def test_references_on_size_one_axes_equal_unfold(h, w):
    torch.manual_seed(h + 10 * w)
    q, k, v = (torch.randn(2, 3, h, w) for _ in range(3))
    torch.testing.assert_close(local_attention_reference(q, k, v, 3, 0.9), local_attention_unfold(q, k, v, 3, 0.9))
    torch.testing.assert_close(ops.local_attention_blocked(q, k, v, 5), local_attention_unfold(q, k, v, 5))
    f, kern = torch.randn(2, 3, h, w), torch.randn(2, 9, h, w)
    torch.testing.assert_close(sv_conv_reference(f, kern), sv_conv_unfold(f, kern))
