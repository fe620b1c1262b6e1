"""`mvseg fuzz`: mutated videos through `mvseg inspect`; the harness and what it found."""

from __future__ import annotations

import json
import os
import sys
import time

import av
import pytest

from mvseg.cli import main
from mvseg.fuzz import MUTATORS, classify, make_seed_videos, run_forked, run_fuzz
from mvseg.video.decode import VideoError, decode_video
from mvseg.video.encode import remux

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return make_seed_videos(tmp_path_factory.mktemp("seeds"))


def test_fuzz_run_finds_no_crash_no_hang(seeds, tmp_path):
    """A bounded run (seeded: the same cases every time) over every mutator and seed kind."""
    import torch

    torch.ones(1 << 16).exp().sum()  # the parent has used torch's thread pool (as in a long test session)
    s = run_fuzz(
        tmp_path / "fz", max_cases=60, budget_s=120, seed=0, videos=seeds, timeout_s=10, max_findings=1, entry=main
    )
    assert s["cases"] == 60
    assert s["findings"] == [], s["findings"]
    assert s["by_status"]["ok"] > 0 and s["by_status"]["error"] > 0  # mutations both survived and broke files
    assert set(s["by_mutator"]) == set(MUTATORS)
    assert json.loads((tmp_path / "fz" / "summary.json").read_text())["cases"] == 60


def test_mutators_are_seeded(seeds):
    import numpy as np

    data, other = seeds[0].read_bytes(), seeds[1].read_bytes()
    for name, f in MUTATORS.items():
        a = f(data, np.random.default_rng(5), other)
        assert a == f(data, np.random.default_rng(5), other), name
        assert a != data, name


def _crash() -> int:
    os.abort()


def _hang() -> int:
    time.sleep(60)
    return 0


def _exception() -> int:
    raise RuntimeError("boom")


def _unnamed() -> int:
    print("mvseg inspect: error: something went wrong", file=sys.stderr)
    return 2


def _named(path) -> int:
    print(f"mvseg inspect: error: {path}: not a readable video container", file=sys.stderr)
    return 2


@pytest.mark.parametrize(
    "target, want",
    [
        (_crash, ("crash", "killed by SIGABRT")),
        (_hang, ("hang", "killed after the timeout")),
        (_exception, ("crash", "RuntimeError: boom")),
        (_unnamed, ("unnamed", "mvseg inspect: error: something went wrong")),
        (lambda: 0, ("ok", "")),
    ],
    ids=["signal", "hang", "exception", "unnamed-error", "ok"],
)
def test_harness_classifies_each_ending(target, want, tmp_path):
    """The harness can fail: a crash, a hang, a traceback and an anonymous error are findings."""
    log = tmp_path / "log.txt"
    how, code, secs = run_forked(target, log, timeout_s=1.0)
    assert classify(tmp_path / "case.mp4", how, code, log.read_text()) == want
    assert secs < 10


def test_harness_accepts_an_error_that_names_the_file(tmp_path):
    log, case = tmp_path / "log.txt", tmp_path / "case.mp4"
    how, code, _ = run_forked(lambda: _named(case), log, timeout_s=5.0)
    assert classify(case, how, code, log.read_text())[0] == "error"


# ----------------------------------------------------------------------------- what it found


def test_found_codec_without_decoder(seeds, tmp_path):
    """Found by mvseg fuzz (a flipped byte in the sample description): PyAV gives the stream no
    codec context, and mvseg inspect died with AttributeError."""
    data = seeds[0].read_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))
    bad = tmp_path / "badcodec.mp4"
    bad.write_bytes(data[:at] + b"zzzz" + data[at + 4 :])
    with pytest.raises(VideoError, match=r"badcodec.mp4: video stream has a codec FFmpeg cannot decode"):
        decode_video(bad)


def test_found_tag_that_is_not_utf8(seeds, tmp_path, capsys):
    """Found by mvseg fuzz: a container tag with bytes that are not UTF-8 raised
    UnicodeDecodeError in PyAV's open (an error that did not name the file); tags are decoded
    with replacement now and the frames are read."""
    src = tmp_path / "titled.mkv"
    remux(seeds[0], src, "matroska", metadata={"title": "TITLEXYZ"})
    data = src.read_bytes()
    at = data.index(b"TITLEXYZ")
    bad = tmp_path / "badtag.mkv"
    bad.write_bytes(data[:at] + b"\xff\xfe" + data[at + 2 :])
    with pytest.raises(UnicodeDecodeError):
        av.open(str(bad))
    assert decode_video(bad).frames.shape == decode_video(src).frames.shape
    assert main(["inspect", str(bad)]) == 0


def test_fuzz_cli(seeds, tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = main(["fuzz", str(seeds[0]), "--cases", "5", "--out", str(tmp_path / "fz"), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "5 cases" in text and "outcomes:" in text
    assert json.loads(out.read_text())["seeds"] == [seeds[0].name]
