"""`mvseg fuzz`: mutated video files through `mvseg inspect`, with a time budget.

Camera footage arrives truncated, bit-flipped, spliced. Each case here takes a valid seed
video (H.264 in MP4 / Matroska / a raw stream, with and without B-frames, sizes that are not
multiples of 16, or the user's own files), mutates its bytes, and runs
``mvseg inspect CASE --json OUT --motion-report`` (probe, full decode with MV export, MV
rasterisation, offset composition, warping) in a forked child process, so that a crash of
the decoder, an uncaught exception or a hang is caught and classified instead of taking the
fuzzer down:

- ``ok``: exit 0 (the mutation was harmless or decoded around);
- ``error``: exit 2 with a one-line ``mvseg inspect: error:`` naming the file (the contract);
- ``unnamed``: exit 2 but the message does not name the file;
- ``crash``: an uncaught exception (traceback) or death by a signal (segfault, abort);
- ``hang``: still running after ``timeout_s`` (killed).

Cases of the last three kinds are findings: their bytes are kept under ``OUT/findings`` with
a JSON line each, to reproduce with ``mvseg inspect FILE``. Mutations are drawn from a seeded
generator, so a run is reproducible case by case (``--seed``).
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FINDINGS = ("unnamed", "crash", "hang")
INTERESTING = np.array([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x03, 0x47], np.uint8)  # 0x000003: emulation prevention


# ----------------------------------------------------------------------------- mutators


def _span(rng: np.random.Generator, n: int, frac: float = 0.1) -> tuple[int, int]:
    size = int(rng.integers(1, max(2, int(n * frac))))
    start = int(rng.integers(0, max(1, n - size)))
    return start, start + size


def bitflip(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    a = np.frombuffer(data, np.uint8).copy()
    for pos in rng.integers(0, len(a), int(rng.integers(1, 17))):
        a[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
    return a.tobytes()


def interesting_bytes(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    a = np.frombuffer(data, np.uint8).copy()
    pos = rng.integers(0, len(a), int(rng.integers(1, 9)))
    a[pos] = rng.choice(INTERESTING, len(pos))
    return a.tobytes()


def random_run(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    s, e = _span(rng, len(data), 0.02)
    return data[:s] + rng.integers(0, 256, e - s, dtype=np.uint8).tobytes() + data[e:]


def zero_run(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    s, e = _span(rng, len(data), 0.05)
    return data[:s] + bytes(e - s) + data[e:]


def delete_chunk(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    s, e = _span(rng, len(data))
    return data[:s] + data[e:]


def duplicate_chunk(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    s, e = _span(rng, len(data))
    at = int(rng.integers(0, len(data)))
    return data[:at] + data[s:e] + data[at:]


def truncate(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def splice(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    return data[: int(rng.integers(0, len(data)))] + other[int(rng.integers(0, len(other))) :]


MUTATORS: dict[str, Callable[[bytes, np.random.Generator, bytes], bytes]] = {
    f.__name__: f
    for f in (bitflip, interesting_bytes, random_run, zero_run, delete_chunk, duplicate_chunk, truncate, splice)
}


# ----------------------------------------------------------------------------- seeds


def make_seed_videos(folder: str | Path) -> list[Path]:
    """Small valid videos of the kinds mvseg reads: MP4 (no B-frames; B-frames with 3
    references), Matroska, a raw H.264 stream, and a size that is not a multiple of 16."""
    from mvseg.video.encode import encode_video, remux

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(12)[:, None, None]
    yy, xx = np.mgrid[0:64, 0:96]

    def frames(h: int, w: int) -> np.ndarray:  # a moving pattern: real MVs
        y, x = yy[:h, :w][None], xx[:h, :w][None]
        r = np.sin((x - 2 * t) / 5.0) * 60 + 120
        g = (np.cos((y - t) / 4.0) * 60 + 120) * np.ones_like(r)
        b = ((x + y - 3 * t) % 32) * 6.0 * np.ones_like(r)
        return np.stack([r, g, b], -1).astype(np.uint8)

    seeds = [
        encode_video(frames(64, 96), folder / "p.mp4", gop=6, crf=23),
        encode_video(frames(64, 96), folder / "b.mp4", gop=12, crf=23, bframes=2, ref=3),
        encode_video(frames(60, 90), folder / "odd.mp4", gop=4, crf=23),
    ]
    for fmt, name in (("matroska", "m.mkv"), ("h264", "raw.h264")):
        seeds.append(remux(seeds[0], folder / name, fmt))
    return seeds


# ----------------------------------------------------------------------------- one case


@dataclass
class Case:
    index: int
    seed: str
    mutator: str
    status: str  # ok | error | unnamed | crash | hang
    rc: int | None
    seconds: float
    message: str


def run_forked(target: Callable[[], int], log: Path, timeout_s: float) -> tuple[str, int | None, float]:
    """Run `target()` in a forked child (stdout and stderr to `log`); returns (how it ended:
    'exit' | 'signal' | 'exception' | 'hang', exit code or signal number, seconds)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # new Python streams on them too: the parent's may be a capture object (pytest)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            faulthandler.enable(file=sys.stderr)  # a crash's Python stack goes to the case's log
            # OpenMP's thread pool does not survive fork(): a parent that ran torch ops in
            # parallel leaves the child's first parallel op waiting forever (torch's own
            # DataLoader workers do the same)
            import torch

            torch.set_num_threads(1)
            code = int(target() or 0)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:
            traceback.print_exc()
            code = 70  # EX_SOFTWARE: an exception nobody turned into a message
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            secs = time.perf_counter() - t0
            if os.WIFSIGNALED(status):
                return "signal", os.WTERMSIG(status), secs
            code = os.WEXITSTATUS(status)
            return ("exception" if code == 70 else "exit"), code, secs
        if time.perf_counter() - t0 > timeout_s:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang", None, time.perf_counter() - t0
        time.sleep(0.002)


def inspect_target(
    path: Path, out_json: Path, motion_report: bool, entry: Callable[[list[str]], int]
) -> Callable[[], int]:
    """`mvseg inspect` on one case, through `entry` (the console script's main, which the CLI
    passes in: this module does not import the CLI it tests)."""

    def run() -> int:
        args = ["inspect", str(path), "--json", str(out_json)]
        if motion_report:
            args += ["--motion-report", "--max-distance", "3"]
        return entry(args)

    return run


def classify(path: Path, how: str, code: int | None, log_text: str) -> tuple[str, str]:
    """(status, message) of one case from how its child ended."""
    last = log_text.strip().splitlines()[-1] if log_text.strip() else ""
    if how == "hang":
        return "hang", "killed after the timeout"
    if how == "signal":
        return "crash", f"killed by {signal.Signals(code).name}"
    if how == "exception":
        return "crash", last
    if code == 0:
        return "ok", ""
    errors = [line for line in log_text.splitlines() if line.startswith("mvseg inspect: error:")]
    if code == 2 and errors:
        return ("error" if path.name in errors[-1] else "unnamed"), errors[-1]
    return "crash", f"exit {code}: {last}"


# ----------------------------------------------------------------------------- the run


def run_fuzz(
    out_dir: str | Path,
    *,
    budget_s: float = 60.0,
    max_cases: int | None = None,
    seed: int = 0,
    timeout_s: float = 10.0,
    videos: Sequence[str | Path] = (),
    motion_report: bool = True,
    entry: Callable[[list[str]], int],
    target_factory: Callable[..., Callable[[], int]] = inspect_target,
    progress: bool = False,
    max_findings: int | None = None,
) -> dict:
    """Fuzz until `budget_s` seconds, `max_cases` cases or `max_findings` findings; returns the summary (also written
    to OUT/summary.json) with the counts per status and per mutator, and the findings."""
    out = Path(out_dir)
    work, found = out / "work", out / "findings"
    for d in (work, found):
        d.mkdir(parents=True, exist_ok=True)
    if target_factory is inspect_target:  # imported once here, not in every forked child
        importlib.import_module("mvseg.video.report")
    seeds = [Path(v) for v in videos] or make_seed_videos(out / "seeds")
    blobs = {s: s.read_bytes() for s in seeds}
    rng = np.random.default_rng(seed)
    names = list(MUTATORS)
    cases: list[Case] = []
    t_end = time.perf_counter() + budget_s
    n_found = 0
    while (
        time.perf_counter() < t_end
        and (max_cases is None or len(cases) < max_cases)
        and (max_findings is None or n_found < max_findings)
    ):
        i = len(cases)
        src = seeds[int(rng.integers(len(seeds)))]
        other = blobs[seeds[int(rng.integers(len(seeds)))]]
        mut = names[int(rng.integers(len(names)))]
        data = MUTATORS[mut](blobs[src], rng, other)
        case = work / f"case{src.suffix}"  # one file, overwritten: the name the message must carry
        case.write_bytes(data)
        log = work / "log.txt"
        how, code, secs = run_forked(target_factory(case, work / "report.json", motion_report, entry), log, timeout_s)
        status, message = classify(case, how, code, log.read_text(errors="replace") if log.exists() else "")
        cases.append(Case(i, src.name, mut, status, code, round(secs, 3), message[:500]))
        if status in FINDINGS:
            n_found += 1
            keep = found / f"{i:05d}-{status}-{mut}-{src.stem}{src.suffix}"
            keep.write_bytes(data)
            with open(found / "findings.jsonl", "a") as f:
                f.write(json.dumps({**asdict(cases[-1]), "file": str(keep)}) + "\n")
        if progress and (i + 1) % 25 == 0:
            c = Counter(x.status for x in cases)
            print(f"  {i + 1} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())), file=sys.stderr)
    by_status = Counter(c.status for c in cases)
    by_mutator: dict[str, dict[str, int]] = {}
    for c in cases:
        by_mutator.setdefault(c.mutator, Counter())[c.status] += 1
    summary = {
        "cases": len(cases),
        "seconds": round(sum(c.seconds for c in cases), 2),
        "seed": seed,
        "timeout_s": timeout_s,
        "seeds": [s.name for s in seeds],
        "by_status": {k: by_status.get(k, 0) for k in ("ok", "error", *FINDINGS)},
        "by_mutator": {k: dict(v) for k, v in sorted(by_mutator.items())},
        "slowest_s": max((c.seconds for c in cases), default=0.0),
        "findings": [asdict(c) for c in cases if c.status in FINDINGS],
        "errors_seen": dict(Counter(_error_kind(c.message) for c in cases if c.status == "error").most_common(12)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _error_kind(message: str) -> str:
    """The problem part of an error line, without the path: 'not a readable video container'."""
    text = message.split("error:", 1)[-1]
    text = text.split(": ", 1)[-1] if ": " in text else text
    return re.sub(r"\d+", "N", text.split(" (")[0].strip())[:80]
