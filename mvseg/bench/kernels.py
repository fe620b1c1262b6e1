"""`mvseg bench kernels`: the local ops at the papers' sizes, every implementation side by side.

Every implementation computes the same function (the PyTorch reference: shift-and-accumulate
for the local attention and sv_conv, F.grid_sample for the warp; the naive unfold; on a CPU
the blocked inference form of the attention; on a GPU the Triton kernels), and each row is
checked against the reference at the benchmark size: err_out / err_grad are the largest
absolute errors of the output and of the input gradients, relative to the largest reference
value, the reference computed in fp32 on the same (rounded) inputs.

- On CUDA (--device cuda), in one process: triton.testing.do_bench for the forward (no grad)
  and for forward + backward (grad_to_none = the inputs), peak memory above the inputs
  (torch.cuda.max_memory_allocated) of each, and for the Triton rows the bytes the kernels
  must move and the effective bandwidth (triton_kernels.traffic).
- On a CPU: each (case, implementation) in a fresh process, for its own peak RSS; the median
  of `repeats` forward passes, one forward + backward.

A case or implementation that fails is a row with its error, not the end of the run. Ratios
(speed-up forward and forward + backward, memory) are against the reference in the same run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import numpy as np
import torch

from mvseg.bench.common import print_table, proc_kb, reset_peak_rss, write_json

# (name, op, shapes): CReFF's local attention (Hu et al.: C=64 at 720x960 in the CamVid set-up,
# C=64 and C=512 at 1/8 of 1024x2048), Li et al.'s propagation at 1/8 of 1024x2048 with K=9, the block
# warp at 1/8 (MVs at 1/4) and 1/4 of the frame; the logits resize at the project's sizes.
KERNEL_CASES = [
    (
        "warp C=256 1/8 of 1024x2048",
        "warp",
        {"feat": (1, 256, 128, 256), "off": (1, 2, 256, 512), "frame": (1024, 2048)},
    ),
    ("warp C=256 1/4 of 720x960", "warp", {"feat": (1, 256, 180, 240), "off": (1, 2, 180, 240), "frame": (720, 960)}),
    ("local attention C=64 720x960 K=7", "local_attention", {"qkv": (1, 64, 720, 960), "window": 7}),
    ("local attention C=64 128x256 K=7", "local_attention", {"qkv": (1, 64, 128, 256), "window": 7}),
    ("local attention C=512 128x256 K=7", "local_attention", {"qkv": (1, 512, 128, 256), "window": 7}),
    ("sv_conv C=256 9x9 1/8 of 1024x2048", "sv_conv", {"feat": (1, 256, 128, 256), "window": 9}),
    # the last step of every method: logits up-sampled to the frame (ops.resize_bilinear)
    ("resize K=9 16x32 -> 128x256 (CPU configs)", "resize", {"x": (1, 9, 16, 32), "size": (128, 256)}),
    ("resize K=9 8x batch 16x24 -> 128x192 (training)", "resize", {"x": (8, 9, 16, 24), "size": (128, 192)}),
    ("resize K=19 64x128 -> 512x1024", "resize", {"x": (1, 19, 64, 128), "size": (512, 1024)}),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# largest error relative to the largest reference value that still counts as the same function
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
FORWARD_ONLY = {"blocked"}  # inference paths: no backward to time
COLUMNS = [
    "case",
    "impl",
    "device",
    "dtype",
    "fwd_ms",
    "fwd_bwd_ms",
    "peak_mb",
    "peak_bwd_mb",
    "speedup_fwd",
    "speedup_fwd_bwd",
    "memory_vs_reference",
    "err_out",
    "err_grad",
    "check",
    "min_mb",
    "gbps",
    "note",
]


def kernel_inputs(op: str, shapes: dict, device: str, dtype: torch.dtype = torch.float32, grad: bool = False) -> tuple:
    """The arguments of one case (seeded: the same values on every device and dtype)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s, scale=1.0, dt=dtype):
        return (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dt).requires_grad_(grad)

    if op == "warp":
        return rnd(*shapes["feat"]), rnd(*shapes["off"], scale=8.0, dt=torch.float32), None, tuple(shapes["frame"])
    if op == "local_attention":
        s = shapes["qkv"]
        return rnd(*s), rnd(*s), rnd(*s), shapes["window"]
    if op == "resize":
        return rnd(*shapes["x"]), shapes["size"]
    k, f = shapes["window"], shapes["feat"]
    return rnd(*f), rnd(f[0], k * k, *f[2:])


def kernel_impls(op: str, device: str, interpreter: bool = False) -> dict[str, Callable]:
    """name -> callable for an op on a device: the reference first, then the baselines and the
    fast paths that exist there (Triton on CUDA; on a CPU only with interpreter=True, under
    TRITON_INTERPRET=1: a check of the code path, its times mean nothing)."""
    import torch.nn.functional as F

    import triton_kernels as tk
    from mvseg.ops import (
        local_attention_blocked,
        local_attention_reference,
        local_attention_unfold,
        sv_conv_reference,
        sv_conv_unfold,
    )
    from mvseg.ops.resize import resize_bilinear_matmul
    from mvseg.ops.warp import warp_reference

    impls = {
        "warp": {"reference": warp_reference},  # the reference is grid_sample on the gathered cell grid
        "local_attention": {"reference": local_attention_reference, "unfold": local_attention_unfold},
        "sv_conv": {"reference": sv_conv_reference, "unfold": sv_conv_unfold},
        "resize": {
            "reference": lambda x, size: F.interpolate(x, size, mode="bilinear", align_corners=False),
            "matmul": resize_bilinear_matmul,
        },
    }[op]
    if op == "local_attention" and device == "cpu":
        impls["blocked"] = local_attention_blocked  # the CPU inference path of ops.local_attention
    if op != "resize" and tk.AVAILABLE and (device == "cuda" or (interpreter and _interpreted())):
        impls["triton"] = {"warp": tk.warp, "local_attention": tk.local_attention, "sv_conv": tk.sv_conv}[op]
    return impls


def _interpreted() -> bool:
    import sys

    from triton_kernels._tuning import interpreted

    return interpreted(sys.modules["triton_kernels.warp"]._warp_fwd)


def unfold_bytes(op: str, shapes: dict) -> int:
    """Bytes of the unfolded tensors the naive baseline builds."""
    if op == "local_attention":
        b, c, h, w = shapes["qkv"]
        return 2 * b * c * shapes["window"] ** 2 * h * w * 4  # unfolded k and v
    if op == "sv_conv":
        b, c, h, w = shapes["feat"]
        return b * c * shapes["window"] ** 2 * h * w * 4
    return 0


def traffic_bytes(op: str, shapes: dict, dtype: torch.dtype) -> tuple[float, float]:
    """(forward, forward + backward) bytes the Triton kernels must move (triton_kernels.traffic)."""
    from triton_kernels import traffic

    s = torch.finfo(dtype).bits // 8
    if op == "local_attention":
        b, c, h, w = shapes["qkv"]
        rows = lambda train: traffic.local_attention(b, c, c, h, w, shapes["window"], s, train)  # noqa: E731
    elif op == "sv_conv":
        b, c, h, w = shapes["feat"]
        rows = lambda train: traffic.sv_conv(b, c, h, w, shapes["window"], s, train)  # noqa: E731
    else:
        b, c, h, w = shapes["feat"]
        rows = lambda train: traffic.warp(b, c, h, w, *shapes["off"][2:], s, train)  # noqa: E731
    return sum(r.minimum for r in rows(False)), sum(r.minimum for r in rows(True))


def _tensors(args) -> list[torch.Tensor]:
    return [a for a in args if torch.is_tensor(a)]


def _reference(op: str, shapes: dict, device: str, dtype: torch.dtype) -> dict:
    """The fp32 reference on the case's inputs rounded to `dtype`: output, the output gradient
    used everywhere, and the input gradients."""
    args = [
        a.detach().float().requires_grad_() if torch.is_tensor(a) else a
        for a in kernel_inputs(op, shapes, device, dtype, grad=False)
    ]
    fn = kernel_impls(op, device)["reference"]
    out = fn(*args)
    g = torch.randn(out.shape, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
    grads = torch.autograd.grad(out, _tensors(args), g.to(out.dtype))
    return {"out": out.detach(), "g": g, "grads": [t.detach() for t in grads]}


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    if ref.numel() == 0:
        return 0.0
    return float((got.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _errors(out: torch.Tensor, grads, ref: dict, dtype: torch.dtype) -> dict:
    row = {"err_out": _rel_err(out, ref["out"])}
    if grads is not None:
        row["err_grad"] = max(_rel_err(a, b) for a, b in zip(grads, ref["grads"]))
    worst = max(row.values())
    row["check"] = "ok" if worst <= TOLERANCE[dtype] else f"MISMATCH (> {TOLERANCE[dtype]:g})"
    return row


class _Cuda:
    """Timing and memory on a GPU: triton.testing.do_bench and the caching allocator's peak."""

    device = "cuda"

    @staticmethod
    def time_ms(fn: Callable[[], object], grad_to_none=None, repeats: int = 3) -> float:
        from triton.testing import do_bench

        return float(do_bench(fn, grad_to_none=grad_to_none))

    @staticmethod
    def peak_mb(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20


class _CpuTimer:
    """In-process timing on a CPU (the tests' stand-in for _Cuda); no memory figure."""

    device = "cpu"

    @staticmethod
    def time_ms(fn: Callable[[], object], grad_to_none=None, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats):
            for t in grad_to_none or []:
                t.grad = None
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return float(np.median(times))

    @staticmethod
    def peak_mb(fn: Callable[[], object]) -> float:
        fn()
        return float("nan")


def measure_in_process(
    op: str, shapes: dict, impl: str, fn: Callable, dtype: torch.dtype, ref: dict, dev, repeats: int = 3
) -> dict:
    """One implementation, in this process: forward and forward + backward times, peak memory of
    each, and its errors against the reference."""
    args = kernel_inputs(op, shapes, dev.device, dtype, grad=False)
    row: dict = {}
    with torch.no_grad():
        fn(*args)  # warm-up: compiling and autotuning are not what a frame pays (nor their memory)
        row["peak_mb"] = dev.peak_mb(lambda: fn(*args))
        row["fwd_ms"] = dev.time_ms(lambda: fn(*args), repeats=repeats)
        out = fn(*args)
    grads = None
    if impl not in FORWARD_ONLY:
        gargs = kernel_inputs(op, shapes, dev.device, dtype, grad=True)
        leaves = _tensors(gargs)
        g = ref["g"].to(dtype)

        def step():
            fn(*gargs).backward(g)

        step()  # warm-up, as above
        for t in leaves:
            t.grad = None
        row["peak_bwd_mb"] = dev.peak_mb(step)
        row["fwd_bwd_ms"] = dev.time_ms(step, grad_to_none=leaves, repeats=repeats)
        for t in leaves:
            t.grad = None
        step()
        grads = [t.grad for t in leaves]
    row.update(_errors(out, grads, ref, dtype))
    return row


def _cpu_child(conn, op: str, shapes: dict, impl: str, repeats: int) -> None:
    """In a fresh process: peak RSS above the inputs during one forward pass, the median of
    `repeats` forward times, one forward + backward, and the errors against the reference."""
    try:
        conn.send(_cpu_measure(op, shapes, impl, repeats))
    except Exception as e:  # the row says what failed
        conn.send({"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]})


def _cpu_measure(op: str, shapes: dict, impl: str, repeats: int) -> dict:
    fn = kernel_impls(op, "cpu")[impl]
    args = kernel_inputs(op, shapes, "cpu")
    reset_peak_rss()
    base = proc_kb("VmRSS")
    with torch.no_grad():
        t0 = time.perf_counter()
        out = fn(*args)
        first = time.perf_counter() - t0
    peak = proc_kb("VmHWM")
    fwd = [first]
    # sub-millisecond ops (resize) are timed over enough calls to last ~20 ms a measurement
    inner = 1 if first > 0.02 else max(1, min(1000, int(0.02 / max(first, 1e-6))))
    with torch.no_grad():
        for _ in range(repeats - 1 if inner == 1 else repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn(*args)
            fwd.append((time.perf_counter() - t0) / inner)
    if inner > 1:
        fwd = fwd[1:]  # the first call (caches, allocator) is not what a stream pays per frame
    row = {"fwd_ms": 1e3 * float(np.median(fwd)), "fwd_bwd_ms": None, "peak_mb": (peak - base) / 1024}
    ref = _reference(op, shapes, "cpu", torch.float32)
    grads = None
    if impl not in FORWARD_ONLY:
        gargs = kernel_inputs(op, shapes, "cpu", grad=True)
        t0 = time.perf_counter()
        fn(*gargs).backward(ref["g"])
        row["fwd_bwd_ms"] = 1e3 * (time.perf_counter() - t0)
        grads = [t.grad for t in _tensors(gargs)]
    row.update(_errors(out, grads, ref, torch.float32))
    return row


def _in_subprocess(op: str, shapes: dict, impl: str, repeats: int, timeout: float) -> dict:
    import multiprocessing as mp

    # a fresh process per case ("spawn": forking a process whose torch thread pools are running
    # can deadlock), so each peak-memory figure is the case's own
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_cpu_child, args=(child, op, shapes, impl, repeats))
    proc.start()
    row = parent.recv() if parent.poll(timeout) else {"error": f"timed out after {timeout} s"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    return row


def bench_kernels(
    device: str = "auto",
    dtypes: tuple[str, ...] = ("fp32",),
    repeats: int = 3,
    max_unfold_gb: float | None = None,
    timeout: float = 1800,
    in_process: bool | None = None,
) -> list[dict]:
    """Every case x implementation x dtype, one row each (see the module docstring).
    in_process: measure in this process (default on CUDA; on a CPU a fresh process per row)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch")
    in_process = device == "cuda" if in_process is None else in_process
    if max_unfold_gb is None:  # what the naive baseline may allocate
        max_unfold_gb = 0.25 * torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else 8.0
    dev = _Cuda if device == "cuda" else _CpuTimer
    rows = []
    for name, op, shapes in KERNEL_CASES:
        for dname in dtypes if op != "resize" else ("fp32",):
            dtype = DTYPES[dname]
            if device == "cpu" and dtype != torch.float32 and not in_process:
                continue  # the CPU rows compare fp32 paths
            ref = None
            for impl, fn in kernel_impls(op, device, interpreter=in_process).items():
                row = {"case": name, "impl": impl, "device": device, "dtype": dname}
                rows.append(row)
                if impl == "unfold" and unfold_bytes(op, shapes) > max_unfold_gb * 2**30:
                    row["note"] = f"skipped: the unfold needs {unfold_bytes(op, shapes) / 2**30:.1f} GB"
                    continue
                try:
                    if not in_process:
                        row.update(_in_subprocess(op, shapes, impl, repeats, timeout))
                        continue
                    ref = ref or _reference(op, shapes, device, dtype)
                    row.update(measure_in_process(op, shapes, impl, fn, dtype, ref, dev, repeats))
                    if impl == "triton":
                        fwd_b, both_b = traffic_bytes(op, shapes, dtype)
                        row["min_mb"] = fwd_b / 1e6
                        row["gbps"] = fwd_b / row["fwd_ms"] / 1e6  # effective bandwidth of the forward
                except Exception as e:  # one failure is one row
                    row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    row["note"] = "failed: " + row["error"]
                    traceback.print_exc()
                finally:
                    if device == "cuda":
                        torch.cuda.empty_cache()
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    """Speed-ups and memory against the reference of the same case and dtype, within one run."""
    ref = {(r["case"], r["dtype"]): r for r in rows if r["impl"] == "reference" and "fwd_ms" in r}
    for r in rows:
        base = ref.get((r["case"], r["dtype"]))
        if not base or "fwd_ms" not in r or r is base:
            continue
        r["speedup_fwd"] = base["fwd_ms"] / r["fwd_ms"]
        if r.get("fwd_bwd_ms") and base.get("fwd_bwd_ms"):
            r["speedup_fwd_bwd"] = base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
        if np.isfinite(r.get("peak_mb", np.nan)) and np.isfinite(base.get("peak_mb", np.nan)):
            r["memory_vs_reference"] = r["peak_mb"] / max(base["peak_mb"], 1e-3)


def plan(device: str, dtypes: tuple[str, ...]) -> list[dict]:
    """What a run would measure, without running anything heavy (--dry-run): the rows, the
    unfold sizes and the Triton kernels' minimum traffic per case."""
    rows = []
    for name, op, shapes in KERNEL_CASES:
        impls = (
            ["reference", "unfold", "triton"]
            if op in ("local_attention", "sv_conv")
            else (["reference", "triton"] if op == "warp" else ["reference", "matmul"])
        )
        for dname in dtypes if op != "resize" else ("fp32",):
            for impl in impls:
                row = {"case": name, "impl": impl, "device": device, "dtype": dname, "note": "planned"}
                if impl == "triton":
                    row["min_mb"] = traffic_bytes(op, shapes, DTYPES[dname])[0] / 1e6
                if impl == "unfold":
                    row["note"] = f"planned (unfold {unfold_bytes(op, shapes) / 2**30:.1f} GB)"
                rows.append(row)
    return rows


def run_bench_kernels(
    json_out: str | None, device: str, dtypes: tuple[str, ...], repeats: int, dry_run: bool
) -> list[dict]:
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"--dtype: unknown {unknown}; choose from {list(DTYPES)}")
    rows = plan(device, dtypes) if dry_run else bench_kernels(device, dtypes, repeats)
    table = print_table(rows, COLUMNS)
    env = {
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        pass
    write_json(json_out, {"bench": "kernels", "dry_run": dry_run, **env, "rows": rows, "table": table})
    return rows
