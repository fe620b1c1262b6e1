"""Synthetic street clips written in Cityscapes' and CamVid's own on-disk layouts.

A real-layout root to rehearse a paper recipe's whole chain on (`mvseg data synthetic --layout
cityscapes|camvid`, the recipe-rehearsal tests): `mvseg data prepare` reads it exactly as it
reads the real dataset, and the content has what fixtures of random blocks lack: real motion
(a camera driving through a scene, objects moving), labels that follow the pixels, H.264 that
has something to predict. No third-party footage is shipped or fetched: every frame comes
from `mvseg.data.synthetic.render_clip`.

- **Cityscapes** (Cordts et al.): ``leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_
  leftImg8bit.png`` 30-frame snippets (17 fps), the 20th annotated in ``gtFine/{split}/{city}/
  ..._gtFine_labelIds.png`` (official label ids: road 7, sidewalk 8, building 11, pole 17,
  traffic sign 20, vegetation 21, sky 23, person 24, car 26; unlabelled 0) and ``_color.png``.
- **CamVid** (Brostow et al.): ``label_colors.txt`` (the official 32-name table),
  ``videos/{seq}.mp4`` 30 fps sequences, colour labels ``LabeledApproved_full/{seq}_{n:06d}_L.png``
  every 30th frame (Void 0 0 0 where the generator has no class), ``splits/{split}.txt``.

Sizes are reduced (default 128x256 and 120x160, the datasets' aspect ratios); the frame rates
are the datasets' own, so the recipes' intervals mean what they mean on the real data.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mvseg.data.synthetic import CLASSES, IGNORE_INDEX, SyntheticConfig, clip_seed, render_clip

LAYOUTS = ("cityscapes", "camvid")

# synthetic class -> Cityscapes label id (cityscapesscripts' `labels` table); ignore -> 0 (unlabeled)
CITYSCAPES_IDS = {
    "road": 7,
    "sidewalk": 8,
    "building": 11,
    "vegetation": 21,
    "sky": 23,
    "car": 26,
    "person": 24,
    "pole": 17,
    "sign": 20,
}
# colours of those ids in Cityscapes' own table (the _color.png files)
CITYSCAPES_COLOURS = {
    0: (0, 0, 0),
    7: (128, 64, 128),
    8: (244, 35, 232),
    11: (70, 70, 70),
    17: (153, 153, 153),
    20: (220, 220, 0),
    21: (107, 142, 35),
    23: (70, 130, 180),
    24: (220, 20, 60),
    26: (0, 0, 142),
}
# CamVid's label_colors.txt, the 32 names as the dataset ships them
CAMVID_COLOURS = (
    ((64, 128, 64), "Animal"),
    ((192, 0, 128), "Archway"),
    ((0, 128, 192), "Bicyclist"),
    ((0, 128, 64), "Bridge"),
    ((128, 0, 0), "Building"),
    ((64, 0, 128), "Car"),
    ((64, 0, 192), "CartLuggagePram"),
    ((192, 128, 64), "Child"),
    ((192, 192, 128), "Column_Pole"),
    ((64, 64, 128), "Fence"),
    ((128, 0, 192), "LaneMkgsDriv"),
    ((192, 0, 64), "LaneMkgsNonDriv"),
    ((128, 128, 64), "Misc_Text"),
    ((192, 0, 192), "MotorcycleScooter"),
    ((128, 64, 64), "OtherMoving"),
    ((64, 192, 128), "ParkingBlock"),
    ((64, 64, 0), "Pedestrian"),
    ((128, 64, 128), "Road"),
    ((128, 128, 192), "RoadShoulder"),
    ((0, 0, 192), "Sidewalk"),
    ((192, 128, 128), "SignSymbol"),
    ((128, 128, 128), "Sky"),
    ((64, 128, 192), "SUVPickupTruck"),
    ((0, 0, 64), "TrafficCone"),
    ((0, 64, 64), "TrafficLight"),
    ((192, 64, 128), "Train"),
    ((128, 128, 0), "Tree"),
    ((192, 128, 192), "Truck_Bus"),
    ((64, 0, 64), "Tunnel"),
    ((192, 192, 0), "VegetationMisc"),
    ((0, 0, 0), "Void"),
    ((64, 192, 0), "Wall"),
)
CAMVID_NAMES = {
    "road": "Road",
    "sidewalk": "Sidewalk",
    "building": "Building",
    "vegetation": "Tree",
    "sky": "Sky",
    "car": "Car",
    "person": "Pedestrian",
    "pole": "Column_Pole",
    "sign": "SignSymbol",
}


def _lut(values: dict[str, object], void, dtype=np.uint8) -> np.ndarray:
    """(256, ...) table: synthetic class index -> value; IGNORE_INDEX and the rest -> `void`."""
    first = np.asarray(void, dtype)
    lut = np.broadcast_to(first, (256, *first.shape)).copy()
    for i, name in enumerate(CLASSES):
        lut[i] = values[name]
    lut[IGNORE_INDEX] = void
    return lut


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_cityscapes_layout(
    root: str | Path, snippets: dict[str, int] | None = None, size: tuple[int, int] = (128, 256), seed: int = 0
) -> dict[str, list[str]]:
    """Cityscapes-layout snippets from synthetic clips: `snippets` per split (default 3 train in
    two cities, 2 val), each 30 frames with the 20th annotated. Returns {split: [snippet names]}."""
    snippets = snippets or {"train": 3, "val": 2}
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
    ids = _lut(CITYSCAPES_IDS, 0)
    colours = np.zeros((256, 3), np.uint8)
    for i, c in CITYSCAPES_COLOURS.items():
        colours[i] = c
    cfg = replace(SyntheticConfig(), height=size[0], width=size[1], frames=30)
    root, names = Path(root), {}
    for s_i, (split, n) in enumerate(snippets.items()):
        for k in range(n):
            city = cities.get(split, ("city",))[k % len(cities.get(split, ("city",)))]
            seq, label_frame = k, 19 + 30 * (k + 1)  # frame numbers run on within a sequence, as in the dataset
            clip = render_clip(clip_seed(seed, "cityscapes_layout", 50_000 * s_i + k), cfg)
            stem = f"{city}_{seq:06d}"
            for i, img in enumerate(clip.frames):
                _save_png(
                    root / "leftImg8bit_sequence" / split / city / f"{stem}_{label_frame - 19 + i:06d}_leftImg8bit.png",
                    img,
                )
            lab = ids[clip.labels[19]]
            gt = root / "gtFine" / split / city / f"{stem}_{label_frame:06d}_gtFine"
            _save_png(gt.with_name(gt.name + "_labelIds.png"), lab)
            _save_png(gt.with_name(gt.name + "_color.png"), colours[lab])
            names.setdefault(split, []).append(f"{stem}_{label_frame:06d}")
    return names


def write_camvid_layout(
    root: str | Path,
    sequences: dict[str, tuple[str, int]] | None = None,
    size: tuple[int, int] = (120, 160),
    seed: int = 0,
) -> dict[str, list[str]]:
    """CamVid-layout sequences from synthetic clips: `sequences` {name: (split, labelled frames)}
    (default three sequences, one per split), each a 30 fps H.264 video of 30 x labelled + 1
    frames with colour labels at frames 30, 60, ... Returns {split: [labelled frame names]}."""
    from mvseg.video.encode import encode_video

    sequences = sequences or {"0001TP": ("train", 2), "0006R0": ("val", 1), "Seq05VD": ("test", 1)}
    colour_of = {name: rgb for rgb, name in CAMVID_COLOURS}
    lut = _lut({c: colour_of[n] for c, n in CAMVID_NAMES.items()}, colour_of["Void"])
    root, names = Path(root), {}
    root.mkdir(parents=True, exist_ok=True)
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for (r, g, b), n in CAMVID_COLOURS))
    for q, (seq, (split, labelled)) in enumerate(sequences.items()):
        cfg = replace(SyntheticConfig(), height=size[0], width=size[1], frames=30 * labelled + 1)
        clip = render_clip(clip_seed(seed, "camvid_layout", q), cfg)
        # the source video, as a camera gives it: one I-frame at the start, high quality
        encode_video(clip.frames, root / "videos" / f"{seq}.mp4", gop=len(clip.frames), crf=10, fps=30.0)
        for j in range(1, labelled + 1):
            n = 30 * j
            _save_png(root / "LabeledApproved_full" / f"{seq}_{n:06d}_L.png", lut[clip.labels[n]])
            names.setdefault(split, []).append(f"{seq}_{n:06d}")
    (root / "splits").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (root / "splits" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names.get(split, [])))
    return names


def write_layout(layout: str, root: str | Path, seed: int = 0) -> dict[str, list[str]]:
    """`write_cityscapes_layout` or `write_camvid_layout` with their defaults."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return (write_cityscapes_layout if layout == "cityscapes" else write_camvid_layout)(root, seed=seed)
