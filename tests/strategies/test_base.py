"""The strategy base: the keyframe-distance evaluation protocol on hand-built cases."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mvseg.strategies.base import SegStrategy
from mvseg.strategies.policies import FixedInterval, IFrames, make_policy


class Oracle(SegStrategy):
    """Predicts whatever the batch says (batch["pred"]): the metric is then known."""

    def __init__(self, num_classes: int = 2, keyframe_interval: int = 2, invariant: bool = False):
        super().__init__(num_classes, keyframe_interval, log_masks=0)
        self.distance_invariant = invariant
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def training_loss(self, batch):
        return {"loss": self.dummy * 0}

    def predict_batch(self, batch):
        return F.one_hot(batch["pred"], self.num_classes).permute(0, 3, 1, 2).float()

    def stream_step(self, frame, offset, mask, is_key):
        return frame


def item(label, pred, d):
    return {
        "cur": torch.zeros(3, 1, 4),
        "label": torch.tensor([label]),
        "pred": torch.tensor([pred]),
        "distance": d,
        "clip": "c",
        "frame": 0,
    }


def run_validate(model, items):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(model, DataLoader(items, batch_size=2), verbose=False)[0]


def test_protocol_mIoU_per_distance_mean_and_min():
    items = [
        item([0, 0, 1, 1], [0, 0, 1, 1], 0),  # perfect at d = 0
        item([0, 0, 1, 1], [0, 1, 1, 1], 1),  # d = 1: IoU class 0 = 1/2, class 1 = 2/3
        item([0, 0, 255, 255], [0, 0, 0, 1], 1),  # ignore pixels do not count
    ]
    m = run_validate(Oracle(), items)
    # d = 1 accumulates both items: class 0: inter 3, union 4; class 1: inter 2, union 3
    d1 = (3 / 4 + 2 / 3) / 2
    assert m["val/mIoU_d0"] == pytest.approx(1.0)
    assert m["val/mIoU_d1"] == pytest.approx(d1)
    assert m["val/mIoU"] == pytest.approx((1 + d1) / 2)
    assert m["val/mIoU_min"] == pytest.approx(d1)


def test_distance_invariant_strategies_report_d0_for_every_distance():
    items = [item([0, 1, 1, 1], [0, 1, 1, 0], 0), item([0, 0, 0, 0], [1, 1, 1, 1], 1)]  # d=1 is skipped
    m = run_validate(Oracle(keyframe_interval=3, invariant=True), items)
    d0 = (1 / 2 + 2 / 3) / 2
    assert [m[f"val/mIoU_d{d}"] for d in range(3)] == pytest.approx([d0] * 3)
    assert m["val/mIoU"] == pytest.approx(d0) and m["val/mIoU_min"] == pytest.approx(d0)


def test_metrics_reset_between_epochs():
    model = Oracle()
    run_validate(model, [item([0, 1], [1, 0], 0)])  # all wrong
    m = run_validate(model, [item([0, 1], [0, 1], 0)])  # all right
    assert m["val/mIoU"] == pytest.approx(1.0)


def test_keyframe_policies():
    assert [FixedInterval(3).is_key(i, "P") for i in range(7)] == [True, False, False, True, False, False, True]
    assert [IFrames().is_key(i, t) for i, t in enumerate("PPIPPBI")] == [True, False, True, False, False, False, True]
    with pytest.raises(ValueError, match="unknown keyframe policy"):
        make_policy("random", 3)
    with pytest.raises(ValueError, match="keyframe interval must be >= 1"):
        FixedInterval(0)


def test_motion_coverage_keys_when_motion_cannot_bring_the_frame():
    """A pan of one 4-pixel cell a frame over a 10-cell-wide frame: each frame brings one new
    column (10 % uncovered), so the chain back to the keyframe loses 10 % a frame; an intra
    frame (mask 0) is new everywhere; the count restarts at each keyframe taken."""
    from mvseg.strategies.policies import MotionCoverage

    hc, wc = 6, 10
    pan = torch.zeros(1, 2, hc, wc)
    pan[:, 0] = 4.0  # every cell of t comes from 4 px to its right in t-1: content enters at the right edge
    ones, intra = torch.ones(1, hc, wc), torch.zeros(1, hc, wc)

    def run(policy, fields):
        keys = []
        for i, (off, mask) in enumerate(fields):
            policy.observe(off, mask)
            keys.append(policy.is_key(i, "P"))
            policy.taken(i, keys[-1])
        return keys

    fields = [(None, None)] + [(pan, ones)] * 7
    # uncovered after j pan frames: j/10 -> above 0.25 at the 3rd frame after each keyframe
    assert run(MotionCoverage(0.25), fields) == [True, False, False, True, False, False, True, False]
    p = MotionCoverage(0.25)
    run(p, fields[:3])
    assert p.uncovered == pytest.approx(0.2)
    assert run(MotionCoverage(0.5), [(None, None), (pan, ones), (pan, intra), (pan, ones)]) == [
        True,
        False,
        True,
        False,
    ]
    assert run(MotionCoverage(0.95, max_interval=3), fields) == [True, False, False, True, False, False, True, False]
    # a strategy that overrides the decision: the chain restarts only where a keyframe was taken
    p = MotionCoverage(0.15)
    for i, (off, mask) in enumerate(fields[:4]):
        p.observe(off, mask)
        p.taken(i, i == 0)  # the policy asked at i = 2, the strategy declined
    assert p.uncovered == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        MotionCoverage(1.5)
    with pytest.raises(ValueError, match="needs a threshold"):
        make_policy("coverage", 5)
    assert isinstance(make_policy("coverage", 5, 0.2), MotionCoverage)


def test_learning_rate_schedules_poly_and_cosine():
    """poly: DeepLab's (1 - t)^0.9; cosine: AR-Seg's CosineAnnealingLR (T_max = all steps, eta_min 0)."""
    import math

    from mvseg.strategies.base import lr_factor

    assert [round(lr_factor("poly", 10, 0.9, s), 6) for s in (0, 5, 10)] == [1.0, round(0.5**0.9, 6), 0.0]
    assert [round(lr_factor("cosine", 10, 0.9, s), 6) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert lr_factor("cosine", 8, 0.9, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # warm-up (AR-Seg's code from a snapshot): linear from warmup_start, then the schedule over the rest
    warm = [lr_factor("cosine", 14, 0.9, s, warmup=4, warmup_start=0.01) for s in (0, 2, 4, 9, 14)]
    assert warm == pytest.approx([0.01, 0.505, 1.0, 0.5, 0.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    for s in range(8):  # the same rates as torch's own cosine schedule, step by step
        assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * lr_factor("cosine", 8, 0.9, s))
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="optim.schedule must be 'poly' or 'cosine'"):
        SegStrategy.__init__(Oracle.__new__(Oracle), 2, 2, optim={"schedule": "step"})


def test_a_strategy_missing_a_required_method_fails_at_construction():
    class NoStream(SegStrategy):  # training_loss and predict_batch, but no stream_step
        def training_loss(self, batch):
            return {}

        def predict_batch(self, batch):
            return batch["cur"]

    with pytest.raises(TypeError, match="abstract method.*stream_step"):
        NoStream(2, 2)
