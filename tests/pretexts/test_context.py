"""Context pretexts: inpainting masks (Pathak 2016), patch swaps (Chen 2019), losses vs references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cardiossl.pretexts import PretextConfigError
from cardiossl.pretexts.context import ContextPretext, psnr


def image(h=64, w=64, seed=0):
    return np.random.default_rng(seed).normal(size=(1, h, w)).astype(np.float32)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_inpaint_covers_the_fraction_and_fills_only_the_mask(fraction):
    pre = ContextPretext({"mask_fraction": fraction})
    img = image()
    covers = []
    for seed in range(20):
        out = pre.make_target({"image": img}, np.random.default_rng(seed))
        m = out["target_mask"][0].astype(bool)
        covers.append(m.mean())
        assert np.all(out["input"][0][m] == 0.0)
        np.testing.assert_array_equal(out["input"][0][~m], img[0][~m])
        np.testing.assert_array_equal(out["target"], img)
    covers = np.array(covers)
    # Rectangles are added until the goal is met; the last one may overshoot by at most one rectangle.
    assert covers.min() >= fraction - 1e-9
    assert covers.max() <= fraction + 0.25**2 + 1e-9


def test_inpaint_noise_fill_and_rectangle_sizes():
    pre = ContextPretext({"fill": "noise", "rect_min": 0.25, "rect_max": 0.25, "mask_fraction": 0.05})
    out = pre.make_target({"image": np.zeros((1, 40, 40), np.float32)}, np.random.default_rng(1))
    m = out["target_mask"][0].astype(bool)
    assert m.sum() == 100  # one 10 x 10 rectangle reaches 5 %
    assert out["input"][0][m].std() > 0.5


def test_restore_swaps_patches_and_keeps_the_intensities():
    pre = ContextPretext({"mode": "restore", "patch_size": 5, "n_swaps": 6})
    img = image(40, 48)
    out = pre.make_target({"image": img}, np.random.default_rng(3))
    x, m = out["input"], out["target_mask"][0].astype(bool)
    assert m.any()
    np.testing.assert_array_equal(np.sort(x.ravel()), np.sort(img.ravel()))  # a permutation of pixels
    np.testing.assert_array_equal(x[0][~m], img[0][~m])  # untouched outside the swapped patches
    assert not np.array_equal(x, img)
    np.testing.assert_array_equal(out["target"], img)


def test_restore_single_swap_against_reference():
    """With one swap the input is the image with two disjoint p x p patches exchanged."""
    pre = ContextPretext({"mode": "restore", "patch_size": 4, "n_swaps": 1})
    img = np.arange(20 * 20, dtype=np.float32).reshape(1, 20, 20)  # every pixel distinct
    out = pre.make_target({"image": img}, np.random.default_rng(11))
    m = out["target_mask"][0].astype(bool)
    assert m.sum() == 32
    changed = np.argwhere(out["input"][0] != img[0])
    assert len(changed) == 32
    # Each moved value came from exactly the same offset inside the other patch.
    src = {float(v): tuple(p) for p, v in np.ndenumerate(img[0])}
    shifts = {tuple(np.subtract(src[float(out['input'][0][r, c])], (r, c))) for r, c in changed}
    assert len(shifts) == 2 and sum(np.add(*shifts)) == 0  # +delta for one patch, -delta for the other


def slow_masked_mse(out, tgt, mask):
    num = den = 0.0
    for o, t, m in zip(out.ravel().tolist(), tgt.ravel().tolist(), mask.ravel().tolist()):
        num += m * (o - t) ** 2
        den += m
    return num / max(den, 1.0)


def test_inpaint_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 1, 8, 8, generator=g)
    tgt = torch.randn(2, 1, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.6).float()
    batch = {"target": tgt, "target_mask": mask}
    plain = ContextPretext().loss(out, batch)
    assert plain["loss"].item() == pytest.approx(slow_masked_mse(out, tgt, mask), rel=1e-5)
    weighted = ContextPretext({"unmasked_weight": 0.3}).loss(out, batch)
    ref = slow_masked_mse(out, tgt, mask) + 0.3 * slow_masked_mse(out, tgt, 1 - mask)
    assert weighted["loss"].item() == pytest.approx(ref, rel=1e-5)
    # Pixels outside the mask do not matter without the extra weight.
    out2 = out.clone()
    out2[mask == 0] += 100.0
    assert ContextPretext().loss(out2, batch)["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)


def test_restore_loss_and_psnr_match_reference():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(2, 1, 6, 6, generator=g)
    tgt = torch.randn(2, 1, 6, 6, generator=g)
    batch = {"target": tgt, "target_mask": torch.zeros(2, 1, 6, 6)}
    pre = ContextPretext({"mode": "restore"})
    assert pre.loss(out, batch)["loss"].item() == pytest.approx(slow_masked_mse(out, tgt, torch.ones_like(out)), rel=1e-5)
    ref = 0.0
    for b in range(2):
        mse = slow_masked_mse(out[b], tgt[b], torch.ones_like(out[b]))
        peak = float(tgt[b].max() - tgt[b].min())
        ref += 10 * math.log10(peak**2 / mse)
    assert pre.metrics(out, batch)["psnr"] == pytest.approx(ref / 2, rel=1e-5)
    assert psnr(tgt, tgt, torch.ones_like(tgt)) > 100  # perfect reconstruction


@pytest.mark.parametrize(
    "cfg, field",
    [({"mask_fraction": 0}, "mask_fraction"), ({"mode": "jigsaw"}, "mode"), ({"patch_size": 0}, "patch_size"),
     ({"rect_min": 0.5, "rect_max": 0.2}, "rect_min")],
)
def test_config_errors(cfg, field):
    with pytest.raises(PretextConfigError, match=field):
        ContextPretext(cfg)
