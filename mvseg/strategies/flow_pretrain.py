"""Pretraining DFF's flow network on ground-truth optical flow.

DFF starts from a FlowNet pretrained on Flying Chairs (Zhu et al., CVPR 2017, Sec. 4). No
weights can be downloaded here, so this module trains FlowNet-S on the synthetic dataset's
exact flow instead (our substitute), with FlowNet's multi-scale endpoint-error loss
(Dosovitskiy et al., ICCV 2015, Sec. 4), on (frame, keyframe) pairs at distances 0..L-1: the
pairs DFF will propagate over. Validation reports the endpoint error in pixels per distance
(``val/EPE``, ``val/EPE_d{d}``) and, for reference, that of the stream's block MVs on the same
pairs (``val/EPE_mv``). Segmentation metrics do not apply.

    mvseg fit --config experiments/flownet_pretrain.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor

from mvseg.models.flownet import FlowNetConfig, FlowNetS, endpoint_error, multiscale_epe
from mvseg.strategies.base import SegStrategy, as_config


def _cell_valid(batch: dict) -> Tensor:
    return batch["flowmask_cur_to_key"] > 0.5  # (B, Hc, Wc)


class FlowPretrain(SegStrategy):
    """FlowNet-S alone, supervised by `flow_cur_to_key` (data.init_args.with_gt_flow: true)."""

    segments = False  # DFF's flow network alone: `mvseg predict` needs a DFF run's checkpoint

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        flownet: FlowNetConfig | None = None,
        log_masks: int = 0,
        **kwargs,
    ):
        super().__init__(num_classes, keyframe_interval, log_masks=log_masks, **kwargs)
        self.save_hyperparameters()
        self.flownet = FlowNetS(as_config(FlowNetConfig, flownet))
        self._epe: dict[str, list[Tensor]] = {}

    @staticmethod
    def _target(batch: dict) -> Tensor:
        if "flow_cur_to_key" not in batch:
            raise ValueError("FlowPretrain needs ground-truth flow: set data.init_args.with_gt_flow: true")
        return batch["flow_cur_to_key"]  # (B, 2, Hc, Wc) frame pixels, on the 4x4 cell grid

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        target = self._target(batch)
        flows, _ = self.flownet(batch["cur"], batch["key"], all_scales=True)
        loss = multiscale_epe(flows, target, _cell_valid(batch))
        with torch.no_grad():
            epe = endpoint_error(flows[-1], target, _cell_valid(batch))
        return {"loss": loss, "EPE": epe}

    def predict_batch(self, batch: dict) -> Tensor:
        """The flow (B, 2, H/8, W/8) from each current frame to its keyframe, frame pixels."""
        return self.flownet(batch["cur"], batch["key"])[0]

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        raise TypeError("FlowPretrain trains DFF's flow network and does not segment; stream a DFF checkpoint")

    # -- evaluation: endpoint error instead of mIoU -----------------------------------------

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        target, valid = self._target(batch), _cell_valid(batch)
        flow = self.predict_batch(batch)
        mv = batch["offset_cur_to_key"]
        for i, d in enumerate(torch.as_tensor(batch["distance"]).tolist()):
            # per-sample EPE against the cell-grid target; the MV offsets live on that grid already
            e = endpoint_error(flow[i : i + 1], target[i : i + 1], valid[i : i + 1])
            e_mv = endpoint_error(mv[i : i + 1], target[i : i + 1], valid[i : i + 1])
            self._epe.setdefault(f"{stage}/EPE_d{d}", []).append(e)
            self._epe.setdefault(f"{stage}/EPE", []).append(e)
            self._epe.setdefault(f"{stage}/EPE_mv", []).append(e_mv)

    def _eval_epoch_end(self, stage: str) -> None:
        for name, values in sorted(self._epe.items()):
            if name.startswith(stage + "/"):
                self.log(name, torch.stack(values).mean(), prog_bar=name == f"{stage}/EPE", sync_dist=True)
        self._epe = {k: v for k, v in self._epe.items() if not k.startswith(stage + "/")}
