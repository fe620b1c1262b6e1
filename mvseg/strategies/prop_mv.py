"""prop-MV (Jain & Gonzalez, "Fast Semantic Segmentation on Video Using Block Motion-Based
Feature Interpolation", ECCV 2018 workshops, Sec. 3.2): keyframe features N_feat(I_k) are
warped to frame t by the block motion vectors of the compressed stream, composed from k to t,
and N_task runs on the warped features:

    S_t = N_task(W(N_feat(I_k), M_{t->k}))

No network runs on the non-keyframe image: propagation costs one warp (ops.warp).
"""

from __future__ import annotations

from torch import Tensor

from mvseg import ops
from mvseg.strategies.propagation import Propagation
from mvseg.video.motion import extend_chain


class PropMV(Propagation):
    reads_nonkey_pixels = False  # non-keyframes: MVs only

    def warp_features(self, feat: Tensor, offset: Tensor, mask: Tensor, frame_size: tuple[int, int]) -> Tensor:
        """Key features (B, C, h, w) warped by cur->key offsets (B, 2, Hc, Wc) -> (B, C, h, w)."""
        return ops.warp(feat, offset.to(feat.dtype), mask.to(feat.dtype), frame_size)

    def predict_batch(self, batch: dict) -> Tensor:
        size = tuple(batch["cur"].shape[-2:])  # the current image itself is never processed
        feat = self.net.features(batch["key"])  # (B, C, H/os, W/os)
        warped = self.warp_features(feat, batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
        return self.task(warped, size)

    def stream_reset(self) -> None:
        super().stream_reset()
        self._chain: tuple[Tensor, Tensor] | None = None  # composed offsets t -> k and mask

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        size = tuple(frame.shape[-2:])
        if is_key or self._key_feat is None:
            self._key_feat = self.net.features(frame)
            self._chain = None
            return self.task(self._key_feat, size)
        # t -> k = f_t o (t-1 -> k): one link per frame (O(1), not O(L)), exactly the offsets
        # the training samples compose (motion.compose folds the chain from the same end)
        self._chain = extend_chain(self._chain, offset, mask)
        warped = self.warp_features(self._key_feat, *self._chain, size)
        return self.task(warped, size)
