"""`mvseg bench video`: what motion vectors cost over plain decoding, and mvseg's decode path side
by side with motion-vector-extractor (``--peer``), every measurement in a fresh process.

Variants (each a fresh Python process that opens the video, decodes every frame and reports the
time from open to the last frame, imports excluded alike for all):

- ``plain``: PyAV, slice threads, no MVs, no RGB (the decoder alone, pixels reconstructed);
- ``plain_rgb``: the same + PyAV's own ``to_ndarray(format="rgb24")`` per frame;
- ``mvs``: `iter_frames(rgb=False)`: MVs only (mvseg skips deblocking/IDCT: same MVs);
- ``fields``: `iter_fields(rgb=False)`: MVs + offset fields (what the runtime reads);
- ``fields_bitstream``: the same without the intra-block rule (`intra="none"`): what the rule costs;
- ``fields_ahead``: the same with `prefetch=4` (decoding in a background thread, as the dataset
  cache and `mvseg predict` read videos);
- ``fields_full``: MVs + offset fields with every frame's pixels reconstructed (not converted):
  the cost of MV export and fields on the same decoder work as ``plain``;
- ``rgb``: `iter_frames()`: MVs + RGB;
- ``rgb_no_mvs``: `iter_frames(mvs=False)`: RGB only, as a per-frame model reads a video (frame
  threads: no MVs to lose);
- ``peer_mvs`` / ``peer_rgb``: motion-vector-extractor's ``VideoCap`` (its FFmpeg, frame
  threads), MVs only (``set_decode_frames(False)``) and MVs + BGR frames.

The variants run interleaved `repeats` rounds; times are each variant's best, ratios the median
over rounds of the ratio within a round (robust to load that changes during the run). Both
tools are timed the same way: a streaming pass that keeps nothing (holding every frame's MVs
would time page faults, hashing them would time SHA-1, a tenth of a decode),
then an untimed second pass in the same process digests every MV, so the table also says whether
each tool's MVs were the same in every round and pass (determinism).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mvseg.bench.common import print_table, write_json
from mvseg.video.decode import probe

# One measurement in a fresh interpreter: prints {"frames", "ms", "mvs", "digest"} as JSON. The timed
# pass keeps nothing (a streaming reader: each frame's MVs dropped once counted, as the peer's
# worker does); the digest of every MV comes from a second, untimed pass in the same process.
_MVSEG_WORKER = r"""
import hashlib, json, sys, time, warnings
warnings.simplefilter("ignore")
path, mode = sys.argv[1], sys.argv[2]
import os
if mode == "report_ref":
    os.environ["MVSEG_JIT"] = "0"  # the PyTorch reference path (as without numba)
import av, numpy as np
from mvseg.video.decode import iter_frames
if mode.startswith("fields"):
    from mvseg.video.motion import iter_fields  # (imports torch: only where needed)
    from mvseg.video.raster_jit import load
    load()  # the compiled rasteriser, loaded as an import is (the peer's extension is imported too)

def frames():
    if mode in ("fields", "fields_ahead", "fields_bitstream"):
        return (f for f, _, _ in iter_fields(path, rgb=False, prefetch=4 if mode == "fields_ahead" else 0,
                                             intra="none" if mode == "fields_bitstream" else "fill"))
    if mode == "fields_full":
        return (f for f, _, _ in iter_fields(path, rgb=lambda i, p: False))  # pixels reconstructed, not converted
    return iter_frames(path, rgb=(mode != "mvs"), mvs=(mode != "rgb_no_mvs"))

n = m = 0
if mode.startswith("report"):
    from mvseg.video.report import motion_report
    from mvseg.video import raster_jit, report_jit
    raster_jit.load(), report_jit.load()  # compiled or loaded from numba's cache untimed, as imports (None: report_ref)
    n = sum(1 for _ in iter_frames(path, mvs=False, rgb=False))
t, cpu = time.perf_counter(), time.process_time()
if mode.startswith("report"):  # `mvseg inspect --motion-report --max-distance 5`
    motion_report(path, 5)
elif mode in ("plain", "plain_rgb"):
    with av.open(path) as c:
        st = c.streams.video[0]
        st.thread_type = "SLICE"
        for f in c.decode(st):
            if mode == "plain_rgb":
                f.to_ndarray(format="rgb24")
            n += 1
else:
    for f in frames():
        n, m = n + 1, m + len(f.mvs)
ms, cpu_ms = 1e3 * (time.perf_counter() - t), 1e3 * (time.process_time() - cpu)
digest = None
if m:  # the MVs' fields, not the struct's padding bytes (which FFmpeg leaves uninitialised)
    from numpy.lib.recfunctions import repack_fields
    h = hashlib.sha1()
    for f in frames():
        h.update(repack_fields(f.mvs).tobytes())
    digest = h.hexdigest()
print(json.dumps({"frames": n, "ms": ms, "cpu_ms": cpu_ms, "mvs": m, "digest": digest}))
"""

# The peer, standalone (it may live in its own environment, without mvseg); the same two passes.
_PEER_WORKER = r"""
import hashlib, json, sys, time
import numpy as np
from mvextractor.videocap import VideoCap
path, mode = sys.argv[1], sys.argv[2]

def frames():
    cap = VideoCap()
    if not cap.open(path):
        raise SystemExit(f"{path}: motion-vector-extractor cannot open it")
    if mode == "peer_mvs":
        cap.set_decode_frames(False)
    while True:
        ret, frame, mvs, ftype = cap.read()[:4]
        if not ret:
            break
        yield mvs
    cap.release()

n = m = 0
t, cpu = time.perf_counter(), time.process_time()
for mvs in frames():
    n, m = n + 1, m + len(mvs)
ms, cpu_ms = 1e3 * (time.perf_counter() - t), 1e3 * (time.process_time() - cpu)
h = hashlib.sha1()
for mvs in frames():
    h.update(np.ascontiguousarray(mvs).tobytes())
print(json.dumps({"frames": n, "ms": ms, "cpu_ms": cpu_ms, "mvs": m, "digest": h.hexdigest()}))
"""

# Ratios also given in CPU time (the process's, all threads): on a single-threaded decode it is the
# work done, unmoved by a shared machine's stalls; with GOPs decoded in parallel it sums the threads.
CPU_RATIOS = ("mvs_over_plain", "fields_over_plain", "fields_bitstream_over_plain")
OWN = ("plain", "plain_rgb", "mvs", "fields", "fields_bitstream", "fields_ahead", "fields_full", "rgb", "rgb_no_mvs")
# `mvseg inspect --motion-report --max-distance 5`, compiled and PyTorch reference: on request only
# (--modes plain rgb report report_ref), the reference takes ~30x a decode
REPORT = ("report", "report_ref")
PEER = ("peer_mvs", "peer_rgb")
RATIOS = [
    ("fields_full_over_plain", "fields_full", "plain"),
    ("mvs_over_plain", "mvs", "plain"),
    ("fields_over_plain", "fields", "plain"),
    ("fields_bitstream_over_plain", "fields_bitstream", "plain"),
    ("fields_ahead_over_plain", "fields_ahead", "plain"),
    ("rgb_over_plain_rgb", "rgb", "plain_rgb"),
    ("rgb_no_mvs_over_plain_rgb", "rgb_no_mvs", "plain_rgb"),
    ("peer_over_mvseg_mvs", "peer_mvs", "mvs"),
    ("peer_over_mvseg_rgb", "peer_rgb", "rgb"),
    ("report_over_plain", "report", "plain"),
    ("report_over_rgb", "report", "rgb"),
    ("report_ref_over_report", "report_ref", "report"),
]


def peer_python(given: str | None = None) -> str | None:
    """The interpreter that has motion-vector-extractor: `given`, $MVSEG_PEER_PYTHON, or this one
    when it can import it; None when none can (the peer rows are then left out)."""
    for candidate in (given, os.environ.get("MVSEG_PEER_PYTHON")):
        if candidate:
            return candidate
    return sys.executable if importlib.util.find_spec("mvextractor") is not None else None


def _measure(python: str, code: str, path: str | Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([python, "-c", code, str(path), mode], capture_output=True, text=True, env=env)
    if out.returncode != 0:  # (a ValueError: the CLI says it in one line)
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit status {out.returncode}"
        raise ValueError(f"{path}: the {mode} run failed: {why}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_video(
    paths: list[str | Path], repeats: int, peer: str | None = None, modes: list[str] | None = None
) -> list[dict]:
    """One row per video: each variant's best time (ms), the ratios that matter (median of
    in-round ratios, where both variants ran) and whether each tool's MVs were identical across
    rounds. `modes`: mvseg's variants to run (default all of `OWN`)."""
    rows = []
    variants = [v for v in OWN + REPORT if (v in modes if modes else v in OWN)] + (list(PEER) if peer else [])
    for path in paths:
        probe(path)  # a file that is not a video: said here, naming it
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(max(repeats, 1)):  # interleaved: every variant sees the same machine state
            for v in variants:
                runs[v].append(
                    _measure(
                        peer if v in PEER else sys.executable, _PEER_WORKER if v in PEER else _MVSEG_WORKER, path, v
                    )
                )
        ms = {v: np.array([r["ms"] for r in runs[v]]) for v in variants}

        cpu = {v: np.array([r.get("cpu_ms", np.nan) for r in runs[v]]) for v in variants}
        row = {
            "video": Path(path).name,
            "frames": runs[variants[0]][0]["frames"],
            **{f"{v}_ms": float(ms[v].min()) for v in variants},
            **{f"{v}_cpu_ms": float(cpu[v].min()) for v in variants},
        }
        for name, a, b in RATIOS:  # median over rounds of time(a) / time(b)
            if a in ms and b in ms:
                row[name] = float(np.median(ms[a] / ms[b]))
                if name in CPU_RATIOS:  # the same with CPU time: the work, without the machine's stalls
                    row[name + "_cpu"] = float(np.median(cpu[a] / cpu[b]))
        with_mvs = [
            r
            for v in variants
            if v not in PEER + REPORT and v not in ("plain", "plain_rgb", "rgb_no_mvs")
            for r in runs[v]
        ]
        if with_mvs:
            row.update(mvseg_digests=len({r["digest"] for r in with_mvs}), mvseg_mvs=with_mvs[0]["mvs"])
        if peer:
            row.update(
                {
                    "peer_digests": len({r["digest"] for v in PEER for r in runs[v]}),
                    "peer_mvs_min": min(r["mvs"] for v in PEER for r in runs[v]),
                    "peer_mvs_max": max(r["mvs"] for v in PEER for r in runs[v]),
                }
            )
        rows.append(row)
    return rows


def make_bench_videos(out_dir: str | Path, height: int = 360, width: int = 640) -> list[Path]:
    """Two synthetic street clips at 640x360: 250 frames as mvseg prepares datasets (GOP 12,
    P-frames, one reference, PyAV's slice-threaded x264), and 240 frames with x264's defaults
    (B-frames, 3 references, keyint 250, CRF 23, frame threads: one slice a frame): how cameras
    and phones encode, and the hardest case for a decoder that exports MVs (one GOP to decode in
    order, one slice to decode a frame on)."""
    from mvseg.data.synthetic import SyntheticConfig, render_clip
    from mvseg.video.encode import encode_video

    clip = render_clip(1234, SyntheticConfig(height=height, width=width, frames=250))
    out = Path(out_dir)
    return [
        encode_video(clip.frames, out / "street_p_only.mp4", gop=12, fps=30),
        encode_video(
            clip.frames[:240],
            out / "street_x264_defaults.mp4",
            gop=250,
            fps=30,
            crf=23,
            bframes=3,
            ref=3,
            sliced_threads=False,
        ),
    ]


COLUMNS = [
    "video",
    "frames",
    "plain_ms",
    "mvs_ms",
    "fields_ms",
    "fields_bitstream_ms",
    "fields_ahead_ms",
    "fields_full_ms",
    "plain_rgb_ms",
    "rgb_ms",
    "rgb_no_mvs_ms",
    "fields_full_over_plain",
    "mvs_over_plain",
    "fields_over_plain",
    "fields_bitstream_over_plain",
    "fields_ahead_over_plain",
    "rgb_over_plain_rgb",
    "rgb_no_mvs_over_plain_rgb",
    "mvs_over_plain_cpu",
    "fields_over_plain_cpu",
    "fields_bitstream_over_plain_cpu",
    "mvseg_digests",
    "report_ms",
    "report_ref_ms",
    "report_over_plain",
    "report_over_rgb",
    "report_ref_over_report",
]
PEER_COLUMNS = ["peer_mvs_ms", "peer_rgb_ms", "peer_over_mvseg_mvs", "peer_over_mvseg_rgb", "peer_digests"]


def run_bench_video(
    paths: list[str],
    json_out: str | None,
    repeats: int,
    peer: bool = False,
    peer_python_path: str | None = None,
    modes: list[str] | None = None,
) -> list[dict]:
    python = None
    if peer:
        python = peer_python(peer_python_path)
        if python is None:
            print(
                "motion-vector-extractor is not installed: the peer rows are left out "
                "(pip install motion-vector-extractor, in its own venv if it would change numpy; "
                "then --peer-python VENV/bin/python)"
            )
    with tempfile.TemporaryDirectory() as tmp:
        if not paths:
            print("no video given: generating two 640x360 synthetic street clips (P-only, x264 defaults)")
            paths = [str(p) for p in make_bench_videos(tmp)]
        rows = bench_video(paths, repeats=repeats, peer=python, modes=modes)
    columns = [c for c in COLUMNS + (PEER_COLUMNS if python else []) if any(c in r for r in rows)]
    table = print_table(rows, columns)
    print(
        "ratios: median over rounds of the in-round ratio (peer_over_mvseg > 1: mvseg is faster); "
        "digests: distinct MV digests over all rounds and modes (1: the same MVs every time)"
    )
    write_json(json_out, {"bench": "video", "rows": rows, "table": table, "repeats": repeats, "peer_python": python})
    return rows
