"""Training and evaluation samples: (keyframe, current frame[, next keyframe]) with the
composed MV offsets between them (docs/conventions.md, "Frames and samples").

For an annotated frame t and a keyframe distance d, the keyframe is k = t - d and the next
keyframe n = k + L. ``offset_cur_to_key`` composes the per-frame fields t -> t-1 -> ... -> k
by sampling; ``offset_cur_to_next`` composes the inverted fields t -> t+1 -> ... -> n.
With ``with_gt_flow`` (datasets with ground-truth flow, as the synthetic one), samples also
carry ``flow_cur_to_key``: the true flow t -> k on the same 4x4 cell grid, composed the same way
(the target that pretrains DFF's flow network). Augmentation (scale, crop, horizontal flip)
is applied identically to every image, the label and the offset fields (a flip negates x
offsets, a scale scales them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from mvseg.data.cache import CachedVideo, VideoCache
from mvseg.data.folder import Clip, DatasetError, FolderDataset, read_label
from mvseg.ops.fields import CELL, compose, compose_forward, resize_field

IMAGE_KEYS = ("key", "cur", "next_key")
FIELD_KEYS = (
    ("offset_cur_to_key", "mask_cur_to_key"),
    ("offset_cur_to_next", "mask_cur_to_next"),
    ("flow_cur_to_key", "flowmask_cur_to_key"),
)


@dataclass
class Augment:
    """Training augmentation; sizes are (H, W) in pixels and crops multiples of 4."""

    crop: tuple[int, int] | None = None
    scale: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True

    def __post_init__(self):
        if self.crop is not None and (self.crop[0] % CELL or self.crop[1] % CELL):
            raise ValueError(f"crop {self.crop} must be a multiple of {CELL} pixels (the MV cell)")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale range {self.scale} must satisfy 0 < low <= high")


def chain_offsets(video: CachedVideo, t: int, k: int) -> tuple[Tensor, Tensor]:
    """Composed offsets from frame t back to frame k <= t (identity when k == t)."""
    hc, wc = video.offsets.shape[-2:]
    if k == t:
        return torch.zeros(2, hc, wc), torch.ones(hc, wc)
    js = range(t, k, -1)  # f_t, f_{t-1}, ..., f_{k+1}
    return compose(
        [torch.from_numpy(np.array(video.offsets[j])) for j in js],
        [torch.from_numpy(video.masks[j].astype(np.float32)) for j in js],
    )


def chain_offsets_forward(video: CachedVideo, t: int, n: int) -> tuple[Tensor, Tensor]:
    """Composed offsets from frame t forward to frame n >= t, through inverted fields."""
    hc, wc = video.offsets.shape[-2:]
    if n == t:
        return torch.zeros(2, hc, wc), torch.ones(hc, wc)
    js = range(t + 1, n + 1)
    return compose_forward(
        [torch.from_numpy(np.array(video.offsets[j])) for j in js],
        [torch.from_numpy(video.masks[j].astype(np.float32)) for j in js],
    )


def gt_flow_path(ds: FolderDataset, clip: Clip) -> Path:
    """Ground-truth flow of a clip: ROOT/gt/{split}/{clip}.npz, array "flow" (T, 2, H, W),
    frame t -> t-1 in pixels (written by the synthetic generator)."""
    return ds.root / "gt" / clip.split / f"{clip.name}.npz"


def load_gt_flow(path: Path, frames: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Per-frame ground-truth flow averaged over 4x4 cells -> (T, 2, Hc, Wc) float32, and (T,)
    bool: the frame's flow exists (False at a scene cut of a clip with cuts)."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: ground-truth flow not found (with_gt_flow needs gt/{{split}}/{{clip}}.npz, "
            "as `mvseg data prepare synthetic` writes)"
        )
    try:
        with np.load(path) as z:
            flow = np.asarray(z["flow"], dtype=np.float32)
            valid = np.asarray(z["flow_valid"], bool) if "flow_valid" in z.files else np.ones(len(flow), bool)
    except (KeyError, ValueError, OSError) as e:
        raise DatasetError(f"{path}: unreadable ground-truth flow ({e})") from e
    if flow.ndim != 4 or flow.shape[0] != frames or flow.shape[1] != 2 or tuple(flow.shape[2:]) != tuple(size):
        raise DatasetError(f"{path}: flow has shape {flow.shape}, expected ({frames}, 2, {size[0]}, {size[1]})")
    # A cell's flow is the mean over its pixels (our choice: a target on the MV grid, so the
    # composition, augmentation and warping code of the MV offsets applies unchanged).
    return F.avg_pool2d(torch.from_numpy(flow), CELL, ceil_mode=True), torch.from_numpy(valid)


class KeyframeSamples(Dataset):
    """Samples of one split. Training: one item per annotated frame, its distance drawn from
    `distances` each time. Evaluation: one item per (annotated frame, distance)."""

    def __init__(
        self,
        ds: FolderDataset,
        split: str,
        cache: VideoCache,
        interval: int,
        distances: list[int],
        train: bool,
        augment: Augment | None = None,
        with_next: bool = False,
        with_gt_flow: bool = False,
    ):
        self.with_gt_flow = with_gt_flow
        self._gt: dict[int, tuple[Tensor, Tensor]] = {}
        self.ds, self.split, self.cache, self.interval = ds, split, cache, interval
        self.distances, self.train, self.augment, self.with_next = list(distances), train, augment, with_next
        self.clips: list[Clip] = ds.clips[split]
        self.mean = torch.tensor(ds.mean).view(3, 1, 1)
        self.std = torch.tensor(ds.std).view(3, 1, 1)
        self._videos: dict[int, CachedVideo] = {}
        self.items: list[tuple[int, int, int]] = []
        for ci, clip in enumerate(self.clips):
            for t in clip.annotated:
                ds_ok = self._distances(clip, t)
                if train:
                    if ds_ok:
                        self.items.append((ci, t, -1))
                else:
                    self.items += [(ci, t, d) for d in ds_ok]
        if not self.items:
            raise DatasetError(f"{ds.root}: split '{split}' has no annotated frame at distances {self.distances}")

    def __len__(self) -> int:
        return len(self.items)

    def _distances(self, clip: Clip, t: int) -> list[int]:
        # a clip of the per-distance protocol is used at its own distance only
        return [d for d in self.distances if t - d >= 0 and (clip.distances is None or d in clip.distances)]

    def video(self, ci: int) -> CachedVideo:
        if ci not in self._videos:  # opened lazily: each DataLoader worker maps its own
            v = self.cache.load(self.clips[ci].video)
            declared = self.clips[ci].frames
            if declared is not None and declared != len(v):
                raise DatasetError(f"{self.clips[ci].video}: decoded {len(v)} frames, dataset.json says {declared}")
            self._videos[ci] = v
        return self._videos[ci]

    def _image(self, v: CachedVideo, i: int) -> Tensor:
        img = torch.from_numpy(np.array(v.frames[i])).permute(2, 0, 1).float() / 255.0  # (3, H, W)
        return (img - self.mean) / self.std

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        # (index, seed) from SeededSampler: the sample's random draws (distance, augmentation)
        # come from its own seed, whichever process or worker makes it
        index, seed = index if isinstance(index, tuple) else (index, None)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ci, t, d = self.items[index]
        clip = self.clips[ci]
        v = self.video(ci)
        if t >= len(v):
            raise DatasetError(f"{clip.label_path(t)}: annotated frame {t} but {clip.video} has {len(v)} frames")
        if d < 0:
            valid = self._distances(clip, t)
            d = valid[int(torch.randint(len(valid), (1,), generator=gen))]
        k = t - d
        h, w = v.frames.shape[1:3]
        label = read_label(clip.label_path(t), self.ds.num_classes, self.ds.ignore_index, (h, w))
        off_k, m_k = chain_offsets(v, t, k)
        s = {
            "key": self._image(v, k),
            "cur": self._image(v, t),
            "label": torch.from_numpy(label),
            "offset_cur_to_key": off_k,
            "mask_cur_to_key": m_k,
            "distance": d,
            "clip": clip.name,
            "frame": t,
        }
        if self.with_gt_flow:
            if ci not in self._gt:
                self._gt[ci] = load_gt_flow(gt_flow_path(self.ds, clip), len(v), (h, w))
            gt, valid = self._gt[ci]
            if k == t:
                s["flow_cur_to_key"], s["flowmask_cur_to_key"] = torch.zeros_like(gt[0]), torch.ones(gt.shape[-2:])
            else:  # a chain across a scene cut has no flow: masked
                js = range(t, k, -1)
                s["flow_cur_to_key"], s["flowmask_cur_to_key"] = compose(
                    [gt[j] for j in js], [torch.full(gt.shape[-2:], float(valid[j])) for j in js]
                )
        if self.with_next:
            n = min(k + self.interval, len(v) - 1)  # clamped at the end of the clip
            off_n, m_n = chain_offsets_forward(v, t, max(n, t))
            s.update(
                next_key=self._image(v, max(n, t)),
                offset_cur_to_next=off_n,
                mask_cur_to_next=m_n,
                next_distance=max(n, t) - t,
            )
        if self.train and self.augment is not None:
            s = augment_sample(s, self.augment, gen)
        return s


class SeededSampler(Sampler):
    """Shuffled (index, seed) pairs, both drawn from one generator in the main process: an
    epoch's order and every sample's augmentation follow from the generator's state (which
    the DataModule checkpoints), not from worker processes' RNGs or their number, so
    persistent workers and a resumed fit give the same batches."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.epoch_state: torch.Tensor | None = None  # the generator before this epoch's draw
        self._resume: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        skip = 0
        if self._resume is not None:  # a fit resumed mid-epoch: that epoch's draw, minus what it trained on
            state, skip = self._resume
            self._resume = None
            self.generator.set_state(state)
        self.epoch_state = self.generator.get_state()
        order = torch.randperm(self.n, generator=self.generator)
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)
        return iter(list(zip(order.tolist(), seeds.tolist()))[skip:])

    def state_dict(self, samples_done: int) -> dict:
        """Where the current epoch stands: its draw (the generator before it) and how many of its
        samples the model has trained on."""
        return (
            {} if self.epoch_state is None else {"epoch_generator": self.epoch_state, "samples_done": int(samples_done)}
        )

    def load_state_dict(self, state: dict) -> None:
        """The next epoch drawn is the saved one, from its first sample not yet trained on."""
        if "epoch_generator" in state:
            self._resume = (state["epoch_generator"], int(state["samples_done"]))


def augment_sample(s: dict, aug: Augment, gen: torch.Generator | None = None) -> dict:
    """Random scale, crop and flip (drawn from `aug`), applied by `transform_sample`."""
    h, w = s["cur"].shape[-2:]
    lo, hi = aug.scale
    scale = lo if lo == hi else float(torch.empty(()).uniform_(lo, hi, generator=gen))
    size = (max(CELL, round(h * scale / CELL) * CELL), max(CELL, round(w * scale / CELL) * CELL))
    origin = None
    if aug.crop is not None:
        ph, pw = max(size[0], aug.crop[0]), max(size[1], aug.crop[1])  # padded size
        origin = (
            CELL * int(torch.randint((ph - aug.crop[0]) // CELL + 1, (1,), generator=gen)),
            CELL * int(torch.randint((pw - aug.crop[1]) // CELL + 1, (1,), generator=gen)),
        )
    flip = aug.hflip and bool(torch.rand((), generator=gen) < 0.5)
    return transform_sample(s, size, aug.crop, origin, flip)


def transform_sample(
    s: dict,
    size: tuple[int, int],
    crop: tuple[int, int] | None = None,
    origin: tuple[int, int] | None = None,
    flip: bool = False,
) -> dict:
    """Resize to `size`, pad/crop to `crop` at `origin` (multiples of 4) and mirror, every
    image, the label and the offset fields of a sample alike."""
    s = dict(s)
    h, w = s["cur"].shape[-2:]
    nh, nw = size
    if (nh, nw) != (h, w):
        for k in IMAGE_KEYS:
            if k in s:
                s[k] = F.interpolate(s[k][None], (nh, nw), mode="bilinear", align_corners=False)[0]
        s["label"] = F.interpolate(s["label"][None, None].float(), (nh, nw), mode="nearest")[0, 0].long()
        for ok, mk in FIELD_KEYS:
            if ok in s:
                s[ok], s[mk] = resize_field(s[ok], s[mk], (h, w), (nh, nw))
        h, w = nh, nw
    if crop is not None:
        ch, cw = crop
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:  # pad: images with 0 (the mean after normalisation), labels ignored
            for k in IMAGE_KEYS:
                if k in s:
                    s[k] = F.pad(s[k], (0, pw, 0, ph))
            s["label"] = F.pad(s["label"], (0, pw, 0, ph), value=255)
            for ok, mk in FIELD_KEYS:
                if ok in s:
                    s[ok] = F.pad(s[ok], (0, math.ceil(pw / CELL), 0, math.ceil(ph / CELL)))
                    s[mk] = F.pad(s[mk], (0, math.ceil(pw / CELL), 0, math.ceil(ph / CELL)))
        y0, x0 = origin or (0, 0)
        for k in IMAGE_KEYS:
            if k in s:
                s[k] = s[k][:, y0 : y0 + ch, x0 : x0 + cw]
        s["label"] = s["label"][y0 : y0 + ch, x0 : x0 + cw]
        cy, cx, hc, wc = y0 // CELL, x0 // CELL, ch // CELL, cw // CELL
        for ok, mk in FIELD_KEYS:
            if ok in s:
                s[ok], s[mk] = s[ok][:, cy : cy + hc, cx : cx + wc], s[mk][cy : cy + hc, cx : cx + wc]
    if flip:
        for k in IMAGE_KEYS:
            if k in s:
                s[k] = s[k].flip(-1)
        s["label"] = s["label"].flip(-1)
        for ok, mk in FIELD_KEYS:
            if ok in s:
                off = s[ok].flip(-1).clone()
                off[0] = -off[0]  # a mirrored motion moves the other way
                s[ok], s[mk] = off, s[mk].flip(-1)
    for k in IMAGE_KEYS:
        if k in s:
            s[k] = s[k].contiguous()
    s["label"] = s["label"].contiguous()
    return s
