"""The on-disk decode cache: reuse, staleness, corruption, interrupted writes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from mvseg.data.cache import VideoCache
from mvseg.video.decode import decode_video
from mvseg.video.motion import rasterize_mvs


@pytest.fixture
def video(pan_video, tmp_path):
    path = tmp_path / "clip.mp4"
    shutil.copy(pan_video[0], path)
    return path


def test_cache_holds_decoded_frames_and_offsets(video, tmp_path):
    cached = VideoCache(tmp_path / "cache").load(video)
    v = decode_video(video)
    np.testing.assert_array_equal(cached.frames, v.frames)
    assert cached.pict_types == v.pict_types and len(cached) == 20
    off, mask = rasterize_mvs(v.mvs[4], 96, 128, intra="fill")  # iter_fields' default rule
    np.testing.assert_array_equal(cached.offsets[4], off)
    np.testing.assert_array_equal(cached.masks[4], mask.astype(np.uint8))
    assert isinstance(cached.frames, np.memmap)  # memory-mapped, shared by workers
    assert cached.meta["source"]["sha256"] and cached.meta["video"]["max_ref_frames"] == 1


def test_intra_rule_is_part_of_the_entry(tiny_dataset, tmp_path):
    """data.intra_blocks: "none" (the ablation) keeps the bitstream's intra cells at mask 0, in an
    entry of its own; the default fills them; anything else is refused with the option's name."""
    video = sorted((tiny_dataset / "videos" / "val").glob("*.mp4"))[0]
    filled, raw = VideoCache(tmp_path / "c").load(video), VideoCache(tmp_path / "c", intra="none").load(video)
    assert VideoCache(tmp_path / "c").entry_dir(video) != VideoCache(tmp_path / "c", intra="none").entry_dir(video)
    p_frames = [t for t, c in enumerate(raw.pict_types) if c == "P"]
    uncovered = np.mean([1 - raw.masks[t].mean() for t in p_frames])
    assert uncovered > 0.02 and np.mean([1 - filled.masks[t].mean() for t in p_frames]) < 0.2 * uncovered
    covered = raw.masks[p_frames] > 0
    np.testing.assert_array_equal(
        np.asarray(filled.offsets[p_frames])[:, 0][covered], np.asarray(raw.offsets[p_frames])[:, 0][covered]
    )
    with pytest.raises(ValueError, match="data.intra_blocks must be one of"):
        VideoCache(tmp_path / "c", intra="zero")


def test_valid_entry_is_reused_not_rebuilt(video, tmp_path, recwarn):
    cache = VideoCache(tmp_path / "cache")
    cache.load(video)
    entry = cache.entry_dir(video)
    stamp = (entry / "frames.npy").stat().st_mtime_ns
    cache.load(video)
    assert (entry / "frames.npy").stat().st_mtime_ns == stamp
    os.utime(video)  # touched, same content: still valid (hash check)
    cache.load(video)
    assert (entry / "frames.npy").stat().st_mtime_ns == stamp
    assert not [w for w in recwarn if "rebuilding" in str(w.message)]


@pytest.mark.reliability
def test_stale_entry_is_rebuilt_with_warning(video, bframe_video, tmp_path):
    cache = VideoCache(tmp_path / "cache")
    assert len(cache.load(video)) == 20
    shutil.copy(bframe_video[0], video)  # the source changed under the same name
    with pytest.warns(UserWarning, match="stale"):
        assert len(cache.load(video)) == 24


@pytest.mark.reliability
@pytest.mark.parametrize("damage", ["truncate", "delete", "meta"])
def test_corrupt_entry_is_rebuilt_with_warning(video, tmp_path, damage):
    cache = VideoCache(tmp_path / "cache")
    good = np.array(cache.load(video).offsets)
    entry = cache.entry_dir(video)
    if damage == "truncate":
        data = (entry / "offsets.npy").read_bytes()
        (entry / "offsets.npy").write_bytes(data[: len(data) // 3])
    elif damage == "delete":
        (entry / "masks.npy").unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    with pytest.warns(UserWarning, match="corrupt"):
        again = cache.load(video)
    np.testing.assert_array_equal(again.offsets, good)


@pytest.mark.reliability
def test_interrupted_write_is_never_read(video, tmp_path, monkeypatch):
    cache = VideoCache(tmp_path / "cache")

    def boom(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="No space left"):
        cache.load(video)
    monkeypatch.undo()
    assert not cache.entry_dir(video).exists()  # nothing half-written under the real name
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # temp folder cleaned up
    assert len(cache.load(video)) == 20


@pytest.mark.reliability
def test_cache_files_are_plain_arrays_and_json(video, tmp_path):
    cache = VideoCache(tmp_path / "cache")
    cache.load(video)
    entry = cache.entry_dir(video)
    assert sorted(p.name for p in entry.iterdir()) == ["frames.npy", "masks.npy", "meta.json", "offsets.npy"]
    for name in ("frames", "offsets", "masks"):
        np.load(entry / f"{name}.npy", allow_pickle=False)  # no object arrays: no pickle
    json.loads((entry / "meta.json").read_text())
