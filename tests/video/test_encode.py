"""H.264 encoding with the GOP the methods need."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import translating_frames
from PIL import Image

from mvseg.video.decode import decode_video
from mvseg.video.encode import encode_video


@pytest.mark.parametrize("gop", [1, 4, 7])
def test_gop_structure(tmp_path, gop):
    frames = translating_frames(14, 48, 64, 1.0, 0.0)
    v = decode_video(encode_video(frames, tmp_path / "v.mp4", gop=gop), mvs=gop > 1)
    assert v.pict_types == "".join("I" if t % gop == 0 else "P" for t in range(14))
    assert v.info.max_ref_frames == (1 if gop > 1 else 0)  # all-intra streams need no reference
    assert not v.info.has_b_frames


def test_folder_of_pngs_and_bitrate(tmp_path):
    frames = translating_frames(6, 32, 48, 1.0, 1.0)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    v = decode_video(encode_video(folder, tmp_path / "v.mp4", gop=3, crf=None, bitrate=400_000))
    assert v.frames.shape == (6, 32, 48, 3)
    assert np.abs(v.frames.astype(int) - frames.astype(int)).mean() < 12


def test_bad_input_leaves_no_partial_file(tmp_path):
    out = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match=r"odd.mp4: H.264 4:2:0 needs even frame sizes, got 33x20"):
        encode_video(np.zeros((3, 20, 33, 3), np.uint8), out)
    with pytest.raises(ValueError, match=r"frame 1 is \(20, 30\)"):
        encode_video([np.zeros((20, 32, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)], out)
    with pytest.raises(ValueError, match="gop must be >= 1"):
        encode_video(np.zeros((3, 20, 32, 3), np.uint8), out, gop=0)
    assert list(tmp_path.iterdir()) == []
