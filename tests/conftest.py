"""Shared fixtures: small videos the tests make themselves (no download)."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")

import pytest

from helpers import translating_frames

from mvseg.video.encode import encode_video


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def pan_video(video_dir):
    """96x128, 20 frames, motion (+2, +1) px per frame, GOP 10, no B-frames, one reference."""
    frames = translating_frames(20, 96, 128, 2.0, 1.0)
    return encode_video(frames, video_dir / "pan.mp4", gop=10, crf=16), frames


@pytest.fixture(scope="session")
def bframe_video(video_dir):
    """x264 with B-frames and 3 references (like a camera's default encode)."""
    frames = translating_frames(24, 96, 128, 1.0, 0.0, seed=1)
    return encode_video(frames, video_dir / "bframes.mp4", gop=24, crf=16, bframes=2, ref=3), frames
