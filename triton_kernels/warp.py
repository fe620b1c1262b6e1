"""Block-motion warping in Triton: bilinear backward warp of features by a coarse offset grid.

out[b, c, y, x] = bilinear(features[b, c], (x + sx * m * ox, y + sy * m * oy)), zeros outside,
where (ox, oy) is the offset of the cell containing the centre of output pixel (x, y), m its
mask, and (sx, sy) = feature size / frame size (offsets are in frame pixels). The kernel reads
the cell offset itself: no dense flow or normalised grid is ever materialised. Reference:
mvseg.ops.warp.warp_reference (F.grid_sample, bilinear, zero padding).

Rules both paths follow:
- the cell of pixel y is floor((y + 0.5) * Hm / Hf), computed in integers (exact: with features
  at 1/8 and MVs at 1/4 of the frame every pixel centre lies on a cell boundary, where a float
  quotient one ULP low would pick the other cell);
- a NaN sample position (a NaN offset, or an infinite one times a zero mask) reads zero, as a
  position outside the image does, and passes no gradient; positions are clamped to
  [-2, size + 1] (still outside) before the integer conversion, which then cannot overflow.

Forward: one program per (block of pixels, image), over channel chunks (the sample positions
and weights are computed once per pixel). Backward: feature gradients scattered with atomics
(bilinear splatting), offset gradients summed over channels then added per cell with atomics,
both into fp32 buffers (the order of float additions is not fixed: not bit-deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels import validate
from triton_kernels._tuning import autotune, interpreted

# (BLOCK_P, BLOCK_C, num_warps); the first is the default. Tiles are BLOCK_C x BLOCK_P, 4 corners:
# the backward holds gradients, values and atomics' operands at once, so it takes smaller tiles.
_FWD_CONFIGS = [
    triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=nw)
    for bp, bc, nw in ((128, 4, 4), (256, 2, 4), (128, 8, 8))
]
_BWD_CONFIGS = [
    triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=nw)
    for bp, bc, nw in ((128, 2, 4), (256, 2, 8), (256, 2, 4))
]
_SHAPE_ARGS = ["C", "Hf", "Wf", "Hm", "Wm"]


@triton.jit
def _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK: tl.constexpr):
    """Sample positions of output pixels p, with their cell index and effective scales."""
    y = p // Wf
    x = p - y * Wf
    cy = tl.minimum(((2 * y + 1).to(tl.int64) * Hm) // (2 * Hf), Hm - 1)  # the cell holding the centre
    cx = tl.minimum(((2 * x + 1).to(tl.int64) * Wm) // (2 * Wf), Wm - 1)
    cell = cy * Wm + cx
    obase = off_ptr + b * 2 * Hm * Wm
    ox = tl.load(obase + cell, mask=pm, other=0.0)
    oy = tl.load(obase + Hm * Wm + cell, mask=pm, other=0.0)
    ex = tl.full(ox.shape, sx, tl.float32)
    ey = tl.full(oy.shape, sy, tl.float32)
    if HAS_MASK:
        m = tl.load(mask_ptr + b * Hm * Wm + cell, mask=pm, other=0.0)
        ex = ex * m
        ey = ey * m
    px = x.to(tl.float32) + ox * ex
    py = y.to(tl.float32) + oy * ey
    ok = (px == px) & (py == py)  # not NaN
    px = tl.minimum(tl.maximum(tl.where(ok, px, -2.0), -2.0), Wf + 1.0)
    py = tl.minimum(tl.maximum(tl.where(ok, py, -2.0), -2.0), Hf + 1.0)
    return px, py, cell, ex, ey


@triton.jit
def _corners(px, py, pm, Hf, Wf):
    """Bilinear corners of sample positions: flat indices, in-image masks, fractions."""
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    mx0 = (x0 >= 0) & (x0 < Wf)
    mx1 = (x1 >= 0) & (x1 < Wf)
    my0 = pm & (y0 >= 0) & (y0 < Hf)
    my1 = pm & (y1 >= 0) & (y1 < Hf)
    return (
        y0 * Wf + x0,
        y0 * Wf + x1,
        y1 * Wf + x0,
        y1 * Wf + x1,
        my0 & mx0,
        my0 & mx1,
        my1 & mx0,
        my1 & mx1,
        px - x0f,
        py - y0f,
    )


@triton.jit
def _load_corners(f, i00, i01, i10, i11, m00, m01, m10, m11, cm):
    """The four bilinear corners of [BLOCK_C] channel planes at `f` (rows of pointers), fp32, 0
    outside the image or past the last channel (cm)."""
    v00 = tl.load(f + i00[None, :], mask=cm & m00[None, :], other=0.0).to(tl.float32)
    v01 = tl.load(f + i01[None, :], mask=cm & m01[None, :], other=0.0).to(tl.float32)
    v10 = tl.load(f + i10[None, :], mask=cm & m10[None, :], other=0.0).to(tl.float32)
    v11 = tl.load(f + i11[None, :], mask=cm & m11[None, :], other=0.0).to(tl.float32)
    return v00, v01, v10, v11


@autotune(_FWD_CONFIGS, key=["C"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _warp_fwd(
    feat_ptr,
    off_ptr,
    mask_ptr,
    out_ptr,
    C,
    Hf,
    Wf,
    Hm,
    Wm,
    sx,
    sy,
    HAS_MASK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    HW = Hf * Wf
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    px, py, cell, ex, ey = _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK)
    i00, i01, i10, i11, m00, m01, m10, m11, fx, fy = _corners(px, py, pm, Hf, Wf)
    w00 = ((1 - fx) * (1 - fy))[None, :]
    w01 = (fx * (1 - fy))[None, :]
    w10 = ((1 - fx) * fy)[None, :]
    w11 = (fx * fy)[None, :]
    c = tl.arange(0, BLOCK_C)
    rows = (b * C + c[:, None]) * HW  # int64 offsets of this chunk's channel planes, [BLOCK_C, 1]
    step = HW.to(tl.int64) * BLOCK_C
    for c0 in range(0, C, BLOCK_C):
        cm = (c0 + c < C)[:, None]
        v00, v01, v10, v11 = _load_corners(feat_ptr + rows, i00, i01, i10, i11, m00, m01, m10, m11, cm)
        acc = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
        tl.store(out_ptr + rows + p[None, :], acc.to(out_ptr.dtype.element_ty), mask=cm & pm[None, :])
        rows += step


@autotune(_BWD_CONFIGS, key=["C"], reset_to_zero=["dfeat_ptr", "doff_ptr"])  # both accumulate
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _warp_bwd(
    feat_ptr,
    off_ptr,
    mask_ptr,
    dout_ptr,
    dfeat_ptr,
    doff_ptr,
    C,
    Hf,
    Wf,
    Hm,
    Wm,
    sx,
    sy,
    HAS_MASK: tl.constexpr,
    NEED_DFEAT: tl.constexpr,
    NEED_DOFF: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    HW = Hf * Wf
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    px, py, cell, ex, ey = _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK)
    i00, i01, i10, i11, m00, m01, m10, m11, fx, fy = _corners(px, py, pm, Hf, Wf)
    gx = tl.zeros([BLOCK_P], tl.float32)
    gy = tl.zeros([BLOCK_P], tl.float32)
    c = tl.arange(0, BLOCK_C)
    rows = (b * C + c[:, None]) * HW
    step = HW.to(tl.int64) * BLOCK_C
    for c0 in range(0, C, BLOCK_C):
        cm = (c0 + c < C)[:, None]
        g = tl.load(dout_ptr + rows + p[None, :], mask=cm & pm[None, :], other=0.0).to(tl.float32)
        if NEED_DFEAT:  # bilinear splatting of the output gradient
            d = dfeat_ptr + rows
            tl.atomic_add(d + i00[None, :], g * ((1 - fx) * (1 - fy))[None, :], mask=cm & m00[None, :], sem="relaxed")
            tl.atomic_add(d + i01[None, :], g * (fx * (1 - fy))[None, :], mask=cm & m01[None, :], sem="relaxed")
            tl.atomic_add(d + i10[None, :], g * ((1 - fx) * fy)[None, :], mask=cm & m10[None, :], sem="relaxed")
            tl.atomic_add(d + i11[None, :], g * (fx * fy)[None, :], mask=cm & m11[None, :], sem="relaxed")
        if NEED_DOFF:  # d out / d position, summed over channels
            v00, v01, v10, v11 = _load_corners(feat_ptr + rows, i00, i01, i10, i11, m00, m01, m10, m11, cm)
            gx += tl.sum(g * ((v01 - v00) * (1 - fy)[None, :] + (v11 - v10) * fy[None, :]), axis=0)
            gy += tl.sum(g * ((v10 - v00) * (1 - fx)[None, :] + (v11 - v01) * fx[None, :]), axis=0)
        rows += step
    if NEED_DOFF:  # chain rule to the cell's offset (position = pixel + scale * mask * offset)
        obase = doff_ptr + b * 2 * Hm * Wm
        tl.atomic_add(obase + cell, gx * ex, mask=pm, sem="relaxed")
        tl.atomic_add(obase + Hm * Wm + cell, gy * ey, mask=pm, sem="relaxed")


def _grid(b: int, hw: int):
    return lambda meta: (triton.cdiv(hw, meta["BLOCK_P"]), b)  # pixel blocks on axis 0 (limit 2**31 - 1)


class BlockWarp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, offsets, mask, sx: float, sy: float):
        features, offsets = features.contiguous(), offsets.contiguous()
        mask = mask.contiguous() if mask is not None else None
        B, C, Hf, Wf = features.shape
        Hm, Wm = offsets.shape[-2:]
        out = torch.empty_like(features)
        if out.numel():
            _warp_fwd[_grid(B, Hf * Wf)](
                features,
                offsets,
                mask if mask is not None else offsets,
                out,
                C,
                Hf,
                Wf,
                Hm,
                Wm,
                float(sx),
                float(sy),
                HAS_MASK=mask is not None,
            )
        ctx.save_for_backward(features, offsets, mask)
        ctx.scales = (float(sx), float(sy))
        return out

    @staticmethod
    def backward(ctx, dout):
        features, offsets, mask = ctx.saved_tensors
        need_f, need_o = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        B, C, Hf, Wf = features.shape
        Hm, Wm = offsets.shape[-2:]
        dfeat = torch.zeros(features.shape, device=features.device, dtype=torch.float32) if need_f else None
        doff = torch.zeros(offsets.shape, device=offsets.device, dtype=torch.float32) if need_o else None
        if (need_f or need_o) and features.numel():
            dummy = dout.new_empty(1, dtype=torch.float32)
            _warp_bwd[_grid(B, Hf * Wf)](
                features,
                offsets,
                mask if mask is not None else offsets,
                dout.contiguous(),
                dfeat if need_f else dummy,
                doff if need_o else dummy,
                C,
                Hf,
                Wf,
                Hm,
                Wm,
                *ctx.scales,
                HAS_MASK=mask is not None,
                NEED_DFEAT=need_f,
                NEED_DOFF=need_o,
            )
        return dfeat.to(features.dtype) if need_f else None, doff if need_o else None, None, None, None


def warp(
    features: torch.Tensor,
    offsets: torch.Tensor,
    mask: torch.Tensor | None = None,
    frame_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """features (B, C, Hf, Wf), offsets (B, 2, Hm, Wm) in pixels of a frame of `frame_size`
    (default 4*Hm x 4*Wm), mask (B, Hm, Wm) or None -> (B, C, Hf, Wf). Features float32,
    float16 or bfloat16 (computed in fp32); offsets and mask are read as fp32. CUDA tensors, or
    CPU tensors under TRITON_INTERPRET=1."""
    h, w = validate.warp_args(features, offsets, mask, frame_size)
    validate.kernel_inputs("warp", features, offsets, mask, interpreted=interpreted(_warp_fwd))
    hf, wf = features.shape[-2:]
    # the cell grids are small: fp32 copies keep one kernel per feature dtype (gradients flow back)
    offsets = offsets.float()
    mask = mask.float() if mask is not None else None
    return BlockWarp.apply(features, offsets, mask, wf / w, hf / h)
