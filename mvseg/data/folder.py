"""mvseg's on-disk dataset layout ("folder" datasets), shared by every dataset it prepares:

    ROOT/dataset.json                          classes, palette, mean/std, splits (below)
    ROOT/videos/{split}/{clip}.mp4             H.264 (any video PyAV reads; MVs needed)
    ROOT/labels/{split}/{clip}/{frame:06d}.png label ids, 255 = ignore; frame = decoded index

``dataset.json``::

    {"format": "mvseg-folder-v1", "classes": [...], "ignore_index": 255,
     "mean": [r, g, b], "std": [r, g, b],            # of frames scaled to 0..1 (optional)
     "splits": {"train": {"clip": {"frames": 30, "annotated": [19]}}, ...}}   # optional

A clip may also list "distances": the keyframe distances it is used at (AR-Seg's
per-distance protocol: one clip per distance, the labelled frame d frames after an I-frame).

Without "splits", clips are found by listing ``videos/{split}`` and their annotated frames
by listing ``labels/{split}/{clip}``. Every path is resolved inside ROOT.

This module owns the layout: the reader (`load_folder_dataset`) and the one writer every
dataset goes through (`write_clip`, `write_dataset_json`: the synthetic generator and
`mvseg data prepare` alike), so a clip is complete when its video exists (labels first, video
last, each file written whole under a temporary name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "mvseg-folder-v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


@dataclass
class Clip:
    split: str
    name: str
    video: Path
    label_dir: Path
    annotated: list[int]
    frames: int | None = None  # as declared; checked against the decoded video
    distances: list[int] | None = None  # keyframe distances this clip is used at (None: all)

    def label_path(self, frame: int) -> Path:
        return self.label_dir / f"{frame:06d}.png"


@dataclass
class FolderDataset:
    root: Path
    classes: list[str]
    ignore_index: int = 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    palette: list[list[int]] | None = None
    clips: dict[str, list[Clip]] = field(default_factory=dict)
    name: str | None = None  # dataset.json's "name" (synthetic, cityscapes, camvid, ...)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def video_path(root: str | Path, split: str, clip: str) -> Path:
    return Path(root) / "videos" / split / f"{clip}.mp4"


def label_path(root: str | Path, split: str, clip: str, frame: int) -> Path:
    return Path(root) / "labels" / split / clip / f"{frame:06d}.png"


def clip_written(root: str | Path, split: str, clip: str, annotated: list[int]) -> bool:
    """Whether `write_clip` finished this clip (a resumed preparation keeps it)."""
    return video_path(root, split, clip).is_file() and all(
        label_path(root, split, clip, t).is_file() for t in annotated
    )


def _save_png(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)


def write_clip(
    root: str | Path,
    split: str,
    clip: str,
    frames: np.ndarray,
    labels: Mapping[int, np.ndarray],
    gop: int,
    fps: float,
    crf: float,
    scenecut: int = 0,
) -> Path:
    """Store one clip: frames (T, H, W, 3) uint8 as H.264 (an I-frame every `gop` frames, and
    where x264 detects a cut when `scenecut` > 0) and the label (H, W) uint8 of each annotated
    frame as a PNG. Labels first, video last, each whole."""
    from mvseg.video.encode import encode_video

    for t, label in labels.items():
        _save_png(label, label_path(root, split, clip, t))
    return encode_video(frames, video_path(root, split, clip), gop=gop, fps=fps, crf=crf, scenecut=scenecut)


def write_dataset_json(root: str | Path, meta: dict) -> dict:
    """Write ROOT/dataset.json (the format tag first) whole, after every clip is on disk."""
    meta = {"format": FORMAT, **meta}
    path = Path(root) / "dataset.json"
    tmp = path.with_name("dataset.json.part")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)
    return meta


def _inside(root: Path, rel: str | Path) -> Path:
    """ROOT/rel resolved, symlinks included; one rule for files and folders: it must stay inside
    the dataset root (a dataset is one folder that can be moved, shared and trusted whole)."""
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):
        raise DatasetError(
            f"{root / 'dataset.json'}: path {rel!s} escapes the dataset root (it resolves to {p}; "
            "copy the file into the dataset instead of linking it)"
        )
    return p


def read_dataset_info(root: str | Path) -> dict:
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing (not an mvseg folder dataset; see mvseg.data.folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DatasetError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta.get("classes"), list) or not meta["classes"]:
        raise DatasetError(f"{meta_path}: needs a non-empty list 'classes'")
    return meta


def load_folder_dataset(root: str | Path, splits: tuple[str, ...] = ("train", "val")) -> FolderDataset:
    """Read and check a folder dataset: every clip's video and annotated label must exist."""
    root = Path(root)
    meta = read_dataset_info(root)
    ds = FolderDataset(
        root=root,
        classes=list(meta["classes"]),
        ignore_index=int(meta.get("ignore_index", 255)),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        palette=meta.get("palette"),
        name=meta.get("name"),
    )
    for split in splits:
        listed = meta.get("splits", {}).get(split)
        if listed is None:
            vdir = _inside(root, Path("videos") / split)
            if not vdir.is_dir():
                raise DatasetError(f"{vdir}: split '{split}' has no video folder")
            listed = {}
            for v in sorted(vdir.glob("*.mp4")):
                ldir = root / "labels" / split / v.stem
                listed[v.stem] = {"annotated": sorted(int(p.stem) for p in ldir.glob("*.png"))}
        clips = []
        for name, spec in listed.items():
            video = _inside(root, Path("videos") / split / f"{name}.mp4")
            if not video.is_file():
                raise DatasetError(f"{video}: video of clip '{name}' ({split}) is missing")
            clip = Clip(
                split,
                name,
                video,
                _inside(root, Path("labels") / split / name),
                [int(t) for t in spec.get("annotated", [])],
                spec.get("frames"),
                [int(d) for d in spec["distances"]] if spec.get("distances") is not None else None,
            )
            for t in clip.annotated:
                _inside(root, Path("labels") / split / name / f"{t:06d}.png")  # a linked label file too
                if not clip.label_path(t).is_file():
                    raise DatasetError(f"{clip.label_path(t)}: label of annotated frame {t} is missing")
            clips.append(clip)
        if not clips or not any(c.annotated for c in clips):
            raise DatasetError(f"{root}: split '{split}' has no annotated frames")
        ds.clips[split] = clips
    return ds


def check_labels(ds: FolderDataset, sizes: Mapping[Path, tuple[int, int]], record: Path) -> int:
    """Read every annotated label of `ds` whole (decodable, single channel, its frame's size from
    `sizes`, known ids), once: the labels found good are listed in `record` (by path, size and
    mtime) and skipped next time. Returns how many were read. A bad label is a DatasetError before
    training starts, not an error in a loader worker after it has."""
    try:
        seen = set(json.loads(record.read_text())["good"]) if record.is_file() else set()
    except (OSError, ValueError, KeyError, TypeError):
        seen = set()  # an unreadable record only costs a re-check
    good, read = [], 0
    for clips in ds.clips.values():
        for clip in clips:
            for t in clip.annotated:
                path = clip.label_path(t)
                st = path.stat()
                key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{ds.num_classes}|{ds.ignore_index}"
                if key not in seen:
                    read_label(path, ds.num_classes, ds.ignore_index, tuple(sizes[clip.video]))
                    read += 1
                good.append(key)
    if read:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(record.name + ".part")
        tmp.write_text(json.dumps({"good": sorted(seen | set(good))}))
        os.replace(tmp, record)
    return read


def read_label(path: Path, num_classes: int, ignore_index: int, size: tuple[int, int]) -> np.ndarray:
    """A label PNG as (H, W) int64, checked against the class set and the frame size."""
    from PIL import Image

    try:
        lab = np.asarray(Image.open(path))  # decodes the whole image: a truncated PNG fails here
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable label image ({e})") from e
    if lab.ndim != 2:
        raise DatasetError(f"{path}: a label must be a single-channel image of class ids, got shape {lab.shape}")
    if lab.shape != tuple(size):
        raise DatasetError(f"{path}: label is {lab.shape[1]}x{lab.shape[0]} but its frame is {size[1]}x{size[0]}")
    bad = np.setdiff1d(np.unique(lab), [*range(num_classes), ignore_index])
    if len(bad):
        raise DatasetError(f"{path}: label ids {bad.tolist()} outside the {num_classes} classes and {ignore_index}")
    return lab.astype(np.int64)
