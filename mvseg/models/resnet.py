"""Dilated ResNet-18/50/101 (He et al., CVPR 2016) for dense prediction.

Parameter names follow torchvision's `resnet*` (conv1, bn1, layer1..layer4, downsample.0/1),
so an ImageNet checkpoint file can be loaded by path with `load_pretrained` (no download).
Output stride 8 or 16 replaces the strides of layer4 (and layer3) by dilation, as DeepLab,
PSPNet and DFF do. `width` multiplies every channel count, for CPU-sized configurations
(width 1.0 is the standard network; pretrained weights need width 1.0).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from mvseg.checkpoint_io import safe_load


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


STAGES = ("layer1", "layer2", "layer3", "layer4")

SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """Dilated ResNet trunk (no pooling/fc head). forward -> dict of stage outputs."""

    def __init__(self, depth: str = "resnet18", output_stride: int = 8, width: float = 1.0):
        super().__init__()
        if depth not in SPECS:
            raise ValueError(f"unknown backbone {depth!r}; choose one of {sorted(SPECS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, layers = SPECS[depth]
        c = [max(int(round(64 * width * m)), 8) for m in (1, 1, 2, 4, 8)]
        self.inplanes = c[0]
        self.conv1 = nn.Conv2d(3, c[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # strides/dilations of layer3 and layer4 for the requested output stride
        s3, d3, s4, d4 = {8: (1, 2, 1, 4), 16: (2, 1, 1, 2), 32: (2, 1, 2, 1)}[output_stride]
        self.layer1 = self._make_layer(block, c[1], layers[0])
        self.layer2 = self._make_layer(block, c[2], layers[1], stride=2)
        self.layer3 = self._make_layer(block, c[3], layers[2], stride=s3, dilation=d3)
        self.layer4 = self._make_layer(block, c[4], layers[3], stride=s4, dilation=d4)
        self.channels = {
            "layer1": c[1] * block.expansion,
            "layer2": c[2] * block.expansion,
            "layer3": c[3] * block.expansion,
            "layer4": c[4] * block.expansion,
        }
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # the first block keeps the previous dilation (as DeepLab's multi-grid-free variant)
        first = max(dilation // 2, 1)
        layers = [block(self.inplanes, planes, stride, first, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def lower(self, x: Tensor, stage: str) -> Tensor:
        """The trunk up to and including `stage` (layer1..layer4): Li et al.'s S_l."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in STAGES[: STAGES.index(stage) + 1]:
            x = getattr(self, name)(x)
        return x

    def upper(self, x: Tensor, stage: str) -> Tensor:
        """The trunk after `stage` up to layer4: the backbone part of Li et al.'s S_h."""
        for name in STAGES[STAGES.index(stage) + 1 :]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, c0, H/4, W/4)
        l1 = self.layer1(x)  # (B, c1, H/4, W/4)
        l2 = self.layer2(l1)  # (B, c2, H/8, W/8)
        l3 = self.layer3(l2)  # (B, c3, H/os', W/os')
        l4 = self.layer4(l3)  # (B, c4, H/os, W/os)
        return {"layer1": l1, "layer2": l2, "layer3": l3, "layer4": l4}


def load_pretrained(model: ResNet, path: str | Path) -> list[str]:
    """Load a torchvision-format ImageNet checkpoint (a state dict file) into `model`.

    Loaded with ``weights_only=True`` (no code runs). The classifier (``fc.*``) is dropped.
    Returns the checkpoint keys that were not used; raises if a trunk parameter is missing
    or has another shape (e.g. a width multiplier other than 1.0).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained backbone checkpoint not found")
    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(
            f"{path}: not a checkpoint of this backbone ({len(missing)} missing keys, e.g. {missing[:2]}; "
            f"{len(wrong)} shape mismatches, e.g. {wrong[:2]}; width must be 1.0 for ImageNet weights)"
        )
    model.load_state_dict({k: state[k] for k in own})
    return [k for k in state if k not in own]
