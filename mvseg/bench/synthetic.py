"""`mvseg bench synthetic`: how much of the synthetic dataset a per-pixel colour classifier
solves, against a small CNN trained the same way (the data is meant to need shape and context)."""

from __future__ import annotations

import numpy as np

from mvseg.bench.common import print_table, write_json


def colour_vs_cnn(
    train_clips: int = 16,
    val_clips: int = 6,
    frames: int = 6,
    size: tuple[int, int] = (64, 128),
    steps: int = 300,
    batch: int = 16,
    seed: int = 0,
) -> dict:
    """How much of the synthetic dataset a per-pixel colour classifier (1x1 convolutions)
    can solve, against a small dilated CNN trained the same way (Adam, cross-entropy, same
    steps and batches). The dataset is meant to need shape, texture and context."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchmetrics.classification import MulticlassJaccardIndex

    from mvseg.data.synthetic import CLASSES, IGNORE_INDEX, SyntheticConfig, render_clip

    cfg = SyntheticConfig(height=size[0], width=size[1], frames=frames)

    def stack(seeds):
        clips = [render_clip(s, cfg) for s in seeds]
        x = torch.from_numpy(np.concatenate([c.frames for c in clips])).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(np.concatenate([c.labels for c in clips])).long()
        return x, y

    xt, yt = stack(range(seed, seed + train_clips))
    xv, yv = stack(range(seed + 10_000, seed + 10_000 + val_clips))
    k = len(CLASSES)

    def block(i: int, o: int, stride: int = 1, dilation: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, dilation, dilation), nn.BatchNorm2d(o), nn.ReLU())

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                block(3, 32, 2), block(32, 64, 2), block(64, 64, 1, 2), block(64, 64, 1, 4), block(64, 64, 1, 8)
            )
            self.classifier = nn.Conv2d(64, k, 1)

        def forward(self, x):
            return F.interpolate(self.classifier(self.features(x)), size=x.shape[-2:], mode="bilinear")

    torch.manual_seed(seed)
    models = {
        "colour_1x1": nn.Sequential(
            nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, k, 1)
        ),
        "cnn": SmallCNN(),
    }
    out = {}
    for name, model in models.items():
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            i = torch.randint(0, len(xt), (batch,), generator=g)
            loss = F.cross_entropy(model(xt[i]), yt[i], ignore_index=IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xv).argmax(1)
        miou = MulticlassJaccardIndex(k, ignore_index=IGNORE_INDEX, average="macro")(pred, yv).item()
        out[name] = {"val_mIoU": miou, "final_train_loss": loss.item()}
    return out


def run_bench_synthetic(json_out: str | None, steps: int) -> dict:
    res = colour_vs_cnn(steps=steps)
    rows = [{"model": k, **v} for k, v in res.items()]
    table = print_table(rows, ["model", "val_mIoU", "final_train_loss"])
    write_json(json_out, {"bench": "synthetic", "rows": rows, "table": table})
    return res
