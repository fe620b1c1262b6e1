"""Property-based tests (hypothesis) of the MV rasteriser and the offset-field algebra:
invariants that must hold for any input, not just the hand-made cases of test_motion.py.
Derandomised, so CI is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mvseg.ops.fields import compose, extend_chain, grid_size, invert
from mvseg.video.decode import MV_DTYPE
from mvseg.video.motion import rasterize_mvs

pytestmark = pytest.mark.reliability

SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)
PARTITIONS = [(16, 16), (16, 8), (8, 16), (8, 8), (8, 4), (4, 8), (4, 4)]


@st.composite
def mv_arrays(draw):
    """A frame size (any, not only multiples of 16) and MVs of every partition size, some
    reaching past the frame's border, past (-1) or future (+1), quarter-pel or half-pel."""
    height, width = draw(st.integers(8, 72)), draw(st.integers(8, 72))
    n = draw(st.integers(0, 24))
    a = np.zeros(n, MV_DTYPE)
    for i in range(n):
        w, h = draw(st.sampled_from(PARTITIONS))
        # corners at multiples of the partition size, as H.264 and MPEG-4 place them
        x0, y0 = w * draw(st.integers(0, width // w + 1)), h * draw(st.integers(0, height // h + 1))
        a[i]["w"], a[i]["h"] = w, h
        a[i]["dst_x"], a[i]["dst_y"] = x0 + w // 2, y0 + h // 2
        a[i]["source"] = draw(st.sampled_from([-1, -1, 1]))
        a[i]["motion_x"], a[i]["motion_y"] = draw(st.integers(-512, 512)), draw(st.integers(-512, 512))
        a[i]["motion_scale"] = draw(st.sampled_from([4, 2]))
    return a, height, width


def covering(a: np.ndarray, cy: int, cx: int) -> np.ndarray:
    """The MVs whose block covers 4x4 cell (cy, cx)."""
    x0, y0 = a["dst_x"].astype(int) - a["w"] // 2, a["dst_y"].astype(int) - a["h"] // 2
    return a[(x0 <= 4 * cx) & (4 * cx < x0 + a["w"]) & (y0 <= 4 * cy) & (4 * cy < y0 + a["h"])]


@SETTINGS
@given(mv_arrays())
def test_rasteriser_cells_carry_a_covering_mv_or_nothing(case):
    a, height, width = case
    off, mask = rasterize_mvs(a, height, width)
    hc, wc = grid_size(height, width)
    assert off.shape == (2, hc, wc) and mask.shape == (hc, wc) and off.dtype == np.float32
    assert np.isfinite(off).all() and set(np.unique(mask)) <= {0.0, 1.0}
    assert (off[:, mask == 0] == 0).all()  # invalid cells carry zero motion
    for cy in range(hc):
        for cx in range(wc):
            cov = covering(a, cy, cx)
            if len(cov) == 0:
                assert mask[cy, cx] == 0
                continue
            assert mask[cy, cx] == 1
            # the value of one covering MV: past ones as motion / scale, future ones negated
            sign = np.where(cov["source"] > 0, -1.0, 1.0)
            cand = np.stack(
                [sign * cov["motion_x"] / cov["motion_scale"], sign * cov["motion_y"] / cov["motion_scale"]], 1
            )
            if (cov["source"] < 0).any():  # a past MV wins over a future one
                cand = cand[cov["source"] < 0]
            assert np.isclose(cand, off[:, cy, cx]).all(1).any()


@SETTINGS
@given(st.integers(1, 6), st.integers(2, 12), st.integers(2, 12))
def test_zero_motion_composes_and_inverts_to_zero(n, hc, wc):
    zero, ones = torch.zeros(2, hc, wc), torch.ones(hc, wc)
    total, valid = compose([zero] * n, [ones] * n)
    assert (total == 0).all() and (valid == 1).all()
    g, gv = invert(zero, ones)
    assert (g == 0).all() and (gv == 1).all()


@st.composite
def fields(draw, max_px: float = 40.0):
    hc, wc = draw(st.integers(2, 10)), draw(st.integers(2, 10))
    n = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    offs = [(torch.rand(2, hc, wc, generator=g) * 2 - 1) * max_px for _ in range(n)]
    masks = [(torch.rand(hc, wc, generator=g) > 0.2).float() for _ in range(n)]
    return offs, masks


@SETTINGS
@given(fields())
def test_composition_and_inversion_stay_finite_and_masks_binary(case):
    offs, masks = case
    total, valid = compose(offs, masks)
    assert torch.isfinite(total).all() and set(valid.unique().tolist()) <= {0.0, 1.0}
    # a cell is valid only where its own first link is
    assert (valid <= masks[0]).all()
    # the streaming fold equals the batch composition
    chain = None
    for f, m in zip(reversed(offs), reversed(masks)):
        chain = extend_chain(chain, f, m)
    torch.testing.assert_close(chain[0], total)
    torch.testing.assert_close(chain[1], valid)
    g, gv = invert(offs[0], masks[0])
    assert torch.isfinite(g).all() and set(gv.unique().tolist()) <= {0.0, 1.0}


@SETTINGS
@given(
    st.floats(0.0, 3.0),
    st.floats(0.0, 3.0),
    st.floats(5.0, 10.0),
    st.floats(5.0, 10.0),
    st.floats(0.0, 6.3),
    st.floats(0.0, 6.3),
)
def test_composing_with_the_inverse_is_near_identity_on_smooth_fields(ax, ay, lx, ly, px, py):
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    f = torch.stack([ax * torch.sin(y / ly + px), ay * torch.cos(x / lx + py)])  # (2, 16, 16) pixels
    m = torch.ones(16, 16)
    g, gv = invert(f, m)
    back, valid = compose([g, f], [gv, m])
    inner = valid[3:-3, 3:-3] > 0
    assert inner.float().mean() > 0.5
    assert back[:, 3:-3, 3:-3][:, inner].abs().max() < 0.1
