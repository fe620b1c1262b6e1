"""The training-only auxiliary heads of AR-Seg's image models, and the strategies that train with them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch

from mvseg.models.aux import AuxHeads
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies import ARSeg, PerFrame

PSP = SegNetConfig(width=0.125, feat_dim=32, head="psp", head_dim=16, dropout=0.0)
BISE = SegNetConfig(backbone="bisenet18", width=0.125, feat_dim=32, head="plain", head_dim=16, dropout=0.0)


def batch_of(b: int = 2, h: int = 64, w: int = 96, k: int = 4) -> dict:
    torch.manual_seed(0)
    label = torch.randint(0, k, (b, h // 8, w // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    label[:, :4] = 255
    img = torch.randn(b, 3, h, w) + label[:, None].clamp(max=k).float()  # learnable: the label shows in the image
    return {
        "cur": img,
        "key": img,
        "label": label,
        "distance": torch.zeros(b, dtype=torch.long),
        "offset_cur_to_key": torch.zeros(b, 2, h // 4, w // 4),
        "mask_cur_to_key": torch.ones(b, h // 4, w // 4),
    }


@pytest.mark.parametrize(
    "kind,cfg,keys", [("psp", PSP, ["layer3"]), ("presence", PSP, ["layer3"]), ("bisenet", BISE, ["cp8", "cp16"])]
)
def test_aux_heads_read_the_right_features_and_give_the_authors_loss(kind, cfg, keys):
    net = SegNet(cfg, 4)
    heads = AuxHeads(kind, net.aux_channels(), 4)
    assert sorted(heads.heads) == sorted(keys)
    b = batch_of()
    feat, aux_in = net.forward_aux(b["cur"])
    torch.testing.assert_close(feat, net.task.head(net.feat(b["cur"])))  # the feature the classifier reads
    loss = heads.loss(aux_in, b["label"], 255, lambda lo, y: F.cross_entropy(lo, y, ignore_index=255))
    if kind == "presence":  # BCE on max-pooled layer3 against the classes the label holds
        logits = heads.heads["layer3"](aux_in["layer3"].amax((2, 3)))
        present = torch.stack([torch.bincount(y[y != 255], minlength=4) > 0 for y in b["label"]]).float()
        torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, present))
    else:  # each head's CE at the label's size, summed
        heads.eval()
        expect = sum(
            F.cross_entropy(
                F.interpolate(heads.heads[k](aux_in[k]), (64, 96), mode="bilinear", align_corners=True),
                b["label"],
                ignore_index=255,
            )
            for k in keys
        )
        torch.testing.assert_close(
            heads.loss(aux_in, b["label"], 255, lambda lo, y: F.cross_entropy(lo, y, ignore_index=255)), expect
        )
    with pytest.raises(ValueError, match="needs the network's"):
        AuxHeads("bisenet" if kind != "bisenet" else "psp", net.aux_channels(), 4)


def test_per_frame_with_aux_and_ohem_trains_and_predicts_as_without(tmp_path):
    """The heads train with the network (loss = seg + 0.4 aux, falling) and never change its prediction."""
    b = batch_of()
    model = PerFrame(4, 3, net=PSP, aux="psp", loss="ohem")
    out = model.training_loss(b)
    torch.testing.assert_close(out["loss"], out["seg"] + 0.4 * out["aux"])
    losses = fit_batch(model, b, steps=20)
    assert losses[-1] < 0.6 * losses[0]
    plain = PerFrame(4, 3, net=PSP).eval()
    plain.net.load_state_dict(model.net.state_dict())
    model.eval()
    torch.testing.assert_close(model.predict_batch(b), plain.predict_batch(b))
    with pytest.raises(ValueError, match="loss must be one of"):
        PerFrame(4, 3, net=PSP, loss="focal")
    # AR-Seg's LR branch continues the HR model's heads (as the authors load the whole HR model)
    torch.save(
        {
            "state_dict": {
                **{f"net.{k}": v for k, v in model.net.state_dict().items()},
                **{f"aux.{k}": v for k, v in model.aux.state_dict().items()},
            }
        },
        tmp_path / "hr.ckpt",
    )
    ar = ARSeg(4, 3, net=PSP, init_from=str(tmp_path / "hr.ckpt"), aux="psp", loss="ohem", stage="lr")
    for k, v in model.aux.state_dict().items():
        torch.testing.assert_close(ar.aux.state_dict()[k], v)
    out = ar.training_loss(b)
    assert set(out) == {"loss", "ce", "fst_mse", "aux"}
    torch.testing.assert_close(out["loss"], out["ce"] + out["fst_mse"] + 0.4 * out["aux"])
    assert fit_batch(ar, b, steps=15)[-1] < out["loss"].item()
    fresh = ARSeg(4, 3, net=BISE, aux="bisenet", loss="ohem")  # another net's heads: a fresh start, no error
    assert sorted(fresh.aux.heads) == ["cp16", "cp8"]
