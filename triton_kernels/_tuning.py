"""Launch settings: autotuning on a GPU, one fixed config under Triton's interpreter."""

from __future__ import annotations

import os

import triton

# What triton.jit reads when the kernels are defined (interpreter: kernels run as NumPy on CPU).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def autotune(configs: list[triton.Config], key: list[str], **kwargs):
    """triton.autotune over `configs`, keyed on the channel counts (and window) of a launch. The
    first config is the default: the only one under the interpreter, where timing configs means
    nothing. Every config is compiled by triton_kernels.compile_check, which fails on spills."""
    return triton.autotune(configs[:1] if INTERPRET else configs, key=key, **kwargs)


def interpreted(kernel) -> bool:
    """Whether `kernel` (jit or autotuned) runs in Triton's interpreter."""
    while hasattr(kernel, "fn") and type(kernel).__name__ != "InterpretedFunction":
        kernel = kernel.fn
    return type(kernel).__name__ == "InterpretedFunction"


def kk_pad(k: int) -> int:
    """Rows of a window tile: K*K taps padded to a power of two (masked rows move no memory)."""
    return max(2, triton.next_power_of_2(k * k))
