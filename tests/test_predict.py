"""mvseg predict's drawing: the legend beside the overlay."""

from __future__ import annotations

import numpy as np

from mvseg.data.synthetic import CLASSES, PALETTE
from mvseg.predict import legend


def test_the_legend_shows_every_class_beside_its_colour():
    palette = np.array(PALETTE, np.float32)
    for height in (64, 360):  # short frames take more columns
        panel = legend(list(CLASSES), palette, height)
        assert panel.shape[0] == height and panel.shape[2] == 3 and panel.shape[1] % 2 == 0
        colours = {tuple(int(v) for v in px) for px in panel.reshape(-1, 3)}
        assert all(tuple(int(v) for v in c) in colours for c in PALETTE)  # a swatch of each class
    assert legend(list(CLASSES), palette, 64).shape[1] > legend(list(CLASSES), palette, 360).shape[1]
