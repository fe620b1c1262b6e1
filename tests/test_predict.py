"""mvseg predict: the legend beside the overlay; the videos people have (odd sizes, rotation,
variable frame rate, truncated files, B-frames)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from helpers import one_step_trainer, translating_frames
from PIL import Image

from mvseg.data.synthetic import CLASSES, PALETTE
from mvseg.predict import legend
from mvseg.video.decode import display_rotation, iter_frames
from mvseg.video.encode import encode_video, remux


def test_the_legend_shows_every_class_beside_its_colour():
    palette = np.array(PALETTE, np.float32)
    for height in (64, 360):  # short frames take more columns
        panel = legend(list(CLASSES), palette, height)
        assert panel.shape[0] == height and panel.shape[2] == 3 and panel.shape[1] % 2 == 0
        colours = {tuple(int(v) for v in px) for px in panel.reshape(-1, 3)}
        assert all(tuple(int(v) for v in c) in colours for c in PALETTE)  # a swatch of each class
    assert legend(list(CLASSES), palette, 64).shape[1] > legend(list(CLASSES), palette, 360).shape[1]


# ----------------------------------------------------------------------------- the videos people have


@pytest.fixture(scope="module")
def prop_ckpt(tiny_dataset, tmp_path_factory):
    """A prop-MV checkpoint (reads MVs) trained one step on the tiny dataset."""

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import PropMV

    tmp = tmp_path_factory.mktemp("prop")
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    model = PropMV(9, 3, net=SegNetConfig(width=0.125, feat_dim=16, head_dim=16))
    trainer = one_step_trainer(tmp)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp / "prop.ckpt")
    return tmp / "prop.ckpt"


def _odd_rotated_vfr(path, frames: np.ndarray, times: list[float]) -> None:
    """H.264 4:4:4 (odd sizes allowed), display rotation 90, the given frame times."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=Fraction(25))
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt, s.options = "yuv444p", {"x264-params": "bframes=0:ref=1:keyint=6"}
    s.codec_context.time_base = Fraction(1, 1000)
    s.set_display_rotation(90)
    for img, t in zip(frames, times):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def test_predict_keeps_odd_size_rotation_and_timestamps(prop_ckpt, tmp_path, capsys):
    from mvseg.cli import main

    frames = translating_frames(10, 65, 129, 2.0, 1.0)  # odd: 129x65
    times = [0.04 * k if k < 5 else 0.2 + 0.12 * (k - 4) for k in range(10)]  # 25 fps, then ~8 fps
    src = tmp_path / "phone.mp4"
    _odd_rotated_vfr(src, frames, times)
    out, labels = tmp_path / "o.mp4", tmp_path / "labels"
    assert (
        main(
            [
                "predict",
                str(src),
                "--ckpt",
                str(prop_ckpt),
                "--out",
                str(out),
                "--labels-dir",
                str(labels),
                "--no-legend",
            ]
        )
        == 0
    )
    decoded = list(iter_frames(out, mvs=False))
    assert len(decoded) == 10 and decoded[0].image.shape == (66, 130, 3)  # edge-padded to what H.264 4:2:0 takes
    np.testing.assert_allclose([f.time for f in decoded], times, atol=1e-3)  # variable frame rate kept
    assert display_rotation(out) == 90  # the display matrix kept
    assert Image.open(sorted(labels.glob("*.png"))[0]).size == (129, 65)  # labels at the source size


def test_predict_writes_a_truncated_files_frames_and_says_where_it_stopped(prop_ckpt, tmp_path, capsys):
    from mvseg.cli import main

    frames = translating_frames(30, 64, 128, 2.0, 1.0)
    whole = encode_video(frames, tmp_path / "whole.mp4", gop=10)
    remux(whole, tmp_path / "fast.mp4", "mp4", options={"movflags": "+faststart"})  # index first, as cameras write
    cut = tmp_path / "cut.mp4"
    data = (tmp_path / "fast.mp4").read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "o.mp4"
    assert main(["predict", str(cut), "--ckpt", str(prop_ckpt), "--out", str(out), "--no-legend"]) == 0
    n = len(list(iter_frames(out, mvs=False, rgb=False)))
    assert 5 < n < 30
    err = capsys.readouterr().err
    assert f"cut.mp4: container declares 30 frames but only {n} decoded (truncated file?)" in err


def test_predict_and_inspect_warn_alike_about_b_frames(prop_ckpt, tmp_path, capsys):
    from mvseg.cli import main

    src = encode_video(translating_frames(12, 64, 128, 2.0, 1.0), tmp_path / "b.mp4", gop=12, bframes=2, ref=3)
    said = {}
    for cmd in (
        ["inspect", str(src)],
        ["predict", str(src), "--ckpt", str(prop_ckpt), "--out", str(tmp_path / "o.mp4")],
    ):
        assert main(cmd) == 0
        said[cmd[0]] = {
            line.split("warning: ", 1)[1] for line in capsys.readouterr().err.splitlines() if "warning: " in line
        }
    b_frames = {m for m in said["inspect"] if "B-frames" in m or "reference frames" in m}
    assert len(b_frames) == 2 and b_frames <= said["predict"]


def test_coverage_policy_keys_the_frame_after_a_cut(prop_ckpt, tmp_path, capsys):
    """Two scenes in one GOP: the frame where the second begins is coded mostly intra, so the
    motion-coverage policy makes it a keyframe; within a scene a slow pan keeps it propagating.
    `predict --policy coverage` needs its threshold and says so."""
    from mvseg.cli import main
    from mvseg.runtime import run_stream
    from mvseg.strategies.loading import load_strategy
    from mvseg.strategies.policies import MotionCoverage

    frames = np.concatenate(
        [translating_frames(10, 64, 128, 1.0, 0.0, seed=1), translating_frames(10, 64, 128, 1.0, 0.0, seed=7)[:, ::-1]]
    )
    video = encode_video(frames, tmp_path / "cut.mp4", gop=100)  # no I-frame at the cut: only the motion says it
    model, data = load_strategy(prop_ckpt)
    keys = [r.index for r in run_stream(model, video, policy=MotionCoverage(0.5), images=False) if r.is_key]
    assert keys == [0, 10]
    assert (
        main(
            [
                "predict",
                str(video),
                "--ckpt",
                str(prop_ckpt),
                "--policy",
                "coverage",
                "--no-legend",
                "--out",
                str(tmp_path / "o.mp4"),
            ]
        )
        != 0
    )
    assert "--policy coverage needs --threshold" in capsys.readouterr().err


# ----------------------------------------------------------------------------- nothing lost, nothing silent


@pytest.fixture
def clip(tmp_path):
    src = tmp_path / "clip.mp4"
    encode_video(translating_frames(8, 64, 96, 2.0, 1.0), src, gop=4)
    return src


@pytest.mark.reliability
def test_predict_never_overwrites_its_input(prop_ckpt, clip, tmp_path, capsys):
    from mvseg.cli import main

    before = clip.read_bytes()
    link = tmp_path / "same.mp4"
    link.hardlink_to(clip)
    for out in (clip, link, tmp_path / "." / "clip.mp4"):
        assert main(["predict", str(clip), "--ckpt", str(prop_ckpt), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err == f"mvseg predict: error: {out}: --out is the input video itself: "
            "predict never overwrites its input; choose another --out"
        )
    assert clip.read_bytes() == before


@pytest.mark.reliability
def test_predict_checks_paths_and_numbers_before_any_work(prop_ckpt, clip, tmp_path, capsys, monkeypatch):
    import mvseg.predict
    from mvseg.cli import main

    def no_work(*a, **k):
        raise AssertionError("predict_video ran")

    monkeypatch.setattr(mvseg.predict, "predict_video", no_work)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        ("--alpha", "7"): "argument --alpha: must be in [0.0, 1.0], got 7",
        ("--alpha", "-1"): "argument --alpha: must be in [0.0, 1.0], got -1",
        ("--interval", "0"): "argument --interval: must be >= 1, got 0",
        ("--threshold", "-0.1"): "argument --threshold: must be >= 0.0, got -0.1",
        ("--out", str(afile / "x.mp4")): f"{afile / 'x.mp4'}: cannot write the overlay: {afile} is not a folder",
        ("--labels-dir", str(afile)): f"{afile}: --labels-dir is a file, not a folder",
    }
    for extra, message in cases.items():
        try:  # an argparse error exits (2) from the parser
            rc = main(["predict", str(clip), "--ckpt", str(prop_ckpt), *extra])
        except SystemExit as e:
            rc = e.code
        assert rc == 2, extra
        assert message in capsys.readouterr().err, extra
    assert main(["predict", str(tmp_path / "none.mp4"), "--ckpt", str(prop_ckpt)]) == 2
    assert f"{tmp_path / 'none.mp4'}: no such file" in capsys.readouterr().err
    assert main(["predict", str(clip), "--ckpt", str(prop_ckpt.parent)]) == 2
    assert f"{prop_ckpt.parent}: is a folder, not a checkpoint file" in capsys.readouterr().err


@pytest.mark.reliability
def test_predict_into_a_folder_and_labels_only_when_whole(prop_ckpt, clip, tmp_path, capsys):
    from mvseg.cli import main

    outdir, labels = tmp_path / "out", tmp_path / "labels"
    outdir.mkdir()
    assert (
        main(["predict", str(clip), "--ckpt", str(prop_ckpt), "--out", str(outdir), "--labels-dir", str(labels)]) == 0
    )
    assert (outdir / "clip.seg.mp4").is_file() and len(list(iter_frames(outdir / "clip.seg.mp4", mvs=False))) == 8
    assert len(list(labels.glob("*.png"))) == 8 and not (tmp_path / "labels.part").exists()


@pytest.mark.reliability
def test_ctrl_c_in_predict_says_what_was_written(prop_ckpt, clip, tmp_path, capsys, monkeypatch):
    import mvseg.predict
    from mvseg.cli import main

    real = mvseg.predict.run_stream

    def interrupted(*a, **k):  # Ctrl-C arrives while frame 3 is being segmented
        for r in real(*a, **k):
            if r.index == 3:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(mvseg.predict, "run_stream", interrupted)
    out, labels = tmp_path / "o.mp4", tmp_path / "labels"
    assert main(["predict", str(clip), "--ckpt", str(prop_ckpt), "--out", str(out), "--labels-dir", str(labels)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"mvseg predict: interrupted after 3 frames: no overlay written to {out}; "
        f"the label PNGs of frames 0-2 are in {tmp_path / 'labels.part'}"
    )
    assert not out.exists() and not labels.exists() and not (tmp_path / "o.mp4.part").exists()
    assert sorted(p.name for p in (tmp_path / "labels.part").iterdir()) == ["000000.png", "000001.png", "000002.png"]


@pytest.mark.reliability
def test_predict_refuses_a_checkpoint_that_segments_nothing(clip, tmp_path, capsys):
    import lightning
    import torch

    from mvseg.cli import main
    from mvseg.strategies.flow_pretrain import FlowPretrain

    model = FlowPretrain(num_classes=9)
    ckpt = tmp_path / "flow.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "mvseg_strategy": "mvseg.strategies.flow_pretrain.FlowPretrain",
        },
        ckpt,
    )
    assert main(["predict", str(clip), "--ckpt", str(ckpt)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"mvseg predict: error: {ckpt}: a FlowPretrain checkpoint segments nothing (it trains a part of another "
        "method): give the checkpoint of a segmenting run"
    )
