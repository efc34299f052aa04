"""render_targets: the PNG a user checks and the .npz of targets and trace lines."""

from __future__ import annotations

import numpy as np
import pytest

from cardiossl.pretexts import build_pretext
from cardiossl.pretexts.figures import render_targets
from cardiossl.pretexts.position import trace
from cardiossl.pretexts.testing import example_subject


def read_png(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def test_position_figure_and_npz(tmp_path):
    samples = example_subject(n_slices=5, shape=(64, 64))
    pre = build_pretext("position")
    summary = render_targets(samples, pre, tmp_path / "fig.png", npz=tmp_path / "t.npz", seed=4)
    assert summary == {"slices": 8, "with_target": 5, "png": str(tmp_path / "fig.png"), "npz": str(tmp_path / "t.npz")}
    img = read_png(tmp_path / "fig.png")
    assert img.shape[0] > 300 and img.shape[1] > 600 and img[..., :3].std() > 0.05
    z = np.load(tmp_path / "t.npz")
    assert str(z["pretext"]) == "position"
    assert z["view"].tolist() == ["sa"] * 5 and z["slice_index"].tolist() == [0, 1, 2, 3, 4]
    assert z["target"].shape == (5, 64, 64) and z["input"].shape == (5, 1, 64, 64)
    assert z["trace_views"][0].tolist() == ["2ch", "3ch", "4ch"]
    assert z["trace_points"].shape == (5, 3, 2, 2) and z["cross_point"].shape == (5, 2)
    for k, s in enumerate(samples[:5]):
        # Targets are what the pretext makes for that slice.
        np.testing.assert_array_equal(z["target"][k], pre.make_target(s, np.random.default_rng(0))["target"])
        # Each saved trace segment lies on the trace of that LA plane, end points on the border.
        for v in range(3):
            p, d_mm, _ = trace(s["plane"], s["la_planes"][v])
            d = d_mm / s["plane"][9:11]
            for end in z["trace_points"][k, v]:
                off = end - p
                assert abs(off[0] * d[1] - off[1] * d[0]) < 1e-6
                assert min(end.min() + 0.5, 63.5 - end.max()) < 1e-6
        # The crossing lies on both the 2ch and the 4ch traces and at the centre box.
        c = z["cross_point"][k]
        assert z["target"][k][int(round(c[0])), int(round(c[1]))] == 5
        np.testing.assert_allclose(z["box_centres"][k][4], c)


@pytest.mark.parametrize("name, cfg", [("rotation", {}), ("context", {"mode": "restore"}), ("position", {"target": "lines"})])
def test_other_pretexts_render(tmp_path, name, cfg):
    samples = example_subject(n_slices=3, shape=(32, 32))
    pre = build_pretext(name, cfg)
    summary = render_targets(samples, pre, tmp_path / "f.png", npz=tmp_path / "f.npz")
    z = np.load(tmp_path / "f.npz")
    assert summary["with_target"] == len(z["target"])
    assert (tmp_path / "f.png").stat().st_size > 10_000
    if name == "context":
        assert z["target_mask"].shape == (6, 1, 32, 32) and z["target_mask"].max() == 1.0


def test_no_samples_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        render_targets([], build_pretext("rotation"), tmp_path / "x.png")
