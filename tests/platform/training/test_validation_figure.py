"""The validation figure draws target and prediction of per-pixel classes in the same colours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cardiossl.platform.training.figures import _draw_prediction  # noqa: E402
from cardiossl.pretexts import build_pretext  # noqa: E402
from cardiossl.pretexts.testing import example_subject  # noqa: E402


def overlay_colour(ax, k: int):
    im = ax.get_images()[-1]
    return tuple(np.round(im.cmap(im.norm(k)), 6))


def test_target_and_prediction_share_one_colour_per_class():
    pretext = build_pretext("position", {"target": "boxes"})
    sample = pretext.make_target(example_subject(shape=(64, 64))[2], np.random.default_rng(0))
    target = np.asarray(sample["target"])
    assert set(np.unique(target)) - {0}, "the example slice should hold boxes"
    out = np.zeros((10, 64, 64), np.float32)
    out[target, np.arange(64)[:, None], np.arange(64)[None, :]] = 1.0  # a perfect prediction
    fig, (left, right) = plt.subplots(1, 2)
    pretext.draw(left, sample)
    _draw_prediction(right, pretext, sample, out)
    for k in range(1, 10):
        assert overlay_colour(left, k) == overlay_colour(right, k), k
    assert overlay_colour(right, 1)[:3] == tuple(np.round(plt.get_cmap("tab10")(0), 6))[:3]
    plt.close(fig)
