"""The shared CompressedVideoDataModule: samples, composed offsets, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.data.folder import DatasetError, load_folder_dataset
from mvseg.data.samples import transform_sample
from mvseg.ops.warp import warp_reference


def make_dm(root, **kw) -> CompressedVideoDataModule:
    dm = CompressedVideoDataModule(root=str(root), dataset="folder", keyframe_interval=3, batch_size=2, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def warp_full(img: torch.Tensor, off: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    return warp_reference(img[None], off[None], mask[None], frame_size=(h, w), padding_mode="border")[0]


def test_sample_follows_design(tiny_dataset):
    dm = make_dm(tiny_dataset, with_next=True)
    assert dm.num_classes == 9
    # evaluation: every annotated frame (5, 8) of both clips at every distance 0..2
    assert len(dm.val_set) == 2 * 2 * 3
    s = dm.val_set[4]  # clip 0, frame 8, distance 1
    assert (s["clip"], s["frame"], s["distance"]) == ("clip_0000", 8, 1)
    assert s["key"].shape == s["cur"].shape == s["next_key"].shape == (3, 64, 128)
    assert s["label"].shape == (64, 128) and s["label"].dtype == torch.int64
    assert s["offset_cur_to_key"].shape == (2, 16, 32) and s["mask_cur_to_key"].shape == (16, 32)
    assert s["offset_cur_to_next"].shape == (2, 16, 32)
    assert s["next_distance"] == 2  # next keyframe = key + L = 7 + 3 = 10
    # images are normalised with the dataset's statistics
    assert abs(float(s["cur"].mean())) < 1.0 and 0.5 < float(s["cur"].std()) < 2.0


def test_normalisation_may_be_given(tiny_dataset):
    """data.mean / data.std replace the dataset's statistics (a frozen model's own), exactly."""
    own = make_dm(tiny_dataset)
    mean, std = (0.25, 0.5, 0.75), (0.5, 0.25, 2.0)
    given = make_dm(tiny_dataset, mean=mean, std=std)
    assert given.ds.mean == mean and given.ds.std == std  # what checkpoints store for inference
    a, b = own.val_set[3]["cur"], given.val_set[3]["cur"]
    m0, s0 = (torch.tensor(v).view(3, 1, 1) for v in (own.ds.mean, own.ds.std))
    m1, s1 = (torch.tensor(v).view(3, 1, 1) for v in (mean, std))
    torch.testing.assert_close(b, (a * s0 + m0 - m1) / s1, atol=1e-5, rtol=1e-5)


def test_composed_offsets_bring_the_keyframe_to_the_current_frame(tiny_dataset):
    dm = make_dm(tiny_dataset, with_next=True)
    for i in (2, 5):  # distance 2 samples
        s = dm.val_set[i]
        assert s["distance"] == 2
        warped = warp_full(s["key"], s["offset_cur_to_key"], s["mask_cur_to_key"])
        assert (warped - s["cur"]).abs().mean() < 0.8 * (s["key"] - s["cur"]).abs().mean()
        ahead = warp_full(s["next_key"], s["offset_cur_to_next"], s["mask_cur_to_next"])
        assert (ahead - s["cur"]).abs().mean() < 0.8 * (s["next_key"] - s["cur"]).abs().mean()


def test_distance_zero_is_identity(tiny_dataset):
    dm = make_dm(tiny_dataset)
    s = dm.val_set[0]
    assert s["distance"] == 0
    torch.testing.assert_close(s["key"], s["cur"])
    assert not s["offset_cur_to_key"].any() and s["mask_cur_to_key"].all()


def test_flip_and_scale_commute_with_warping(tiny_dataset):
    """A flipped and scaled sample warps to the same result as the unaugmented one."""
    dm = make_dm(tiny_dataset)
    s = dm.val_set[5]  # distance 2
    ref = warp_full(s["key"], s["offset_cur_to_key"], s["mask_cur_to_key"])
    a = transform_sample(s, (96, 192), crop=(64, 128), origin=(16, 32), flip=True)
    got = warp_full(a["key"], a["offset_cur_to_key"], a["mask_cur_to_key"])
    expect = transform_sample({**s, "cur": ref}, (96, 192), crop=(64, 128), origin=(16, 32), flip=True)["cur"]
    # compare away from the crop border (content there comes from outside the crop)
    err = (got - expect)[:, 8:-8, 8:-8].abs().mean()
    moved = (a["key"] - expect)[:, 8:-8, 8:-8].abs().mean()
    assert err < 0.25 * moved
    # the label is transformed with the images: flipped and scaled, same classes
    assert set(a["label"].unique().tolist()) <= set(s["label"].unique().tolist()) | {255}


def test_training_samples_are_augmented_consistently(tiny_dataset):
    dm = make_dm(tiny_dataset, crop_size=(48, 96), scale_range=(0.75, 1.25))
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["cur"].shape == (2, 3, 48, 96) and batch["label"].shape == (2, 48, 96)
    assert batch["offset_cur_to_key"].shape == (2, 2, 12, 24)
    assert set(batch["distance"].tolist()) <= {0, 1, 2}


@pytest.mark.reliability
def test_bad_dataset_inputs_name_the_file(tiny_dataset, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache"))
    label = root / "labels" / "val" / "clip_0001" / "000008.png"
    label.unlink()
    with pytest.raises(DatasetError, match=r"000008.png: label of annotated frame 8 is missing"):
        load_folder_dataset(root)
    from PIL import Image

    Image.fromarray(np.full((64, 128), 42, np.uint8)).save(label)
    with pytest.raises(DatasetError, match=r"000008.png: label ids \[42\] outside the 9 classes"):
        make_dm(root)  # prepare_data reads every label before training starts
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(label)
    with pytest.raises(DatasetError, match=r"000008.png: label is 64x32 but its frame is 128x64"):
        make_dm(root)
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(label)
    dm = make_dm(root)
    Image.fromarray(np.full((64, 128), 42, np.uint8)).save(label)  # damaged after the check: the read says so
    with pytest.raises(DatasetError, match=r"000008.png: label ids \[42\] outside the 9 classes"):
        dm.val_set[len(dm.val_set) - 1]
    (root / "videos" / "train" / "clip_0000.mp4").unlink()
    with pytest.raises(DatasetError, match=r"clip_0000.mp4: video of clip 'clip_0000' \(train\) is missing"):
        load_folder_dataset(root)


@pytest.mark.reliability
@pytest.mark.parametrize("how", ["listed-empty", "no-videos", "no-folder"])
def test_empty_split_is_an_error_at_load(how, tiny_dataset, tmp_path):
    import json
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache", "gt"))
    meta = json.loads((root / "dataset.json").read_text())
    if how == "listed-empty":
        meta["splits"]["val"] = {}
    else:
        del meta["splits"]
        shutil.rmtree(root / "videos" / "val")
        if how == "no-videos":
            (root / "videos" / "val").mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    want = (
        r"videos/val: split 'val' has no video folder" if how == "no-folder" else r"split 'val' has no annotated frames"
    )
    with pytest.raises(DatasetError, match=want):
        load_folder_dataset(root)


@pytest.mark.reliability
def test_bad_datamodule_arguments():
    with pytest.raises(ValueError, match="keyframe_interval must be >= 1"):
        CompressedVideoDataModule(keyframe_interval=0)
    with pytest.raises(ValueError, match=r"eval_distances must be a non-empty subset of 0..4"):
        CompressedVideoDataModule(keyframe_interval=5, eval_distances=[5])
    with pytest.raises(ValueError, match="multiple of 4"):
        CompressedVideoDataModule(crop_size=(30, 64))
    with pytest.raises(ValueError, match=r"data.std must be 3 numbers \(RGB, > 0\)"):
        CompressedVideoDataModule(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match=r"data.mean must be 3 numbers"):
        CompressedVideoDataModule(mean=(0.5, 0.5))


def test_folder_dataset_without_split_lists(tiny_dataset, tmp_path):
    """A plain folder of videos and label PNGs: clips and annotated frames are listed."""
    import json
    import shutil

    root = tmp_path / "plain"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache", "gt"))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({"classes": meta["classes"]}))
    ds = load_folder_dataset(root)
    assert [c.name for c in ds.clips["val"]] == ["clip_0000", "clip_0001"]
    assert ds.clips["train"][1].annotated == [5, 8]
    assert ds.mean == (0.485, 0.456, 0.406)  # ImageNet statistics when none are given


@pytest.mark.reliability
def test_paths_may_not_escape_the_root(tiny_dataset, tmp_path):
    import json
    import shutil

    root = tmp_path / "evil"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache", "gt"))
    meta = json.loads((root / "dataset.json").read_text())
    meta["splits"]["val"] = {"../../../../etc/passwd": {"annotated": [1]}}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        load_folder_dataset(root)


@pytest.mark.reliability
def test_a_label_file_linked_from_outside_is_refused_like_a_folder(tiny_dataset, tmp_path):
    """One containment rule: a label file, like a video or a folder, must resolve inside the root."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache", "gt"))
    label = root / "labels" / "val" / "clip_0001" / "000008.png"
    outside = tmp_path / "elsewhere.png"
    shutil.move(label, outside)
    label.symlink_to(outside)
    with pytest.raises(DatasetError, match="000008.png escapes the dataset root"):
        load_folder_dataset(root)
    inside = root / "labels" / "spare.png"  # a link that stays inside the root is fine
    shutil.move(outside, inside)
    label.unlink()
    label.symlink_to(inside)
    assert load_folder_dataset(root).clips["val"][1].annotated == [5, 8]


@pytest.mark.reliability
def test_labels_are_checked_whole_once_before_training(tiny_dataset, tmp_path):
    """prepare_data decodes every annotated label (a truncated PNG is a one-line error naming it,
    before training); labels found good are not read again by the next prepare_data."""
    import shutil

    from mvseg.data import folder

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache", "gt"))
    label = root / "labels" / "train" / "clip_0000" / "000005.png"
    good = label.read_bytes()
    label.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"000005.png: unreadable label image"):
        make_dm(root)
    label.write_bytes(good)
    calls = []
    real = folder.read_label
    try:
        folder.read_label = lambda *a: calls.append(a[0]) or real(*a)
        make_dm(root)
        assert len(calls) == 8  # 4 clips x 2 annotated frames
        make_dm(root)
        assert len(calls) == 8  # the record says they are good: none read again
        label.write_bytes(good[: len(good) // 2])  # changed since: read again, and refused
        with pytest.raises(DatasetError, match=r"000005.png: unreadable label image"):
            make_dm(root)
    finally:
        folder.read_label = real


@pytest.mark.reliability
def test_an_error_in_a_loader_worker_is_one_line_in_the_main_process():
    from torch.utils.data import DataLoader, Dataset

    from mvseg.cli.lightning import error_line

    class Bad(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise DatasetError("labels/x.png: unreadable label image (truncated)")

    with pytest.raises(DatasetError) as e:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert "Original Traceback" in str(e.value)  # what PyTorch re-raises: the worker's whole traceback
    assert error_line(e.value) == "labels/x.png: unreadable label image (truncated)"


@pytest.mark.reliability
def test_a_synthetic_dataset_made_with_other_settings_is_used_as_it_is(tmp_path, capsys):
    """`mvseg data prepare synthetic --out X --train-clips 2`, then a synthetic config with
    --data.init_args.root X: the folder describes itself, nothing is regenerated."""
    from mvseg.cli import main

    root = tmp_path / "small"
    assert (
        main(
            [
                "data",
                "prepare",
                "synthetic",
                "--out",
                str(root),
                "--train-clips",
                "2",
                "--val-clips",
                "1",
                "--height",
                "64",
                "--width",
                "128",
                "--frames",
                "12",
                "--annotated",
                "5",
                "8",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    dm = CompressedVideoDataModule(root=str(root), dataset="synthetic", keyframe_interval=3, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert [c.name for c in dm.ds.clips["train"]] == ["clip_0000", "clip_0001"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_ground_truth_flow_is_masked_across_a_scene_cut(tmp_path):
    """A chain of true flow that crosses a scene cut has no flow: its mask is 0 everywhere; the
    chains on one side of the cut keep theirs."""
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset, render_clip

    cfg = SyntheticConfig(height=32, width=64, frames=8, cut_rate=50.0)
    cuts = render_clip(100_000, cfg).cuts  # the validation clip's (seed 0): cuts at 5 and 6
    make_synthetic_dataset(
        str(tmp_path / "d"), train_clips=1, val_clips=1, config=cfg, annotated=(7,), workers=1, progress=False
    )
    dm = make_dm(tmp_path / "d", with_gt_flow=True)
    for s in dm.val_set:
        crosses = any(s["frame"] - s["distance"] < c <= s["frame"] for c in cuts)
        assert (s["flowmask_cur_to_key"].max() == 0) == crosses
    assert cuts and {s["distance"] for s in dm.val_set} == {0, 1, 2}


def test_ground_truth_flow_samples(tiny_dataset, tmp_path):
    """with_gt_flow: the true flow t -> k on the cell grid, composed like the MV offsets; it
    warps the keyframe onto the current frame better than copying it, agrees with the composed
    block MVs, and is augmented with the sample (a flip negates x)."""
    dm = make_dm(tiny_dataset, with_gt_flow=True)
    s0 = dm.val_set[0]
    assert s0["distance"] == 0 and not s0["flow_cur_to_key"].any()
    s = dm.val_set[5]  # distance 2
    assert s["flow_cur_to_key"].shape == (2, 16, 32) and s["flowmask_cur_to_key"].shape == (16, 32)
    gt = warp_full(s["key"], s["flow_cur_to_key"], s["flowmask_cur_to_key"])
    copy_err = (s["key"] - s["cur"]).abs().mean()
    mv = warp_full(s["key"], s["offset_cur_to_key"], s["mask_cur_to_key"])
    # (occlusions and 4x4-cell averaging leave a residual: the bound is not tight)
    assert (gt - s["cur"]).abs().mean() < 0.8 * copy_err
    # (the block MVs, chosen by the encoder for the smallest residual, warp as well: not a bound)
    assert (mv - s["cur"]).abs().mean() < 0.8 * copy_err
    both = (s["flowmask_cur_to_key"] > 0) & (s["mask_cur_to_key"] > 0)
    assert (s["flow_cur_to_key"] - s["offset_cur_to_key"]).norm(dim=0)[both].median() < 1.0
    a = transform_sample(s, (64, 128), flip=True)
    torch.testing.assert_close(a["flow_cur_to_key"][0], -s["flow_cur_to_key"][0].flip(-1))
    # a dataset without ground truth: a clear error naming the missing file
    import shutil

    root = tmp_path / "nogt"
    shutil.copytree(tiny_dataset, root)
    shutil.rmtree(root / "gt")
    dm = make_dm(root, with_gt_flow=True)
    with pytest.raises(DatasetError, match=r"gt[/\\]val[/\\]clip_0000\.npz: ground-truth flow not found"):
        dm.val_set[0]
