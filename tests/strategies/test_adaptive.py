"""Li et al.'s adaptive keyframes: training, protocol = runtime, the adaptive policy, and the
low-latency schedule (fast track now, slow track in the background)."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import fit_batch, runtime_vs_protocol

from mvseg import ops
from mvseg.models.adaptive import deviation_target, keyframe_gain_target
from mvseg.models.segnet import SegNetConfig
from mvseg.runtime import run_stream
from mvseg.strategies import Adaptive, AdaptiveConfig, AdaptiveThreshold, PropMV

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)
SMALL = AdaptiveConfig(kernel_size=5, kernel_channels=8, deviation_channels=8, fuse_channels=4)


def make(**kw) -> Adaptive:
    torch.manual_seed(0)
    return Adaptive(5, 4, net=NET, adaptive=SMALL, **kw).eval()


def pair(d: int, b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    key = torch.nn.functional.interpolate(torch.randn(b, 3, 4, 6, generator=g), (32, 48), mode="bilinear")  # smooth
    cur = key if d == 0 else torch.roll(key, 4, -1)
    label = (cur[:, 0] > 0).long() + 2 * (cur[:, 1] > 0).long()  # learnable from the current frame
    return {"key": key, "cur": cur, "distance": torch.full((b,), d), "label": label}


def test_distance_zero_is_the_image_network_and_a_fresh_model_propagates_close_to_it():
    model = make()
    b = pair(0)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_batch(b), model.net(b["key"]))
        # a fresh kernel predictor is nearly the identity and the fusion starts at zero, so at
        # d > 0 with identical frames the prediction is close to the keyframe's
        same = {**b, "distance": torch.full((2,), 3)}
        agree = (model.predict_batch(same).argmax(1) == model.net(b["key"]).argmax(1)).float().mean()
    assert agree > 0.8


def test_training_loss_falls_and_trains_the_new_modules():
    model = make().train()
    b = pair(2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = fit_batch(model, b, steps=20)
    assert losses[-1] < 0.6 * losses[0]
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"net", "deviation", "kernels", "fusion"}
    parts = model.training_loss(b)
    assert set(parts) == {"loss", "seg", "deviation", "deviation_mae", "deviation_target"}
    assert 0 <= parts["deviation_target"].item() <= 1


def test_deviation_predictor_regresses_the_label_change_without_touching_s_l():
    """The deviation loss alone trains the predictor towards the target, and no gradient of
    it reaches S_l (the predictor reads detached features)."""
    model = make(deviation_weight=1.0)
    b = pair(3)
    model.training_loss(b)["deviation"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.net.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.deviation.parameters())


def test_new_layers_learn_faster():
    model = make(new_lr_mult=10.0)
    groups = model.param_groups()
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_runtime_equals_the_protocol(tiny_dataset):
    torch.manual_seed(0)
    model = Adaptive(9, 3, net=NET, adaptive=SMALL).eval()
    agreement = [a for interval in (3, 4) for a in runtime_vs_protocol(model, tiny_dataset, interval, images=False)[1]]
    assert {d for _, d, _ in agreement} == {0, 1, 2}  # annotated frames 5 and 8
    assert all(a == 1.0 for _, _, a in agreement)


def stream(model: Adaptive, video, threshold: float, low_latency: bool = False) -> list:
    model.low_latency = low_latency
    return list(run_stream(model, video, policy=AdaptiveThreshold(threshold), images=False))


def test_threshold_zero_makes_every_frame_a_keyframe_and_above_one_none(tiny_dataset):
    model = make()
    video = tiny_dataset / "videos" / "val" / "clip_0000.mp4"
    assert [r.is_key for r in stream(model, video, 0.0)] == [True] * 12
    assert [r.is_key for r in stream(model, video, 1.01)] == [True] + [False] * 11


def test_adaptive_policy_follows_the_predicted_deviation(tiny_dataset, monkeypatch):
    """A deviation that grows by 0.1 per frame since the last keyframe and a threshold of 0.25:
    keyframes every 3 frames."""
    model = make()
    calls = []

    def fake(frame, offset=None, mask=None):
        if model._key_low is None:
            return None
        calls.append(1)
        return 0.1 * (model._stream_index - model._last_key)

    def step(frame, offset, mask, is_key, orig=model.stream_step):
        if is_key:
            model._last_key = model._stream_index - 1
        return orig(frame, offset, mask, is_key)

    monkeypatch.setattr(model, "stream_deviation", fake)
    monkeypatch.setattr(model, "stream_step", step)
    keys = [
        r.is_key
        for r in run_stream(
            model, tiny_dataset / "videos" / "val" / "clip_0000.mp4", policy=AdaptiveThreshold(0.25), images=False
        )
    ]
    assert keys == [True, False, False, True, False, False, True, False, False, True, False, False]
    assert len(calls) == 11  # asked once per frame after the first


def test_adaptive_policy_needs_a_deviation_predictor(tiny_dataset):
    with pytest.raises(ValueError, match="deviation predictor"):
        PropMV(5, 3, net=NET, keyframe_policy="adaptive")  # deviation_channels = 0: none
    prop = PropMV(5, 3, net=NET)
    with pytest.raises(ValueError, match="deviation predictor"):
        next(run_stream(prop, tiny_dataset / "videos" / "val" / "clip_0000.mp4", policy=AdaptiveThreshold(0.1)))
    with pytest.raises(ValueError, match="low-level stage"):
        Adaptive(5, 3, net=NET, adaptive=AdaptiveConfig(low_stage="layer4"))


def frames(n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 3, 32, 48, generator=g)
    return [torch.roll(base, 2 * t, -1) + 0.05 * torch.randn(1, 3, 32, 48, generator=g) for t in range(n)]


def test_low_latency_caches_the_same_keyframe_features_once_the_slow_track_is_done():
    keys = [True, False, False, True, False]
    fs = frames(5)
    blocking, fast = make(), make(low_latency=True)
    with torch.inference_mode():
        for m in (blocking, fast):
            m.stream_reset()
            m.outs = [m.stream_step(f, None, None, k) for f, k in zip(fs[:4], keys)]
            m.stream_wait()
        torch.testing.assert_close(fast._key_high, blocking._key_high)  # S_h(F_l^3), both
        torch.testing.assert_close(fast._key_low, blocking._key_low)
        # up to the keyframe the two answer alike; at it, the fast track answers by propagation
        for a, b in zip(fast.outs[:3], blocking.outs[:3]):
            torch.testing.assert_close(a, b)
        assert not torch.allclose(fast.outs[3], blocking.outs[3])
        # and once the slow track is in, the frames after it are the blocking schedule's
        torch.testing.assert_close(
            fast.stream_step(fs[4], None, None, False), blocking.stream_step(fs[4], None, None, False)
        )
    assert fast.slow_tracks == 1 and blocking.slow_tracks == 0
    fast.stream_flush()


def test_no_frame_waits_for_a_slow_track():
    """S_h made slow: it waits for an event that is only set after every frame was answered.
    Had the main loop waited for the slow track it would have timed out (and the count of
    finished slow tracks would not be 0 while frames are answered)."""
    model = make(low_latency=True)
    release, finished = threading.Event(), []
    real_high = model.high

    def slow_high(low):
        if threading.current_thread() is not threading.main_thread():
            assert release.wait(timeout=60), "the test never released the slow track"
            finished.append(1)
        return real_high(low)

    model.high = slow_high
    fs = frames(6)
    keys = [True, False, True, False, True, False]
    with torch.inference_mode():
        model.stream_reset()
        answered, taken = [], []
        for f, k in zip(fs, keys):
            out = model.stream_push(f, None, None, k)
            answered.extend(out.ready)
            taken.append(out.is_key)  # the decision that stood
            model.stream_idle()
            assert not finished  # answered while the slow track is still running
        assert len(answered) == 6
        assert model.slow_tracks == 1  # frame 2's slow track was still busy at frame 4 ...
        assert model.deferred == 1 and taken == [True, False, True, False, False, False]  # ... so it was deferred
        with pytest.raises(RuntimeError, match="stream_decide"):  # a keyframe forced past the decision
            model.stream_step(fs[0], None, None, True)
        release.set()
        model.stream_wait()
        assert finished == [1]
        # the slow track's features are now the cache: S_h of frame 2's low-level features
        torch.testing.assert_close(model._key_high, real_high(model.low(fs[2])))
    model.stream_flush()


def test_slow_track_starts_once_the_keyframes_answer_is_out(tiny_dataset):
    """In the runtime, a fast-tracked keyframe's S_h starts after its result was handed out
    (stream_idle), not while its answer is still being computed."""
    from mvseg.strategies import FixedInterval

    torch.manual_seed(0)
    model = Adaptive(9, 4, net=NET, adaptive=SMALL, low_latency=True).eval()
    started = []
    real_start = model._start_slow_track
    model._start_slow_track = lambda low: started.append(len(seen)) or real_start(low)
    seen = []
    for r in run_stream(
        model, tiny_dataset / "videos" / "val" / "clip_0000.mp4", policy=FixedInterval(4), images=False
    ):
        seen.append((r.index, r.is_key, model.slow_tracks))
    # frame 0 runs S_h blocking; keyframes 4 and 8 are fast-tracked and their slow tracks start
    # only after their results were yielded: 5 and 9 results out by then
    assert [i for i, k, _ in seen if k] == [0, 4, 8]
    assert started == [5, 9]
    assert seen[4][2] == 0 and seen[5][2] == 1


def test_deviation_predictor_learns_to_rank_pairs_by_their_label_change():
    """Frames whose left 0, 1/8, ..., 7/8 come from another scene: the full network's labels
    change more the more is replaced; trained on the deviation loss alone, the predictor ranks
    the pairs so and comes close to the fractions."""
    model = make()
    g = torch.Generator().manual_seed(3)
    smooth = lambda: torch.nn.functional.interpolate(torch.randn(1, 3, 8, 12, generator=g), (64, 96), mode="bilinear")  # noqa: E731
    key, other = smooth().repeat(8, 1, 1, 1), smooth()[0]
    cur = key.clone()
    for s in range(8):
        cur[s, :, :, : 12 * s] = other[:, :, : 12 * s]
    b = {"key": key, "cur": cur, "distance": torch.arange(8), "label": torch.zeros(8, 64, 96, dtype=torch.long)}
    opt = torch.optim.Adam(model.deviation.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model.training_loss(b)["deviation"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        low_k, low_t = model.low(key), model.low(cur)
        target = deviation_target(model.net.logits(model.high(low_k)), model.net.logits(model.high(low_t)))
        pred = model.deviation(low_k, low_t)
    rank = lambda x: x.argsort().argsort().float()  # noqa: E731
    assert target[0] == 0 and target[-1] > 0.2
    assert torch.corrcoef(torch.stack([rank(pred), rank(target)]))[0, 1] > 0.9  # Spearman
    assert (pred - target).abs().mean() < 0.05


def streams_as_plain_prop_mv(prop: PropMV, video) -> None:
    """prop (a 12-frame clip, adaptive policy, threshold 0 in its config) keys every frame; at a
    threshold above 1 only the first; and then its labels are plain prop-MV's with the same weights
    and keyframes (S_l reused for S_h, the motion chain of the prediction reused by the step)."""
    from mvseg.strategies.policies import FixedInterval

    with torch.no_grad():
        assert all(r.is_key for r in run_stream(prop, video, images=False))
        results = list(run_stream(prop, video, policy=AdaptiveThreshold(1.01), images=False))
        assert [r.is_key for r in results] == [True] + [False] * 11
        plain = PropMV(9, 3, net=NET).eval()
        plain.load_state_dict({k: v for k, v in prop.state_dict().items() if not k.startswith("deviation.")})
        same = list(run_stream(plain, video, policy=FixedInterval(100), images=False))
    assert all((a.label == b.label).all() for a, b in zip(results, same))


def test_prop_mv_with_a_deviation_predictor_follows_the_adaptive_policy(tiny_dataset):
    """prop-MV's own low-level features feed the predictor: it trains with the extra loss, and
    its keyframes follow the threshold (0: all, above 1: only the first)."""
    torch.manual_seed(0)
    prop = PropMV(9, 3, net=NET, deviation_channels=8, keyframe_policy="adaptive", deviation_threshold=0.0).eval()
    assert prop.has_deviation and isinstance(prop.policy, AdaptiveThreshold)
    b = pair(2)
    b.update(offset_cur_to_key=torch.zeros(2, 2, 8, 12), mask_cur_to_key=torch.ones(2, 8, 12))
    parts = prop.training_loss(b)
    assert set(parts) == {"loss", "deviation", "deviation_target"} and parts["loss"] > parts["deviation"] > 0
    streams_as_plain_prop_mv(prop, tiny_dataset / "videos" / "val" / "clip_0000.mp4")


def test_prop_mv_gain_target_is_what_a_keyframe_would_gain():
    """deviation_target="gain": the predictor regresses how much more of t's labelled pixels the full
    network gets right than t propagated from k. Trained a little (the loss falls), prop-MV's own
    network then labels the frames well, so a copied keyframe (zero motion) misses the shifted
    content: the target equals the definition and is > 0; at distance 0 it is 0."""
    torch.manual_seed(0)
    prop = PropMV(
        4,
        3,
        net=NET,
        deviation_channels=8,
        deviation_target="gain",
        keyframe_policy="adaptive",
        deviation_threshold=0.1,
    )
    zero = {"offset_cur_to_key": torch.zeros(2, 2, 8, 12), "mask_cur_to_key": torch.ones(2, 8, 12)}
    same = {**pair(0), **zero}  # t is its own keyframe
    losses = fit_batch(prop.train(), same, steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    prop.eval()
    b = {**pair(2), **zero}  # t is k shifted by 4 px, propagated with zero motion: a copy
    with torch.no_grad():
        parts = prop.training_loss(b)
        assert set(parts) == {"loss", "deviation", "deviation_target"}
        logits = [ops.resize_bilinear(prop.net.logits(prop.net.features(b[k])), (32, 48)) for k in ("key", "cur")]
        expected = keyframe_gain_target(*logits, b["label"], prop.ignore_index)
        assert expected.mean() > 0.01
        torch.testing.assert_close(parts["deviation_target"], expected.mean())
        assert prop.training_loss(same)["deviation_target"].item() == 0.0
    with pytest.raises(ValueError, match="deviation_target must be one of"):
        PropMV(4, 3, net=NET, deviation_channels=8, deviation_target="flow")


def test_prop_mv_motion_input_reads_what_the_block_motion_cannot_explain(tiny_dataset):
    """deviation_input="motion": the predictor reads F_l^t minus F_l^k warped by the t -> k motion, and
    the share of each cell the motion lost. Zero motion with every cell kept: the warp is the copy
    and nothing is lost; a lost field: all lost. Streamed, it follows the threshold, and the chain it
    composes for the prediction is the one the step then warps with (the same labels as plain prop-MV)."""
    torch.manual_seed(0)
    prop = PropMV(
        9,
        3,
        net=NET,
        deviation_channels=8,
        deviation_input="motion",
        keyframe_policy="adaptive",
        deviation_threshold=0.0,
    ).eval()
    assert prop.deviation.convs[0].in_channels == prop.net.feat.backbone.channels["layer2"] + 1
    b = pair(2)
    low_k, low_t = (prop.net.low_features(b[k]) for k in ("key", "cur"))
    warped, _, lost = prop._deviation_inputs(low_k, low_t, torch.zeros(2, 2, 8, 12), torch.ones(2, 8, 12), (32, 48))
    torch.testing.assert_close(warped, low_k)
    assert lost.shape == (2, 1, *low_t.shape[-2:]) and (lost == 0).all()
    moved = torch.zeros(2, 2, 8, 12)
    moved[:, 0] = 8.0  # t's content sits 8 px right of k's (a 2-cell shift on the 4-px grid)
    warped, _, lost = prop._deviation_inputs(low_k, low_t, moved, torch.zeros(2, 8, 12), (32, 48))
    assert (lost == 1).all()
    torch.testing.assert_close(warped, low_k)  # a lost cell's motion is not applied
    b.update(offset_cur_to_key=moved, mask_cur_to_key=torch.ones(2, 8, 12))
    assert set(prop.training_loss(b)) == {"loss", "deviation", "deviation_target"}
    streams_as_plain_prop_mv(prop, tiny_dataset / "videos" / "val" / "clip_0000.mp4")
    with pytest.raises(ValueError, match="deviation_input must be one of"):
        PropMV(4, 3, net=NET, deviation_channels=8, deviation_input="flow")
