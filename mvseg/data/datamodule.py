"""CompressedVideoDataModule: the one DataModule every strategy trains and evaluates on."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mvseg.data.cache import VideoCache
from mvseg.data.folder import FolderDataset, check_labels, load_folder_dataset, read_dataset_info
from mvseg.data.samples import Augment, KeyframeSamples, SeededSampler
from mvseg.data.synthetic import CLASSES, SyntheticConfig, make_synthetic_dataset


class ForkSafeDataLoader(DataLoader):
    """A DataLoader that collects garbage before it forks its workers: a PyAV frame left in a
    reference cycle and freed by the GC in a forked worker frees its swscale context there,
    which waits forever for the parent's slice threads (the worker hangs at start-up)."""

    def __iter__(self):
        if self.num_workers > 0 and (not self.persistent_workers or self._iterator is None):
            gc.collect()  # about 0.1 s, each time workers are started
        return super().__iter__()


@dataclass
class SyntheticSpec:
    """The embedded synthetic dataset, generated at `root` by prepare_data if missing."""

    train_clips: int = 24
    val_clips: int = 12
    height: int = 128
    width: int = 256
    frames: int = 30
    annotated: tuple[int, ...] = (9, 19)
    seed: int = 0


class CompressedVideoDataModule(L.LightningDataModule):
    """Keyframe / current-frame samples with composed MV offsets, from an mvseg folder dataset.

    Args:
        root: dataset folder (mvseg folder layout, see mvseg.data.folder).
        dataset: "synthetic" (generated at `root` if missing) or "folder" (prepared already).
        keyframe_interval: L, the keyframe interval of the strategies.
        train_distances: keyframe distances drawn in training (default 0..L-1; up to L, as BDNet's tau).
        eval_distances: distances evaluated (default 0..L-1: the protocol of docs/conventions.md).
        crop_size, scale_range, hflip: training augmentation (crop in pixels, multiple of 4).
        with_next: also load the next keyframe and offsets to it (interpolating methods).
        with_gt_flow: also load the ground-truth flow to the keyframe (synthetic data; flow
            network pretraining for DFF).
        cache_dir: decoded-frame cache (default ROOT/.cache).
        intra_blocks: "fill" (the intra-block rule, docs/methods.md, as the runtime applies it)
            or "none" (intra cells keep zero motion and mask 0: an ablation of the rule; the
            streaming runtime always fills).
        mean, std: the input normalisation (RGB, frames scaled to 0..1); default: the dataset's
            own (dataset.json). Give the statistics a frozen or pretrained image model was
            trained with when training on other data (they are saved in the checkpoints).
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        dataset: str = "synthetic",
        keyframe_interval: int = 5,
        train_distances: list[int] | None = None,
        eval_distances: list[int] | None = None,
        crop_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        hflip: bool = True,
        with_next: bool = False,
        with_gt_flow: bool = False,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        intra_blocks: str = "fill",
        synthetic: SyntheticSpec | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ):
        super().__init__()
        if dataset not in ("synthetic", "folder"):
            raise ValueError(f"data.dataset must be 'synthetic' or 'folder', got {dataset!r}")
        if keyframe_interval < 1:
            raise ValueError(f"data.keyframe_interval must be >= 1, got {keyframe_interval}")
        if eval_distances is not None and (
            not eval_distances or any(not 0 <= d < keyframe_interval for d in eval_distances)
        ):
            raise ValueError(
                f"data.eval_distances must be a non-empty subset of 0..{keyframe_interval - 1}, got {eval_distances}"
            )
        # training may draw farther than L-1: BDNet draws the current frame 1..tau = L frames after its keyframe
        if train_distances is not None and (
            not train_distances or any(not 0 <= d <= keyframe_interval for d in train_distances)
        ):
            raise ValueError(
                f"data.train_distances must be a non-empty subset of 0..{keyframe_interval}, got {train_distances}"
            )
        for name, v, lo in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if v is not None and v < lo:
                raise ValueError(f"data.{name} must be >= {lo}, got {v}")
        for name, v in (("mean", mean), ("std", std)):
            if v is not None and (len(v) != 3 or (name == "std" and min(v) <= 0)):
                raise ValueError(f"data.{name} must be 3 numbers (RGB{', > 0' if name == 'std' else ''}), got {v}")
        self.mean, self.std = (
            tuple(map(float, mean)) if mean is not None else None,
            tuple(map(float, std)) if std is not None else None,
        )
        self.root = Path(root)
        self.dataset = dataset
        self.keyframe_interval = keyframe_interval
        self.train_distances = list(train_distances) if train_distances is not None else list(range(keyframe_interval))
        self.eval_distances = list(eval_distances) if eval_distances is not None else list(range(keyframe_interval))
        self.augment = Augment(tuple(crop_size) if crop_size else None, tuple(scale_range), hflip)
        self.with_next = with_next
        self.with_gt_flow = with_gt_flow
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache = VideoCache(cache_dir or self.root / ".cache", intra=intra_blocks)
        self.synthetic = synthetic or SyntheticSpec()
        self.ds: FolderDataset | None = None
        self.train_generator: torch.Generator | None = None
        self._train_sampler: SeededSampler | None = None
        self._train_resume: dict | None = None

    @property
    def num_classes(self) -> int:
        """Known before prepare_data (linked into the model by the CLI)."""
        if self.dataset == "synthetic" and not (self.root / "dataset.json").exists():
            return len(CLASSES)
        return len(read_dataset_info(self.root)["classes"])

    def prepare_data(self) -> None:
        # a folder dataset describes itself: one that exists is used as it is, whatever settings
        # made it (`mvseg data prepare synthetic --train-clips 2`, then fit on it); only a missing
        # one is generated from data.init_args.synthetic
        if self.dataset == "synthetic" and not (self.root / "dataset.json").is_file():
            s = self.synthetic
            make_synthetic_dataset(
                str(self.root),
                train_clips=s.train_clips,
                val_clips=s.val_clips,
                seed=s.seed,
                config=SyntheticConfig(height=s.height, width=s.width, frames=s.frames),
                annotated=tuple(s.annotated),
            )
        ds = load_folder_dataset(self.root)
        clips = [c for split in ds.clips.values() for c in split]
        sizes = {}
        for clip in tqdm(clips, desc="decode cache", disable=len(clips) < 4):
            sizes[clip.video] = self.cache.load(clip.video).frames.shape[1:3]
        check_labels(ds, sizes, self.cache.root / "labels-checked.json")

    def setup(self, stage: str | None = None) -> None:
        if self.ds is None:
            self.ds = load_folder_dataset(self.root)
            self.ds.mean = self.mean or self.ds.mean
            self.ds.std = self.std or self.ds.std
        L_ = self.keyframe_interval
        self.train_set = KeyframeSamples(
            self.ds,
            "train",
            self.cache,
            L_,
            self.train_distances,
            True,
            self.augment,
            self.with_next,
            self.with_gt_flow,
        )
        self.val_set = KeyframeSamples(
            self.ds, "val", self.cache, L_, self.eval_distances, False, None, self.with_next, self.with_gt_flow
        )
        if self.train_generator is None:  # seeded from the global RNG (seed_everything) once
            self.train_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))

    # The training data's randomness (order, distances, augmentation) comes from one generator
    # through SeededSampler, saved in checkpoints: a resumed fit draws the same batches as an
    # uninterrupted one. Every loader has its own generator for its workers' base seeds, so a
    # sanity check or a validation run never shifts the global RNG either.
    # A checkpoint saved inside an epoch (Ctrl-C, every N steps) also holds where that epoch
    # stands: its draw and how many of its samples were trained on; the resumed fit's first
    # training loader starts there (Lightning builds it before it restores its loops, so the
    # position travels with the DataModule's state, not as a loader state).
    def state_dict(self) -> dict:
        if self.train_generator is None:
            return {}
        state = {"train_generator": self.train_generator.get_state()}
        trainer, sampler = self.trainer, self._train_sampler
        # one process: under DDP Lightning wraps the sampler, and a mid-epoch resume is Lightning's (inexact)
        if trainer is not None and sampler is not None and trainer.training and trainer.world_size == 1:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # trained batches (this one too)
            if 0 < done < trainer.num_training_batches:
                state["train_epoch"] = sampler.state_dict(done * self.batch_size)
        return state

    def load_state_dict(self, state: dict) -> None:
        if "train_generator" in state:  # restored after setup(), before the first train loader
            if self.train_generator is None:
                self.train_generator = torch.Generator()
            self.train_generator.set_state(state["train_generator"])
        self._train_resume = state.get("train_epoch")

    def _loader(self, ds, shuffle: bool, batch: int) -> DataLoader:
        drop_last = shuffle and len(ds) > batch  # never an empty epoch on a tiny dataset
        sampler = SeededSampler(len(ds), self.train_generator) if shuffle else None
        return ForkSafeDataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
            generator=torch.Generator().manual_seed(0),
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, True, self.batch_size)
        self._train_sampler = loader.sampler
        if self._train_resume:  # a fit resumed inside an epoch: that epoch, from where it stopped
            self._train_sampler.load_state_dict(self._train_resume)
            self._train_resume = None
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
