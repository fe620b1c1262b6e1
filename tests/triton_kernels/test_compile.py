"""Every kernel compiles for real GPUs (sm_80, sm_90), exactly as its launcher launches it, with
the installed Triton and with the one torch's CUDA wheel pins (.ci/triton_pin; .ci/run makes a
venv with it and points MVSEG_PINNED_TRITON_PYTHON at its python). No GPU is needed: Triton
compiles down to a cubin through ptxas without one. The interpreter, which the other kernel
tests use, accepts code that this compiler rejects; the last test shows that this check does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = {"_la_fwd", "_la_bwd_q", "_la_bwd_kv", "_svc_fwd", "_svc_bwd_df", "_svc_bwd_dk", "_warp_fwd", "_warp_bwd"}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real JIT functions
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9 warns when unset; 1 is its (and 3.7's) default
    return env


def _pin() -> str:
    return next(
        line.strip()
        for line in (ROOT / ".ci/triton_pin").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


PYTHONS = {"installed": sys.executable, "pinned": os.environ.get("MVSEG_PINNED_TRITON_PYTHON")}


@pytest.mark.parametrize("which", list(PYTHONS))
def test_every_kernel_compiles_for_sm80_and_sm90(which, tmp_path):
    python = PYTHONS[which]
    if not python:
        pytest.skip("no pinned Triton here: .ci/run installs it and sets MVSEG_PINNED_TRITON_PYTHON")
    out = tmp_path / "compile.json"
    res = subprocess.run(
        [python, "-m", "triton_kernels.compile_check", "--jobs", "2", "--json", str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    report = json.loads(out.read_text())
    if which == "pinned":
        assert "triton==" + report["triton"] == _pin()
    assert report["problems"] == []  # no compile error, no spilled register
    rows = report["kernels"]
    for target in ("sm_80", "sm_90"):
        for dtype in ("fp32", "fp16", "bf16"):  # the first pointer is the features' / q's dtype
            got = {r["kernel"] for r in rows if r["target"] == target and r["signature"].startswith(f"*{dtype}")}
            assert got == KERNELS, (target, dtype, KERNELS - got)
    assert all(0 < r["registers"] <= 255 and r["spill_stores"] == 0 for r in rows)
    # every autotune config of the paper window (K=7) was compiled, as a GPU compiles each when tuning
    from triton_kernels.local_attention import _CONFIGS

    tiles = {
        (r["constexprs"]["TILE"], r["num_warps"])
        for r in rows
        if r["kernel"] == "_la_fwd" and r["constexprs"]["K"] == 7
    }
    assert tiles == {(c.kwargs["TILE"], c.num_warps) for c in _CONFIGS}


def test_compile_check_rejects_what_the_interpreter_runs(tmp_path):
    # the bug that kept CReFF off every GPU: a module-level float read inside a kernel
    (tmp_path / "bad_kernel.py").write_text(
        textwrap.dedent("""
        import torch, triton, triton.language as tl
        NEG = -1.0e30  # not a tl.constexpr

        @triton.jit
        def fill(x_ptr, n, BLOCK: tl.constexpr):
            i = tl.arange(0, BLOCK)
            tl.store(x_ptr + i, tl.full([BLOCK], NEG, tl.float32) * 0 - 1, mask=i < n)
    """)
    )
    script = textwrap.dedent("""
        import os, sys, torch
        sys.path.insert(0, sys.argv[1])
        from bad_kernel import fill
        x = torch.zeros(4)
        if os.environ.get("TRITON_INTERPRET") == "1":
            fill[(1,)](x, 4, BLOCK=4)
            print("interpreter ran it:", x.tolist())
        else:
            from triton.backends.compiler import GPUTarget
            from triton_kernels.compile_check import compile_only
            try:
                with compile_only(GPUTarget("cuda", 90, 32), lambda *a: None):
                    fill[(1,)](x, 4, BLOCK=4)
            except Exception as e:
                print("compiler refused it:", type(e).__name__, "global" in str(e))
    """)

    def run(env):
        return subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout

    assert "interpreter ran it: [-1.0, -1.0, -1.0, -1.0]" in run({**_env(), "TRITON_INTERPRET": "1"})
    assert "compiler refused it: CompilationError True" in run(_env())


def test_forcing_triton_on_a_cpu_without_the_interpreter_says_what_to_do():
    # was: RuntimeError: 0 active drivers
    script = (
        "import os, torch, mvseg.ops as ops; os.environ['MVSEG_KERNELS'] = 'triton'\n"
        "try:\n    ops.local_attention(*(torch.zeros(1, 2, 4, 4) for _ in range(3)))\n"
        "except RuntimeError as e:\n    print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    ).stdout
    assert out.startswith("local_attention: the Triton kernels need CUDA tensors, got tensors on cpu")
    assert "TRITON_INTERPRET=1" in out and "MVSEG_KERNELS" in out
