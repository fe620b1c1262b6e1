"""`mvseg data prepare camvid` on a fixture in CamVid's layout (a source video and extracted frames)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CAMVID_COLOURS, closest_frames, make_camvid_root
from PIL import Image

from mvseg.cli import main
from mvseg.data.camvid import CLASSES_11, prepare_camvid
from mvseg.data.folder import DatasetError, load_folder_dataset
from mvseg.data.prepare import PrepareConfig
from mvseg.video.decode import decode_video


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("camvid_src")
    return root, make_camvid_root(root)


@pytest.mark.parametrize("void_class", [False, True])
def test_colours_map_to_11_classes_or_12_with_void(cv_root, tmp_path, void_class):
    root, _ = cv_root
    meta = prepare_camvid(root, tmp_path / "o", PrepareConfig(interval=4), void_class=void_class, progress=False)
    assert meta["classes"] == list(CLASSES_11) + (["void"] if void_class else [])
    colours = {tuple(int(x) for x in line.split()[:3]): line.split()[3] for line in CAMVID_COLOURS.splitlines()}
    want = {
        "Sky": 0,
        "Animal": 9,
        "Road": 3,
        "Car": 8,
        "Bicyclist": 10,
        "Building": 1,
        "Void": 11 if void_class else 255,
    }
    src = np.asarray(Image.open(root / "LabeledApproved_full/0001TP_000015_L.png"))
    got = np.asarray(
        Image.open(
            tmp_path
            / "o/labels/train/0001TP_000015"
            / f"{meta['splits']['train']['0001TP_000015']['annotated'][0]:06d}.png"
        )
    )
    for rgb, name in colours.items():
        m = (src == rgb).all(-1)
        assert m.any() and (got[m] == want[name]).all(), name


def test_labels_align_with_decoded_frames_from_a_video_and_from_frames(cv_root, tmp_path):
    """Label frame n is source frame n (+ the sequence's offset): the clip's decoded frame at
    the annotated index is that source frame, from a source video (decoded with PyAV) and
    from extracted frames; windows are cut at the ends of a sequence."""
    root, sources = cv_root
    meta = prepare_camvid(
        root,
        tmp_path / "o",
        PrepareConfig(protocol="gop", interval=4),
        before=3,
        after=4,
        frame_offsets={"0001TP": 2},
        progress=False,
    )
    s = meta["splits"]
    assert sorted(s["train"]) == ["0001TP_000015", "Seq05VD_f00012"] and list(s["test"]) == ["Seq05VD_f00024"]
    cases = [
        ("train", "0001TP_000015", "0001TP", 17),
        ("val", "0001TP_000030", "0001TP", 32),
        ("train", "Seq05VD_f00012", "Seq05VD", 12),
        ("test", "Seq05VD_f00024", "Seq05VD", 24),
    ]
    for split, name, seq, frame in cases:
        spec = s[split][name]
        first = spec["source_frames"][0]
        assert first == frame - 3 and spec["annotated"] == [3]
        assert spec["source_frames"][1] == min(frame + 4, len(sources[seq]) - 1)  # cut at the end
        v = decode_video(tmp_path / "o/videos" / split / f"{name}.mp4", mvs=False)
        assert closest_frames(v.frames, sources[seq]) == list(range(first, spec["source_frames"][1] + 1)), name
    assert s["val"]["0001TP_000030"]["frame_offset"] == 2
    ds = load_folder_dataset(tmp_path / "o", splits=("train", "val", "test"))
    assert ds.num_classes == 11


def test_errors_name_the_file(cv_root, tmp_path):
    import shutil

    root, _ = cv_root
    with pytest.raises(DatasetError, match="not a CamVid root"):
        prepare_camvid(tmp_path, tmp_path / "o", PrepareConfig(), progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / "splits/val.txt").unlink()
    with pytest.raises(DatasetError, match=r"splits/val.txt: split 'val' is missing"):
        prepare_camvid(bad, tmp_path / "o", PrepareConfig(), progress=False)
    (bad / "splits/val.txt").write_text("0001TP_000099\n")
    with pytest.raises(DatasetError, match=r"0001TP_000099_L.png: label of 0001TP_000099"):
        prepare_camvid(bad, tmp_path / "o", PrepareConfig(), progress=False)
    (bad / "splits/val.txt").write_text("0001TP_000030\n")
    lab = np.array(Image.open(bad / "LabeledApproved_full/0001TP_000030_L.png"))
    lab[0, 0] = (1, 2, 3)
    Image.fromarray(lab).save(bad / "LabeledApproved_full/0001TP_000030_L.png")
    with pytest.raises(DatasetError, match=r"0001TP_000030_L.png: colour \(1, 2, 3\) is not in label_colors.txt"):
        prepare_camvid(bad, tmp_path / "o", PrepareConfig(interval=4), progress=False)
    with pytest.raises(DatasetError, match="labelled frame 45 but .*0001TP.mp4 has 40 frames"):
        prepare_camvid(
            root,
            tmp_path / "o2",
            PrepareConfig(interval=4),
            splits=("val",),
            frame_offsets={"0001TP": 15},
            progress=False,
        )
    (bad / "frames/Seq05VD/Seq05VD_000010.png").unlink()
    with pytest.raises(DatasetError, match=r"Seq05VD_f00012_L.png: source frame 10 is missing"):
        prepare_camvid(bad, tmp_path / "o3", PrepareConfig(interval=4), splits=("train",), progress=False)


def test_cli_prepare_camvid_per_distance(cv_root, tmp_path, capsys):
    root, _ = cv_root
    cmd = ["data", "prepare", "camvid", "--root", str(root), "--out", str(tmp_path / "o")]
    cmd += ["--protocol", "per-distance", "--interval", "3", "--void-class", "--frame-offset", "0001TP=1"]
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "6 train, 3 val, 3 test clips (per-distance, L = 3, 96x72); 12 encoded, 0 kept" in out
    meta = json.loads((tmp_path / "o/dataset.json").read_text())
    assert meta["classes"][-1] == "void" and meta["prepared"]["prepare_frame_offsets"] == {"0001TP": 1}
    assert main(cmd) == 0  # the same command again: everything kept
    assert "0 encoded, 12 kept" in capsys.readouterr().out
    assert (
        main(
            ["data", "prepare", "camvid", "--root", str(root), "--out", str(tmp_path / "p"), "--frame-offset", "0001TP"]
        )
        == 2
    )
    assert "--frame-offset expects SEQ=N" in capsys.readouterr().err
