"""`mvseg bench flops`: AR-Seg's cost per frame, a table like its Table 1 (Hu et al., CVPR 2023).

For each backbone and resolution: the HR image model on every frame (1.0x) and AR-Seg at
LR scales s (AR^s), averaged over a keyframe interval L (one HR keyframe, L-1 LR frames):

    GFLOPs(AR^s) = (HR(frame) + (L - 1) * [LR branch(s * frame) + CReFF + C_1x1]) / L

Counted with torch.utils.flop_counter on meta tensors (no compute, any resolution). Torch
counts a multiply-add as 2 FLOPs; AR-Seg's Table 1 (thop) counts it as 1, so both are
reported: ``gmacs`` is the paper's "GFLOPs". The local attention (elementwise ops the counter
does not see) is added analytically; the MV warp (bilinear sampling) is not counted.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mvseg.bench.common import print_table, write_json
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies.arseg import ARSeg, features

#: Backbones. psp18: the authors' Cityscapes-style PSPNet-18 (dilated ResNet-18, output stride
#: 8, 512 channels before the classifier); psp18_camvid: their CamVid PSPNet-18 (the same trunk,
#: a decoder up-sampling to 64 channels at full resolution: head psp_up); bise18: BiSeNet V1 with a
#: ResNet-18 context path (mvseg.models.bisenet; CReFF on its 256-channel output-head feature); cpu: the
#: synthetic-data config of experiments/arseg.yaml.
BACKBONES = {
    "psp18": SegNetConfig(backbone="resnet18", width=1.0, output_stride=8, feat_dim=512, head="psp", head_dim=512),
    "psp18_camvid": SegNetConfig(
        backbone="resnet18", width=1.0, output_stride=8, feat_dim=512, head="psp_up", head_dim=64
    ),
    "bise18": SegNetConfig(backbone="bisenet18", width=1.0, output_stride=8, feat_dim=256, head="plain", head_dim=256),
    "cpu": SegNetConfig(backbone="resnet18", width=0.25, output_stride=8, feat_dim=128, head="psp", head_dim=64),
}

#: AR-Seg Table 1, GFLOPs (multiply-adds), Cityscapes 1024x2048 and CamVid 720x960, PSPNet-18.
PAPER_PSP18 = {
    (1024, 2048): {1.0: 560.97, 0.7: 302.95, 0.6: 234.91, 0.5: 177.44},
    (720, 960): {1.0: 309.02, 0.7: 169.86, 0.6: 133.09, 0.5: 101.98},
}
#: The same for BiSeNet18. Our count of the authors' BiSeNet (model/bisenet.py of their code, which
#: mvseg.models.bisenet follows) is 39.1 GMACs at 720x960, not 58.83: what else their count
#: includes is not stated; the AR^s / 1.0x ratios are compared.
# each PSPNet-18 against its own dataset's rows: the Cityscapes model at 1024x2048, the CamVid one at 720x960
PAPER = {
    "psp18": {(1024, 2048): PAPER_PSP18[(1024, 2048)]},
    "psp18_camvid": {(720, 960): PAPER_PSP18[(720, 960)]},
    "bise18": {
        (1024, 2048): {1.0: 178.96, 0.7: 97.10, 0.6: 76.06, 0.5: 57.00},
        (720, 960): {1.0: 58.83, 0.7: 31.89, 0.6: 24.68, 0.5: 18.96},
    },
}


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def arseg_flops(
    cfg: SegNetConfig, height: int, width: int, scale: float, interval: int, num_classes: int = 19, window: int = 7
) -> dict:
    """FLOPs (2 per multiply-add) of a keyframe, a non-keyframe and their mean over `interval`."""
    m = ARSeg(num_classes, interval, net=cfg, lr_scale=min(scale, 1.0), window=window).to("meta").eval()
    x = torch.empty(1, 3, height, width, device="meta")
    key = _flops(lambda: m.hr(x))
    if scale >= 1.0:  # 1.0x: the image model on every frame
        return {"key": key, "nonkey": key, "per_frame": key}
    feat = features(m.hr, x)
    off = torch.empty(1, 2, -(-height // 4), -(-width // 4), device="meta")
    mask = torch.empty(1, off.shape[2], off.shape[3], device="meta")
    nonkey = _flops(lambda: m.classify(m.lr_feature(x, feat, off, mask), (height, width)))
    nonkey += m.creff.attention_flops(feat.shape[1], feat.shape[2], feat.shape[3])
    return {"key": key, "nonkey": nonkey, "per_frame": (key + (interval - 1) * nonkey) / interval}


def run_bench_flops(
    backbones: list[str], sizes: list[tuple[int, int]], scales: list[float], interval: int, json_out: str | None
) -> list[dict]:
    rows = []
    for name in backbones:
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
        for h, w in sizes:
            base = None
            for s in scales:
                f = arseg_flops(BACKBONES[name], h, w, s, interval)
                base = base or f["per_frame"]
                table = PAPER.get(name, {}).get((h, w), {})
                paper = table.get(s)
                rows.append(
                    {
                        "backbone": name,
                        "size": f"{h}x{w}",
                        "method": "1.0x" if s >= 1.0 else f"AR{s:g}",
                        "interval": interval,
                        "gflops": f["per_frame"] / 1e9,
                        "gmacs": f["per_frame"] / 2e9,
                        "ratio": f["per_frame"] / base,
                        "paper_gflops": paper,
                        "paper_ratio": paper / table[1.0] if paper else None,
                    }
                )
    print_table(
        rows, ["backbone", "size", "method", "interval", "gflops", "gmacs", "ratio", "paper_gflops", "paper_ratio"]
    )
    write_json(
        json_out,
        {
            "bench": "flops",
            "convention": "gflops: 2 FLOPs per multiply-add (torch); gmacs: 1 (AR-Seg's Table 1)",
            "rows": rows,
        },
    )
    return rows
