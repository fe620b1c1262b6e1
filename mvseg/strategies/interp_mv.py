"""interp-MV (Jain & Gonzalez, ECCV 2018 workshops, Sec. 3.3, "feature interpolation"): the
features of both enclosing keyframes k (before) and n = k + L (after) are warped to frame t by
block motion vectors (to n through inverted fields) and fused:

    F_t = fuse(W(N_feat(I_k), M_{t->k}), W(N_feat(I_n), M_{t->n})),   S_t = N_task(F_t)

The paper does not fix the fusion; two are offered (reported side by side in the README):
  - "linear": distance-weighted, w_k = (n - t) / (n - k), w_n = (t - k) / (n - k);
  - "learned": a small conv over both warped features predicts two per-pixel logits, softmax
    over the two sources (our design).
Streaming needs the next keyframe before the frames between: `stream_push` holds frames back
until it arrives (the latency this adds is what the runtime reports).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mvseg import ops
from mvseg.models.heads import conv_bn_relu
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies.base import OptimConfig
from mvseg.strategies.propagation import Propagation
from mvseg.video.motion import compose, compose_forward


class InterpMV(Propagation):
    needs_next = True

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        optim: OptimConfig | None = None,
        init_from: str | None = None,
        fusion: str = "learned",
        ignore_index: int = 255,
        log_masks: int = 4,
        keyframe_policy: str = "fixed",
    ):
        super().__init__(num_classes, keyframe_interval, net, optim, init_from, ignore_index, log_masks,
                         keyframe_policy)
        if fusion not in ("learned", "linear"):
            raise ValueError(f"fusion must be 'learned' or 'linear', got {fusion!r}")
        self.save_hyperparameters(ignore=["init_from"])
        self.fusion = fusion
        c = self.net.cfg.feat_dim
        if fusion == "learned":
            self.fuse = nn.Sequential(conv_bn_relu(2 * c, max(c // 2, 8), 3), nn.Conv2d(max(c // 2, 8), 2, 1))

    def combine(self, prev: Tensor, nxt: Tensor, d_prev: Tensor, d_next: Tensor) -> Tensor:
        """Fuse warped features of the previous and next keyframe (B, C, h, w); d_prev, d_next
        (B,) are the frame distances t - k and n - t."""
        if self.fusion == "linear":
            total = (d_prev + d_next).clamp(min=1).to(prev.dtype)
            w_prev = torch.where(d_prev + d_next > 0, d_next.to(prev.dtype) / total, torch.ones_like(total))
            w_prev = w_prev.view(-1, 1, 1, 1)
            return w_prev * prev + (1 - w_prev) * nxt
        w = torch.softmax(self.fuse(torch.cat([prev, nxt], 1)), dim=1)  # (B, 2, h, w)
        return w[:, :1] * prev + w[:, 1:] * nxt

    def predict_batch(self, batch: dict) -> Tensor:
        if "next_key" not in batch:
            raise ValueError("interp-MV needs the next keyframe: set data.init_args.with_next: true")
        size = tuple(batch["cur"].shape[-2:])
        prev = ops.warp(self.net.feat(batch["key"]), batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
        nxt = ops.warp(self.net.feat(batch["next_key"]), batch["offset_cur_to_next"], batch["mask_cur_to_next"], size)
        d_prev = torch.as_tensor(batch["distance"], device=prev.device)
        d_next = torch.as_tensor(batch["next_distance"], device=prev.device)
        return self.task(self.combine(prev, nxt, d_prev, d_next), size)

    # -- streaming with look-ahead -----------------------------------------------------

    def stream_reset(self) -> None:
        super().stream_reset()
        self._held: list[tuple[int, tuple[int, int], Tensor, Tensor]] = []  # (index, size, offset, mask)

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        """A frame whose answer cannot wait (only keyframes): interp-MV streams via stream_push."""
        if not is_key:
            raise ValueError("interp-MV answers non-keyframes only when the next keyframe has arrived: use stream_push")
        self._key_feat = self.net.feat(frame)
        return self.task(self._key_feat, tuple(frame.shape[-2:]))

    def _release(self, next_feat: Tensor | None) -> list[tuple[int, Tensor]]:
        """Answer the held frames between the previous keyframe and `next_feat`'s keyframe, with
        offsets composed in the same order as the training samples."""
        out = []
        fields = [(off, m) for _, _, off, m in self._held]  # f_{k+1}, ..., f_{n-1}
        if next_feat is not None:
            fields.append(self._next_field)  # f_n, arrived with the keyframe n
        n = len(self._held)
        for i, (idx, size, _, _) in enumerate(self._held):
            back = fields[i::-1]  # f_t, ..., f_{k+1}
            prev = ops.warp(self._key_feat, *(x[None] for x in compose([f for f, _ in back], [m for _, m in back])), size)
            if next_feat is None:  # end of stream: no next keyframe, propagate from the last one
                feat = prev
            else:
                ahead = fields[i + 1 :]  # f_{t+1}, ..., f_n
                fo, fm = compose_forward([f for f, _ in ahead], [m for _, m in ahead])
                nxt = ops.warp(next_feat, fo[None], fm[None], size)
                feat = self.combine(prev, nxt, torch.tensor([i + 1]), torch.tensor([n - i]))
            out.append((idx, self.task(feat, size)))
        self._held = []
        return out

    def stream_push(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> list[tuple[int, Tensor]]:
        i = getattr(self, "_stream_index", 0)
        self._stream_index = i + 1
        size = tuple(frame.shape[-2:])
        if is_key or self._key_feat is None:
            out = []
            if self._key_feat is not None and self._held:
                self._next_field = (offset[0].float(), mask[0].float())  # this keyframe -> previous frame
                next_feat = self.net.feat(frame)
                out = self._release(next_feat)
                self._key_feat = next_feat
            else:
                self._key_feat = self.net.feat(frame)
            return out + [(i, self.task(self._key_feat, size))]
        self._held.append((i, size, offset[0].float(), mask[0].float()))
        return []

    def stream_flush(self) -> list[tuple[int, Tensor]]:
        return self._release(None) if self._held else []
