"""CamVid (Brostow et al., 2009) as compressed video: `mvseg data prepare camvid`.

Reads the dataset as distributed (the 30 fps source videos, or frames extracted from them,
with the sparse colour-coded labels of every 30th frame):

    ROOT/label_colors.txt                       the official 32-class colour table
    ROOT/LabeledApproved_full/{seq}_{n}_L.png   RGB labels, 960x720 (n: 006690, f00930, ...)
    ROOT/videos/{seq}.{MXF,mp4,avi,mov,mkv}     the source videos, decoded with PyAV, or
    ROOT/frames/{seq}/*{n}.png                  frames extracted from them (number last)
    ROOT/splits/{train,val,test}.txt            the labelled frames of each split, one per line
                                                (`0001TP_006690`; SegNet's list files, whose lines
                                                are image paths, are read by the file stem)

Classes: the usual 11 (the grouping of the 32 below, as SegNet's and most video papers'
CamVid: 367 / 101 / 233 frames), Void ignored (255), or Void as a 12th class (`void_class`,
as AR-Seg counts it). Label frame n is source frame n + `frame_offsets[seq]` (default 0;
recorded in dataset.json), so labels align with decoded frames.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from mvseg.data.folder import DatasetError
from mvseg.data.prepare import PrepareConfig, Window, read_frames, read_rgb, write_dataset

FPS = 30.0
VIDEO_EXTS = (".mxf", ".MXF", ".mp4", ".avi", ".mov", ".mkv")
CLASSES_11 = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")
# The 11-class grouping of CamVid's 32 names (Brostow et al.'s evaluation, used by SegNet and the
# video papers); Void and anything unlisted is ignored (or the 12th class with void_class).
GROUPS = {
    "sky": ("Sky",),
    "building": ("Building", "Wall", "Bridge", "Tunnel", "Archway"),
    "pole": ("Column_Pole", "TrafficCone"),
    "road": ("Road", "LaneMkgsDriv", "LaneMkgsNonDriv"),
    "sidewalk": ("Sidewalk", "ParkingBlock", "RoadShoulder"),
    "tree": ("Tree", "VegetationMisc"),
    "sign": ("SignSymbol", "Misc_Text", "TrafficLight"),
    "fence": ("Fence",),
    "car": ("Car", "SUVPickupTruck", "Truck_Bus", "Train", "OtherMoving"),
    "pedestrian": ("Pedestrian", "Child", "CartLuggagePram", "Animal"),
    "bicyclist": ("Bicyclist", "MotorcycleScooter"),
}
PALETTE_11 = [
    [128, 128, 128],
    [128, 0, 0],
    [192, 192, 128],
    [128, 64, 128],
    [0, 0, 192],
    [128, 128, 0],
    [192, 128, 128],
    [64, 64, 128],
    [64, 0, 128],
    [64, 64, 0],
    [0, 128, 192],
]
NAME_RE = re.compile(r"^(?P<seq>.+?)_(?P<n>f?\d+)$")


def read_colour_table(path: Path) -> dict[tuple[int, int, int], str]:
    """label_colors.txt: `R G B<whitespace>Name` per line."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing (CamVid's label_colors.txt, shipped with the labels)")
    table = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
            raise DatasetError(f"{path}: line {i} is not 'R G B Name': {line!r}")
        table[tuple(int(p) for p in parts[:3])] = parts[3]
    return table


def colour_lut(table: dict[tuple[int, int, int], str], void_class: bool) -> tuple[dict[int, int], list[str]]:
    """{packed RGB: class id} and the class names; unlisted names -> ignore (255) or Void."""
    to_id = {name: i for i, cls in enumerate(CLASSES_11) for name in GROUPS[cls]}
    void = len(CLASSES_11) if void_class else 255
    lut = {(r << 16) | (g << 8) | b: to_id.get(name, void) for (r, g, b), name in table.items()}
    return lut, [*CLASSES_11, "void"] if void_class else list(CLASSES_11)


def colour_to_ids(rgb: np.ndarray, lut: dict[int, int], path: Path) -> np.ndarray:
    """An RGB label as (H, W) uint8 class ids; a colour outside the table is an error."""
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    unknown = [v for v in values if int(v) not in lut]
    if unknown:
        v = int(unknown[0])
        raise DatasetError(f"{path}: colour ({v >> 16}, {(v >> 8) & 255}, {v & 255}) is not in label_colors.txt")
    return np.array([lut[int(v)] for v in values], np.uint8)[inverse].reshape(packed.shape)


def _label_ids(path: Path, lut: dict[int, int]) -> np.ndarray:
    return colour_to_ids(read_rgb(path), lut, path)


def _given(arr: np.ndarray) -> np.ndarray:
    return arr


def _frame_number(text: str) -> int:
    return int(text.lstrip("f"))


def read_split(root: Path, split: str) -> list[tuple[str, int, str]]:
    """(sequence, frame number, name) of every labelled frame in ROOT/splits/{split}.txt."""
    path = root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: split '{split}' is missing (one labelled frame per line, e.g. 0001TP_006690)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        stem = Path(line.split()[0]).stem.removesuffix("_L")
        m = NAME_RE.match(stem)
        if not m:
            raise DatasetError(f"{path}: line {i}: {stem!r} is not SEQ_FRAME")
        out.append((m["seq"], _frame_number(m["n"]), stem))
    if not out:
        raise DatasetError(f"{path}: no labelled frames listed")
    return out


def _source(root: Path, seq: str) -> tuple[str, Path]:
    for ext in VIDEO_EXTS:
        if (root / "videos" / f"{seq}{ext}").is_file():
            return "video", root / "videos" / f"{seq}{ext}"
    if (root / "frames" / seq).is_dir():
        return "frames", root / "frames" / seq
    raise DatasetError(
        f"{root}: no source for sequence {seq}: neither videos/{seq}.mp4 (or .MXF, .avi, .mov, .mkv) nor frames/{seq}/"
    )


def _frame_files(folder: Path) -> dict[int, Path]:
    files = {}
    for p in folder.glob("*.png"):
        m = re.search(r"(\d+)$", p.stem)
        if m:
            files[int(m.group(1))] = p
    if not files:
        raise DatasetError(f"{folder}: no frame PNGs (named with the frame number last)")
    return files


def iter_windows(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "val", "test"),
    before: int = 11,
    after: int = 12,
    void_class: bool = False,
    frame_offsets: dict[str, int] | None = None,
    max_snippets: int | None = None,
) -> tuple[list[str], int, Iterator[Window]]:
    """(class names, number of windows, the windows): each sequence's source read once, in order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    label_dir = root / "LabeledApproved_full"
    if not label_dir.is_dir():
        raise DatasetError(f"{root}: not a CamVid root: LabeledApproved_full/ is missing")
    lut, classes = colour_lut(read_colour_table(root / "label_colors.txt"), void_class)
    offsets = dict(frame_offsets or {})
    wanted: dict[str, list[tuple[int, str, str]]] = {}  # seq -> (label frame, name, split)
    count = 0
    for split in splits:
        for seq, n, name in read_split(root, split)[:max_snippets]:
            lp = label_dir / f"{name}_L.png"
            if not lp.is_file():
                raise DatasetError(f"{lp}: label of {name} (listed in splits/{split}.txt) is missing")
            wanted.setdefault(seq, []).append((n, name, split))
            count += 1
    sources = {seq: _source(root, seq) for seq in wanted}  # every source checked before any work

    def label_of(lp: Path):
        return partial(_label_ids, lp, lut)

    def windows() -> Iterator[Window]:
        for seq in sorted(wanted):
            kind, src = sources[seq]
            off = offsets.get(seq, 0)
            items = sorted((n + off, n, name, split) for n, name, split in wanted[seq])
            for idx, _, name, _ in items:
                if idx < 0:
                    raise DatasetError(
                        f"{label_dir / (name + '_L.png')}: frame offset {off} of {seq} puts it before "
                        f"the start of {src}"
                    )
            extra = {"sequence": seq, "frame_offset": off}
            if kind == "frames":
                files = _frame_files(src)
                last = max(files)
                for idx, _, name, split in items:
                    a, b = max(idx - before, 0), min(idx + after, last)
                    missing = [i for i in range(a, b + 1) if i not in files]
                    if idx not in files or missing:
                        raise DatasetError(
                            f"{label_dir / (name + '_L.png')}: source frame "
                            f"{missing[0] if missing else idx} is missing in {src}"
                        )
                    paths = [files[i] for i in range(a, b + 1)]
                    yield Window(
                        split,
                        name,
                        len(paths),
                        idx - a,
                        partial(read_frames, tuple(paths)),
                        label_of(label_dir / f"{name}_L.png"),
                        str(label_dir / f"{name}_L.png"),
                        a,
                        extra,
                    )
            else:
                yield from _video_windows(src, items, before, after, label_dir, label_of, extra)

    return classes, count, windows()


def _video_windows(src: Path, items, before: int, after: int, label_dir: Path, label_of, extra) -> Iterator[Window]:
    """Decode `src` once; emit each labelled frame's window as soon as its last frame is decoded
    (bounded memory: one window of frames)."""
    from mvseg.video.decode import iter_frames

    buf: deque = deque(maxlen=before + after + 1)
    pending = list(items)
    n_decoded = 0

    def emit(idx, name, split, end):
        a = max(idx - before, 0)
        frames = [f for i, f in buf if a <= i <= end]
        arr = np.stack(frames)
        lp = label_dir / f"{name}_L.png"
        return Window(split, name, len(frames), idx - a, partial(_given, arr), label_of(lp), str(lp), a, extra)

    for fr in iter_frames(src, mvs=False):
        buf.append((fr.index, fr.image))
        n_decoded = fr.index + 1
        while pending and fr.index >= pending[0][0] + after:
            idx, _, name, split = pending.pop(0)
            yield emit(idx, name, split, idx + after)
    for idx, _, name, split in pending:  # near the end of the video: a shorter window after it
        if idx >= n_decoded:
            raise DatasetError(
                f"{label_dir / (name + '_L.png')}: labelled frame {idx} but {src} has {n_decoded} "
                "frames (check --frame-offset)"
            )
        yield emit(idx, name, split, n_decoded - 1)


def prepare_camvid(
    root: str | Path,
    out: str | Path,
    cfg: PrepareConfig,
    splits: tuple[str, ...] = ("train", "val", "test"),
    before: int = 11,
    after: int = 12,
    void_class: bool = False,
    frame_offsets: dict[str, int] | None = None,
    max_snippets: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Encode CamVid's labelled frames with their neighbours under `out`; see mvseg.data.prepare."""
    cfg.fps = FPS
    classes, count, windows = iter_windows(root, splits, before, after, void_class, frame_offsets, max_snippets)
    info = {
        "name": "camvid",
        "classes": classes,
        "palette": PALETTE_11 + ([[0, 0, 0]] if void_class else []),
        "ignore_index": 255,
        "prepare_before_after": [before, after],
        "prepare_splits": list(splits),
        "prepare_void_class": void_class,
        "prepare_frame_offsets": dict(sorted((frame_offsets or {}).items())),
    }
    return write_dataset(windows, out, cfg, info, total=count, progress=progress, desc="camvid", workers=workers)
