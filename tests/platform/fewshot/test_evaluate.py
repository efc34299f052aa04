"""Evaluation metrics against masks whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.platform.fewshot.evaluate import (
    MYOCARDIAL_DENSITY_G_PER_ML,
    EvaluationError,
    clinical_measures,
    collect_stacks,
    label_volumes_ml,
    segmentation_metrics,
    slice_spacing_mm,
    stack_spacing,
    subject_summary,
)


def _stack(shape=(4, 32, 32)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_dice_of_shifted_squares_is_known():
    y = _stack()
    p = _stack()
    y[1, 10:14, 10:14] = 1  # 16 voxels
    p[1, 10:14, 11:15] = 1  # shifted one column: overlap 12
    y[2, 5:9, 5:9] = 2  # identical myocardium and RV: Dice 1, HD95 0
    p[2, 5:9, 5:9] = 2
    y[3, 20:24, 20:24] = 3
    p[3, 20:24, 20:24] = 3
    m = segmentation_metrics(p, y, (8.0, 1.5, 1.5))
    assert m["dice_lv_cavity"] == pytest.approx(2 * 12 / 32)
    assert m["dice_lv_myocardium"] == pytest.approx(1.0)
    assert m["dice_rv_cavity"] == pytest.approx(1.0)
    assert m["dice_mean"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert m["hd95_lv_myocardium"] == pytest.approx(0.0)


def test_hd95_uses_anisotropic_spacing_in_slice_row_col_order():
    y = _stack()
    p = _stack()
    y[0, 5, 5] = 1
    p[2, 5, 8] = 1  # 2 slices and 3 columns apart
    y[1, 3, 3] = p[1, 3, 3] = 2
    y[1, 9, 9] = p[1, 9, 9] = 3
    m = segmentation_metrics(p, y, (8.0, 1.25, 1.5))
    assert m["hd95_lv_cavity"] == pytest.approx(math.hypot(2 * 8.0, 3 * 1.5), rel=1e-5)
    assert m["dice_lv_cavity"] == 0.0


def test_hd95_ignores_a_far_outlier_that_the_maximum_would_see():
    y = _stack((4, 40, 40))
    y[:, 5:15, 5:15] = 1
    p = y.copy()
    p[0, 35, 35] = 1  # one stray voxel ~28 px away
    m = segmentation_metrics(p, y, (1.0, 1.0, 1.0))
    assert m["hd95_lv_cavity"] == pytest.approx(0.0, abs=1e-6)
    assert m["dice_lv_cavity"] < 1.0


def test_empty_structures_follow_the_documented_rule():
    """Present in exactly one of label and prediction: Dice 0, HD95 undefined and counted (never an
    FOV diagonal averaged in); absent from both: Dice 1, HD95 0."""
    y = _stack((2, 10, 20))
    p = _stack((2, 10, 20))
    y[0, 2:5, 2:5] = 1  # LV cavity missed by the prediction
    p[1, 2:5, 2:5] = 3  # RV cavity hallucinated
    # LV myocardium absent from both
    m = segmentation_metrics(p, y, (10.0, 2.0, 1.0))
    assert m["dice_lv_cavity"] == 0.0 and math.isnan(m["hd95_lv_cavity"]) and m["empty_lv_cavity"] == 1.0
    assert m["dice_rv_cavity"] == 0.0 and math.isnan(m["hd95_rv_cavity"]) and m["empty_rv_cavity"] == 1.0
    assert m["dice_lv_myocardium"] == 1.0 and m["hd95_lv_myocardium"] == 0.0 and m["empty_lv_myocardium"] == 0.0
    assert m["hd95_mean"] == 0.0 and m["dice_mean"] == pytest.approx(1 / 3)


def test_unannotated_classes_are_left_out_of_every_score():
    """A reference that annotates LV cavity and myocardium only (Sunnybrook): a perfect LV + MYO
    prediction scores 1.0 whatever it predicts where the RV would be."""
    y = _stack((3, 24, 24))
    y[:, 6:18, 6:18] = 2
    y[:, 9:15, 9:15] = 1
    p = y.copy()
    p[:, 0:4, 18:24] = 3  # RV pixels where the reference says 0 (= "not annotated" there)
    full = segmentation_metrics(p, y, (8.0, 1.5, 1.5))
    assert full["dice_rv_cavity"] == 0.0 and full["dice_mean"] == pytest.approx(2 / 3)  # scored as wrong
    m = segmentation_metrics(p, y, (8.0, 1.5, 1.5), annotated=(1, 2))
    assert m["dice_mean"] == 1.0 and m["hd95_mean"] == 0.0
    assert math.isnan(m["dice_rv_cavity"]) and math.isnan(m["hd95_rv_cavity"]) and m["empty_rv_cavity"] == 0.0
    from cardiossl.platform.fewshot.evaluate import regional_dice, segmentation_dice

    assert segmentation_dice(p, y, annotated=(1, 2))["dice_mean"] == 1.0
    assert regional_dice(p, y, annotated=(1, 2)) == {"dice_basal": 1.0, "dice_mid": 1.0, "dice_apical": 1.0}


def test_regional_dice_splits_the_labelled_slices_into_thirds_base_to_apex():
    from cardiossl.platform.fewshot.evaluate import regional_dice

    y = _stack((8, 10, 10))
    y[1:7, 2:8, 2:8] = 1  # 6 labelled slices: thirds 1-2, 3-4, 5-6
    p = y.copy()
    p[5:7] = 0  # the apical third missed entirely
    p[3, 2:8, 2:5] = 0  # half of one mid slice missed
    r = regional_dice(p, y)
    assert r["dice_basal"] == 1.0 and r["dice_apical"] == pytest.approx(2 / 3)  # LV 0, Myo/RV absent: 1
    assert r["dice_mid"] == pytest.approx((2 * 54 / (72 + 54) + 2) / 3)


def test_bad_inputs_raise_clear_errors():
    y = _stack()
    with pytest.raises(EvaluationError, match="differs from label shape"):
        segmentation_metrics(_stack((3, 32, 32)), y, (1, 1, 1))
    with pytest.raises(EvaluationError, match="spacing"):
        segmentation_metrics(y, y, (1, 0, 1))
    bad = y.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(EvaluationError, match=r"\[7\]"):
        segmentation_metrics(bad, y, (1, 1, 1))


def test_volumes_of_boxes_and_discs_are_analytic():
    y = _stack((10, 64, 64))
    y[2:8, 10:20, 10:30] = 1  # 6 slices x 10 x 20 px
    sp = (8.0, 1.25, 1.5)
    vol = label_volumes_ml(y, sp)
    assert vol["lv_cavity"] == pytest.approx(6 * 10 * 20 * 8.0 * 1.25 * 1.5 / 1000.0)
    # a disc of radius 40 mm on a 0.5 mm grid over 5 slices of 10 mm: pi r^2 h within 0.5%
    r_mm, px = 40.0, 0.5
    n = 200
    rr, cc = np.mgrid[0:n, 0:n]
    disc = ((rr - n / 2 + 0.5) * px) ** 2 + ((cc - n / 2 + 0.5) * px) ** 2 <= r_mm**2
    z = np.zeros((5, n, n), np.uint8)
    z[:, disc] = 3
    v = label_volumes_ml(z, (10.0, px, px))["rv_cavity"]
    assert v == pytest.approx(math.pi * r_mm**2 * 50.0 / 1000.0, rel=5e-3)


def test_clinical_measures_ef_and_mass_from_analytic_shapes():
    px, n, h = 0.5, 200, 10.0
    rr, cc = np.mgrid[0:n, 0:n]
    dist = np.hypot((rr - n / 2 + 0.5) * px, (cc - n / 2 + 0.5) * px)

    def heart(r_cav: float, r_epi: float) -> np.ndarray:
        s = np.zeros((6, n, n), np.uint8)
        s[:, dist <= r_epi] = 2
        s[:, dist <= r_cav] = 1
        return s

    ed, es = heart(25.0, 33.0), heart(18.0, 29.0)
    sp = (h, px, px)
    m = clinical_measures(ed, es, sp)
    edv = math.pi * 25.0**2 * 6 * h / 1000
    esv = math.pi * 18.0**2 * 6 * h / 1000
    assert m["lv_edv_ml"] == pytest.approx(edv, rel=5e-3)
    assert m["lv_esv_ml"] == pytest.approx(esv, rel=5e-3)
    assert m["lv_ef_pct"] == pytest.approx((edv - esv) / edv * 100, rel=1e-2)
    myo = math.pi * (33.0**2 - 25.0**2) * 6 * h / 1000
    assert m["lv_mass_g"] == pytest.approx(myo * MYOCARDIAL_DENSITY_G_PER_ML, rel=1e-2)
    assert m["rv_edv_ml"] == 0.0 and math.isnan(m["rv_ef_pct"])


def test_per_slice_spacing_for_mixed_in_plane_geometry():
    y = np.zeros((2, 8, 8), np.uint8)
    y[:, :4, :4] = 1
    v = label_volumes_ml(y, [(10.0, 1.0, 1.0), (10.0, 2.0, 2.0)])["lv_cavity"]
    assert v == pytest.approx((16 * 10 + 16 * 40) / 1000.0)


def _sa_planes(n: int, gap: float) -> list[Plane]:
    row, col = np.array([1.0, 0, 0]), np.array([0, 0.6, -0.8])
    normal = np.cross(row, col)
    return [Plane(np.array([5.0, 2, 1]) + k * gap * normal + 3.0 * k * row, row, col, (1.5, 1.5))
            for k in range(n)]


def test_slice_spacing_from_planes_ignores_in_plane_shifts():
    planes = _sa_planes(5, 8.0)
    assert slice_spacing_mm(planes) == pytest.approx(8.0)
    assert stack_spacing([p.to_vector() for p in planes]) == pytest.approx((8.0, 1.5, 1.5))
    with pytest.raises(EvaluationError, match="two slices"):
        slice_spacing_mm(planes[:1])


def test_collect_stacks_orders_base_to_apex_and_summary_averages_phases():
    planes = _sa_planes(3, 10.0)
    samples = []
    for phase in ("ed", "es"):
        for k in (2, 0, 1):
            lab = np.zeros((8, 8), np.int64)
            lab[k, k] = 1
            samples.append({"subject_id": "s1", "phase": phase, "slice_index": k,
                            "image": np.zeros((1, 8, 8), np.float32), "label": lab,
                            "plane": planes[k].to_vector()})
    stacks = collect_stacks(samples)
    st = stacks[("s1", "ed")]
    assert list(st["slice_index"]) == [0, 1, 2]
    assert [int(np.argwhere(lab)[0, 0]) for lab in st["labels"]] == [0, 1, 2]
    rows = [{"subject_id": "s1", "phase": "ed", **{k: 1.0 for k in _keys()}, "empty_rv_cavity": 1.0},
            {"subject_id": "s1", "phase": "es", **{k: 0.5 for k in _keys()}, "hd95_rv_cavity": float("nan")}]
    (summary,) = subject_summary(rows)
    assert summary["dice_mean"] == pytest.approx(0.75) and summary["phases"] == "ed+es"
    assert summary["hd95_rv_cavity"] == 1.0 and summary["empty_rv_cavity"] == 1.0  # defined values; counts summed


def _keys():
    from cardiossl.platform.fewshot.evaluate import metric_names

    return metric_names()


def test_selection_dice_matches_the_reported_dice():
    from cardiossl.platform.fewshot.evaluate import segmentation_dice

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=(3, 16, 16))
    p = np.where(rng.random((3, 16, 16)) < 0.2, rng.integers(0, 4, size=(3, 16, 16)), y)
    p[p == 2] = 0  # myocardium never predicted: Dice 0 by the empty rule
    full = segmentation_metrics(p, y, (5.0, 1.0, 1.0))
    fast = segmentation_dice(p, y)
    for k in ("dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity", "dice_mean"):
        assert fast[k] == pytest.approx(full[k])
    assert fast["dice_lv_myocardium"] == 0.0
