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

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
def compile_only(target: GPUTarget, sink: Callable[[JITFunction, object, dict], None]) -> Iterator[None]:
    """Within the block, a Triton launch compiles for `target` and calls sink(fn, compiled,
    kwargs) instead of running; launchers accept CPU tensors (nothing touches their memory)."""
    device = -1000 - target.arch  # never a real device index
    run, at_run = JITFunction.run, Autotuner.run
    touched: set[JITFunction] = set()

    def jit_run(self, *args, grid, warmup, **kwargs):
        touched.add(self)
        compiled = run(self, *args, grid=grid, warmup=True, **kwargs)
        sink(self, compiled, kwargs)
        return compiled

    def autotuned_run(self, *args, **kwargs):
        for config in self.configs:  # all of them: a GPU compiles each when it tunes
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
        cmd = [_ptxas(arch), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", src, "-o",
               os.path.join(d, "k.o")]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"ptxas -v failed on a kernel Triton compiled: {res.stderr.strip()[:500]}")
    log = res.stderr

    def num(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "stack": num(r"(\d+) bytes stack frame"),
            "shared": num(r"(\d+) bytes smem")}


def _signature(compiled) -> str:
    sig = getattr(compiled.src, "signature", {})
    return ", ".join(str(v) for v in sig.values() if v != "constexpr")


# The launches to compile: every op through its public launcher, forward and backward, at the
# paper sizes (CReFF's C=64 at 720x960 and C=512 at 1/8 of 1024x2048, Li et al.'s K=9, the warp
# at 1/8 features with 1/4 MVs) plus an odd size (other divisibility specialisations), with and
# without a warp mask. Tensors are torch.empty: their memory is never read.
def launches(dtype: torch.dtype, small: bool = False) -> Iterator[tuple[str, Callable[[], None]]]:
    from triton_kernels.local_attention import local_attention
    from triton_kernels.sv_conv import sv_conv
    from triton_kernels.warp import warp

    def empty(*shape, grad=True):
        return torch.empty(*shape, dtype=dtype, requires_grad=grad)

    def fwd_bwd(fn, *tensors):
        out = fn(*tensors)
        out.backward(torch.empty_like(out))

    la = [(1, 64, 90, 120), (1, 5, 7, 9)] if small else [(1, 64, 720, 960), (1, 512, 128, 256), (1, 5, 7, 9)]
    for shape in la:
        q, k, v = (empty(*shape) for _ in range(3))
        yield f"local_attention {dtype_name(dtype)} {shape}", lambda q=q, k=k, v=v: fwd_bwd(
            lambda a, b, c: local_attention(a, b, c, 7), q, k, v)
    for shape, kk in ([((1, 64, 16, 32), 9), ((1, 3, 7, 9), 3)] if small else [((1, 256, 128, 256), 9), ((1, 3, 7, 9), 3)]):
        f, ker = empty(*shape), empty(shape[0], kk * kk, *shape[2:])
        yield f"sv_conv {dtype_name(dtype)} {shape} K={int(kk)}", lambda f=f, ker=ker: fwd_bwd(sv_conv, f, ker)
    warps = [((1, 64, 16, 32), (1, 2, 32, 64), (128, 256)), ((1, 3, 7, 9), (1, 2, 4, 5), (14, 18))] if small else \
        [((1, 256, 128, 256), (1, 2, 256, 512), (1024, 2048)), ((1, 3, 7, 9), (1, 2, 4, 5), (14, 18))]
    for fs, os_, frame in warps:
        for masked in (False, True):
            f, off = empty(*fs), empty(*os_)
            mask = torch.empty(os_[0], *os_[2:], dtype=dtype) if masked else None
            yield (f"warp {dtype_name(dtype)} {fs} mask={masked}",
                   lambda f=f, off=off, mask=mask, frame=frame: fwd_bwd(lambda a, b: warp(a, b, mask, frame), f, off))
            # the inference / frozen-feature case: only the offsets (or nothing) need a gradient
            f2 = empty(*fs, grad=False)
            yield (f"warp {dtype_name(dtype)} {fs} mask={masked} offsets-only grad",
                   lambda f=f2, off=off, mask=mask, frame=frame: fwd_bwd(lambda a, b: warp(a, b, mask, frame), f, off))


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def check(archs: list[int], dtypes: list[str], small: bool = False, log: Callable[[str], None] = print) -> list[Compiled]:
    """Compile every launch for every target; one row per distinct compiled kernel."""
    rows: dict[tuple, Compiled] = {}
    for arch in archs:
        target = GPUTarget("cuda", arch, 32)
        for dname in dtypes:
            for case, fn in launches(DTYPES[dname], small):
                current: list[Compiled] = []

                def sink(jit_fn, compiled, kwargs, arch=arch, case=case):
                    consts = {k: v for k, v in kwargs.items() if k in jit_fn.arg_names}
                    key = (jit_fn.__name__, arch, _signature(compiled), tuple(sorted(consts.items())),
                           compiled.metadata.num_warps)
                    if key not in rows:
                        row = Compiled(jit_fn.__name__, f"sm_{arch}", _signature(compiled), consts,
                                       compiled.metadata.num_warps, **ptxas_stats(compiled.asm["ptx"], arch))
                        rows[key] = row
                    rows[key].cases.append(case)
                    current.append(rows[key])

                t0 = time.perf_counter()
                try:
                    with compile_only(target, sink):
                        fn()
                except Exception as e:  # a kernel that does not compile: a row with the error
                    name = _failing_kernel(e)
                    rows[(name, arch, case)] = Compiled(name, f"sm_{arch}", "", {}, 0, error=f"{type(e).__name__}: {e}"[:2000],
                                                         cases=[case])
                    log(f"sm_{arch} {case}: FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    continue
                log(f"sm_{arch} {case}: {len(current)} kernel launches compiled in {time.perf_counter() - t0:.1f} s")
    return list(rows.values())


def _failing_kernel(e: Exception) -> str:
    tb = e.__traceback__
    name = "?"
    while tb is not None:  # the innermost frame of ours names the launcher
        if "triton_kernels" in tb.tb_frame.f_code.co_filename:
            name = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return name


def problems(rows: list[Compiled]) -> list[str]:
    """What is wrong: compile errors and spills."""
    out = []
    for r in rows:
        if r.error:
            out.append(f"{r.kernel} for {r.target} ({r.cases[0]}): does not compile: {r.error.splitlines()[0]}")
        elif r.spill_stores or r.spill_loads:
            out.append(f"{r.kernel} for {r.target} {r.constexprs} num_warps={r.num_warps}: spills "
                       f"{r.spill_stores} B stores / {r.spill_loads} B loads per thread")
    return out


def table(rows: list[Compiled]) -> str:
    lines = ["| kernel | target | constexprs | warps | registers | spill st/ld (B) | stack (B) | signature |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.kernel, r.target, str(r.constexprs), r.signature)):
        if r.error:
            lines.append(f"| {r.kernel} | {r.target} | | | does not compile | | | {r.error.splitlines()[0][:80]} |")
            continue
        consts = " ".join(f"{k}={v}" for k, v in r.constexprs.items())
        lines.append(f"| {r.kernel} | {r.target} | {consts} | {r.num_warps} | {r.registers} | "
                     f"{r.spill_stores}/{r.spill_loads} | {r.stack} | {r.signature} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m triton_kernels.compile_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, nargs="+", default=[80, 90], help="compute capabilities (80 = sm_80, 90 = sm_90)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--small", action="store_true", help="small shapes (quicker; the paper sizes are the default)")
    p.add_argument("--json", help="write every compiled kernel's figures here")
    p.add_argument("--table", action="store_true", help="print a Markdown table of registers and spills")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("unset TRITON_INTERPRET: the interpreter's kernels are not compiled")
    t0 = time.perf_counter()
    rows = check(a.targets, a.dtypes, a.small)
    bad = problems(rows)
    if a.table:
        print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"triton": triton.__version__, "torch": torch.__version__, "targets": a.targets, "dtypes": a.dtypes,
                       "seconds": round(time.perf_counter() - t0, 1), "kernels": [asdict(r) for r in rows],
                       "problems": bad}, f, indent=1)
    print(f"triton {triton.__version__}: {len(rows)} kernels compiled for {', '.join(f'sm_{t}' for t in a.targets)} "
          f"in {time.perf_counter() - t0:.0f} s; {len(bad)} problem(s)")
    for line in bad:
        print("  " + line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
