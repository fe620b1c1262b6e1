"""What `mvseg inspect` reports about a video: stream facts, MV statistics, MV CSV dumps,
and the motion report (are this video's MVs usable for propagation?)."""

from __future__ import annotations

import os
from collections import Counter, deque
from pathlib import Path

import numpy as np
import torch

from mvseg.ops.fields import cell_index, compose
from mvseg.video.decode import CODECS, NoMotionVectorsError, VideoReader, iter_frames, probe
from mvseg.video.motion import iter_fields

CSV_HEADER = "framenum,source,blockw,blockh,srcx,srcy,dstx,dsty,flags,motion_x,motion_y,motion_scale"
# The row format of FFmpeg's doc/examples/extract_mvs.c, so dumps can be diffed against it.
CSV_FORMAT = "%d,%2d,%2d,%2d,%4d,%4d,%4d,%4d,0x%x,%4d,%4d,%4d"


def summarize(path: str | Path, dump_mvs: str | Path | None = None) -> dict:
    """Stream facts and MV statistics; optionally write every MV to a CSV (one row per MV,
    framenum 1-based in decoder output order, like FFmpeg's extract_mvs)."""
    reader = VideoReader(path, need_size=True)  # opened once: the header here, the frames below
    info = reader.info
    if dump_mvs and not info.exports_mvs:  # no header-only CSV that looks like "no motion"
        reader.close()
        raise NoMotionVectorsError(
            path,
            f"codec {info.codec!r} carries no block motion vectors that FFmpeg exports: "
            "nothing to dump (re-encode to H.264 for the MV methods)",
        )
    types, n_mvs, frames_with = [], 0, 0
    corrupt, missing, times, rotation, interlaced = [], [], [], 0, False
    sizes: Counter = Counter()
    sources: Counter = Counter()
    # the CSV is written under a temporary name and renamed when whole (an interrupted dump leaves none)
    part = Path(f"{dump_mvs}.part") if dump_mvs else None
    out = open(part, "w") if part else None
    done = False
    try:
        if out:
            out.write(CSV_HEADER + "\n")
        for f in iter_frames(reader, rgb=False, strict_mvs=False):
            interlaced = interlaced or (f.index == 0 and f.interlaced)  # the first frame says
            types.append(f.pict_type)
            if f.corrupt:
                corrupt.append(f.index)
            if f.mvs_missing:
                missing.append(f.index)
            if f.time is not None:
                times.append(f.time)
            rotation = rotation or f.rotation
            mv = f.mvs
            if len(mv):
                frames_with += 1
                n_mvs += len(mv)
                wh, counts = np.unique(np.stack([mv["w"], mv["h"]], 1), axis=0, return_counts=True)
                sizes.update({f"{w}x{h}": int(c) for (w, h), c in zip(wh, counts)})
                s, c = np.unique(mv["source"], return_counts=True)
                sources.update({int(a): int(b) for a, b in zip(s, c)})
                if out:
                    cols = [np.full(len(mv), f.index + 1)] + [mv[k] for k in mv.dtype.names]
                    np.savetxt(out, np.stack([c.astype(np.int64) for c in cols], 1), fmt=CSV_FORMAT)
        done = True
    finally:
        reader.close()  # (the pass closed it already, unless it never started)
        if out:
            out.close()
            if done:
                os.replace(part, dump_mvs)
            else:
                part.unlink(missing_ok=True)
    return {
        "path": str(path),
        "codec": info.codec,
        "exports_mvs": info.exports_mvs,
        "interlaced": interlaced,
        "width": info.width,
        "height": info.height,
        "fps": round(info.fps, 3),
        "frames": len(types),
        "frames_declared": info.num_frames,
        "max_ref_frames": info.max_ref_frames,
        "has_b_frames": "B" in types or "b" in types,  # what the stream has, not the header's reorder flag
        "pict_types": "".join(types),
        "rotation": rotation,
        "variable_frame_rate": _variable_rate(times),
        "corrupt_frames": corrupt,
        "frames_mvs_missing": missing,
        "mvs_missing_reason": CODECS[info.codec].note if missing else None,
        "motion_vectors": n_mvs,
        "frames_with_mvs": frames_with,
        "block_sizes": dict(sorted(sizes.items())),
        "mv_sources": {str(k): v for k, v in sorted(sources.items())},
    }


def _variable_rate(times: list[float]) -> bool:
    """Whether frame durations vary by more than a tick's rounding (10 %) around their median."""
    if len(times) < 3:
        return False
    d = np.diff(np.asarray(times))
    med = float(np.median(d))
    return bool(med > 0 and np.abs(d - med).max() > 0.1 * med)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def warp_image(image: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Warp a frame [3, H, W] by a cell field; positions outside the frame take the border
    pixel (as a codec's edge extension does)."""
    from mvseg.ops.warp import warp_reference

    h, w = image.shape[-2:]
    out = warp_reference(image[None], offset[None], mask[None], frame_size=(h, w), padding_mode="border")
    return out[0]


def motion_report(path: str | Path, max_distance: int = 5, progress: bool = False) -> dict:
    """PSNR of frame t-d warped to frame t by the composed MV offsets, against decoded frame
    t, beside the PSNR of copying frame t-d, averaged over every pair of the video whose chain
    crosses no I-frame, for d = 1..max_distance. Streams: holds max_distance + 1 frames.
    Each pair's errors come from one compiled pass over the uint8 frames (`report_jit`), or,
    without numba or with MVSEG_JIT=0, from the PyTorch reference (a frame's distances warped in
    one batch). progress: a progress bar on stderr."""
    from tqdm import tqdm

    from mvseg.video import raster_jit

    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1, got {max_distance}")
    fast = None
    if raster_jit.enabled():
        from mvseg.video import report_jit

        fast = report_jit.pair_errors_many if report_jit.load() is not None else None
    window: deque = deque(maxlen=max_distance + 1)  # (image uint8 (H, W, 3), offset, mask, intra)
    warp_sum, copy_sum, pairs = np.zeros(max_distance), np.zeros(max_distance), np.zeros(max_distance, int)
    total_frames = probe(path).num_frames if progress else 0
    bar = tqdm(total=total_frames or None, desc="motion report", unit="frame", disable=not progress)
    cells = None
    try:
        for f, o, m in iter_fields(path, iframes="none", intra="none"):  # the bitstream's own motion
            bar.update()
            window.append((f.image, torch.from_numpy(o), torch.from_numpy(m), f.pict_type in ("I", "i")))
            cur = window[-1]
            if cur[3]:
                continue
            refs, offs, masks = [], [], []
            total, valid = cur[1], cur[2]
            for d in range(1, len(window)):
                if d > 1:
                    link = window[-d]
                    if link[3]:
                        break
                    total, valid = compose([total, link[1]], [valid, link[2]])
                refs.append(window[-1 - d][0])
                offs.append(total)
                masks.append(valid)
            n = len(refs)
            if not n:
                continue
            if fast is not None:
                h, w = cur[0].shape[:2]
                if cells is None or cells[0].shape[0] != h or cells[1].shape[0] != w:
                    cells = (cell_index(h, o.shape[-2]).numpy(), cell_index(w, o.shape[-1]).numpy())
                sse = fast([(r, cur[0], t.numpy(), v.numpy()) for r, t, v in zip(refs, offs, masks)], *cells)
                warp_sum[:n] += _psnr_of(sse[:, 0], cur[0].size)
                copy_sum[:n] += _psnr_of(sse[:, 1], cur[0].size)
            else:
                ref = torch.stack([_chw(r) for r in refs])  # (n, 3, H, W): frames t-1 .. t-n
                warped = _warp_images(ref, torch.stack(offs), torch.stack(masks))
                warp_sum[:n] += _psnr_batch(warped, _chw(cur[0]))
                copy_sum[:n] += _psnr_batch(ref, _chw(cur[0]))
            pairs[:n] += 1
    finally:
        bar.close()
    rows = []
    for d in range(max_distance):
        n = int(pairs[d])
        rows.append(
            {
                "distance": d + 1,
                "pairs": n,
                "psnr_warp": round(warp_sum[d] / n, 3) if n else None,
                "psnr_copy": round(copy_sum[d] / n, 3) if n else None,
            }
        )
    return {"path": str(path), "max_distance": max_distance, "rows": rows}


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float()


def _psnr_of(sse: np.ndarray, count: int) -> np.ndarray:
    mse = sse / count
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10 * np.log10(255.0**2 / mse))


def _warp_images(images: torch.Tensor, offsets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """warp_image for a batch: images (n, 3, H, W), offsets (n, 2, Hm, Wm), masks (n, Hm, Wm)."""
    from mvseg.ops.warp import warp_reference

    h, w = images.shape[-2:]
    return warp_reference(images, offsets, masks, frame_size=(h, w), padding_mode="border")


def _psnr_batch(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """_psnr of each image of a (n, 3, H, W) batch against one image b (3, H, W)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).double().numpy()
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10 * np.log10(255.0**2 / mse))
