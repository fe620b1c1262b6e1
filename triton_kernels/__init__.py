"""Triton kernels for mvseg, importable on their own (no mvseg import): block-motion warping,
fused local attention and spatially-variant convolution, each with forward and backward
kernels, a launcher and a torch.autograd.Function. PyTorch references live in mvseg.ops.

On a machine without a GPU, set TRITON_INTERPRET=1 before importing this package to run the
kernels in Triton's interpreter (the tests do).
"""

from triton_kernels.local_attention import LocalAttention, local_attention
from triton_kernels.sv_conv import SVConv, sv_conv
from triton_kernels.warp import BlockWarp, warp

__all__ = ["BlockWarp", "warp", "LocalAttention", "local_attention", "SVConv", "sv_conv"]
