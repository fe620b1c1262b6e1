"""ops.resize_bilinear: the matmul form equals torch's bilinear interpolate (values and
gradients), and the dispatcher takes it only where it is the fast path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvseg.ops import resize_bilinear
from mvseg.ops.resize import MATMUL_MAX_INPUT, _taps, resize_bilinear_matmul


def interpolate(x, size):
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "shape,size",
    [
        ((1, 9, 16, 32), (128, 256)),  # the CPU configs' logits -> frame (x8)
        ((2, 3, 5, 7), (17, 30)),  # ratios that are not integers
        ((1, 2, 12, 20), (5, 6)),  # down-sampling (no anti-aliasing, as interpolate's default)
        ((1, 1, 1, 3), (4, 9)),  # a single row: both taps on it
        ((3, 4, 8, 8), (8, 8)),  # same size
    ],
)
def test_matmul_equals_interpolate(shape, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    torch.testing.assert_close(resize_bilinear_matmul(x, size), interpolate(x, size), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(resize_bilinear(x, size), interpolate(x, size), atol=2e-6, rtol=1e-5)


def test_taps_rows_sum_to_one_with_two_taps():
    r = _taps(16, 128, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(r.sum(1), torch.ones(128, dtype=torch.float64))
    assert int((r != 0).sum(1).max()) <= 2
    # output pixel 0 of an x8 up-sampling lies at source -0.4375, clamped to 0: all weight on row 0
    assert r[0, 0] == 1 and r[4, 0] == pytest.approx(1 - 0.0625) and r[4, 1] == pytest.approx(0.0625)


def test_gradients_equal_interpolate():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 5, 40, 50, generator=g, dtype=torch.float64)
    (gm,) = torch.autograd.grad((resize_bilinear_matmul(x, (40, 50)) * w).sum(), x)
    (gi,) = torch.autograd.grad((interpolate(x, (40, 50)) * w).sum(), x)
    torch.testing.assert_close(gm, gi)


def test_labels_match_interpolate_argmax():
    # what the runtime emits: the first maximum over classes of the up-sampled logits
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 9, 16, 32, generator=g)
    a = resize_bilinear(x, (128, 256)).max(1).indices
    b = interpolate(x, (128, 256)).max(1).indices
    assert torch.equal(a, b)


def test_dispatch_falls_back_for_large_inputs(monkeypatch):
    calls = []
    monkeypatch.setattr("mvseg.ops.resize.resize_bilinear_matmul", lambda x, s: calls.append(s) or interpolate(x, s))
    resize_bilinear(torch.zeros(1, 2, 8, MATMUL_MAX_INPUT), (64, 512))
    resize_bilinear(torch.zeros(1, 2, 8, MATMUL_MAX_INPUT + 1), (64, 520))
    resize_bilinear(torch.zeros(1, 2, 8, 8, dtype=torch.float64), (8, 8))  # same size: returned as is
    assert calls == [(64, 512)]


def test_taps_cached_in_inference_mode_still_train():
    # a streaming run (inference mode) fills the cache; a training step after it must backprop
    with torch.inference_mode():
        resize_bilinear(torch.zeros(1, 2, 7, 11), (29, 31))
    x = torch.randn(1, 2, 7, 11, requires_grad=True)
    resize_bilinear(x, (29, 31)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
