"""The embedded synthetic street dataset: labels, exact flow, MVs that agree with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mvseg.bench.synthetic import colour_vs_cnn
from mvseg.cli import main
from mvseg.data.synthetic import CLASSES, SyntheticConfig, make_synthetic_dataset, render_clip
from mvseg.video.decode import decode_video
from mvseg.video.encode import encode_video
from mvseg.video.motion import rasterize_mvs

SMALL = SyntheticConfig(height=64, width=128, frames=8)


def test_deterministic_per_seed_and_varied_across_seeds():
    a, b, c = render_clip(3, SMALL), render_clip(3, SMALL), render_clip(4, SMALL)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.abs(a.frames.astype(int) - c.frames.astype(int)).mean() > 10


def test_all_classes_appear_and_labels_are_valid():
    labels = np.concatenate([render_clip(s, SMALL).labels for s in range(6)])
    present = set(np.unique(labels).tolist())
    assert present == set(range(len(CLASSES)))  # every pixel labelled, 9 classes
    assert len(CLASSES) >= 8


def test_objects_move_enter_leave_and_occlude():
    changed = occluded = 0
    for seed in range(4):
        clip = render_clip(seed, SyntheticConfig(height=64, width=128, frames=30))
        assert np.abs(clip.flow[1:]).max() > 1.0  # camera and objects move
        visible = [set(np.unique(o).tolist()) - {-1} for o in clip.objects]
        changed += visible[0] != visible[-1]  # some object entered or left the frame
        # occlusion: an object's visible area shrinks while it stays in view
        area = np.stack([(clip.objects == k).sum((1, 2)) for k in range(clip.objects.max() + 1)])
        occluded += any(np.any(np.diff(a[a > 0]) < -20) for a in area)
    assert changed >= 2 and occluded >= 1


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gx = (xs + flow[0]) / (w - 1) * 2 - 1
    gy = (ys + flow[1]) / (h - 1) * 2 - 1
    grid = torch.from_numpy(np.stack([gx, gy], -1))[None]
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    return F.grid_sample(x, grid, align_corners=True, padding_mode="border")[0].permute(1, 2, 0).numpy()


def test_ground_truth_flow_is_exact():
    cfg = SyntheticConfig(height=64, width=128, frames=6, noise=0.0, illumination=0.0)
    clip = render_clip(2, cfg)
    for t in range(1, 6):
        warped = _warp(clip.frames[t - 1], clip.flow[t])
        # compare where the flow lands on the same layer/object and inside the frame
        src_obj = _warp(clip.objects[t - 1][..., None].astype(np.float32), clip.flow[t])[..., 0]
        same = np.abs(src_obj - clip.objects[t]) < 1e-3
        err = np.abs(warped - clip.frames[t]).mean(-1)
        copy = np.abs(clip.frames[t - 1].astype(float) - clip.frames[t]).mean(-1)
        assert np.median(err[same]) < 3.0 and np.median(err[same]) < 0.5 * np.median(copy[same])


def test_mvs_agree_with_ground_truth_flow(tmp_path):
    """Independent check of the whole MV path: encode, decode, rasterise, compare. And the
    intra-block rule: the cells no MV covers (intra macroblocks) get motion from their
    neighbours that is far nearer the true flow than the zero motion they had."""
    cfg = SyntheticConfig(height=128, width=256, frames=12)
    epe, motion, epe_fill, motion_fill, filled = [], [], [], [], []
    for seed in (0, 7):
        clip = render_clip(seed, cfg)
        v = decode_video(encode_video(clip.frames, tmp_path / f"{seed}.mp4", gop=12))
        for t in range(1, 12):
            off, mask = rasterize_mvs(v.mvs[t], 128, 256)
            gt = clip.flow[t].reshape(2, 32, 4, 64, 4).mean((2, 4))  # per 4x4 block
            obj = clip.objects[t].reshape(32, 4, 64, 4)
            inside = (obj.min((1, 3)) == obj.max((1, 3))) & (obj.min((1, 3)) >= 0)  # within one object
            sel = inside & (mask > 0)
            epe.append(np.linalg.norm(off - gt, axis=0)[sel])
            motion.append(np.linalg.norm(gt, axis=0)[sel])
            off_f, mask_f = rasterize_mvs(v.mvs[t], 128, 256, intra="fill")
            new = (mask == 0) & (mask_f > 0)
            filled.append((new.sum(), (mask == 0).sum()))
            epe_fill.append(np.linalg.norm(off_f - gt, axis=0)[new])  # object edges too: where intra blocks are
            motion_fill.append(np.linalg.norm(gt, axis=0)[new])
    epe, motion = np.concatenate(epe), np.concatenate(motion)
    assert len(epe) > 500
    assert np.median(epe) < 0.6  # pixels: quarter-pel MVs track the objects
    assert np.median(epe) < 0.5 * np.median(motion)  # far better than assuming no motion
    epe_fill, motion_fill = np.concatenate(epe_fill), np.concatenate(motion_fill)
    n_new, n_uncovered = np.sum(filled, axis=0)
    assert n_uncovered > 200 and n_new > 0.9 * n_uncovered  # these clips have intra macroblocks; most are filled
    assert len(epe_fill) > 100 and np.median(epe_fill) < 0.6 * np.median(motion_fill)  # zero motion's error is |gt|


def test_colour_alone_cannot_solve_it():
    res = colour_vs_cnn(train_clips=8, val_clips=4, frames=4, size=(48, 96), steps=120, batch=8)
    assert res["cnn"]["val_mIoU"] > res["colour_1x1"]["val_mIoU"] + 0.1


def test_dataset_layout_and_resume(tmp_path):
    root = tmp_path / "syn"
    meta = make_synthetic_dataset(
        str(root), train_clips=2, val_clips=1, config=SMALL, annotated=(3, 6), workers=1, progress=False
    )
    assert json.loads((root / "dataset.json").read_text()) == meta
    assert meta["classes"] == list(CLASSES) and meta["splits"]["val"] == {
        "clip_0000": {"frames": 8, "annotated": [3, 6]}
    }
    assert len(meta["mean"]) == 3 and all(0 < s < 1 for s in meta["std"])
    video = root / "videos" / "train" / "clip_0001.mp4"
    v = decode_video(video)
    assert v.frames.shape == (8, 64, 128, 3) and v.pict_types == "I" + "P" * 7  # GOP = clip length
    gt = np.load(root / "gt" / "train" / "clip_0001.npz")
    label = np.array(Image.open(root / "labels" / "train" / "clip_0001" / "000006.png"))
    np.testing.assert_array_equal(label, gt["labels"][6])
    assert gt["flow"].shape == (8, 2, 64, 128)
    # resumable and idempotent: a second call with the same settings rewrites nothing
    stamp = video.stat().st_mtime_ns
    assert (
        make_synthetic_dataset(
            str(root), train_clips=2, val_clips=1, config=SMALL, annotated=(3, 6), workers=1, progress=False
        )
        == meta
    )
    assert video.stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        make_synthetic_dataset(str(root), train_clips=3, val_clips=1, config=SMALL, annotated=(3, 6), workers=1)
    with pytest.raises(ValueError, match=r"annotated frames \[9\] outside a clip of 8 frames"):
        make_synthetic_dataset(str(tmp_path / "x"), config=SMALL, annotated=(9,))


def test_data_prepare_cli(tmp_path, capsys):
    rc = main(
        [
            "data",
            "prepare",
            "synthetic",
            "--out",
            str(tmp_path / "d"),
            "--train-clips",
            "1",
            "--val-clips",
            "1",
            "--height",
            "32",
            "--width",
            "64",
            "--frames",
            "6",
            "--annotated",
            "2",
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    assert (tmp_path / "d" / "videos" / "val" / "clip_0000.mp4").exists()
    assert "1 train + 1 val clips of 6 frames, 64x32" in capsys.readouterr().out
    rc = main(
        [
            "data",
            "prepare",
            "synthetic",
            "--out",
            str(tmp_path / "u"),
            "--train-clips",
            "1",
            "--val-clips",
            "1",
            "--height",
            "32",
            "--width",
            "64",
            "--frames",
            "6",
            "--annotated",
            "2",
            "--workers",
            "1",
            "--cut-rate",
            "20",
            "--tunnel-rate",
            "5",
        ]
    )
    config = json.loads((tmp_path / "u" / "dataset.json").read_text())["generator"]["config"]
    assert rc == 0 and config["cut_rate"] == 20.0 and config["tunnel_rate"] == 5.0 and "turn_rate" not in config
    with pytest.raises(SystemExit, match="--turn-rate must be >= 0"):
        main(["data", "prepare", "synthetic", "--out", str(tmp_path / "v"), "--turn-rate", "-1"])


def test_stop_and_go_camera():
    """speed_changes: the camera's travel is piecewise linear with speeds from SPEEDS (each
    stretch's differing from the last); a stopped stretch leaves the static scene still, the
    flow stays exact, and 0 keeps the constant-speed camera (travel(t) = t)."""
    from mvseg.data.synthetic import SPEEDS, StreetScene, stop_and_go

    ts, ds = stop_and_go(np.random.default_rng(0), 30, 4)
    speeds = np.diff(ds) / np.diff(ts)
    assert len(ts) == 6 and ts[0] == 0 and ts[-1] == 30 and set(speeds) <= set(SPEEDS)
    assert all(a != b for a, b in zip(speeds, speeds[1:]))
    assert StreetScene(2, SyntheticConfig(height=64, width=128)).cam.travel(7) == 7
    cfg = SyntheticConfig(height=64, width=128, frames=12, noise=0.0, illumination=0.0, speed_changes=3)
    stopped = moving = 0
    for seed in range(12):
        cam = StreetScene(seed, cfg).cam
        clip = render_clip(seed, cfg)
        static = clip.objects == -1  # (T, H, W) the layers the camera alone moves
        for t in range(1, cfg.frames):
            speed = cam.travel(t) - cam.travel(t - 1)
            still = np.abs(clip.flow[t]).max(0)[static[t]]
            if speed == 0:
                stopped += 1
                both = static[t] & static[t - 1]  # not covered by a moving object in either frame
                assert still.max() < 1e-3 and np.array_equal(clip.frames[t][both], clip.frames[t - 1][both])
            elif abs(cam.pan) > 0.3:
                moving += 1
                assert still.mean() > 0.01  # (a stopped stretch: < 1e-3 everywhere)
    assert stopped and moving
    # the flow of a stop-and-go clip is as exact as a constant-speed one
    for t in range(1, cfg.frames):
        warped = _warp(clip.frames[t - 1], clip.flow[t])
        src_obj = _warp(clip.objects[t - 1][..., None].astype(np.float32), clip.flow[t])[..., 0]
        same = np.abs(src_obj - clip.objects[t]) < 1e-3
        assert np.median(np.abs(warped - clip.frames[t]).mean(-1)[same]) < 3.0


# -- uneven content: the events of SyntheticConfig (cut_rate, turn_rate, lorry_rate, tunnel_rate)

# sha256 of render_clip(3, 64x128, 6 frames)'s frames, labels, flow and objects, recorded with the
# generator before the events existed: the defaults must keep rendering the same bytes
DEFAULT_CLIP_SHA256 = "e6b55b86f8df72c771722ded726bec9cacd2c87709967b0130a617a9c2bdd185"


def test_events_off_by_default_render_the_same_bytes(tmp_path):
    import hashlib

    clip, h = render_clip(3, SyntheticConfig(height=64, width=128, frames=6)), hashlib.sha256()
    for k in ("frames", "labels", "flow", "objects"):
        h.update(np.ascontiguousarray(getattr(clip, k)).tobytes())
    assert h.hexdigest() == DEFAULT_CLIP_SHA256 and clip.cuts == () and clip.flow_valid.all()
    meta = make_synthetic_dataset(
        str(tmp_path / "d"), train_clips=1, val_clips=1, config=SMALL, annotated=(2,), workers=1, progress=False
    )
    assert not {"cut_rate", "turn_rate", "lorry_rate", "tunnel_rate", "turn_degrees"} & set(meta["generator"]["config"])
    with np.load(tmp_path / "d" / "gt" / "val" / "clip_0000.npz") as z:
        assert set(z.files) == {"labels", "flow", "objects"}


def test_scene_cut_changes_most_labels_at_once_and_has_no_flow(tmp_path):
    cfg = SyntheticConfig(height=64, width=128, frames=16, cut_rate=10.0)
    seen = 0
    for seed in range(4):
        clip = render_clip(seed, cfg)
        for t in range(1, cfg.frames):
            changed = (clip.labels[t] != clip.labels[t - 1]).mean()
            if t in clip.cuts:
                seen += 1
                assert changed > 0.3 and not clip.flow_valid[t] and not clip.flow[t].any()
            else:
                assert changed < 0.2 and clip.flow_valid[t]
    assert seen >= 2
    meta = make_synthetic_dataset(
        str(tmp_path / "d"), train_clips=1, val_clips=1, workers=1, progress=False, config=cfg, annotated=(2,)
    )
    assert meta["generator"]["config"]["cut_rate"] == 10.0
    with np.load(tmp_path / "d" / "gt" / "train" / "clip_0000.npz") as z:
        np.testing.assert_array_equal(z["flow_valid"], render_clip(0, cfg).flow_valid)


def test_scenecut_encoding_puts_an_iframe_at_every_cut(tmp_path):
    """--scenecut 40 --gop L: x264's scene-cut detection makes an I-frame at each of the generator's
    cuts (and the GOP restarts there), as a camera's or an editor's encode would; no I-frame is
    more than L frames after the last. The option is recorded only when on."""
    from mvseg.video.decode import iter_frames

    out = tmp_path / "sc"
    rc = main(
        [
            "data",
            "prepare",
            "synthetic",
            "--out",
            str(out),
            "--train-clips",
            "1",
            "--val-clips",
            "2",
            "--height",
            "64",
            "--width",
            "128",
            "--frames",
            "40",
            "--annotated",
            "2",
            "--workers",
            "1",
            "--cut-rate",
            "6",
            "--scenecut",
            "40",
            "--gop",
            "12",
        ]
    )
    assert rc == 0 and json.loads((out / "dataset.json").read_text())["generator"]["scenecut"] == 40
    cuts = 0
    for split, name in (("train", "clip_0000"), ("val", "clip_0000"), ("val", "clip_0001")):
        with np.load(out / "gt" / split / f"{name}.npz") as z:
            cut_frames = np.nonzero(~z["flow_valid"])[0].tolist()
        types = "".join(f.pict_type for f in iter_frames(out / "videos" / split / f"{name}.mp4", rgb=False))
        iframes = [t for t, c in enumerate(types) if c == "I"]
        assert set(cut_frames) <= set(iframes), (name, cut_frames, iframes)
        assert max(np.diff(iframes + [len(types)])) <= 12
        cuts += len(cut_frames)
    assert cuts >= 2
    with pytest.raises(SystemExit, match="--scenecut must be >= 0"):
        main(["data", "prepare", "synthetic", "--out", str(tmp_path / "v"), "--scenecut", "-1"])


def test_turn_moves_every_depth_alike():
    """A yaw of the camera shifts every static layer by the same number of pixels (a rotation
    has no parallax): with a camera that neither pans nor zooms, the static layers' horizontal
    flow is the yaw's step at every pixel, and tens of pixels a frame during a turn."""
    from mvseg.data.synthetic import StreetScene

    cfg = SyntheticConfig(height=64, width=128, frames=30, max_pan=0.0, max_zoom=0.0, turn_rate=8.0)
    fast = 0
    for seed in range(3):
        cam, clip = StreetScene(seed, cfg).cam, render_clip(seed, cfg)
        for t in range(1, cfg.frames):
            step = cam.yaw(t) - cam.yaw(t - 1)
            static = clip.objects[t] == -1
            np.testing.assert_allclose(clip.flow[t][0][static], step, atol=1e-3)
            fast += abs(step) > 4
    assert fast >= 12  # 45 degrees x U(0.7, 1.3) in 12 frames at a 60-degree field of view: 6-12 px a frame


def test_lorry_enters_close_and_covers_much_of_the_frame():
    cfg = SyntheticConfig(height=64, width=128, frames=30, lorry_rate=6.0)
    base = SyntheticConfig(height=64, width=128, frames=30)
    from mvseg.data.synthetic import StreetScene

    covers = []
    for seed in range(3):
        clip, scene = render_clip(seed, cfg), StreetScene(seed, base)
        lorries = range(len(scene.objects), clip.objects.max() + 1)  # appended after the scene's own objects
        cover = np.stack([np.isin(clip.objects[t], lorries).mean() for t in range(cfg.frames)])
        covers.append(cover.max())
        assert cover[0] < 0.05 or cover[-1] < 0.05  # it enters or leaves within the clip
    assert max(covers) > 0.3


def test_tunnel_darkens_the_frame_and_keeps_labels_and_flow():
    from mvseg.data.synthetic import StreetScene

    cfg = SyntheticConfig(height=64, width=128, frames=30, tunnel_rate=8.0, noise=0.0)
    base = SyntheticConfig(height=64, width=128, frames=30, noise=0.0)
    dark = 0
    for seed in range(3):
        scene, clip, plain = StreetScene(seed, cfg), render_clip(seed, cfg), render_clip(seed, base)
        np.testing.assert_array_equal(clip.labels, plain.labels)
        np.testing.assert_array_equal(clip.flow, plain.flow)
        for t_in, t_out in scene.tunnels:
            for t in range(t_in + 1, min(t_out, cfg.frames)):
                ratio = clip.frames[t].mean() / plain.frames[t].mean()
                assert abs(ratio - cfg.tunnel_gain) < 0.05
                dark += 1
    assert dark >= 5


def test_flow_stays_exact_with_every_event():
    """Without noise and light changes (a tunnel keeps labels and flow, tested above), warping
    frame t-1 by the flow gives frame t within interpolation error, turns and lorries included;
    a cut frame has no flow to check."""
    cfg = SyntheticConfig(
        height=64, width=128, frames=24, noise=0.0, illumination=0.0, cut_rate=4.0, turn_rate=6.0, lorry_rate=6.0
    )
    cuts = 0
    for seed in range(2):
        clip = render_clip(seed, cfg)
        cuts += len(clip.cuts)
        for t in set(range(1, cfg.frames)) - set(clip.cuts):
            warped = _warp(clip.frames[t - 1].astype(np.float32), clip.flow[t])
            src_obj = _warp(clip.objects[t - 1][..., None].astype(np.float32), clip.flow[t])[..., 0]
            same = np.abs(src_obj - clip.objects[t]) < 1e-3
            assert np.median(np.abs(warped - clip.frames[t]).mean(-1)[same]) < 1.0  # (about 30 across a cut)
    assert cuts
