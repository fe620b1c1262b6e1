"""Block-motion warping in Triton: bilinear backward warp of features by a coarse offset grid.

out[b, c, y, x] = bilinear(features[b, c], (x + sx * m * ox, y + sy * m * oy)), zeros outside,
where (ox, oy) is the offset of the cell containing the centre of output pixel (x, y), m its
mask, and (sx, sy) = feature size / frame size (offsets are in frame pixels). The kernel reads
the cell offset itself: no dense flow or normalised grid is ever materialised.

Forward: one program per (batch, block of pixels), looping over channel chunks (the sample
positions and weights are computed once per pixel). Backward: feature gradients scattered
with atomics (bilinear splatting), offset gradients reduced per cell with atomics, both into
fp32 buffers. Reference: mvseg.ops.warp.warp_reference (F.grid_sample semantics,
align_corners=True, zero padding).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK: tl.constexpr):
    """Sample position of output pixels p, with their cell index and effective scales."""
    y = p // Wf
    x = p % Wf
    cy = tl.minimum(((y.to(tl.float32) + 0.5) * Hm / Hf).to(tl.int32), Hm - 1)
    cx = tl.minimum(((x.to(tl.float32) + 0.5) * Wm / Wf).to(tl.int32), Wm - 1)
    cell = cy * Wm + cx
    obase = off_ptr + b.to(tl.int64) * 2 * Hm * Wm
    ox = tl.load(obase + cell, mask=pm, other=0.0).to(tl.float32)
    oy = tl.load(obase + Hm * Wm + cell, mask=pm, other=0.0).to(tl.float32)
    ex = tl.full(ox.shape, sx, tl.float32)
    ey = tl.full(oy.shape, sy, tl.float32)
    if HAS_MASK:
        m = tl.load(mask_ptr + b.to(tl.int64) * Hm * Wm + cell, mask=pm, other=0.0).to(tl.float32)
        ex = ex * m
        ey = ey * m
    return x.to(tl.float32) + ox * ex, y.to(tl.float32) + oy * ey, cell, ex, ey


@triton.jit
def _corners(px, py, pm, Hf, Wf):
    """Bilinear corners of sample positions: flat indices, in-image masks, fractions."""
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    m00 = pm & (x0 >= 0) & (x0 < Wf) & (y0 >= 0) & (y0 < Hf)
    m01 = pm & (x1 >= 0) & (x1 < Wf) & (y0 >= 0) & (y0 < Hf)
    m10 = pm & (x0 >= 0) & (x0 < Wf) & (y1 >= 0) & (y1 < Hf)
    m11 = pm & (x1 >= 0) & (x1 < Wf) & (y1 >= 0) & (y1 < Hf)
    return y0 * Wf + x0, y0 * Wf + x1, y1 * Wf + x0, y1 * Wf + x1, m00, m01, m10, m11, px - x0f, py - y0f


@triton.jit
def _warp_fwd(feat_ptr, off_ptr, mask_ptr, out_ptr, C, Hf, Wf, Hm, Wm, sx, sy,
              HAS_MASK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    HW = Hf * Wf
    pm = p < HW
    px, py, cell, ex, ey = _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK)
    i00, i01, i10, i11, m00, m01, m10, m11, fx, fy = _corners(px, py, pm, Hf, Wf)
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        base = (b.to(tl.int64) * C + c[:, None]) * HW
        v00 = tl.load(feat_ptr + base + i00[None, :], mask=cm[:, None] & m00[None, :], other=0.0).to(tl.float32)
        v01 = tl.load(feat_ptr + base + i01[None, :], mask=cm[:, None] & m01[None, :], other=0.0).to(tl.float32)
        v10 = tl.load(feat_ptr + base + i10[None, :], mask=cm[:, None] & m10[None, :], other=0.0).to(tl.float32)
        v11 = tl.load(feat_ptr + base + i11[None, :], mask=cm[:, None] & m11[None, :], other=0.0).to(tl.float32)
        acc = v00 * w00[None, :] + v01 * w01[None, :] + v10 * w10[None, :] + v11 * w11[None, :]
        tl.store(out_ptr + base + p[None, :], acc, mask=cm[:, None] & pm[None, :])


@triton.jit
def _warp_bwd(feat_ptr, off_ptr, mask_ptr, dout_ptr, dfeat_ptr, doff_ptr, C, Hf, Wf, Hm, Wm, sx, sy,
              HAS_MASK: tl.constexpr, NEED_DFEAT: tl.constexpr, NEED_DOFF: tl.constexpr,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    HW = Hf * Wf
    pm = p < HW
    px, py, cell, ex, ey = _sample_pos(off_ptr, mask_ptr, b, p, pm, Hf, Wf, Hm, Wm, sx, sy, HAS_MASK)
    i00, i01, i10, i11, m00, m01, m10, m11, fx, fy = _corners(px, py, pm, Hf, Wf)
    gx = tl.zeros([BLOCK_P], tl.float32)
    gy = tl.zeros([BLOCK_P], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        base = (b.to(tl.int64) * C + c[:, None]) * HW
        g = tl.load(dout_ptr + base + p[None, :], mask=cm[:, None] & pm[None, :], other=0.0).to(tl.float32)
        if NEED_DFEAT:  # bilinear splatting of the output gradient
            tl.atomic_add(dfeat_ptr + base + i00[None, :], g * ((1 - fx) * (1 - fy))[None, :], mask=cm[:, None] & m00[None, :])
            tl.atomic_add(dfeat_ptr + base + i01[None, :], g * (fx * (1 - fy))[None, :], mask=cm[:, None] & m01[None, :])
            tl.atomic_add(dfeat_ptr + base + i10[None, :], g * ((1 - fx) * fy)[None, :], mask=cm[:, None] & m10[None, :])
            tl.atomic_add(dfeat_ptr + base + i11[None, :], g * (fx * fy)[None, :], mask=cm[:, None] & m11[None, :])
        if NEED_DOFF:  # d out / d position, summed over channels
            v00 = tl.load(feat_ptr + base + i00[None, :], mask=cm[:, None] & m00[None, :], other=0.0).to(tl.float32)
            v01 = tl.load(feat_ptr + base + i01[None, :], mask=cm[:, None] & m01[None, :], other=0.0).to(tl.float32)
            v10 = tl.load(feat_ptr + base + i10[None, :], mask=cm[:, None] & m10[None, :], other=0.0).to(tl.float32)
            v11 = tl.load(feat_ptr + base + i11[None, :], mask=cm[:, None] & m11[None, :], other=0.0).to(tl.float32)
            gx += tl.sum(g * ((v01 - v00) * (1 - fy)[None, :] + (v11 - v10) * fy[None, :]), axis=0)
            gy += tl.sum(g * ((v10 - v00) * (1 - fx)[None, :] + (v11 - v01) * fx[None, :]), axis=0)
    if NEED_DOFF:  # chain rule to the cell's offset (position = pixel + scale * mask * offset)
        obase = doff_ptr + b.to(tl.int64) * 2 * Hm * Wm
        tl.atomic_add(obase + cell, gx * ex, mask=pm)
        tl.atomic_add(obase + Hm * Wm + cell, gy * ey, mask=pm)


def _blocks(hw: int, c: int) -> tuple[int, int]:
    return min(128, triton.next_power_of_2(hw)), min(32, triton.next_power_of_2(c))


class BlockWarp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, offsets, mask, sx: float, sy: float):
        features, offsets = features.contiguous(), offsets.contiguous()
        mask = mask.contiguous() if mask is not None else None
        B, C, Hf, Wf = features.shape
        Hm, Wm = offsets.shape[-2:]
        out = torch.empty_like(features)
        bp, bc = _blocks(Hf * Wf, C)
        grid = (B, triton.cdiv(Hf * Wf, bp))
        _warp_fwd[grid](features, offsets, mask if mask is not None else offsets, out, C, Hf, Wf, Hm, Wm,
                        float(sx), float(sy), HAS_MASK=mask is not None, BLOCK_P=bp, BLOCK_C=bc)
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
        if need_f or need_o:
            bp, bc = _blocks(Hf * Wf, C)
            dummy = dout.new_empty(1, dtype=torch.float32)
            _warp_bwd[(B, triton.cdiv(Hf * Wf, bp))](
                features, offsets, mask if mask is not None else offsets, dout.contiguous(),
                dfeat if need_f else dummy, doff if need_o else dummy, C, Hf, Wf, Hm, Wm, *ctx.scales,
                HAS_MASK=mask is not None, NEED_DFEAT=need_f, NEED_DOFF=need_o, BLOCK_P=bp, BLOCK_C=bc)
        return (dfeat.to(features.dtype) if need_f else None, doff.to(offsets.dtype) if need_o else None,
                None, None, None)


def warp(features: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor | None = None,
         frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """features (B, C, Hf, Wf), offsets (B, 2, Hm, Wm) in pixels of a frame of `frame_size`
    (default 4*Hm x 4*Wm), mask (B, Hm, Wm) or None -> (B, C, Hf, Wf)."""
    hf, wf = features.shape[-2:]
    h, w = frame_size if frame_size is not None else (4 * offsets.shape[-2], 4 * offsets.shape[-1])
    return BlockWarp.apply(features, offsets, mask, wf / w, hf / h)
