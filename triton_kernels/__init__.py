"""Triton kernels for mvseg, importable on their own (no mvseg import): block-motion warping,
fused local attention and spatially-variant convolution, each with forward and backward
kernels, a launcher and a torch.autograd.Function. PyTorch references live in mvseg.ops; the
argument checks both share are `triton_kernels.validate` (torch only).

On a machine without a GPU, set TRITON_INTERPRET=1 before importing this package to run the
kernels in Triton's interpreter (the tests do); `python -m triton_kernels.compile_check`
compiles them for real GPU targets without one.
"""

from triton_kernels import validate

try:
    import triton  # noqa: F401
except Exception:  # no Triton wheel for this platform (or it fails to load): only `validate`, which the references use
    AVAILABLE = False
else:
    AVAILABLE = True
    from triton_kernels.local_attention import LocalAttention, local_attention
    from triton_kernels.sv_conv import SVConv, sv_conv
    from triton_kernels.warp import BlockWarp, warp

__all__ = ["AVAILABLE", "validate", "BlockWarp", "warp", "LocalAttention", "local_attention", "SVConv", "sv_conv"]
