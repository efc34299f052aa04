"""Version-2 population: group proportions as configured, each group's measures in its documented
ranges, and hearts built to their drawn EF, volumes and regional walls."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cardiossl.datasets.synthetic.heart import Heart
from cardiossl.datasets.synthetic.population import (
    GROUPS,
    draw_group,
    draw_phenotype,
    normalise_population,
)
from cardiossl.datasets.synthetic.tissues import CLASS_TO_LABEL, LV_MYO, LV_PAP, LV_TRAB


def _hearts(group, n=12, seed=0):
    out = []
    for i in range(n):
        ph = draw_phenotype(np.random.default_rng([seed, i, 1]), group)
        out.append(Heart(np.random.default_rng([seed, i, 2]), ph))
    return out


def test_group_proportions_follow_the_configured_weights():
    weights = {"NOR": 3, "DCM": 1, "HCM": 0, "MINF": 1, "RV": 1}
    props = normalise_population(weights)
    assert props["HCM"] == 0 and props["NOR"] == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    counts = np.bincount([GROUPS.index(draw_group(rng, props)) for _ in range(3000)], minlength=len(GROUPS))
    expected = np.array([props[g] for g in GROUPS]) * 3000
    assert counts[GROUPS.index("HCM")] == 0
    nz = expected > 0
    assert stats.chisquare(counts[nz], expected[nz]).pvalue > 0.001
    assert normalise_population(None) == {g: 0.2 for g in GROUPS}  # ACDC's equal split


@pytest.mark.parametrize("bad, message", [({"NORMAL": 1}, "unknown group"), ({"NOR": -1}, ">= 0"),
                                          ({"NOR": 0}, "sum to 0"), ({"NOR": "x"}, "must be a number"),
                                          ([], "must map group names")])
def test_bad_proportions_are_refused_naming_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        normalise_population(bad)


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_lands_in_its_documented_ranges(group):
    for h in _hearts(group):
        ed, es = h.volumes(0.0), h.volumes(1.0)
        ef = 1.0 - es["lv_cavity"] / ed["lv_cavity"]
        rv_ef = 1.0 - es["rv_cavity"] / ed["rv_cavity"]
        wall = h.wall_stats(0.0)
        ph = h.phenotype
        # built to the drawn phenotype
        assert ed["lv_cavity"] == pytest.approx(ph["lv_edv_ml"], rel=0.01)
        assert ef == pytest.approx(ph["lv_ef"], abs=0.01)
        assert ed["rv_cavity"] == pytest.approx(ph["rv_edv_ml"], rel=0.12)
        assert rv_ef == pytest.approx(ph["rv_ef"], abs=0.06)
        # the cohort's overall ranges (issue 12) and ACDC's group criteria
        assert 80.0 <= ed["lv_cavity"] <= 350.0 and 0.15 <= ef <= 0.75
        assert 5.0 <= wall["min"] and wall["max"] <= 20.0 + 1e-6
        assert es["lv_myocardium"] == pytest.approx(ed["lv_myocardium"], rel=0.06)  # the wall keeps its volume
        if group == "NOR":
            assert ef > 0.5 and wall["max"] < 12.0
        elif group == "DCM":
            assert ef < 0.4 and ed["lv_cavity"] > 200.0
        elif group == "HCM":
            assert ef > 0.55 and wall["max"] > 15.0
        elif group == "MINF":
            assert ef < 0.4
        else:
            assert ed["rv_cavity"] > 190.0  # ACDC: RV volume > 110 ml/m^2 (or RVEF < 40 %)


def test_infarct_sector_is_thin_and_akinetic_and_hcm_thickest_at_its_centre():
    for h in _hearts("MINF", n=6, seed=3):
        inf = h.phenotype["infarct"]
        zeta = 0.5 * (max(inf["depth_from"], 0.05) + min(inf["depth_to"], 0.9))
        at = np.deg2rad(inf["centre_deg"])
        far = at + np.pi
        e0, p0 = h.lv_radii(np.cos(at), np.sin(at), zeta, 0.0)
        e1, p1 = h.lv_radii(np.cos(at), np.sin(at), zeta, 1.0)
        r0, q0 = h.lv_radii(np.cos(far), np.sin(far), zeta, 0.0)
        r1, q1 = h.lv_radii(np.cos(far), np.sin(far), zeta, 1.0)
        assert p0 - e0 < 0.8 * (q0 - r0)  # thinned
        assert (e0 - e1) / e0 < 0.5 * (r0 - r1) / r0  # the endocardium barely moves in
        assert (p1 - e1) < 1.25 * (p0 - e0) and (q1 - r1) > 1.1 * (q0 - r0)  # no thickening there, remote thickens
    for h in _hearts("HCM", n=6, seed=4):
        th = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        endo, epi = h.lv_radii(np.cos(th), np.sin(th), 0.3, 0.0)
        peak = np.rad2deg(th[np.argmax(epi - endo)])
        d = abs((peak - h.phenotype["hypertrophy"]["centre_deg"] + 180) % 360 - 180)
        assert h.phenotype["hypertrophy"]["pattern"] == "concentric" or d < 20.0


def test_papillary_muscles_and_trabeculae_are_labelled_cavity_and_volumes_match_the_labels():
    h = _hearts("DCM", n=1, seed=7)[0]
    step = 1.0
    lo, hi = h.heart_box()
    axes = [np.arange(lo[i], hi[i], step) + step / 2 for i in range(3)]
    for c in (0.0, 1.0):
        counts, seen = np.zeros(4), set()
        for w in axes[2]:
            S, A = np.meshgrid(axes[0], axes[1], indexing="ij")
            q = np.stack([S.ravel(), A.ravel(), np.full(S.size, w)], axis=1)
            cls = h.classes(q, c)
            seen |= set(np.unique(cls).tolist())
            counts += np.bincount(CLASS_TO_LABEL[cls], minlength=4)[:4]
        ml = counts * step**3 / 1000.0
        truth = h.volumes(c)
        assert ml[1] == pytest.approx(truth["lv_cavity"], rel=0.02)
        assert ml[2] == pytest.approx(truth["lv_myocardium"], rel=0.03)
        assert ml[3] == pytest.approx(truth["rv_cavity"], rel=0.04)
        assert {LV_PAP, LV_TRAB, LV_MYO} <= seen
    assert CLASS_TO_LABEL[LV_PAP] == CLASS_TO_LABEL[LV_TRAB] == 1


def test_rv_shapes_vary_between_subjects():
    hearts = _hearts("NOR", n=10, seed=8)
    semi = np.array([h.rv_semi for h in hearts])
    rot = np.array([h.rv_rot for h in hearts])
    assert np.all(semi.std(axis=0) / semi.mean(axis=0) > 0.05)
    assert np.ptp(np.rad2deg(rot)) > 10.0
