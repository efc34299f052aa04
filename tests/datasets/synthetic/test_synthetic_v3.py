"""Version 3: version 2's subjects with irregular epicardial fat and a wider image model; version 2
itself unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cardiossl.datasets.synthetic import synth_heart, synth_subject
from cardiossl.datasets.synthetic import tissues as T
from cardiossl.datasets.synthetic.appearance import DEFAULTS, Appearance
from cardiossl.datasets.synthetic.heart import _FAT_GAIN_MAX
from cardiossl.datasets.synthetic.torso import Torso
from cardiossl.datasets.synthetic.v3 import HEART_OPTIONS, LOOK_OPTIONS

from synth_digest import digest


def test_version_2_subjects_are_unchanged_array_for_array():
    """Pinned from the code before version 3 existed: adding a version must not move version 2."""
    subjects = [synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1, version=2) for i in (0, 3)]
    assert digest(*subjects) == "f8cb2c463ba197ad"


def test_version_3_is_version_2s_subject_with_other_fat_and_images_but_the_same_labels_and_geometry():
    for i in (0, 4):
        a = synth_subject(f"synth{i:05d}", 1, n_frames=2, n_sub=1, version=2)
        b = synth_subject(f"synth{i:05d}", 1, n_frames=2, n_sub=1, version=3)
        assert b.meta["synth_version"] == 3 and "epicardial_fat" in b.meta and "epicardial_fat" not in a.meta
        for key in ("group", "phenotype", "acquisition", "volumes_ml", "lv_axis", "sa_slice_content"):
            assert a.meta[key] == b.meta[key], key
        assert len(a.slices) == len(b.slices)
        differ = 0
        for sa, sb in zip(a.slices, b.slices):
            assert (sa.view, sa.slice_index, sa.frame) == (sb.view, sb.slice_index, sb.frame)
            np.testing.assert_array_equal(sa.plane.to_vector(), sb.plane.to_vector())
            if sa.label is not None:  # fat is painted under the ventricles: the labels do not move
                np.testing.assert_array_equal(sa.label, sb.label)
            differ += not np.array_equal(sa.image, sb.image)
        assert differ == len(a.slices)
    assert digest(synth_subject("synth00002", 0, n_frames=2, n_sub=1, version=3)) == digest(
        synth_subject("synth00002", 0, n_frames=2, n_sub=1, version=3))


def _fat_thickness_by_angle(heart, depth_frac=0.45, n_angles=72):
    """Radial extent (mm) of pericardial fat outside the LV epicardium at ED, per angle, mid-ventricle."""
    w = depth_frac * heart.C
    th = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    r = np.arange(0.25, 90.0, 0.25)
    q = np.stack([np.outer(np.cos(th), r), np.outer(np.sin(th), r), np.full((n_angles, len(r)), w)], -1)
    cls = heart.classes(q.reshape(-1, 3).astype(np.float32), 0.0).reshape(n_angles, len(r))
    out = []
    for row in cls:
        myo = np.flatnonzero(row == T.LV_MYO)
        beyond = row[myo.max() + 1:] if myo.size else row
        k = 0
        while k < len(beyond) and beyond[k] == T.PERICARDIAL_FAT:
            k += 1
        out.append(k * 0.25)
    return np.array(out)


def test_irregular_fat_is_absent_in_some_sectors_thick_in_others_and_bounded():
    scales, gone, thicker = [], 0, 0
    for i in range(24):
        heart = synth_heart(0, i, version=3)
        scales.append(heart.fat)
        assert heart.fat_irregular is not None and len(heart.fat_irregular["harmonics"]) == 4
        gain = heart._fat_gain(np.linspace(0, 2 * np.pi, 360, dtype=np.float32), np.float32(20.0))
        assert gain.min() >= 0.0 and gain.max() <= _FAT_GAIN_MAX
        # against the same heart with regular fat: where that one has >= 1 mm of fat, the irregular
        # one has none in some sectors and more in others
        twin = copy.copy(heart)
        twin.fat_irregular, twin.fat_reach = None, heart.fat
        irregular, regular = _fat_thickness_by_angle(heart), _fat_thickness_by_angle(twin)
        fatty = regular >= 1.0
        if fatty.any():
            gone += (irregular[fatty] == 0.0).mean() > 0.05
            thicker += (irregular[fatty] > 1.3 * regular[fatty]).mean() > 0.05
        regular_v2 = synth_heart(0, i, version=2)
        assert regular_v2.fat_irregular is None and 1.0 <= regular_v2.fat <= 5.0
    lo, hi = HEART_OPTIONS["fat_mm"]
    assert min(scales) >= lo and max(scales) <= hi
    assert min(scales) < 2.0 and max(scales) > 6.0  # the wider range is used, not only its middle
    assert gone >= 4 and thicker >= 10


_HEART = synth_heart(0, 0, version=3)
_TORSO = Torso(np.random.default_rng(3), _HEART)


def _looks(i, options):
    """Subject ``i``'s image model on one heart and torso (the draws do not depend on them)."""
    heart, torso = _HEART, _TORSO
    accel = np.random.default_rng([i, 5]) if options and options.get("acceleration") else None
    return Appearance(np.random.default_rng([i, 4]), "siemens", 1.5, "rows", False, heart, torso.c,
                      (torso.bx, torso.by), options=options, accel_rng=accel)


def test_parallel_imaging_divides_snr_by_g_root_r_in_the_configured_shares():
    counts = dict.fromkeys(LOOK_OPTIONS["acceleration"]["R"], 0)
    myo = []
    n = 150
    for i in range(n):
        plain, wide = _looks(i, {**LOOK_OPTIONS, "acceleration": None}), _looks(i, LOOK_OPTIONS)
        acc = wide.acceleration
        counts[acc["R"]] += 1
        assert LOOK_OPTIONS["acceleration"]["g"][0] <= acc["g"] <= LOOK_OPTIONS["acceleration"]["g"][1]
        if acc["R"] == 1:
            assert acc["g"] == 1.0
        # the same appearance stream without acceleration: only the division differs
        assert wide.snr == pytest.approx(plain.snr / (acc["g"] * np.sqrt(acc["R"])), rel=1e-12)
        assert wide.meta()["acceleration"] == acc and "acceleration" not in plain.meta()
        myo.append(wide.lut[T.LV_MYO])
    for r, share in zip(LOOK_OPTIONS["acceleration"]["R"], LOOK_OPTIONS["acceleration"]["p"]):
        assert abs(counts[r] / n - share) < 0.12
    lo, hi = LOOK_OPTIONS["vendors"]["siemens"]["myo"]
    assert lo <= min(myo) and max(myo) <= hi and min(myo) < 0.17 and max(myo) > 0.33  # ratios ~2.5-8


def test_shading_bands_and_ghosts_draw_from_the_wider_ranges():
    floors, depths, ghost_amps = [], [], []
    for i in range(80):
        look = _looks(i, LOOK_OPTIONS)
        floors.append(look.coil_floor)
        depths.append(look.band_depth)
        ghost_amps += [a for _, a in look.ghosts]
    assert LOOK_OPTIONS["coil_floor"][0] <= min(floors) < DEFAULTS["coil_floor"][0]
    assert max(depths) > DEFAULTS["band_depth"][1] and max(depths) <= LOOK_OPTIONS["band_depth"][1]
    assert max(ghost_amps) > DEFAULTS["ghost_amp"][1] and max(ghost_amps) <= LOOK_OPTIONS["ghost_amp"][1]


def test_unknown_image_or_heart_options_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown appearance options.*'snr_floor'"):
        _looks(0, {"snr_floor": 3})
    with pytest.raises(ValueError, match="needs accel_rng"):
        heart = synth_heart(0, 0, version=3)
        torso = Torso(np.random.default_rng(3), heart)
        Appearance(np.random.default_rng(4), "siemens", 1.5, "rows", False, heart, torso.c, (torso.bx, torso.by),
                   options={"acceleration": LOOK_OPTIONS["acceleration"]})
    from cardiossl.datasets.synthetic.v2 import synth_heart as v2_heart

    with pytest.raises(ValueError, match="unknown heart options.*'fat'"):
        v2_heart(0, 0, options={"fat": 3})
