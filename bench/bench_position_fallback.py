"""How far the position pretext's box centre lands from the true 2ch x 4ch crossing when views are missing.

For every SA slice the reference is the point where the slice and the 2ch and 4ch planes meet. Each
row drops LA views and lets ``PositionPretext`` (target ``boxes``) build its frame from what is left:
another pair of views, or the single-view fallback (a virtual plane through the SA image centre).
Distances in mm, over all SA slices: synthetic subjects (``synth_subject``), the real bivme exam
when ``../shared/data/real`` holds it, and any cohort store given with ``--store``.

    .venv/bin/python bench/bench_position_fallback.py [--subjects 20] [--seed 0] [--store STORE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BIVME = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "bivme-patient1"
VARIANTS = {
    "4ch only (M&Ms-2)": ("4ch",),
    "2ch only": ("2ch",),
    "3ch + 4ch (no 2ch)": ("3ch", "4ch"),
    "2ch + 3ch (no 4ch)": ("2ch", "3ch"),
}


def record_slices(record) -> dict:
    """(view, slice_index) -> (plane, image shape) of a SubjectRecord."""
    out = {}
    for s in record.slices:
        out.setdefault((s.view, s.slice_index), (s.plane, s.image.shape))
    return out


def store_slices(store, subject_id: str) -> dict:
    """(view, slice_index) -> (source plane, source shape) of a stored subject."""
    from cardiossl.datasets.geometry import Plane

    out = {}
    for s in store.subject_slices(subject_id):
        p = s["source_plane"]
        out.setdefault((s["view"], s["slice_index"]),
                       (Plane(p["origin"], p["row_dir"], p["col_dir"], p["pixel_spacing"]), tuple(s["source_shape"])))
    return out


def errors(first: dict, keep: tuple[str, ...]) -> list[float]:
    """Distance (mm) of the box centre from the 2ch x 4ch crossing, per SA slice of one subject."""
    from cardiossl.datasets.records import LA_VIEWS
    from cardiossl.pretexts.position import PositionPretext

    la = {v: first[(v, 0)][0] for v in LA_VIEWS if (v, 0) in first}
    if "2ch" not in la or "4ch" not in la:
        return []
    pretext = PositionPretext({"target": "boxes"})
    out = []
    for (view, _), (plane, shape) in sorted(first.items()):
        if view != "sa":
            continue
        planes = [plane, la["2ch"], la["4ch"]]
        m = np.stack([p.normal for p in planes])
        truth = np.linalg.solve(m, [p.normal @ p.origin for p in planes])
        la_vec = np.full((3, 11), np.nan)
        for k, v in enumerate(LA_VIEWS):
            if v in keep and v in la:
                la_vec[k] = la[v].to_vector()
        meta = {"plane": plane.to_vector(), "la_planes": la_vec, "image_centre": plane.center(shape), "view": "sa"}
        geo = pretext.geometry(meta)
        if geo.center is None:
            continue
        out.append(float(np.linalg.norm(plane.pixel_to_world(*geo.center) - truth)))
    return out


def row(name: str, errs: list[float], n_slices: int) -> str:
    if not errs:
        return f"{name:34s} {'no target':>40s}"
    e = np.asarray(errs)
    return (f"{name:34s} {len(e):4d}/{n_slices:<4d} {np.median(e):7.1f} {np.percentile(e, 90):7.1f} "
            f"{e.max():7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, action="append", default=[],
                    help="also measure the subjects of this cohort store (source planes; repeatable)")
    args = ap.parse_args()

    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject

    cohorts = {f"synthetic ({args.subjects} subjects, seed {args.seed})":
               [record_slices(synth_subject(subject_id_for(i), args.seed, n_frames=2, n_sub=1))
                for i in range(args.subjects)]}
    if BIVME.is_dir():
        from cardiossl.datasets.readers.dicom import read_exam

        cohorts["bivme-patient1 (real)"] = [record_slices(read_exam("bivme", BIVME))]
    for path in args.store:
        store = CohortStore(path)
        cohorts[f"store {path.name} ({len(store.subject_ids())} subjects)"] = [
            store_slices(store, sid) for sid in store.subject_ids()]
    print(f"{'cohort / views kept':34s} {'slices':>9s} {'median':>7s} {'p90':>7s} {'max':>7s}   (mm from the 2ch x 4ch crossing)")
    for name, records in cohorts.items():
        print(name)
        n = sum(sum(1 for view, _ in r if view == "sa") for r in records)
        for label, keep in VARIANTS.items():
            errs = [e for r in records for e in errors(r, keep)]
            print("  " + row(label, errs, n))


if __name__ == "__main__":
    main()
