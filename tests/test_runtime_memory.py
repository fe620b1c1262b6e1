"""Long streams run in constant memory: no per-frame state accumulates in the strategies, and
decoded frames (PyAV's frame <-> side-data reference cycle) do not pile up."""

from __future__ import annotations

import gc

import pytest
import torch

from mvseg.bench.common import panning_frames
from mvseg.bench.stream import run_bench_stream
from mvseg.models.segnet import SegNetConfig
from mvseg.runtime import run_stream, stream_state_bytes
from mvseg.strategies import Adaptive, AdaptiveConfig, InterpMV, PropMV
from mvseg.strategies.policies import AdaptiveThreshold, FixedInterval
from mvseg.video.decode import iter_frames
from mvseg.video.encode import encode_video

pytestmark = pytest.mark.reliability

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return encode_video(panning_frames(200, 32, 64), path, gop=5, crf=23, preset="veryfast")


def test_decoded_frames_do_not_pile_up(long_video):
    gc.collect()
    alive = lambda: sum(type(o).__name__ == "VideoFrame" for o in gc.get_objects())  # noqa: E731
    before = alive()
    seen = 0
    for _ in iter_frames(long_video, rgb=False):
        seen += 1
        if seen == 150:
            assert alive() - before <= 6  # the few newest, not one in 8 of all decoded
    assert seen == 200
    # and none is left for a later collection once the stream ends (see the next test)
    gc.disable()
    try:
        assert alive() == before
    finally:
        gc.enable()


def test_dataloader_workers_start_with_pyav_garbage_in_the_parent():
    """A PyAV frame in a reference cycle, collected in a freshly forked DataLoader worker,
    frees its swscale context there and waits forever for the parent's slice threads: a plain
    DataLoader times out here; ForkSafeDataLoader collects before forking."""
    import av
    import numpy as np
    from torch.utils.data import Dataset

    from mvseg.data.datamodule import ForkSafeDataLoader

    class Collecting(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> int:
            gc.collect()  # what the worker's allocations trigger sooner or later
            return i

    gc.disable()
    try:
        for _ in range(3):
            f = av.VideoFrame.from_ndarray(np.zeros((360, 640, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
            f.to_ndarray(format="rgb24")  # the frame owns a swscale context now
            holder = {"frame": f}
            holder["self"] = holder  # garbage only the cyclic GC frees
        del f, holder
    finally:
        gc.enable()
    assert [int(b) for b in ForkSafeDataLoader(Collecting(), num_workers=1, timeout=30)] == [0, 1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: (PropMV(9, 5, net=NET), FixedInterval(5)),
        lambda: (InterpMV(9, 5, net=NET), FixedInterval(5)),
        lambda: (
            Adaptive(
                9,
                5,
                net=NET,
                low_latency=True,
                adaptive=AdaptiveConfig(kernel_size=3, kernel_channels=8, deviation_channels=8, fuse_channels=4),
            ),
            AdaptiveThreshold(0.5),
        ),
    ],
    ids=["prop_mv", "interp_mv", "adaptive_low_latency"],
)
def test_no_per_frame_state_accumulates(long_video, make):
    torch.manual_seed(0)
    model, policy = make()
    model.eval()
    sizes = {}
    for r in run_stream(model, long_video, policy=policy, images=False):
        if r.index in (49, 198):  # both just before a keyframe of the fixed schedule
            sizes[r.index] = stream_state_bytes(model)
    assert sizes[49] > 0 and sizes[198] <= sizes[49]


def test_bench_stream_reports_flat_memory(tmp_path):
    rows = run_bench_stream(frames=1000, size=(32, 64), interval=5, methods=("prop_mv",), workdir=str(tmp_path))
    (row,) = rows
    assert row["frames"] == 1000 and row["state_kb_end"] == row["state_kb_1k"] > 0
    # measured at the same frame here, read a moment apart (a few kB of interpreter work)
    assert row["peak_rss_mb_end"] == pytest.approx(row["peak_rss_mb_1k"], rel=0.01)
    with pytest.raises(ValueError, match="at least 1000"):
        run_bench_stream(frames=10, size=(32, 64), interval=5, methods=("prop_mv",))
