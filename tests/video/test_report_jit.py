"""The motion report's compiled pass (`mvseg.video.report_jit`) against the PyTorch reference
(`report.warp_image` + `report._psnr`): the same squared errors on random frames and fields
(sub-pixel, large, masked, NaN and border-crossing offsets, sizes that are not multiples of 4),
and the same report on a real clip with the fast path on and off."""

from __future__ import annotations

import os
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import translating_frames

from mvseg.ops.fields import cell_index
from mvseg.video import report_jit
from mvseg.video.encode import encode_video
from mvseg.video.report import motion_report, warp_image

pytestmark = pytest.mark.skipif(not report_jit.HAVE_NUMBA, reason="numba is not installed")


def _reference_sse(ref: np.ndarray, cur: np.ndarray, off: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    r = torch.from_numpy(ref).permute(2, 0, 1).double()
    c = torch.from_numpy(cur).permute(2, 0, 1).double()
    warped = warp_image(r.float(), torch.from_numpy(off), torch.from_numpy(mask)).double()
    return float(((warped - c) ** 2).sum()), float(((r - c) ** 2).sum())


@pytest.mark.parametrize("h,w,scale", [(64, 96, 0.7), (37, 53, 6.0), (48, 64, 40.0)], ids=["subpel", "odd-size", "far"])
def test_pair_errors_match_the_reference_warp(h, w, scale):
    rng = np.random.default_rng(h * w)
    ref = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cur = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hm, wm = -(-h // 4), -(-w // 4)
    off = (rng.standard_normal((2, hm, wm)) * scale).astype(np.float32)
    mask = (rng.random((hm, wm)) > 0.25).astype(np.float32)
    off[0, 0, 0] = np.nan  # a cell with no motion read: warped to zero, as the reference does
    iy, ix = cell_index(h, hm).numpy(), cell_index(w, wm).numpy()
    fast = report_jit.pair_errors(ref, cur, off, mask, iy, ix)
    want = _reference_sse(ref, cur, off, mask)
    assert fast[1] == want[1]  # copying: exact integers
    assert fast[0] == pytest.approx(want[0], rel=1e-5)  # float32 bilinear weights, float64 sums


def test_motion_report_is_the_same_with_the_compiled_pass_and_without(tmp_path):
    src = tmp_path / "pan.mp4"
    encode_video(translating_frames(14, 72, 120, 2.5, 1.25), src, gop=7)
    fast = motion_report(src, 4)
    with mock.patch.dict(os.environ, {"MVSEG_JIT": "0"}):
        slow = motion_report(src, 4)
    assert [r["pairs"] for r in fast["rows"]] == [r["pairs"] for r in slow["rows"]] == [12, 10, 8, 6]
    for a, b in zip(fast["rows"], slow["rows"]):
        assert a["psnr_copy"] == b["psnr_copy"]
        assert a["psnr_warp"] == pytest.approx(b["psnr_warp"], abs=2e-3)  # rounded to 3 decimals
        assert a["psnr_warp"] > a["psnr_copy"] + 3  # the MVs explain a pan
