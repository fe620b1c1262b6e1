"""interp-MV (Jain & Gonzalez, ECCV 2018 workshops, Sec. 3.3, "feature interpolation"): the
features of both enclosing keyframes k (before) and n = k + L (after) are warped to frame t by
block motion vectors (to n through inverted fields) and fused:

    F_t = fuse(W(N_feat(I_k), M_{t->k}), W(N_feat(I_n), M_{t->n})),   S_t = N_task(F_t)

The paper does not fix the fusion; two are offered (reported side by side in docs/results.md):
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
from mvseg.ops.fields import extend_chain, invert
from mvseg.strategies.base import StreamOut
from mvseg.strategies.propagation import Propagation


class InterpMV(Propagation):
    needs_next = True
    reads_nonkey_pixels = False  # non-keyframes: MVs only

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        init_from: str | None = None,
        fusion: str = "learned",
        **kwargs,
    ):
        super().__init__(num_classes, keyframe_interval, net, init_from, **kwargs)
        if fusion not in ("learned", "linear"):
            raise ValueError(f"fusion must be 'learned' or 'linear', got {fusion!r}")
        self.save_hyperparameters(ignore=["init_from"])
        self.fusion = fusion
        c = self.net.feature_dim
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
        prev = ops.warp(self.net.features(batch["key"]), batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
        nxt = ops.warp(
            self.net.features(batch["next_key"]), batch["offset_cur_to_next"], batch["mask_cur_to_next"], size
        )
        d_prev = torch.as_tensor(batch["distance"], device=prev.device)
        d_next = torch.as_tensor(batch["next_distance"], device=prev.device)
        return self.task(self.combine(prev, nxt, d_prev, d_next), size)

    # -- streaming with look-ahead -----------------------------------------------------

    def stream_reset(self) -> None:
        super().stream_reset()
        # held frames: (index, size, own field t -> t-1 and mask, composed t -> k and mask)
        self._held: list[tuple[int, tuple[int, int], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]] = []
        self._chain: tuple[Tensor, Tensor] | None = None

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        """A frame whose answer cannot wait (only keyframes): interp-MV streams via stream_push."""
        if not is_key:
            raise ValueError("interp-MV answers non-keyframes only when the next keyframe has arrived: use stream_push")
        self._key_feat = self.net.features(frame)
        return self.task(self._key_feat, tuple(frame.shape[-2:]))

    def _release(self, next_feat: Tensor | None) -> list[tuple[int, Tensor]]:
        """Answer the held frames between the previous keyframe and `next_feat`'s keyframe, with
        the offsets the training samples use. Backward chains t -> k were extended as frames
        arrived; forward chains t -> n are built from n back to k + 1, one inversion and one
        link per frame (O(L) per interval, not O(L^2))."""
        out = []
        ahead = None  # composed t -> n and mask, for the frame being answered
        n = len(self._held)
        for i in range(n - 1, -1, -1):
            idx, size, _, back = self._held[i]
            prev = ops.warp(self._key_feat, *back, size)
            if next_feat is None:  # end of stream: no next keyframe, propagate from the last one
                feat = prev
            else:
                f_ahead = self._held[i + 1][2] if i + 1 < n else self._next_field  # f_{t+1}: t+1 -> t
                g = invert(*f_ahead)  # t -> t+1
                ahead = extend_chain(ahead, *g)
                nxt = ops.warp(next_feat, *ahead, size)
                feat = self.combine(prev, nxt, torch.tensor([i + 1]), torch.tensor([n - i]))
            out.append((idx, self.task(feat, size)))
        self._held, self._chain = [], None
        return out[::-1]

    def stream_push(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> StreamOut:
        is_key = self.stream_decide(is_key) or self._key_feat is None  # the first frame is a keyframe
        i = self._stream_index
        self._stream_index = i + 1
        size = tuple(frame.shape[-2:])
        if is_key:
            out = []
            if self._key_feat is not None and self._held:
                self._next_field = (offset.float(), mask.float())  # this keyframe -> previous frame
                next_feat = self.net.features(frame)
                out = self._release(next_feat)
                self._key_feat = next_feat
            else:
                self._key_feat = self.net.features(frame)
            return StreamOut(True, out + [(i, self.task(self._key_feat, size))])
        field = (offset.float(), mask.float())
        self._chain = extend_chain(self._chain, *field)  # t -> k, one link per frame
        self._held.append((i, size, field, self._chain))
        return StreamOut(False, [])

    def stream_flush(self) -> list[tuple[int, Tensor]]:
        return self._release(None) if self._held else []
