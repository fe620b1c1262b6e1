"""On-disk cache of decoded frames and per-frame MV offset fields.

One folder per (video, decode parameters): ``frames.npy`` (T, H, W, 3) uint8,
``offsets.npy`` (T, 2, Hc, Wc) float32, ``masks.npy`` (T, Hc, Wc) uint8, all opened
memory-mapped (DataLoader workers share the pages, nothing is copied), and ``meta.json``
(format version, source size / mtime / SHA-256, decode parameters, shapes, picture types).

An entry is written into a temporary folder and renamed into place, so a killed write is
never read as valid. A stale entry (the source changed) or a corrupt one (missing or
truncated arrays, unreadable metadata) is rebuilt with a warning, never silently used.
Caches hold plain arrays and JSON only: loading one executes no code (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvseg.video.decode import VideoReader
from mvseg.video.motion import FIELD_RULES, IFRAME_RULES, INTRA_RULES, iter_fields

CACHE_VERSION = 1
DECODE_PARAMS = {"pix_fmt": "rgb24", "rasterizer": "cell4-anchor-distance-v1", **FIELD_RULES, "threads": "slice"}


@dataclass
class CachedVideo:
    path: Path  # the source video
    frames: np.ndarray  # (T, H, W, 3) uint8, memory-mapped
    offsets: np.ndarray  # (T, 2, Hc, Wc) float32: frame t -> t-1 ("backward"); I-frames: iter_fields' rule
    masks: np.ndarray  # (T, Hc, Wc) uint8
    pict_types: str
    meta: dict

    def __len__(self) -> int:
        return len(self.pict_types)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class CacheWriteError(OSError):
    """A cache entry could not be written (nothing partial is left behind)."""


class VideoCache:
    """Cache of decoded videos under `root` (one sub-folder per video). `intra`, `iframes`: the
    intra-block and I-frame rules of the fields (`iter_fields`; "none" only to ablate them), part
    of each entry's key."""

    def __init__(self, root: str | Path, intra: str = FIELD_RULES["intra"], iframes: str = FIELD_RULES["iframes"]):
        if intra not in INTRA_RULES:
            raise ValueError(f"data.intra_blocks must be one of {INTRA_RULES}, got {intra!r}")
        if iframes not in IFRAME_RULES:
            raise ValueError(f"the I-frame rule must be one of {IFRAME_RULES}, got {iframes!r}")
        self.root = Path(root)
        self.params = {**DECODE_PARAMS, "intra": intra, "iframes": iframes}

    def entry_dir(self, video: str | Path) -> Path:
        src = Path(video).resolve()
        key = hashlib.sha1(json.dumps([str(src), self.params]).encode()).hexdigest()[:16]
        return self.root / f"{src.stem}-{key}"

    def load(self, video: str | Path, progress: bool = False) -> CachedVideo:
        """The cached decode of `video`, (re)built when missing, stale or corrupt."""
        src = Path(video)
        entry = self.entry_dir(src)
        if entry.exists():
            problem = self._check(entry, src)
            if problem is None:
                return self._open(entry, src)
            warnings.warn(f"cache entry {entry} for {src} is {problem}; rebuilding it", stacklevel=2)
        self._build(src, entry)
        return self._open(entry, src)

    # -- internals ---------------------------------------------------------------------

    def _check(self, entry: Path, src: Path) -> str | None:
        """None if the entry is valid for `src`, else what is wrong with it."""
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            return "corrupt (meta.json missing or unreadable)"
        if meta.get("version") != CACHE_VERSION or meta.get("decode") != self.params:
            return "from another mvseg cache format"
        st = src.stat()
        s = meta.get("source", {})
        if s.get("size") != st.st_size:
            return "stale (the source video changed size)"
        if s.get("mtime_ns") != st.st_mtime_ns and s.get("sha256") != file_sha256(src):
            return "stale (the source video's content changed)"
        for name, shape in meta.get("shapes", {}).items():
            try:
                arr = np.load(entry / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                return f"corrupt ({name}.npy: {e})"
            if list(arr.shape) != shape:
                return f"corrupt ({name}.npy has shape {list(arr.shape)}, expected {shape})"
        return None

    def _open(self, entry: Path, src: Path) -> CachedVideo:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {n: np.load(entry / f"{n}.npy", mmap_mode="r") for n in ("frames", "offsets", "masks")}
        return CachedVideo(src, arrays["frames"], arrays["offsets"], arrays["masks"], meta["pict_types"], meta)

    def _build(self, src: Path, entry: Path) -> None:
        reader = VideoReader(src, need_size=True)  # opened once: its header for meta.json, its frames below
        info = reader.info
        frames, types, offsets, masks = [], [], [], []
        for f, o, m in iter_fields(
            reader, iframes=self.params["iframes"], intra=self.params["intra"], prefetch=4
        ):  # decoding overlaps the rasterising (docs/conventions.md)
            frames.append(f.image)
            types.append(f.pict_type)
            offsets.append(o)
            masks.append(m.astype(np.uint8))
        st = src.stat()
        arrays = {"frames": np.stack(frames), "offsets": np.stack(offsets), "masks": np.stack(masks)}
        meta = {
            "version": CACHE_VERSION,
            "decode": self.params,
            "source": {
                "path": str(src.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": file_sha256(src),
            },
            "video": {
                "codec": info.codec,
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "has_b_frames": info.has_b_frames,
                "max_ref_frames": info.max_ref_frames,
            },
            "pict_types": "".join(types),
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            try:
                for name, arr in arrays.items():
                    np.save(tmp / f"{name}.npy", arr)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                for p in tmp.iterdir():  # data on disk before the rename makes the entry visible
                    with open(p, "rb") as fh:
                        os.fsync(fh.fileno())
            except OSError as e:  # a full disk, a quota: the other entries stay as they were
                err = CacheWriteError(
                    f"{src}: could not write its decode cache to {self.root} ({e.strerror or e}); "
                    "no entry was written and the existing ones are unchanged (free space or set data.cache_dir)"
                )
                err.errno = e.errno
                raise err from e
            old = None
            if entry.exists():
                old = entry.with_name(f".old-{entry.name}-{uuid.uuid4().hex[:8]}")
                entry.rename(old)
            tmp.rename(entry)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
