"""Geometry QC: synthetic subjects whose SA planes were moved by known in-plane shifts."""

from __future__ import annotations

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.plane_qc import Cine, estimate_slice, estimate_subject, line_profiles
from cardiossl.datasets.synthetic import synth_subject


def cines(record, shifts: dict[int, np.ndarray] | None = None, la_frames: int | None = None):
    """(SA cines, LA cines) of a record; SA slice k's header plane moved by ``shifts[k]`` (world mm),
    its pixels left where they are: the header now lies by that much."""
    by: dict = {}
    for s in record.slices:
        by.setdefault((s.view, s.slice_index), []).append(s)
    n = record.meta["n_frames"]
    sa, la = [], []
    for (view, k), ss in sorted(by.items()):
        ss = sorted(ss, key=lambda s: s.frame)
        p = ss[0].plane
        if view == "sa" and shifts is not None:
            p = Plane(p.origin + shifts[k], p.row_dir, p.col_dir, p.spacing)
        if view != "sa" and la_frames is not None:
            ss = ss[:la_frames]
        c = Cine(view, p, np.stack([s.image for s in ss]), np.array([s.frame for s in ss]), n, k)
        (sa if view == "sa" else la).append(c)
    return sa, la


@pytest.fixture(scope="module")
def subjects():
    # version 1: planes exactly where the pixels are, so the only shifts are the injected ones
    # (version 2's own breath-hold misregistration is measured by bench/bench_plane_qc.py --store)
    return [synth_subject(f"synth{i:05d}", 3, n_frames=4, version=1) for i in (0, 1)]


def test_injected_in_plane_shifts_are_recovered_within_1_mm(subjects):
    rng = np.random.default_rng(7)
    for rec in subjects:
        sa_planes = {s.slice_index: s for s in rec.slices if s.view == "sa" and s.frame == 0}
        shifts = {}
        for k, s in sa_planes.items():
            a, b = rng.uniform(-8.0, 8.0, 2)
            shifts[k] = a * s.plane.row_dir + b * s.plane.col_dir
        sa, la = cines(rec, shifts)
        for e in estimate_subject(sa, la):
            assert e.status == "ok" and e.views == ("2ch", "3ch", "4ch")
            err = np.linalg.norm(e.correction_world + shifts[e.slice_index])  # the correction undoes the shift
            through_lv = (sa_planes[e.slice_index].label == 1).sum() > 50
            assert err < (1.0 if through_lv else 2.0), (rec.subject_id, e.slice_index, err)
            assert e.ncc_after > e.ncc_before
            np.testing.assert_allclose(np.linalg.norm(e.correction_plane), e.shift_mm)
            # the world correction lies in the slice plane
            assert abs(e.correction_world @ sa_planes[e.slice_index].plane.normal) < 1e-9


def test_consistent_planes_give_no_shift(subjects):
    sa, la = cines(subjects[0])
    est = estimate_subject(sa[2:5], la)
    assert all(e.shift_mm < 1.0 for e in est)


def test_one_view_and_mismatched_frame_counts_still_work(subjects):
    rec = subjects[1]
    s = next(s for s in rec.slices if s.view == "sa" and s.slice_index == 3)
    shift = 5.0 * s.plane.row_dir - 4.0 * s.plane.col_dir
    sa, la = cines(rec, {k: shift for k in range(20)}, la_frames=2)  # LA cine shorter: nearest phase
    four = [c for c in la if c.view == "4ch"]
    e = estimate_slice(sa[3], four)
    assert e.views == ("4ch",) and np.linalg.norm(e.correction_world + shift) < 1.5
    assert la[0].frame_for(0.5) == 1 and la[0].frame_for(0.0) == 0 and la[0].frame_for(0.95) == 0


def test_what_cannot_be_measured_says_so(subjects):
    sa, la = cines(subjects[0])
    assert estimate_slice(sa[0], []).status == "no LA view"
    parallel = Cine("la", sa[1].plane, sa[1].images, sa[1].frames, sa[1].n_frames)
    e = estimate_slice(sa[0], [parallel])
    assert e.status == "too few samples" and np.isnan(e.shift_mm)


def test_profiles_line_up_after_the_correction(subjects):
    rec = subjects[0]
    s = next(s for s in rec.slices if s.view == "sa" and s.slice_index == 4)
    shift = 6.0 * s.plane.col_dir
    sa, la = cines(rec, {k: shift for k in range(20)})
    e = estimate_slice(sa[4], la)
    t, before, lav = line_profiles(sa[4], la[2])
    _, after, _ = line_profiles(sa[4], la[2], e.correction_plane)
    assert len(t) == len(before) == len(lav) > 50
    r_before, r_after = np.corrcoef(before, lav)[0, 1], np.corrcoef(after, lav)[0, 1]
    assert 1 - r_after < 0.5 * (1 - r_before)  # at least half the decorrelation was the shift


def test_a_shift_beyond_the_search_says_so(subjects):
    rec = subjects[0]
    s = next(s for s in rec.slices if s.view == "sa" and s.slice_index == 4)
    shift = 12.0 * s.plane.row_dir
    sa, la = cines(rec, {k: shift for k in range(20)})
    e = estimate_slice(sa[4], la, search_mm=6.0)
    assert e.status == "at search limit" and e.shift_mm >= 6.0  # a lower bound
    assert estimate_slice(sa[4], la).status == "ok"  # the default search reaches it
