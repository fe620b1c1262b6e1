"""Memory traffic of each kernel, from its design: what it must move and what it asks for.

For one launch of each kernel, three byte counts:

- minimum: the tensors it reads and writes, each once (the DRAM floor; intermediates the
  design stores, such as the attention weights P and dS, count, as they cross DRAM);
- distinct: the bytes one program's tile touches, summed over programs: a block of BLOCK_P
  pixels of one row gathers K rows of BLOCK_P + K - 1 neighbours per channel, so the window
  taps of neighbouring pixels share these bytes through L1 (what L2 must deliver at most);
- requested: the bytes of every load, store and atomic the kernel issues (all K*K taps of
  every pixel counted, an upper bound at the image border): what the load/store units see.

`python -m triton_kernels.traffic` prints them at the papers' sizes. The model is checked
against a count of the kernels' own loads in the interpreter (tests/triton_kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1e6


@dataclass
class Traffic:
    kernel: str
    minimum: float  # bytes
    distinct: float
    requested: float


def inside(h: int, w: int, k: int) -> int:
    """(pixel, tap) pairs of a KxK window whose neighbour lies in an h x w image."""
    r = k // 2
    return sum(max(0, h - abs(d)) for d in range(-r, r + 1)) * sum(max(0, w - abs(d)) for d in range(-r, r + 1))


def _gather_distinct(k: int, block_p: int) -> float:
    """Elements per channel per pixel a program gathers from its KxK window (shared by the taps
    of its pixels through L1): K rows of BLOCK_P + K - 1 pixels for BLOCK_P pixels."""
    return k * (block_p + k - 1) / block_p


def local_attention(
    b: int, c: int, cv: int, h: int, w: int, k: int = 7, s: int = 4, train: bool = True, block_p: int = 32
) -> list[Traffic]:
    """CReFF's local attention: q, k (b, c, h, w), v (b, cv, h, w), window k, s bytes an element.
    Requested bytes are exact (taps outside the image are masked off and move nothing)."""
    n, t, i = b * h * w, k * k, b * inside(h, w, k)
    g = _gather_distinct(k, block_p)
    p = 4 * t * n if train else 0  # P (fp32), written for the backward
    rows = [
        Traffic(
            "_la_fwd",
            n * s * (2 * c + 2 * cv) + p,
            n * s * (c + g * c + g * cv + cv) + p,
            s * (n * c + i * c + i * cv + n * cv) + p,
        )
    ]
    if train:
        ds = 4 * t * n  # dS (fp32): written by _la_bwd_q, read by _la_bwd_kv
        rows += [
            Traffic(
                "_la_bwd_q",
                n * s * (cv + cv + c + c) + p + ds,  # dO, v, k, dq; P; dS
                n * s * (cv + g * cv + g * c + c) + p + ds,
                s * (n * cv + i * cv + i * c + n * c) + 4 * i + ds,
            ),
            Traffic(
                "_la_bwd_kv",
                n * s * (c + cv + c + cv) + p + ds,  # q, dO, dk, dv; P; dS
                n * s * (g * c + g * cv + c + cv) + p + ds,
                s * (i * c + i * cv + n * c + n * cv) + 4 * 2 * i,
            ),
        ]
    return rows


def sv_conv(
    b: int, c: int, h: int, w: int, k: int = 9, s: int = 4, train: bool = True, block_p: int = 32
) -> list[Traffic]:
    """Li et al.'s spatially-variant convolution: features (b, c, h, w), kernels (b, k*k, h, w).
    Requested bytes are exact."""
    n, t, i = b * h * w, k * k, b * inside(h, w, k)
    g = _gather_distinct(k, block_p)
    rows = [Traffic("_svc_fwd", n * s * (t + 2 * c), n * s * (t + g * c + c), s * (i + i * c + n * c))]
    if train:
        rows += [
            Traffic("_svc_bwd_df", n * s * (t + 2 * c), n * s * (t + g * c + c), s * (i + i * c + n * c)),
            Traffic("_svc_bwd_dk", n * s * (2 * c + t), n * s * (c + g * c + t), s * (n * c + i * c + n * t)),
        ]
    return rows


def warp(b: int, c: int, hf: int, wf: int, hm: int, wm: int, s: int = 4, train: bool = True) -> list[Traffic]:
    """Block-motion warp: features (b, c, hf, wf), offsets (b, 2, hm, wm) fp32, no mask. The four
    bilinear corners of a pixel lie in two rows of its neighbourhood (motion within a block is
    one vector): about 2 feature elements per output element are distinct. Requested counts
    all four corners (an upper bound: corners outside the image move nothing)."""
    n, cells = b * hf * wf, b * hm * wm
    rows = [Traffic("_warp_fwd", n * s * 2 * c + 8 * cells, n * s * 3 * c + 8 * min(cells, n), n * s * 5 * c + 8 * n)]
    if train:  # features and offsets: dout read, features read (4 corners), fp32 atomics into dfeat and doff
        rows += [
            Traffic(
                "_warp_bwd",
                n * s * 2 * c + 4 * n * c + 16 * cells,
                n * s * 3 * c + 4 * 2 * c * n + 8 * min(cells, n) + 8 * n,
                n * s * 5 * c + 4 * 4 * c * n + 8 * n + 8 * n,
            )
        ]
    return rows


# The papers' sizes: CReFF at C=64 on 720x960 and on 1/8 of 1024x2048, at C=512 on 1/8 of 1024x2048 (Hu et al.), Li et
# al.'s propagation at C=256, K=9 on 1/8 of 1024x2048, the warp of C=256 features at 1/8 of
# 1024x2048 by 1/4 MVs.
PAPER = [
    ("local attention C=64 720x960 K=7", lambda s, train: local_attention(1, 64, 64, 720, 960, 7, s, train)),
    ("local attention C=64 128x256 K=7", lambda s, train: local_attention(1, 64, 64, 128, 256, 7, s, train)),
    ("local attention C=512 128x256 K=7", lambda s, train: local_attention(1, 512, 512, 128, 256, 7, s, train)),
    ("sv_conv C=256 128x256 K=9", lambda s, train: sv_conv(1, 256, 128, 256, 9, s, train)),
    ("warp C=256 128x256 by 256x512 MVs", lambda s, train: warp(1, 256, 128, 256, 256, 512, s, train)),
]


def table(s: int = 4, train: bool = True) -> str:
    lines = [
        "| case | kernel | minimum MB | distinct MB | requested MB | requested / minimum |",
        "|---|---|---|---|---|---|",
    ]
    for case, fn in PAPER:
        for r in fn(s, train):
            lines.append(
                f"| {case} | {r.kernel} | {r.minimum / MB:,.0f} | {r.distinct / MB:,.0f} | "
                f"{r.requested / MB:,.0f} | {r.requested / r.minimum:.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print("fp32, training (forward + backward kernels):\n" + table(4, True))
    print("\nbf16, inference:\n" + table(2, False))
