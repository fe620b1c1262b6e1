"""Compile every kernel for real GPU targets, with no GPU: the check the interpreter cannot make.

Triton's interpreter (TRITON_INTERPRET=1, what the CPU tests use) runs a kernel as NumPy and
accepts code that the real compiler rejects (a global that is not a constexpr, a dtype the
hardware cannot load, ...). This module compiles the kernels with the real compiler, down to
a cubin through ptxas, for chosen targets (default sm_80 and sm_90), *exactly as the launchers
launch them*: the launchers run for real on CPU tensors inside `compile_only`, where

- the active Triton driver is replaced by one that only names a target (no device is queried),
- `JITFunction.run` compiles and returns instead of launching (Triton's own `warmup` path, so
  the signature, the specialisations of integer arguments and pointers, the constexprs and
  num_warps are what a launch would use), and
- an autotuned kernel compiles *every* one of its configs instead of benchmarking them (on a
  GPU each config is compiled when the autotuner first meets a new key).

ptxas runs again on each kernel's PTX with ``-v`` to read its registers, spills and stack.

    python -m triton_kernels.compile_check                       # sm_80 + sm_90, fp32/fp16/bf16
    python -m triton_kernels.compile_check --json compile.json --targets 90

Exit status 1 when a kernel fails to compile or spills registers (the message names it).
Needs no GPU and no CUDA driver, only the triton wheel (which ships ptxas). Must run without
TRITON_INTERPRET=1 (the kernels must be real JIT functions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver as _driver
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from triton_kernels import validate

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default (it warns when unset); 3.7 fuses too

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPS = ("local_attention", "sv_conv", "warp")
_COMPILING = "?"  # the kernel compile_only is compiling (names it should the compiler raise)


@dataclass
class Compiled:
    """One kernel compiled for one target: what was asked of the compiler and what ptxas said."""

    kernel: str
    target: str
    signature: str  # argument types as Triton specialised them, e.g. "*fp32, i32, ..."
    constexprs: dict
    num_warps: int
    registers: int = -1
    spill_stores: int = -1  # bytes per thread
    spill_loads: int = -1
    stack: int = -1
    shared: int = -1  # bytes of static shared memory
    error: str = ""
    cases: list[str] = field(default_factory=list)  # the launches (op, dtype, shape) that asked for it


class _TargetOnly:
    """A stand-in for Triton's CUDA driver that only knows the target to compile for."""

    def __init__(self, target: GPUTarget, device: int) -> None:
        self.target, self.device = target, device

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return self.device  # a per-target key of JITFunction.device_caches, removed on exit

    def get_current_stream(self, device=None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def compile_only(
    target: GPUTarget, sink: Callable[[JITFunction, object, dict], None], all_configs: bool = True
) -> Iterator[None]:
    """Within the block, a Triton launch compiles for `target` and calls sink(fn, compiled,
    kwargs) instead of running; an autotuned launch compiles every config (or only the
    default, the first); launchers accept CPU tensors (nothing touches their memory)."""
    device = -1000 - target.arch  # never a real device index
    run, at_run = JITFunction.run, Autotuner.run
    touched: set[JITFunction] = set()

    def jit_run(self, *args, grid, warmup, **kwargs):
        touched.add(self)
        global _COMPILING
        _COMPILING = self.__name__
        compiled = run(self, *args, grid=grid, warmup=True, **kwargs)
        sink(self, compiled, kwargs)
        return compiled

    def autotuned_run(self, *args, **kwargs):
        for config in self.configs if all_configs else self.configs[:1]:  # a GPU compiles each when it tunes
            self.fn.run(*args, **kwargs, **config.all_kwargs())

    previous = _driver._active
    _driver.set_active(_TargetOnly(target, device))
    JITFunction.run, Autotuner.run = jit_run, autotuned_run
    token = validate.COMPILE_ONLY.set(True)
    try:
        yield
    finally:
        validate.COMPILE_ONLY.reset(token)
        JITFunction.run, Autotuner.run = run, at_run
        _driver._active = previous
        for fn in touched:
            fn.device_caches.pop(device, None)


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for `arch` (its wheel ships more than one)."""
    from triton.backends.nvidia import compiler as nv

    return nv.get_ptxas(arch).path


def ptxas_stats(ptx: str, arch: int) -> dict:
    """Registers, spills, stack and shared memory per thread that ptxas reports for `ptx`,
    assembled with the options Triton's own make_cubin passes (it discards that log)."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [
            _ptxas(arch),
            "-lineinfo",
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={gpu}",
            src,
            "-o",
            os.path.join(d, "k.o"),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"ptxas -v failed on a kernel Triton compiled: {res.stderr.strip()[:500]}")
    log = res.stderr

    def num(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores": num(r"(\d+) bytes spill stores"),
        "spill_loads": num(r"(\d+) bytes spill loads"),
        "stack": num(r"(\d+) bytes stack frame"),
        "shared": num(r"(\d+) bytes smem"),
    }


def _signature(compiled) -> str:
    """Argument types as compiled; ':16' marks a pointer specialised as 16-byte aligned."""
    sig = getattr(compiled.src, "signature", {})
    attrs = getattr(compiled.src, "attrs", {}) or {}
    aligned = {k[0] for k, v in attrs.items() if isinstance(k, tuple) and len(k) == 1 and "tt.divisibility" in str(v)}
    return ", ".join(
        f"{v}:16" if i in aligned and str(v).startswith("*") else str(v)
        for i, v in enumerate(sig.values())
        if v != "constexpr"
    )


# The launches to compile, through the public launchers, forward and backward: CReFF's local
# attention at K=7 (training and inference), Li et al.'s sv_conv at K=9, the warp with and
# without a mask, for features and offsets or offsets only, and inference; in every dtype and,
# for autotuned kernels, every config. Then, in fp32 and the default config only, the other
# windows the project's configs and ablations use (1, 3, 11; sv_conv K=3) and a tensor that is
# not 16-byte aligned (Triton specialises pointers on alignment). Shape integers are not
# specialised (do_not_specialize), so one size stands for all. Tensors are torch.empty.
def launches(dtype: torch.dtype, ops: tuple[str, ...] = OPS) -> Iterator[tuple[str, Callable[[], None], bool]]:
    """(case, launch, all configs?) for one dtype."""
    from triton_kernels.local_attention import local_attention
    from triton_kernels.sv_conv import sv_conv
    from triton_kernels.warp import warp

    name = dtype_name(dtype)

    def empty(*shape, grad=True, aligned=True):
        if aligned:
            return torch.empty(*shape, dtype=dtype, requires_grad=grad)
        t = torch.empty(math.prod(shape) + 1, dtype=dtype)[1:].view(shape)  # 2 or 4 bytes past an aligned address
        return t.requires_grad_(grad)

    def run(fn, *tensors):
        out = fn(*tensors)
        if out.requires_grad:
            out.backward(torch.empty_like(out))

    extra = dtype == torch.float32
    if "local_attention" in ops:
        for window, grad, aligned, all_configs in [(7, True, True, True), (7, False, True, True)] + (
            [(1, True, True, False), (3, True, True, False), (11, True, True, False), (7, True, False, False)]
            if extra
            else []
        ):
            qkv = [empty(1, 64, 24, 40, grad=grad, aligned=aligned) for _ in range(3)]
            yield (
                f"local_attention {name} K={window}{'' if grad else ' inference'}{'' if aligned else ' unaligned'}",
                lambda qkv=qkv, w=window: run(lambda a, b, c: local_attention(a, b, c, w), *qkv),
                all_configs,
            )
    if "sv_conv" in ops:
        for k, aligned, all_configs in [(9, True, True)] + ([(3, True, False), (9, False, False)] if extra else []):
            f, ker = empty(1, 64, 24, 40, aligned=aligned), empty(1, k * k, 24, 40, aligned=aligned)
            yield (
                f"sv_conv {name} K={k}{'' if aligned else ' unaligned'}",
                lambda f=f, ker=ker: run(sv_conv, f, ker),
                all_configs,
            )
    if "warp" in ops:
        for masked in (False, True):
            # features only: prop-MV / interp-MV / AR-Seg training (MVs are data); both: DFF (flow learned)
            for grads, aligned, all_configs in [
                ("features", True, True),
                ("features+offsets", True, True),
                ("none", True, True),
            ] + ([("offsets", True, False), ("features+offsets", False, False)] if extra else []):
                f = empty(1, 64, 24, 40, grad=grads.startswith("features"), aligned=aligned)
                off = torch.empty(1, 2, 48, 80, requires_grad=grads.endswith("offsets"))
                mask = torch.empty(1, 48, 80) if masked else None
                yield (
                    f"warp {name} mask={masked} grad={grads}{'' if aligned else ' unaligned'}",
                    lambda f=f, off=off, mask=mask: run(lambda a, b: warp(a, b, mask, (192, 320)), f, off),
                    all_configs,
                )


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def _check_one(arch: int, dname: str, ops: tuple[str, ...]) -> tuple[list[Compiled], list[str]]:
    """Compile every launch of one dtype for one target (a worker's share)."""
    rows: dict[tuple, Compiled] = {}
    lines = []
    target = GPUTarget("cuda", arch, 32)
    for case, fn, all_configs in launches(DTYPES[dname], ops):
        seen = 0

        def sink(jit_fn, compiled, kwargs, case=case):
            nonlocal seen
            consts = {k: v for k, v in kwargs.items() if k in jit_fn.arg_names}
            key = (jit_fn.__name__, _signature(compiled), tuple(sorted(consts.items())), compiled.metadata.num_warps)
            if key not in rows:
                rows[key] = Compiled(
                    jit_fn.__name__,
                    f"sm_{arch}",
                    _signature(compiled),
                    consts,
                    compiled.metadata.num_warps,
                    **ptxas_stats(compiled.asm["ptx"], arch),
                )
            rows[key].cases.append(case)
            seen += 1

        t0 = time.perf_counter()
        try:
            with compile_only(target, sink, all_configs):
                fn()
        except Exception as e:  # a kernel that does not compile: a row with the error
            name = _COMPILING  # the kernel the compiler was working on
            rows[(name, case)] = Compiled(
                name, f"sm_{arch}", "", {}, 0, error=f"{type(e).__name__}: {e}"[:2000], cases=[case]
            )
            lines.append(f"sm_{arch} {case}: FAILED {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
            continue
        lines.append(f"sm_{arch} {case}: {seen} kernel(s) in {time.perf_counter() - t0:.1f} s")
    return list(rows.values()), lines


def check(
    archs: list[int], dtypes: list[str], ops: tuple[str, ...] = OPS, jobs: int = 1, log: Callable[[str], None] = print
) -> list[Compiled]:
    """Compile every launch for every target and dtype; one row per distinct compiled kernel.
    `jobs` > 1 compiles (target, dtype) pairs in that many processes."""
    work = [(arch, d, tuple(ops)) for arch in archs for d in dtypes]
    if jobs <= 1:
        results = [_check_one(*w) for w in work]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_check_one, *zip(*work)))
    rows = []
    for r, lines in results:
        rows += r
        for line in lines:
            log(line)
    return rows


def problems(rows: list[Compiled]) -> list[str]:
    """What is wrong: compile errors and spills."""
    out = []
    for r in rows:
        if r.error:
            out.append(f"{r.kernel} for {r.target} ({r.cases[0]}): does not compile: {r.error.splitlines()[0]}")
        elif r.spill_stores or r.spill_loads:
            out.append(
                f"{r.kernel} for {r.target} {r.constexprs} num_warps={r.num_warps}: spills "
                f"{r.spill_stores} B stores / {r.spill_loads} B loads per thread"
            )
    return out


def table(rows: list[Compiled]) -> str:
    lines = [
        "| kernel | target | constexprs | warps | registers | spill st/ld (B) | stack (B) | signature |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.kernel, r.target, str(r.constexprs), r.signature)):
        if r.error:
            lines.append(f"| {r.kernel} | {r.target} | | | does not compile | | | {r.error.splitlines()[0][:80]} |")
            continue
        consts = " ".join(f"{k}={v}" for k, v in r.constexprs.items())
        lines.append(
            f"| {r.kernel} | {r.target} | {consts} | {r.num_warps} | {r.registers} | "
            f"{r.spill_stores}/{r.spill_loads} | {r.stack} | {r.signature} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m triton_kernels.compile_check", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--targets", type=int, nargs="+", default=[80, 90], help="compute capabilities (80 = sm_80, 90 = sm_90)"
    )
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    p.add_argument("--jobs", type=int, default=1, help="compile (target, dtype) pairs in this many processes")
    p.add_argument("--json", help="write every compiled kernel's figures here")
    p.add_argument("--table", action="store_true", help="print a Markdown table of registers and spills")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("unset TRITON_INTERPRET: the interpreter's kernels are not compiled")
    t0 = time.perf_counter()
    rows = check(a.targets, a.dtypes, tuple(a.ops), a.jobs)
    bad = problems(rows)
    if a.table:
        print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "triton": triton.__version__,
                    "torch": torch.__version__,
                    "targets": a.targets,
                    "dtypes": a.dtypes,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "kernels": [asdict(r) for r in rows],
                    "problems": bad,
                },
                f,
                indent=1,
            )
    print(
        f"triton {triton.__version__}: {len(rows)} kernels compiled for {', '.join(f'sm_{t}' for t in a.targets)} "
        f"in {time.perf_counter() - t0:.0f} s; {len(bad)} problem(s)"
    )
    for line in bad:
        print("  " + line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
