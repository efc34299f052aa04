"""Version-2 appearance: coil shading, bSSFP bands, flow ghosts and jets, noise and vendor contrast do
what their model says."""

from __future__ import annotations

import numpy as np

from cardiossl.datasets.synthetic import tissues as T
from cardiossl.datasets.synthetic.appearance import VENDORS, Appearance
from cardiossl.datasets.synthetic.heart import Heart
from cardiossl.datasets.synthetic.population import draw_phenotype
from cardiossl.datasets.synthetic.torso import Torso


def _look(i, vendor="siemens", field_t=1.5, group="MINF"):
    heart = Heart(np.random.default_rng([i, 2]), draw_phenotype(np.random.default_rng([i, 1]), group))
    torso = Torso(np.random.default_rng([i, 3]), heart)
    return Appearance(np.random.default_rng([i, 4]), vendor, field_t, "rows", False, heart, torso.c,
                      (torso.bx, torso.by)), heart, torso


def test_coil_shading_is_one_at_the_heart_and_brighter_near_the_anterior_coils():
    for i in range(5):
        look, heart, torso = _look(i)
        lv = heart.lv_centre()
        assert abs(look.bias(lv[None])[0] - 1.0) < 1e-5
        anterior = np.array([c for c, _, _ in look.coils if c[1] < torso.c[1]])  # the anterior coil elements
        assert len(anterior) >= 2 and look.bias(anterior).max() > 1.0


def test_bssfp_bands_are_dark_and_away_from_the_shimmed_heart():
    dark_somewhere = 0
    for i in range(12):
        look, heart, _ = _look(i, field_t=3.0)
        lv = heart.lv_centre()
        g = np.stack(np.meshgrid(*(np.arange(-200.0, 201.0, 4.0),) * 2, indexing="ij"), -1).reshape(-1, 2)
        pts = lv + np.c_[g, np.zeros(len(g))]
        f = look.banding(pts)
        assert f.max() <= 1.0 and f.min() >= 1.0 - look.band_depth - 1e-6
        dark_somewhere += f.min() < 0.6
        near = np.linalg.norm(g, axis=1) < 30.0
        assert np.median(f[near]) > 0.5
    assert dark_somewhere >= 6  # bands are common at 3 T, and dark


def test_flow_ghosts_repeat_blood_along_phase_encoding_and_jets_darken_systolic_blood():
    look, heart, _ = _look(2)
    look.ghosts, look.resp_ghost, look.snr, look.circle, look.blur_px = [(0.25, 0.1)], None, 1e6, False, 0.01
    clean = np.zeros((64, 64), np.float32)
    clean[10:20, 30:40] = 1.0
    img = look.finish(clean, (clean > 0).astype(np.float32), np.random.default_rng(0)) / look.scale
    assert abs(img[26:36, 30:40].mean() - 0.1) < 0.02  # a ghost a quarter field of view down the rows
    assert img[10:20, 46:56].mean() < 0.02  # none along the frequency-encoding axis
    look.jets = [("lvot", heart.ao_p0, 6.0, 0.5)]
    centre = heart.ao_p0[None].astype(np.float32)
    assert look.jet_factor(centre, 0.0)[0] == 1.0 and look.jet_factor(centre, 1.0)[0] < 0.6


def test_contrast_and_noise_by_vendor():
    ratios = {}
    for v in VENDORS:
        r = []
        for i in range(8):
            look, _, _ = _look(i, vendor=v)
            assert 0.15 <= look.lut[T.LV_MYO] <= 0.36 and look.lut[T.LUNG] < 0.1 < look.lut[T.SUBCUT_FAT]
            assert look.lut[T.LV_CAV] == 1.0 and VENDORS[v]["snr"][0] <= look.snr <= VENDORS[v]["snr"][1] * 1.4
            r.append(look.lut[T.LV_MYO])
        ratios[v] = np.mean(r)
    assert max(ratios.values()) - min(ratios.values()) > 0.005
    look, _, _ = _look(0)
    img = look.finish(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32), np.random.default_rng(1))
    assert img.min() >= 0 and img.mean() > 0  # Rician: noise never cancels to negative values


def test_randomised_contrast_draws_every_tissue_from_its_own_stream():
    """SynthSeg-style contrast: every tissue class but air takes an independent intensity in [0, 1]
    (tissue orders vary between subjects), from ``contrast_rng`` only, so the site's other draws
    (noise, coils, bands) are what they are without it."""
    heart = Heart(np.random.default_rng([0, 2]), draw_phenotype(np.random.default_rng([0, 1]), "NOR"))
    torso = Torso(np.random.default_rng([0, 3]), heart)
    args = ("siemens", 1.5, "rows", False, heart, torso.c, (torso.bx, torso.by))
    site = Appearance(np.random.default_rng([0, 4]), *args)
    blood_brighter = []
    for k in range(12):
        look = Appearance(np.random.default_rng([0, 4]), *args, contrast_rng=np.random.default_rng(k))
        assert look.lut[T.AIR] == 0.0 and look.lut.max() == 1.0 and look.lut.min() >= 0.0
        assert len(np.unique(look.lut[1:])) == T.N_CLASSES - 1  # independent draws, no shared value
        assert look.snr == site.snr and look.tr_ms == site.tr_ms
        assert look.coils[0][0].tolist() == site.coils[0][0].tolist()
        m = look.meta()
        assert m["contrast_mode"] == "randomised" and m["contrast"]["table"]["lv_myocardium"] == look.lut[T.LV_MYO]
        blood_brighter.append(look.lut[T.LV_CAV] > look.lut[T.LV_MYO])
    assert any(blood_brighter) and not all(blood_brighter)  # the bSSFP order is not kept
    assert "contrast_mode" not in site.meta()
