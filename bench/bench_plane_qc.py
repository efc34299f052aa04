"""Geometry QC recovery on synthetic subjects with known injected in-plane SA misregistration.

Each SA slice's header plane is moved by a random in-plane vector (uniform over a disc of radius
``--max-shift``; its pixels stay where they were rendered), the subjects are written to a real cohort
store, and ``run_qc`` (what ``cardiossl cohort qc`` runs) estimates the correction. Printed: the
error |estimate + injected| in mm over slices that cut the LV cavity and over the others (above the
base, below the apex), and split by the estimate's ``spread_mm`` (how flat its optimum is), the
injected magnitudes, and the QC time per subject.

    .venv/bin/python bench/bench_plane_qc.py [--subjects 10] [--seed 11] [--max-shift 10] [--frames 4]

With ``--store STORE`` it measures an existing store of synthetic version-2 subjects instead, whose
meta records the truth: every SA slice's breath-hold displacement
(``acquisition.sa.misregistration_mm``, its in-plane part) and what the slice cuts
(``sa_slice_content``). The store's QC estimates are used when it has them, else computed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SHARP_MM = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--max-shift", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--store", type=Path, default=None, help="a store of synthetic version-2 subjects")
    args = ap.parse_args()
    if args.store is not None:
        return measure_store(args.store)

    from cardiossl.datasets.geometry import Plane
    from cardiossl.datasets.plane_qc_store import run_qc
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject

    rng = np.random.default_rng(args.seed)
    records, injected, through_lv = [], {}, {}
    for i in range(args.subjects):
        rec = synth_subject(subject_id_for(i), args.seed, n_frames=args.frames)
        for s in rec.slices:
            if s.view != "sa":
                continue
            key = (rec.subject_id, s.slice_index)
            if key not in injected:
                r, a = args.max_shift * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
                injected[key] = r * np.cos(a) * s.plane.row_dir + r * np.sin(a) * s.plane.col_dir
            if s.label is not None:
                through_lv[key] = through_lv.get(key, False) or bool((s.label == 1).sum() > 50)
            s.plane = Plane(s.plane.origin + injected[key], s.plane.row_dir, s.plane.col_dir, s.plane.spacing)
        records.append(rec)
    with tempfile.TemporaryDirectory() as tmp:
        store = CohortStore.create(Path(tmp) / "store", grid_size=args.grid, spacing_mm=1.5)
        store.write_subjects(records)
        t0 = time.perf_counter()
        rows = [r for _, rs in run_qc(store.path) for r in rs]
        per_subject = (time.perf_counter() - t0) / args.subjects
    print(f"{args.subjects} synthetic subjects (seed {args.seed}, {args.frames} frames), injected shifts uniform over "
          f"a {args.max_shift:g} mm disc, store grid {args.grid} px at 1.5 mm; {len(rows)} SA slices, "
          f"{sum(r['status'] == 'ok' for r in rows)} measured")
    report(rows, injected, through_lv)
    mags = np.array([np.linalg.norm(v) for v in injected.values()])
    print(f"injected magnitude median {np.median(mags):.1f} mm (max {mags.max():.1f}); QC {per_subject:.2f} s/subject")


def report(rows: list[dict], truth: dict, through_lv: dict) -> None:
    """Error tables: |estimate + truth| (the correction undoes the displacement) by slice kind and spread."""
    err: dict = {True: [], False: [], "sharp": [], "flat": []}
    for r in rows:
        key = (r["subject_id"], r["slice_index"])
        if not np.isfinite(r["shift_mm"]):
            continue
        e = float(np.linalg.norm(np.asarray(r["correction_world"]) + truth[key]))
        err[through_lv.get(key, False)].append(e)
        err["sharp" if r["spread_mm"] <= SHARP_MM else "flat"].append(e)
    print(f"{'slices':28s} {'n':>4s} {'median':>7s} {'p90':>6s} {'max':>6s} {'> 1 mm':>7s}   error |estimate - truth| mm")
    for label, key in (("through the LV cavity", True), ("above the base / below apex", False),
                       (f"all, spread <= {SHARP_MM:g} mm", "sharp"), (f"all, spread > {SHARP_MM:g} mm", "flat")):
        e = np.asarray(err[key])
        if e.size:
            print(f"{label:28s} {e.size:4d} {np.median(e):7.2f} {np.percentile(e, 90):6.2f} {e.max():6.2f} "
                  f"{int((e > 1).sum()):7d}")


def measure_store(path: Path) -> None:
    from cardiossl.datasets.plane_qc_store import run_qc
    from cardiossl.datasets.store import CohortStore, read_qc

    store = CohortStore(path)
    qc = read_qc(path)
    rows = qc.rows() if qc is not None else [r for _, rs in run_qc(path) for r in rs]
    truth, through_lv = {}, {}
    for sid in store.subject_ids():
        meta = store.subject_meta(sid)
        disp = np.asarray(meta["acquisition"]["sa"]["misregistration_mm"], dtype=np.float64)
        content = meta["sa_slice_content"]
        normal = {s["slice_index"]: np.cross(s["source_plane"]["row_dir"], s["source_plane"]["col_dir"])
                  for s in store.subject_slices(sid) if s["view"] == "sa"}
        for k, n in normal.items():
            truth[(sid, k)] = disp[k] - (disp[k] @ n) * n  # the in-plane part: what QC can see
            through_lv[(sid, k)] = "lv_cavity" in content[k]
    mags = np.array([np.linalg.norm(v) for v in truth.values()])
    print(f"{path}: {len(store.subject_ids())} subjects, {len(rows)} SA slices; true in-plane misregistration median "
          f"{np.median(mags):.2f} mm, 90th percentile {np.percentile(mags, 90):.2f}, max {mags.max():.2f}")
    report(rows, truth, through_lv)


if __name__ == "__main__":
    main()
