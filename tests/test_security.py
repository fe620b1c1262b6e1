"""Nothing mvseg is handed runs code: checkpoints, configs and caches are data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mvseg.checkpoint_io import UnsafeCheckpointError, safe_load
from mvseg.cli import main
from mvseg.data.cache import VideoCache

PER_FRAME = Path(__file__).parents[1] / "experiments" / "per_frame.yaml"


pytestmark = pytest.mark.reliability


class Payload:
    """Unpickling this creates `marker` (what an attacker's checkpoint would run instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path, marker) -> None:
    torch.save(
        {"state_dict": {}, "mvseg_strategy": "mvseg.strategies.PerFrame", "hyper_parameters": Payload(marker)}, path
    )


def test_safe_load_refuses_pickled_code(tmp_path):
    ckpt, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    evil_checkpoint(ckpt, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt: refused: it holds Python objects"):
        safe_load(ckpt)
    assert not marker.exists()
    (tmp_path / "half.ckpt").write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(UnsafeCheckpointError, match=r"half.ckpt: not a readable PyTorch checkpoint"):
        safe_load(tmp_path / "half.ckpt")


@pytest.mark.parametrize("where", ["predict", "resume", "init_from", "teacher"])
def test_no_entry_point_runs_a_checkpoints_code(where, tiny_dataset, tiny_data_args, tmp_path, capsys):
    ckpt, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    evil_checkpoint(ckpt, marker)
    if where == "predict":
        video = next((tiny_dataset / "videos" / "val").glob("*.mp4"))
        rc = main(["predict", str(video), "--ckpt", str(ckpt), "--out", str(tmp_path / "o.mp4")])
    else:
        config = {"resume": "per_frame", "init_from": "prop_mv", "teacher": "bdnet"}[where]
        extra = {
            "resume": ["--ckpt_path", str(ckpt)],
            "init_from": ["--model.init_args.init_from", str(ckpt)],
            "teacher": ["--model.init_args.init_from", "null", "--model.init_args.teacher", str(ckpt)],
        }[where]
        rc = main(
            [
                "fit",
                "--config",
                str(PER_FRAME.with_name(f"{config}.yaml")),
                *tiny_data_args,
                *extra,
                "--trainer.fast_dev_run",
                "1",
            ]
        )
    err = capsys.readouterr().err
    assert rc != 0
    assert re.search(r"error: .*evil.ckpt: refused: it holds Python objects", err), err[-2000:]
    assert not marker.exists()


def test_yaml_config_cannot_construct_python_objects(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"seed_everything: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n")
    rc = main(["fit", "--config", str(PER_FRAME), "--config", str(cfg), "--print_config"])
    assert rc != 0
    assert not marker.exists()


def test_cache_never_unpickles(pan_video, tmp_path, recwarn):
    """A cache entry whose array was replaced by a pickled object array is rebuilt, not loaded."""
    cache = VideoCache(tmp_path / "cache")
    good = np.asarray(cache.load(pan_video[0]).offsets).copy()
    marker = tmp_path / "pwned"
    entry = cache.entry_dir(pan_video[0])
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.save(entry / "offsets.npy", arr, allow_pickle=True)
    again = cache.load(pan_video[0])
    assert not marker.exists()
    assert np.array_equal(np.asarray(again.offsets), good)
    assert any("rebuilding it" in str(w.message) for w in recwarn)


def _bad_checkpoint(kind: str, path, pan_video) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.ones(64)}}, path)
        path.write_bytes(path.read_bytes()[:120])
    elif kind == "video":  # an MP4 passed as --ckpt
        path.write_bytes(pan_video[0].read_bytes())
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "list":  # a torch file, but not a checkpoint
        torch.save([1, 2, 3], path)


BAD_CHECKPOINTS = {
    "empty": "empty file",
    "truncated": "not a readable PyTorch checkpoint",
    "video": "not a PyTorch checkpoint",
    "text": "not a PyTorch checkpoint",
    "list": "holds a list, not a checkpoint",
}


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_one_line_naming_it(kind, tiny_dataset, pan_video, tmp_path, capsys):
    ckpt = tmp_path / "bad.ckpt"
    _bad_checkpoint(kind, ckpt, pan_video)
    with pytest.raises(UnsafeCheckpointError, match=f"bad.ckpt: {BAD_CHECKPOINTS[kind]}"):
        safe_load(ckpt)
    video = next((tiny_dataset / "videos" / "val").glob("*.mp4"))
    assert main(["predict", str(video), "--ckpt", str(ckpt), "--out", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"mvseg predict: error: {ckpt}: " + err.split(f"{ckpt}: ", 1)[1].strip()]
    assert BAD_CHECKPOINTS[kind] in err and not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "kind, where",
    [("empty", "resume"), ("empty", "validate"), ("empty", "init_from"), ("list", "init_from"), ("video", "resume")],
)
def test_every_entry_point_says_which_checkpoint_is_bad(kind, where, tiny_data_args, pan_video, tmp_path, capsys):
    ckpt = tmp_path / "bad.ckpt"
    _bad_checkpoint(kind, ckpt, pan_video)
    verb, config, extra = {
        "resume": ("fit", "per_frame", ["--ckpt_path", str(ckpt)]),
        "validate": ("validate", "per_frame", ["--ckpt_path", str(ckpt)]),
        "init_from": ("fit", "prop_mv", ["--model.init_args.init_from", str(ckpt)]),
    }[where]
    rc = main(
        [
            verb,
            "--config",
            str(PER_FRAME.with_name(f"{config}.yaml")),
            *tiny_data_args,
            *extra,
            "--trainer.fast_dev_run",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0
    assert re.search(rf"mvseg: error: .*bad.ckpt: {BAD_CHECKPOINTS[kind]}", err), err[-2000:]
    assert "Traceback" not in err
