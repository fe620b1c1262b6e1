"""FlowNet-S (Dosovitskiy et al., "FlowNet: Learning Optical Flow with Convolutional Networks",
ICCV 2015, Fig. 2 and 3) as Deep Feature Flow uses it (Zhu et al., CVPR 2017, Sec. 3-4): the
two frames stacked on channels, a strided encoder, a refinement decoder that predicts flow at
every scale and up-samples it into the next, the finest flow at 1/4 of the network's input.

DFF feeds the pair at half resolution, so the flow comes out at 1/8 of the frame, the grid
of our N_feat features (output stride 8). DFF also predicts its *scale function* from the
flow network: a 1x1 conv with one output per feature channel, weight 0 and bias 1 at init
(DFF Sec. 4, "scale function"), so that at init the propagation is a pure warp.

Convention (docs/conventions.md): the flow maps the current frame to the key frame, in
full-resolution frame pixels: the content at p in the current frame is found at p + flow(p)
in the key frame, exactly the block offsets' convention, so `ops.warp` consumes either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: FlowNet divides its ground truth by 20 so that targets are O(1) (FlowNet's Caffe code).
DIV_FLOW = 20.0


@dataclass
class FlowNetConfig:
    """FlowNet-S with a channel multiplier (1.0 = the paper: 64, 128, 256, 512, 512, 1024)."""

    width: float = 0.25
    input_scale: float = 0.5  # DFF runs the flow network on half-resolution frames
    levels: int = 6  # encoder stride-2 stages (FlowNet-S: 6, down to 1/64)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


class FlowNetS(nn.Module):
    """(cur, key) images (B, 3, H, W) each -> flow (B, 2, H/8, W/8) in frame pixels and the
    DFF scale function (B, scale_channels, H/8, W/8); with `all_scales` also the coarser flows."""

    # FlowNet-S channels and kernel sizes per encoder stage: conv1..conv6 (+ conv3_1..conv6_1)
    CHANNELS = (64, 128, 256, 512, 512, 1024)
    KERNELS = (7, 5, 5, 3, 3, 3)

    def __init__(self, cfg: FlowNetConfig | None = None, scale_channels: int = 0):
        super().__init__()
        cfg = cfg or FlowNetConfig()
        if not 3 <= cfg.levels <= 6:
            raise ValueError(f"flownet.levels must be in 3..6, got {cfg.levels}")
        self.cfg = cfg
        ch = [max(int(c * cfg.width), 8) for c in self.CHANNELS[: cfg.levels]]
        self.encoder = nn.ModuleList()
        cin = 6
        for i, (c, k) in enumerate(zip(ch, self.KERNELS)):
            stage = [_conv(cin, c, k, 2)]
            if i >= 2:  # conv3_1 .. conv6_1: a stride-1 conv after each stage from conv3 on
                stage.append(_conv(c, c, 3))
            self.encoder.append(nn.Sequential(*stage))
            cin = c
        # Decoder ("refinement", FlowNet Fig. 3): at each level from the coarsest skip up to
        # conv2, predict flow, up-convolve the features, and concatenate skip + features + flow.
        self.predict = nn.ModuleList()
        self.upconv = nn.ModuleList()
        self.upflow = nn.ModuleList()
        cin = ch[-1]
        for skip in reversed(ch[1:-1]):  # conv5 .. conv2 skips
            cout = max(skip // 2, 8)
            self.predict.append(nn.Conv2d(cin, 2, 3, 1, 1))
            self.upconv.append(nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True)))
            self.upflow.append(nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False))
            cin = skip + cout + 2
        self.predict_final = nn.Conv2d(cin, 2, 3, 1, 1)  # flow2: 1/4 of the network input
        self.scale = None
        if scale_channels:
            self.scale = nn.Conv2d(cin, scale_channels, 1)
            nn.init.zeros_(self.scale.weight)  # DFF: weight 0, bias 1 -> scale 1 at init
            nn.init.ones_(self.scale.bias)
            # and the bias stays 1: DFF's code trains it with lr_mult 0 (Convolution5_scale_bias),
            # so the scale function is 1 + a learned residual (optimisers skip frozen parameters)
            self.scale.bias.requires_grad_(False)

    def forward(self, cur: Tensor, key: Tensor, all_scales: bool = False):
        h, w = cur.shape[-2:]
        x = torch.cat([cur, key], 1)  # (B, 6, H, W)
        s = self.cfg.input_scale
        if s != 1.0:
            x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        feats = skips[-1]
        flows = []
        for predict, upconv, upflow, skip in zip(self.predict, self.upconv, self.upflow, reversed(skips[1:-1])):
            flow = predict(feats)
            flows.append(flow)
            size = skip.shape[-2:]  # odd sizes: the transposed convs give 2x, cropped/padded to fit
            up_f = _fit(upconv(feats), size)
            up_flow = _fit(upflow(flow), size)
            feats = torch.cat([skip, up_f, up_flow], 1)
        flows.append(self.predict_final(feats))  # (B, 2, H*s/4, W*s/4)
        # network output -> frame pixels (x DIV_FLOW, / input scale)
        flows = [f * (DIV_FLOW / s) for f in flows]
        scale = self.scale(feats) if self.scale is not None else None
        if all_scales:
            return flows, scale
        return flows[-1], scale


def _fit(x: Tensor, size: torch.Size) -> Tensor:
    """Crop or zero-pad the bottom/right of x to `size` (transposed convs round up)."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh or dw:
        x = F.pad(x, (0, dw, 0, dh))
    return x


def multiscale_epe(
    flows: list[Tensor],
    target: Tensor,
    valid: Tensor | None = None,
    weights: tuple[float, ...] = (0.32, 0.08, 0.02, 0.01, 0.005),
) -> Tensor:
    """FlowNet's training loss: endpoint error at each scale against the target average-pooled
    to that scale (weights finest first, FlowNet's schedule), in units of DIV_FLOW pixels.

    flows: coarse -> fine (B, 2, h_i, w_i) in frame pixels; target (B, 2, Ht, Wt); valid (B, Ht, Wt).
    """
    loss = target.new_zeros(())
    for flow, wt in zip(reversed(flows), weights):
        size = flow.shape[-2:]
        tgt = F.adaptive_avg_pool2d(target, size)
        epe = (flow - tgt).div(DIV_FLOW).norm(dim=1)  # (B, h, w)
        if valid is not None:
            m = F.adaptive_avg_pool2d(valid[:, None].float(), size)[:, 0]
            epe = (epe * m).sum() / m.sum().clamp(min=1)
        else:
            epe = epe.mean()
        loss = loss + wt * epe
    return loss


def endpoint_error(flow: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean endpoint error in frame pixels, flow resized (bilinear) to the target's grid."""
    if flow.shape[-2:] != target.shape[-2:]:
        flow = F.interpolate(flow, target.shape[-2:], mode="bilinear", align_corners=False)
    epe = (flow - target).norm(dim=1)
    if valid is None:
        return epe.mean()
    valid = valid.float()
    return (epe * valid).sum() / valid.sum().clamp(min=1)
