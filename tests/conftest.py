"""Shared fixtures: small videos the tests make themselves (no download)."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
# Triton kernels run in Triton's interpreter on CPU; it must be set before they are defined.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from helpers import folder_data_args, translating_frames

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


def make_tiny_dataset(tmp_path_factory, train_clips: int = 2, val_clips: int = 2):
    """A small synthetic dataset in mvseg's folder layout: clips of 12 frames, 64x128, two labels each."""
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    make_synthetic_dataset(
        str(root),
        train_clips=train_clips,
        val_clips=val_clips,
        config=SyntheticConfig(height=64, width=128, frames=12),
        annotated=(5, 8),
        workers=1,
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """2+2 clips (make_tiny_dataset)."""
    return make_tiny_dataset(tmp_path_factory)


@pytest.fixture
def tiny_data_args(tiny_dataset, tmp_path):
    """CLI overrides that point an experiment config at the tiny dataset."""
    return [
        *folder_data_args(tiny_dataset),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "run"),
    ]
