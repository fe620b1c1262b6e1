"""Differentiable local operations with a PyTorch reference implementation."""

from mvseg.ops.warp import warp_reference

warp = warp_reference

__all__ = ["warp", "warp_reference"]
