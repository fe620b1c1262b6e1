"""Test helpers: synthetic inputs with known answers."""

from __future__ import annotations

import numpy as np


def smooth_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A band-limited RGB texture (float, 0..255): sub-pixel shifts of it are well defined."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfft2(rng.normal(size=(3, h, w)))
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    f *= np.exp(-((kx**2 + ky**2) / (2 * 0.06**2)))
    img = np.fft.irfft2(f, s=(h, w))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 220 + 20).transpose(1, 2, 0)


def translating_frames(n: int, h: int, w: int, vx: float, vy: float, seed: int = 0) -> np.ndarray:
    """Frames of a texture moving so that content at p in frame t came from p + (vx, vy) in
    frame t-1 (the camera pans right/down by (vx, vy) per frame)."""
    tex = smooth_texture(h + 16 + int(abs(vy) * n) + 8, w + 16 + int(abs(vx) * n) + 8, seed)
    out = []
    for t in range(n):
        x, y = 8 + vx * t + (abs(vx) * n if vx < 0 else 0), 8 + vy * t + (abs(vy) * n if vy < 0 else 0)
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        a = tex[iy : iy + h + 1, ix : ix + w + 1]
        top = a[:-1, :-1] * (1 - fx) + a[:-1, 1:] * fx
        bot = a[1:, :-1] * (1 - fx) + a[1:, 1:] * fx
        out.append(np.clip(top * (1 - fy) + bot * fy, 0, 255).astype(np.uint8))
    return np.stack(out)
