"""Version 4: version 3's subjects turned further in plane, with blood-pool signal variation and a
darker, more trabeculated RV; versions 2 and 3 unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from cardiossl.datasets.synthetic import synth_heart, synth_subject
from cardiossl.datasets.synthetic import tissues as T
from cardiossl.datasets.synthetic.acquisition import PLAN_DEFAULTS, plan_exam
from cardiossl.datasets.synthetic.appearance import Appearance
from cardiossl.datasets.synthetic.torso import Torso
from cardiossl.datasets.synthetic.v4 import HEART_OPTIONS, LOOK_OPTIONS, PLAN_OPTIONS

from synth_digest import digest


@pytest.mark.parametrize("version,pinned", [(2, "f8cb2c463ba197ad"), (3, "35becd830640d134")])
def test_earlier_versions_are_unchanged_array_for_array(version, pinned):
    """Pinned from the code before version 4 existed: adding a version must not move an earlier one."""
    subjects = [synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1, version=version) for i in (0, 3)]
    assert digest(*subjects) == pinned


def _centre(s) -> np.ndarray:
    rows, cols = s.image.shape
    p = s.plane
    return p.origin + (cols - 1) / 2 * p.spacing[1] * p.row_dir + (rows - 1) / 2 * p.spacing[0] * p.col_dir


def test_version_4_is_version_3s_subject_with_its_sa_images_turned_by_the_scaled_draw():
    scale = 1.0 - PLAN_DEFAULTS["display_sd_deg"] / PLAN_OPTIONS["display_sd_deg"]
    for i in (0, 5):
        a = synth_subject(f"synth{i:05d}", 1, n_frames=2, n_sub=1, version=3)
        b = synth_subject(f"synth{i:05d}", 1, n_frames=2, n_sub=1, version=4)
        assert b.meta["synth_version"] == 4 and "flow" in b.meta["appearance"] and "flow" not in a.meta["appearance"]
        for key in ("group", "phenotype", "volumes_ml", "lv_axis", "sa_slice_content", "epicardial_fat"):
            assert a.meta[key] == b.meta[key], key
        acq_a, acq_b = (json.loads(json.dumps(r.meta["acquisition"])) for r in (a, b))
        turn = acq_b["sa"].pop("display_rotation_deg")
        # breath-hold shifts are drawn along the displayed axes: turned with them, the same sizes
        mis_a, mis_b = np.array(acq_a["sa"].pop("misregistration_mm")), np.array(acq_b["sa"].pop("misregistration_mm"))
        np.testing.assert_allclose(np.linalg.norm(mis_a, axis=1), np.linalg.norm(mis_b, axis=1), atol=1e-9)
        for key in ("misregistration_in_plane_mm", "misregistration_through_plane_mm"):
            np.testing.assert_allclose(acq_a["sa"].pop(key), acq_b["sa"].pop(key), atol=1e-9)
        assert acq_b == acq_a
        assert len(a.slices) == len(b.slices)
        for sa, sb in zip(a.slices, b.slices):
            assert (sa.view, sa.slice_index, sa.frame) == (sb.view, sb.slice_index, sb.frame)
            assert not np.array_equal(sa.image, sb.image)
            if sa.view != "sa":  # long-axis views: the same planes and labels
                np.testing.assert_array_equal(sa.plane.to_vector(), sb.plane.to_vector())
                if sa.label is not None:
                    np.testing.assert_array_equal(sa.label, sb.label)
                continue
            np.testing.assert_allclose(sa.plane.normal, sb.plane.normal, atol=1e-9)
            np.testing.assert_allclose(_centre(sa), _centre(sb), atol=1e-6)
            cos = np.clip(sa.plane.row_dir @ sb.plane.row_dir, -1.0, 1.0)
            assert np.degrees(np.arccos(cos)) == pytest.approx(abs(turn) * scale, abs=1e-6)
            if sa.label is not None and (sa.label == 1).sum() > 100:  # the same anatomy, resampled turned
                assert (sb.label == 1).sum() == pytest.approx((sa.label == 1).sum(), rel=0.06)
                assert (sb.label == 2).sum() == pytest.approx((sa.label == 2).sum(), rel=0.1)


_HEART = synth_heart(0, 0, version=4)
_TORSO = Torso(np.random.default_rng(3), _HEART)


def test_the_sa_display_turn_spreads_as_configured_and_only_the_turn_changes():
    turns = []
    for i in range(300):
        plans, acq = plan_exam(_HEART, "ukbb_like", np.random.default_rng([i, 1]), np.random.default_rng([i, 2]),
                               _TORSO.c, options=PLAN_OPTIONS)
        turns.append(acq["sa"]["display_rotation_deg"])
        if i < 20:  # version 2's spread given explicitly: the same plans as without options
            same, _ = plan_exam(_HEART, "ukbb_like", np.random.default_rng([i, 1]), np.random.default_rng([i, 2]),
                                _TORSO.c, options={"display_sd_deg": PLAN_DEFAULTS["display_sd_deg"]})
            plain, _ = plan_exam(_HEART, "ukbb_like", np.random.default_rng([i, 1]), np.random.default_rng([i, 2]),
                                 _TORSO.c)
            for p, q in zip(same, plain):
                np.testing.assert_array_equal(p.plane.to_vector(), q.plane.to_vector())
    turns = np.array(turns)
    assert np.std(turns) == pytest.approx(PLAN_OPTIONS["display_sd_deg"], rel=0.12)
    assert abs(np.mean(turns)) < 5.0 and np.mean(np.abs(turns) > 45.0) > 0.05
    with pytest.raises(ValueError, match="unknown planning options.*'display_deg'"):
        plan_exam(_HEART, "ukbb_like", np.random.default_rng(0), np.random.default_rng(1), _TORSO.c,
                  options={"display_deg": 30})


def _look(i, options=LOOK_OPTIONS):
    return Appearance(np.random.default_rng([i, 4]), "siemens", 1.5, "rows", False, _HEART, _TORSO.c,
                      (_TORSO.bx, _TORSO.by), options=options, accel_rng=np.random.default_rng([i, 5]),
                      flow_rng=np.random.default_rng([i, 6]) if options.get("flow") else None)


def test_blood_signal_varies_within_the_pool_and_darkens_towards_the_apex():
    flow = LOOK_OPTIONS["flow"]
    for i in range(40):
        look = _look(i)
        f = look.flow
        assert flow["amp"][0] <= f["amp"] <= flow["amp"][1]
        assert flow["scale_mm"][0] <= f["scale_mm"] <= flow["scale_mm"][1]
        assert flow["apical"][0] <= f["apical"] <= flow["apical"][1]  # this heart is not dilated
        assert look.meta()["flow"] == f
        assert LOOK_OPTIONS["rv_blood"][0] <= look.lut[T.RV_CAV] <= LOOK_OPTIONS["rv_blood"][1]
        if i < 8:
            base = look.flow_factor((200, 200), 1.5, np.zeros(200 * 200))
            apex = look.flow_factor((200, 200), 1.5, np.ones(200 * 200))
            assert base.mean() == pytest.approx(1.0, abs=0.05)
            assert base.std() == pytest.approx(f["amp"], rel=0.3)
            assert apex.mean() == pytest.approx(1.0 - f["apical"], abs=0.05)
            assert 0.3 <= base.min() and base.max() <= 1.8
    plain = _look(0, {**LOOK_OPTIONS, "flow": None})
    assert plain.flow is None and "flow" not in plain.meta()
    with pytest.raises(ValueError, match="needs flow_rng"):
        Appearance(np.random.default_rng(4), "siemens", 1.5, "rows", False, _HEART, _TORSO.c,
                   (_TORSO.bx, _TORSO.by), options=LOOK_OPTIONS, accel_rng=np.random.default_rng(5))


def _blood_spread(record) -> float:
    """Median over SA ED slices of the LV-cavity signal s.d. (3 mm in from its border) over its median."""
    out = []
    for s in record.slices:
        if s.view == "sa" and s.frame == 0 and s.label is not None and (s.label == 1).sum() > 150:
            core = ndi.binary_erosion(s.label == 1, iterations=2)
            out.append(np.std(s.image[core]) / np.median(s.image[s.label == 1]))
    return float(np.median(out))


def test_rendered_blood_pools_are_less_uniform_than_version_3s():
    for i in (0, 1, 2):
        a = synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1, version=3)
        b = synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1, version=4)
        assert _blood_spread(b) > 1.15 * _blood_spread(a)


def _rv_trabecular_share(heart) -> float:
    lo, hi = heart.rv_box()
    g = np.stack(np.meshgrid(*[np.arange(a, b, 1.5) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    cls = heart.classes(g.astype(np.float32), 0.0)
    rv = np.isin(cls, [T.RV_CAV, T.RV_TRAB])
    return float((cls == T.RV_TRAB).sum() / max(rv.sum(), 1))


def test_the_rv_is_more_trabeculated_with_the_same_cavity_label():
    for i in range(4):
        h3, h4 = synth_heart(2, i, version=3), synth_heart(2, i, version=4)
        lo, hi = HEART_OPTIONS["rv_trab_mm"]
        assert lo <= h4.rv_trab[2] <= hi
        assert _rv_trabecular_share(h4) > 2.4 * _rv_trabecular_share(h3)  # deeper (x~2) and denser (x~1.4)
        assert h4.volumes(0.0) == h3.volumes(0.0)  # trabeculae are labelled RV cavity
