"""Cityscapes (Cordts et al., CVPR 2016) as compressed video: `mvseg data prepare cityscapes`.

Reads the official layout (leftImg8bit_sequence_trainvaltest.zip and gtFine_trainvaltest.zip
unpacked into one ROOT):

    ROOT/leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   17 fps
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Each annotated frame is the 20th of a 30-frame snippet (19 frames before, 10 after). Label
ids are mapped to the 19 train ids with the official table (`cityscapesscripts`, the
`mvseg[cityscapes]` extra) rather than a hand-copied one; unlabelled ids become 255.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from mvseg.data.folder import DatasetError
from mvseg.data.prepare import PrepareConfig, Window, read_frames, read_ids, write_dataset

FPS = 17.0
LABEL_RE = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def label_table() -> tuple[np.ndarray, list[str], list[list[int]]]:
    """(LUT id -> train id (255 = ignore), the 19 class names, their colours) from the official
    cityscapesscripts table."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as e:
        raise DatasetError(
            "Cityscapes' label table comes from the official `cityscapesscripts` package: "
            "pip install 'mvseg[cityscapes]'"
        ) from e
    lut = np.full(256, 255, np.uint8)
    train = sorted((lab.trainId, lab.name, list(lab.color)) for lab in labels if 0 <= lab.trainId < 255)
    for lab in labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 255:
            lut[lab.id] = lab.trainId
    return lut, [n for _, n, _ in train], [c for _, _, c in train]


def _train_ids(path: Path, lut: np.ndarray) -> np.ndarray:
    return lut[read_ids(path)]


def find_windows(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
    before: int = 19,
    after: int = 10,
    max_snippets: int | None = None,
) -> list[Window]:
    """One Window per annotated frame of each split, in sorted order; errors name the file."""
    root = Path(root)
    seq_root, gt_root = root / "leftImg8bit_sequence", root / "gtFine"
    for p in (seq_root, gt_root):
        if not p.is_dir():
            raise DatasetError(
                f"{root}: not a Cityscapes root: {p.name}/ is missing (unpack "
                "leftImg8bit_sequence_trainvaltest.zip and gtFine_trainvaltest.zip here)"
            )
    lut, _, _ = label_table()
    windows = []
    for split in splits:
        if not (gt_root / split).is_dir():
            raise DatasetError(f"{gt_root / split}: split '{split}' is missing")
        if not (seq_root / split).is_dir():
            raise DatasetError(f"{seq_root / split}: split '{split}' is missing")
        labels = sorted((gt_root / split).glob("*/*_gtFine_labelIds.png"))
        if not labels:
            raise DatasetError(f"{gt_root / split}: no *_gtFine_labelIds.png files")
        for lp in labels[:max_snippets]:
            m = LABEL_RE.match(lp.name)
            if not m:
                raise DatasetError(f"{lp}: not named CITY_SEQ_FRAME_gtFine_labelIds.png")
            city, seq, f = m["city"], m["seq"], int(m["frame"])
            first = f - before
            paths = [
                seq_root / split / lp.parent.name / f"{city}_{seq}_{n:06d}_leftImg8bit.png"
                for n in range(first, f + after + 1)
            ]
            missing = [p for p in paths if not p.is_file()]
            if first < 0 or missing:
                what = missing[0] if missing else f"frame {first} (before the sequence start)"
                raise DatasetError(
                    f"{lp}: its snippet frame {what} is missing (expected {before} frames before "
                    f"and {after} after it in {seq_root / split / lp.parent.name})"
                )
            windows.append(
                Window(
                    split=split,
                    name=f"{city}_{seq}_{f:06d}",
                    length=len(paths),
                    label_index=before,
                    frames=partial(read_frames, tuple(paths)),
                    label=partial(_train_ids, lp, lut),
                    source=str(lp),
                    first_frame=first,
                    extra={"sequence": f"{city}_{seq}"},
                )
            )
    return windows


def prepare_cityscapes(
    root: str | Path,
    out: str | Path,
    cfg: PrepareConfig,
    splits: tuple[str, ...] = ("train", "val"),
    before: int = 19,
    after: int = 10,
    max_snippets: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Encode Cityscapes' annotated snippets under `out` (mvseg folder layout); see mvseg.data.prepare."""
    cfg.fps = FPS
    windows = find_windows(root, splits, before, after, max_snippets)
    _, classes, palette = label_table()
    info = {
        "name": "cityscapes",
        "classes": classes,
        "palette": palette,
        "ignore_index": 255,
        "prepare_before_after": [before, after],
        "prepare_splits": list(splits),
    }
    return write_dataset(
        iter(windows), out, cfg, info, total=len(windows), progress=progress, desc="cityscapes", workers=workers
    )
