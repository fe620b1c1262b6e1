"""The contract the launchers and the PyTorch references share (triton_kernels.validate): the
same errors for the same mistakes, empty tensors, float64, NaN/inf sample positions, the cell
lookup, the launch grid and the dispatch error. Kernels run in Triton's interpreter."""

from __future__ import annotations

import math
import re
import sys
from fractions import Fraction

import pytest
import torch

import mvseg.ops as ops
import triton_kernels as tk
from mvseg.ops.fields import cell_index
from mvseg.ops.local_attention import local_attention_blocked, local_attention_reference
from mvseg.ops.sv_conv import sv_conv_reference
from mvseg.ops.warp import warp_reference
from triton_kernels import validate
from triton_kernels._tuning import interpreted

PAIRS = {  # op -> (Triton launcher, reference)
    "warp": (tk.warp, warp_reference),
    "local_attention": (tk.local_attention, local_attention_reference),
    "sv_conv": (tk.sv_conv, sv_conv_reference),
}

x = torch.randn(2, 3, 4, 5)
BAD = [  # (op, args, exception, message)
    ("warp", (x, torch.randn(1, 2, 2, 2)), ValueError, "offsets must be (B, 2, Hm, Wm) with the features' B=2"),
    ("warp", (x, torch.randn(2, 3, 2, 2)), ValueError, "offsets must be (B, 2, Hm, Wm)"),
    (
        "warp",
        (x, torch.randn(2, 2, 2, 2), torch.ones(2, 2, 3)),
        ValueError,
        "mask must be (B, Hm, Wm) = 2x2x2, got 2x2x3",
    ),
    ("warp", (x[0], torch.randn(2, 2, 2, 2)), ValueError, "features must be 4-D, got shape 3x4x5"),
    ("warp", (x.long(), torch.randn(2, 2, 2, 2)), TypeError, "features must be a floating-point tensor"),
    ("warp", (x, torch.randn(2, 2, 0, 2)), ValueError, "an offset grid of 0x2 cells has no offset"),
    ("warp", (x, torch.randn(2, 2, 2, 2), None, (0, 8)), ValueError, "frame_size must be two positive integers"),
    ("warp", (x, torch.randn(2, 2, 2, 2, device="meta")), ValueError, "all tensors must be on one device"),
    ("local_attention", (x, torch.randn(2, 3, 4, 6), x), ValueError, "must share B, H, W"),
    ("local_attention", (x, x, torch.randn(1, 3, 4, 5)), ValueError, "must share B, H, W"),
    ("local_attention", (x, x, x, 4), ValueError, "the window must be an odd integer >= 1, got 4"),
    ("local_attention", (x, x, x, 0), ValueError, "the window must be an odd integer"),
    ("local_attention", (x, x.half(), x), TypeError, "all tensors must have one dtype"),
    ("sv_conv", (x, torch.randn(2, 8, 4, 5)), ValueError, "kernels must have K*K channels with K odd, got 8"),
    ("sv_conv", (x, torch.randn(2, 4, 4, 5)), ValueError, "with K odd, got 4"),
    ("sv_conv", (x, torch.randn(1, 9, 4, 5)), ValueError, "must share B, H, W"),
    ("sv_conv", (x, torch.randn(2, 9, 4, 5, dtype=torch.float64)), TypeError, "all tensors must have one dtype"),
]


@pytest.mark.parametrize("op,args,exc,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_launcher_and_reference_refuse_alike(op, args, exc, msg):
    errors = []
    for fn in PAIRS[op]:
        with pytest.raises(exc, match=re.escape(msg)) as info:
            fn(*args)
        errors.append(str(info.value))
    assert errors[0] == errors[1]  # the same words on both paths
    assert errors[0].startswith(op + ":")


def test_float64_refused_by_the_kernels_and_computed_by_the_reference():
    q = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match="take float32, float16 or bfloat16, got torch.float64"):
        tk.local_attention(q, q, q, 3)
    with pytest.raises(TypeError, match="float64 runs on the PyTorch reference"):
        tk.warp(q, torch.randn(1, 2, 2, 2, dtype=torch.float64))
    # mvseg.ops routes float64 to the reference, which differentiates in float64
    assert ops.backend(q) == "torch"
    off = torch.rand(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.warp(a, b, None, (8, 10)), (q, off))
    assert ops.local_attention(q, q, q, 3).dtype == torch.float64


EMPTY = [(0, 3, 4, 5, 3), (2, 0, 4, 5, 3), (2, 3, 0, 5, 3), (2, 3, 4, 0, 3), (2, 3, 4, 5, 0)]


@pytest.mark.parametrize("b,c,h,w,cv", EMPTY)
def test_empty_tensors_give_empty_results_and_zero_gradients(b, c, h, w, cv):
    def run(fn, *shapes):
        torch.manual_seed(0)  # the same inputs for both paths
        ins = [torch.randn(*s, requires_grad=True) for s in shapes]
        out = fn(*ins)
        out.sum().backward()
        return out, [t.grad for t in ins]

    for fast, ref, shapes in [
        (
            lambda a, b_, c_: tk.local_attention(a, b_, c_, 3),
            lambda a, b_, c_: local_attention_reference(a, b_, c_, 3),
            [(b, c, h, w), (b, c, h, w), (b, cv, h, w)],
        ),
        (tk.sv_conv, sv_conv_reference, [(b, c, h, w), (b, 9, h, w)]),
        (
            lambda f, o: tk.warp(f, o, None, (8, 8)),
            lambda f, o: warp_reference(f, o, None, (8, 8)),
            [(b, c, h, w), (b, 2, 2, 2)],
        ),
    ]:
        (o1, g1), (o2, g2) = run(fast, *shapes), run(ref, *shapes)
        assert o1.shape == o2.shape
        torch.testing.assert_close(o1, o2)
        for a, r in zip(g1, g2):
            torch.testing.assert_close(a, r)
    # with no channels the scores are all 0: uniform weights over the in-image neighbours
    if c == 0 and b and h and w and cv:
        v = torch.randn(b, cv, h, w)
        out = tk.local_attention(torch.randn(b, 0, h, w), torch.randn(b, 0, h, w), v, 3)
        torch.testing.assert_close(out[..., 1, 1], v[..., :3, :3].mean((-2, -1)))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 in the interpreter's NumPy
def test_nan_and_inf_positions_read_zero_on_both_paths():
    torch.manual_seed(0)
    f = torch.randn(1, 3, 8, 8, requires_grad=True)
    off = torch.randn(1, 2, 4, 4) * 2
    off[0, 0, 1, 2] = float("nan")  # a NaN offset
    off[0, 1, 3, 0] = float("inf")  # far outside
    off[0, 0, 0, 3] = -1e30  # a finite position no int32 holds
    off[0, 0, 2, 2] = float("inf")  # times mask 0 below: inf * 0 = NaN
    mask = torch.ones(1, 4, 4)
    mask[0, 2, 2] = 0
    off.requires_grad_()
    outs = [fn(f, off, mask, (16, 16)) for fn in PAIRS["warp"]]
    torch.testing.assert_close(outs[0], outs[1])
    cells = cell_index(8, 4)
    for cy, cx in [(1, 2), (3, 0), (0, 3), (2, 2)]:
        rows, cols = (cells == cy).nonzero()[:, 0], (cells == cx).nonzero()[:, 0]
        assert torch.all(outs[0][..., rows[:, None], cols] == 0)  # every pixel of the cell reads zero
    g = torch.randn_like(outs[0])
    gk = torch.autograd.grad(outs[0], (f, off), g)
    gr = torch.autograd.grad(outs[1], (f, off), g)
    for a, b in zip(gk, gr):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    assert gk[1][0, :, 1, 2].eq(0).all()  # no gradient through a NaN position


@pytest.mark.parametrize(
    "n_out,n_cells", [(128, 256), (90, 180), (135, 240), (7, 3), (1, 5), (5, 1), (256, 128), (33, 17)]
)
def test_cell_index_is_exact(n_out, n_cells):
    # the cell holding each pixel centre, floor((i + 1/2) * n_cells / n_out), in exact rationals; with
    # features at 1/8 and cells at 1/4 (128 -> 256) every centre lies exactly on a cell boundary
    expect = [min(math.floor((Fraction(i) + Fraction(1, 2)) * n_cells / n_out), n_cells - 1) for i in range(n_out)]
    assert cell_index(n_out, n_cells).tolist() == expect


def test_warp_kernel_picks_the_cell_of_each_pixel_centre():
    # features at 1/8 and MVs at 1/4 of a 64x128 frame: every centre on a cell boundary; each
    # cell moves by its own whole number of pixels, so a wrong cell shows as a wrong value
    torch.manual_seed(1)
    f = torch.randn(1, 2, 8, 16)
    off = torch.randint(-8, 9, (1, 2, 16, 32)).float() * 8  # multiples of 8 frame px = whole feature px
    fast, ref = (fn(f, off, None, (64, 128)) for fn in PAIRS["warp"])
    torch.testing.assert_close(fast, ref, atol=0, rtol=0)
    iy, ix = cell_index(8, 16), cell_index(16, 32)
    assert iy.tolist() == list(range(1, 16, 2)) and ix.tolist() == list(range(1, 32, 2))


def test_limits_of_the_launch_grid():
    one = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match="a batch of 65536 is more than the kernels' grid allows"):
        tk.sv_conv(one.expand(65536, 1, 1, 1), one.expand(65536, 1, 1, 1))
    big = one.expand(1, 1, 46341, 46341)  # 2**31 + 9,545 pixels: no memory behind it
    with pytest.raises(ValueError, match="an image plane of 46341x46341 pixels is more than the kernels index"):
        tk.local_attention(big, big, big, 3)
    # pixel blocks are grid axis 0 (up to 2**31 - 1 programs; axis 1 stops at 65,535), the batch axis 1
    grid = kernel_module("local_attention")._grid(3, 2160 * 3840)
    assert grid({"TILE": 2048, "KK_PAD": 64}) == (2160 * 3840 // 32, 3)


def test_dispatch_error_without_a_gpu_names_the_way_out():
    assert interpreted(kernel_module("warp")._warp_fwd)  # the tests run the kernels in the interpreter
    t = torch.zeros(1, 1, 2, 2)
    with pytest.raises(RuntimeError, match=re.escape("the Triton kernels need CUDA tensors, got tensors on cpu")) as e:
        validate.kernel_inputs("warp", t, interpreted=False)
    assert "TRITON_INTERPRET=1" in str(e.value) and "MVSEG_KERNELS" in str(e.value)


def kernel_module(name: str):
    """triton_kernels.<name> the module (the package attribute of that name is the function)."""
    return sys.modules[f"triton_kernels.{name}"]


def test_blocked_cpu_path_checks_alike():
    with pytest.raises(ValueError, match="must share B, H, W"):
        local_attention_blocked(x, torch.randn(2, 3, 4, 6), x)
    with pytest.raises(ValueError, match="window must be an odd integer"):
        local_attention_blocked(x, x, x, 2)
