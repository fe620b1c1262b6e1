"""What keyframe-propagation methods share (DFF, prop-MV, interp-MV): the image network split
into N_feat (run on keyframes) and N_task (run on every frame), and initialisation from a
trained per-frame model, as DFF and Jain & Gonzalez fine-tune from their image network."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.checkpoint_io import safe_load
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies.base import OptimConfig, SegStrategy, as_config


def load_net_weights(net: torch.nn.Module, path: str | Path, prefix: str = "net.") -> None:
    """Copy the `prefix` weights of an mvseg checkpoint (e.g. a PerFrame run) into `net`,
    loading without executing code; a wrong file or class count is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: init_from checkpoint not found (train the per-frame model first)")
    ckpt = safe_load(path)
    state = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)}
    own = net.state_dict()
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape}
    if not state or bad:
        detail = f"shape mismatches {dict(list(bad.items())[:2])} (another class count or net config?)" if bad \
            else f"no '{prefix}*' weights"
        raise ValueError(f"{path}: cannot initialise from this checkpoint: {detail}")
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights of this network, e.g. {missing[:2]}")
    net.load_state_dict(state)


class Propagation(SegStrategy):
    """Base of the propagation strategies: `self.net.features` is N_feat, `self.net.logits`
    N_task (cut where `net.split` says)."""

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        optim: OptimConfig | None = None,
        init_from: str | None = None,
        ignore_index: int = 255,
        log_masks: int = 4,
        keyframe_policy: str = "fixed",
    ):
        super().__init__(num_classes, keyframe_interval, optim, ignore_index, log_masks, keyframe_policy)
        # init_from is not a hyper-parameter: a trained checkpoint already holds the weights
        self.save_hyperparameters(ignore=["init_from"])
        self.net = SegNet(as_config(SegNetConfig, net), num_classes)
        if init_from:
            load_net_weights(self.net, init_from)
        self._key_feat: Tensor | None = None

    def task(self, feat: Tensor, size: tuple[int, int]) -> Tensor:
        """N_task on (warped) features, up-sampled to the frame size -> (B, K, H, W)."""
        return ops.resize_bilinear(self.net.logits(feat), size)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        logits = self.predict_batch(batch)
        return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=self.ignore_index)}

    def stream_reset(self) -> None:
        super().stream_reset()
        self._key_feat = None
