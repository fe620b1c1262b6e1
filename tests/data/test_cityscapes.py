"""`mvseg data prepare cityscapes` on a fixture in Cityscapes' exact layout (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import closest_frames, make_cityscapes_root
from PIL import Image

from mvseg.cli import main
from mvseg.data.folder import DatasetError, load_folder_dataset
from mvseg.data.prepare import PrepareConfig
from mvseg.video.decode import decode_video

pytest.importorskip("cityscapesscripts")

from mvseg.data.cityscapes import label_table, prepare_cityscapes  # noqa: E402


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes_src")
    return root, make_cityscapes_root(root)


def test_label_ids_map_to_the_19_official_train_ids(cs_root, tmp_path):
    root, _ = cs_root
    lut, classes, palette = label_table()
    assert len(classes) == 19 and classes[0] == "road" and classes[13] == "car" and classes[18] == "bicycle"
    assert (lut[7], lut[8], lut[11], lut[21], lut[23], lut[24], lut[26], lut[33], lut[0]) == (
        0,
        1,
        2,
        8,
        10,
        11,
        13,
        18,
        255,
    )
    prepare_cityscapes(root, tmp_path / "out", PrepareConfig(interval=12), progress=False)
    src = np.asarray(Image.open(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"))
    got = np.asarray(Image.open(tmp_path / "out/labels/train/aachen_000000_000019/000019.png"))
    expect = {0: 255, 7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18}
    assert set(np.unique(src)) <= set(expect)
    assert np.array_equal(got, np.vectorize(expect.get)(src))
    meta = json.loads((tmp_path / "out/dataset.json").read_text())
    assert meta["classes"] == classes and meta["palette"][0] == [128, 64, 128]


def test_gop_protocol_decoded_frame_n_is_source_frame_n(cs_root, tmp_path):
    """The whole 30-frame snippet as one clip, an I-frame every L frames; decoded frame n is
    snippet frame n, the label sits at 19; the dataset loads and yields samples."""
    root, frames_of = cs_root
    meta = prepare_cityscapes(root, tmp_path / "out", PrepareConfig(protocol="gop", interval=5), progress=False)
    assert sorted(meta["splits"]) == ["train", "val"] and len(meta["splits"]["train"]) == 2
    for name, src in frames_of.items():
        split = "val" if name.startswith("frankfurt") else "train"
        spec = meta["splits"][split][name]
        assert spec["frames"] == 30 and spec["annotated"] == [19] and "distances" not in spec
        first = int(name[-6:]) - 19
        assert spec["source_frames"] == [first, first + 29]
        v = decode_video(tmp_path / "out/videos" / split / f"{name}.mp4", mvs=False)
        assert closest_frames(v.frames, src) == list(range(30))
        assert [i for i, t in enumerate(v.pict_types) if t == "I"] == [0, 5, 10, 15, 20, 25]
    ds = load_folder_dataset(tmp_path / "out")
    assert ds.num_classes == 19 and [c.annotated for c in ds.clips["train"]] == [[19], [19]]


def test_per_distance_protocol_puts_the_label_at_each_gop_position(cs_root, tmp_path):
    """AR-Seg's protocol: for each d, a clip starting d frames before the labelled frame (an
    I-frame there), label at index d, used at distance d only."""
    from mvseg.data.cache import VideoCache
    from mvseg.data.samples import KeyframeSamples

    root, frames_of = cs_root
    L = 6
    meta = prepare_cityscapes(
        root, tmp_path / "out", PrepareConfig(protocol="per-distance", interval=L), splits=("val",), progress=False
    )
    name = "frankfurt_000001_000500"
    src = frames_of[name]
    assert sorted(meta["splits"]["val"]) == [f"{name}_d{d:02d}" for d in range(L)]
    for d in range(L):
        clip = f"{name}_d{d:02d}"
        spec = meta["splits"]["val"][clip]
        assert (spec["frames"], spec["annotated"], spec["distances"]) == (d + 1, [d], [d])
        v = decode_video(tmp_path / "out/videos/val" / f"{clip}.mp4", mvs=False)
        assert v.pict_types[0] == "I" and "I" not in v.pict_types[1:]
        assert closest_frames(v.frames, src) == list(range(19 - d, 20))  # frame d is the labelled (20th) one
    ds = load_folder_dataset(tmp_path / "out", splits=("val",))
    s = KeyframeSamples(ds, "val", VideoCache(tmp_path / "cache"), L, list(range(L)), train=False)
    assert sorted((ds.clips["val"][ci].name[-3:], t, d) for ci, t, d in s.items) == [
        (f"d{d:02d}", d, d) for d in range(L)
    ]


def test_a_killed_prepare_resumes_to_the_same_output(cs_root, tmp_path, monkeypatch):
    """Killed after 2 clips (an exception in the encoder), then run again: the same files,
    byte for byte, as an uninterrupted prepare; the finished clips are not encoded again. A
    prepare with 2 worker processes writes the same files too."""
    import mvseg.video.encode as enc

    root, _ = cs_root
    cfg = dict(protocol="per-distance", interval=3)
    prepare_cityscapes(root, tmp_path / "whole", PrepareConfig(**cfg), progress=False)
    real, calls = enc.encode_video, []

    def dying(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(enc, "encode_video", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_cityscapes(root, tmp_path / "resumed", PrepareConfig(**cfg), progress=False)
    assert not (tmp_path / "resumed/dataset.json").exists()
    monkeypatch.setattr(enc, "encode_video", real)
    meta = prepare_cityscapes(root, tmp_path / "resumed", PrepareConfig(**cfg), progress=False)
    assert meta["_counts"] == {"written": 7, "kept": 2}
    files = lambda r: sorted(p.relative_to(r) for p in r.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "whole") == files(tmp_path / "resumed")
    for rel in files(tmp_path / "whole"):
        assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "resumed" / rel).read_bytes(), rel
    # two worker processes: the same files
    prepare_cityscapes(root, tmp_path / "parallel", PrepareConfig(**cfg), progress=False, workers=2)
    assert files(tmp_path / "whole") == files(tmp_path / "parallel")
    for rel in files(tmp_path / "whole"):
        assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "parallel" / rel).read_bytes(), rel
    # settings differ from the folder's: refused, nothing changed
    with pytest.raises(DatasetError, match="other settings"):
        prepare_cityscapes(root, tmp_path / "resumed", PrepareConfig(protocol="gop", interval=3), progress=False)


def test_errors_name_the_file(cs_root, tmp_path):
    import shutil

    root, _ = cs_root
    with pytest.raises(DatasetError, match="not a Cityscapes root: leftImg8bit_sequence/ is missing"):
        prepare_cityscapes(tmp_path, tmp_path / "o1", PrepareConfig(), progress=False)
    with pytest.raises(DatasetError, match=r"gtFine/test: split 'test' is missing"):
        prepare_cityscapes(root, tmp_path / "o2", PrepareConfig(), splits=("test",), progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    gone = broken / "leftImg8bit_sequence/val/frankfurt/frankfurt_000001_000505_leftImg8bit.png"
    gone.unlink()
    with pytest.raises(DatasetError) as e:
        prepare_cityscapes(broken, tmp_path / "o3", PrepareConfig(), progress=False)
    assert "frankfurt_000001_000500_gtFine_labelIds.png" in str(e.value) and str(gone) in str(e.value)
    small = broken / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(small)
    with pytest.raises(DatasetError, match="label is 64x32 but its frames are 128x64"):
        prepare_cityscapes(broken, tmp_path / "o4", PrepareConfig(), splits=("train",), progress=False)


def test_cli_prepare_cityscapes(cs_root, tmp_path, capsys):
    root, _ = cs_root
    assert (
        main(
            [
                "data",
                "prepare",
                "cityscapes",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "o"),
                "--size",
                "32x64",
                "--interval",
                "4",
            ]
        )
        == 0
    )
    assert "2 train, 1 val clips (gop, L = 4, 64x32); 3 encoded, 0 kept" in capsys.readouterr().out
    v = decode_video(tmp_path / "o/videos/train/aachen_000000_000019.mp4", mvs=True)
    assert v.frames.shape == (30, 32, 64, 3) and sum(len(m) > 0 for m in v.mvs) > 20  # real MVs
    assert (
        main(["data", "prepare", "cityscapes", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")]) == 2
    )
    assert "not a Cityscapes root" in capsys.readouterr().err


def test_a_worker_that_dies_is_an_error_not_a_hang(cs_root, tmp_path, monkeypatch):
    """A worker process killed mid-prepare (out of memory, a kill): a clear error naming the
    folder, and the run resumes (multiprocessing.Pool would wait forever for the lost task)."""
    import mvseg.data.prepare as prep

    root, _ = cs_root
    monkeypatch.setattr(prep, "_write_window", _die)  # looked up by the parent, pickled by name
    with pytest.raises(OSError, match="a worker process died while encoding"):
        prepare_cityscapes(root, tmp_path / "o", PrepareConfig(interval=4), progress=False, workers=2)
    monkeypatch.undo()
    meta = prepare_cityscapes(root, tmp_path / "o", PrepareConfig(interval=4), progress=False)
    assert meta["_counts"]["written"] + meta["_counts"]["kept"] == 3


def _die(*args, **kwargs):
    import os

    os._exit(9)
