"""`mvseg bench fusion`: what does AR-Seg's CReFF take from the two features it fuses?

AR-Seg (Hu et al., CVPR 2023, Sec. 3.2) segments a non-keyframe from the up-sampled feature
of its low-resolution (LR) frame and the MV-warped feature of the high-resolution (HR)
keyframe, fused by CReFF (F_t = Up(F_L) + LA(Q, K, V)). For every keyframe distance d of the
protocol, this view scores, through the same shared HR classifier and on the same pixels:

- ``lr``: the up-sampled LR feature alone (the trained model's own LR branch);
- ``warp``: the HR keyframe feature warped by the composed MVs alone (no learning: plain MV
  propagation of the HR model's feature);
- ``creff``: CReFF's output (the model's own prediction, the protocol's row);
- ``mean``: the plain average of the two inputs (a fusion with no parameters);
- ``best_of``: per distance, the best of the four above: what choosing among them by
  distance would reach.

and the mean squared distance of each feature to the HR feature of the current frame (the
FST target). d = 0 is the HR model for every row, as in the protocol. Writes fusion.json and
fusion.md.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.strategies.arseg import ARSeg, features

CANDIDATES = ("lr", "warp", "creff", "mean")


@torch.no_grad()
def fusion_candidates(model: ARSeg, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The features of `CANDIDATES` for a batch of non-keyframes (each (B, C, h, w)) and the
    frozen HR feature of the current frame, the FST target."""
    from mvseg import ops

    cur, size = batch["cur"], tuple(batch["cur"].shape[-2:])
    key = features(model.hr, batch["key"])  # (B, C, h, w)
    lr = features(model.lr, model.downsample(cur))  # (B, C, h*s, w*s)
    up = F.interpolate(lr, key.shape[-2:], mode="bilinear", align_corners=False)  # as CReFF up-samples
    off, mask = batch["offset_cur_to_key"], batch["mask_cur_to_key"]
    warp = ops.warp(key, off, mask, size)
    creff = model.creff(lr, key, off, mask, size)
    return {"lr": up, "warp": warp, "creff": creff, "mean": (up + warp) / 2}, features(model.hr, cur)


def fusion_table(
    model: ARSeg, root: str, interval: int, data: dict | None = None, cache_dir: str | None = None, batch_size: int = 8
) -> list[dict]:
    """One row per candidate (and ``best_of``): mIoU per distance d = 0..L-1, their mean and
    minimum, and the feature MSE to the HR feature (mean over d >= 1)."""
    if model.creff is None:
        raise ValueError("bench fusion needs a stage-2 AR-Seg checkpoint (with CReFF); this one is stage 'lr'")
    model = model.eval()
    norm = {k: (data or {}).get(k) for k in ("mean", "std")}
    dm = CompressedVideoDataModule(
        root, "folder", keyframe_interval=interval, batch_size=batch_size, cache_dir=cache_dir, **norm
    )
    dm.setup("validate")
    metric = partial(
        MulticlassJaccardIndex, model.num_classes, ignore_index=model.ignore_index, average="macro", validate_args=False
    )  # as the strategies' own validation metrics
    miou = {c: {d: metric() for d in range(interval)} for c in CANDIDATES}
    mse = {c: {d: [0.0, 0] for d in range(1, interval)} for c in CANDIDATES}
    for batch in dm.val_dataloader():
        dist = torch.as_tensor(batch["distance"])
        size = tuple(batch["cur"].shape[-2:])
        key0 = dist == 0
        if key0.any():  # the keyframe itself: the HR model, whatever the fusion
            pred = model.hr(batch["cur"][key0]).argmax(1)
            for c in CANDIDATES:
                miou[c][0].update(pred, batch["label"][key0])
        if (~key0).any():
            sub = {n: (v[~key0] if torch.is_tensor(v) and v.shape[:1] == dist.shape else v) for n, v in batch.items()}
            feats, target = fusion_candidates(model, sub)
            for c, f in feats.items():
                pred = model.classify(f, size).argmax(1)
                for d in dist[~key0].unique().tolist():
                    sel = dist[~key0] == d
                    miou[c][d].update(pred[sel], sub["label"][sel])
                    mse[c][d][0] += float(F.mse_loss(f[sel], target[sel], reduction="sum"))
                    mse[c][d][1] += int(f[sel].numel())
    rows = []
    for c in CANDIDATES:
        per_d = [float(miou[c][d].compute()) for d in range(interval)]
        rows.append(
            {
                "fusion": c,
                **{f"miou_d{d}": v for d, v in enumerate(per_d)},
                "miou_mean": sum(per_d) / interval,
                "miou_min": min(per_d),
                "feature_mse": sum(s for s, _ in mse[c].values()) / max(1, sum(n for _, n in mse[c].values())),
            }
        )
    best = [max(r[f"miou_d{d}"] for r in rows) for d in range(interval)]
    rows.append(
        {
            "fusion": "best_of",
            **{f"miou_d{d}": v for d, v in enumerate(best)},
            "miou_mean": sum(best) / interval,
            "miou_min": min(best),
            "feature_mse": float("nan"),
        }
    )
    return rows


def run_bench_fusion(
    ckpt: str, root: str, out_dir: str, interval: int | None, json_out: str | None, cache_dir: str | None
) -> list[dict]:
    from mvseg.bench.common import print_table
    from mvseg.strategies.loading import load_strategy

    model, data = load_strategy(ckpt)
    if not isinstance(model, ARSeg):
        raise ValueError(f"{ckpt}: a {type(model).__name__} checkpoint; bench fusion needs a stage-2 AR-Seg one")
    if model.creff is None:
        raise ValueError(f"{ckpt}: bench fusion needs a stage-2 AR-Seg checkpoint (with CReFF); this one is stage 'lr'")
    interval = interval or model.keyframe_interval
    model = type(model).load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, keyframe_interval=interval)
    rows = fusion_table(model, root, interval, data, cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["fusion", "miou_mean", "miou_min", *[f"miou_d{d}" for d in range(interval)], "feature_mse"]
    table = print_table(rows, columns)
    (out / "fusion.json").write_text(json.dumps(rows, indent=1))
    (out / "fusion.md").write_text(table + "\n")
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=1))
    return rows
