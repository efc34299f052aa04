"""`cardiossl cohort qc STORE`: how far each SA slice's content sits from where its plane says.

Runs the geometry QC (``cardiossl.datasets.plane_qc``) on every subject of the store (or the
``--subject`` ones), stores the estimates in the store (``STORE/qc/geometry.npz``, written atomically;
``cardiossl.datasets.store.qc``) and writes to ``--out`` (default ``<STORE>-qc/``):

* ``slices.csv``: one row per subject and SA slice: status, correction (LPS mm and along the plane's
  row/column directions), its length, NCC before/after, the optimum's spread (large = ambiguous),
  samples, views used;
* ``subjects.csv``: per subject: median and max misregistration, slices measured, flagged;
* ``summary.json`` and a printed table: the distribution over slices and subjects, the flagged ids;
* ``<subject>.png`` for each flagged subject (``--figures all`` for every subject): its worst slice
  with the LA traces before and after the correction, each LA image with the slice's trace, and the
  profiles along each trace before and after.

A subject is flagged when its median misregistration exceeds ``--flag-mm``. Training jobs use the
stored estimates through the position pretext's ``plane_correction: qc`` or ``max_qc_shift_mm``.
Exit codes: 0 done, 2 not a store / unknown subject.
"""

from __future__ import annotations

import csv
import math
import json
from pathlib import Path

import typer

FLAG_MM = 5.0
SEARCH_MM = 20.0  # = plane_qc.SEARCH_MM (not imported here: --help stays fast)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "slice_index", "status", "shift_mm", "correction_x_mm", "correction_y_mm",
                    "correction_z_mm", "correction_row_dir_mm", "correction_col_dir_mm", "ncc_before", "ncc_after",
                    "spread_mm", "n_samples", "views"])
        for r in rows:
            w.writerow([r["subject_id"], r["slice_index"], r["status"], f"{r['shift_mm']:.3f}",
                        *(f"{x:.3f}" for x in r["correction_world"]), *(f"{x:.3f}" for x in r["correction_plane"]),
                        f"{r['ncc_before']:.4f}", f"{r['ncc_after']:.4f}", f"{r['spread_mm']:.2f}", r["n_samples"],
                        r["views"]])


def _write_subjects(path: Path, subjects: dict[str, dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "median_shift_mm", "max_shift_mm", "ok_slices", "flagged"])
        for sid, d in subjects.items():
            w.writerow([sid, f"{d['median_shift_mm']:.3f}", f"{d['max_shift_mm']:.3f}", d["ok_slices"],
                        int(d["flagged"])])


def distribution(rows: list[dict], subjects: dict[str, dict]) -> dict:
    """Percentiles of the slice shifts and of the subjects' median shifts (mm)."""
    import numpy as np

    def pct(x):
        x = np.asarray([v for v in x if np.isfinite(v)])
        if not x.size:
            return {}
        return {k: float(np.percentile(x, q)) for k, q in (("min", 0), ("p10", 10), ("median", 50), ("p90", 90),
                                                            ("max", 100))} | {"n": int(x.size)}

    from ...datasets.store.qc import MEASURED

    return {"slice_shift_mm": pct([r["shift_mm"] for r in rows if r["status"] in MEASURED]),
            "subject_median_shift_mm": pct([d["median_shift_mm"] for d in subjects.values()]),
            "status": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}}


def draw_subject(store_path, subject_id: str, rows: list[dict], out: Path) -> Path:
    """PNG of a subject's worst slice: traces before/after, the LA images, the profiles before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ...datasets.geometry import line_segment_in_image, trace_in_slice
    from ...datasets.plane_qc import line_profiles
    from ...datasets.plane_qc_store import subject_cines

    from ...datasets.store.qc import MEASURED

    ok = [r for r in rows if r["status"] in MEASURED]
    worst = max(ok, key=lambda r: r["shift_mm"])
    sa, las = subject_cines(store_path, subject_id)
    cine = next(c for c in sa if c.slice_index == worst["slice_index"])
    corr_w = np.asarray(worst["correction_world"])
    corr_p = np.asarray(worst["correction_plane"])
    colors = {"2ch": "tab:orange", "3ch": "tab:green", "4ch": "deepskyblue"}
    n = max(1, len(las))
    fig, axes = plt.subplots(2, n + 1, figsize=(3.2 * (n + 1), 6.4), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(cine.images[0], cmap="gray")
    from ...datasets.geometry import Plane

    moved = Plane(cine.plane.origin + corr_w, cine.plane.row_dir, cine.plane.col_dir, cine.plane.spacing)
    for la in las:
        for plane, style in ((cine.plane, ":"), (moved, "-")):
            tr = trace_in_slice(plane, la.plane)
            seg = None if tr is None else line_segment_in_image(tr[0], tr[1], cine.images.shape[1:])
            if seg is not None:
                ax.plot([seg[0][1], seg[1][1]], [seg[0][0], seg[1][0]], style, color=colors.get(la.view, "w"),
                        linewidth=0.9, label=f"{la.view} {'after' if style == '-' else 'before'}")
    ax.set_title(f"SA slice {worst['slice_index']}: correction {worst['shift_mm']:.1f} mm\n"
                 "traces before (dotted) / after", fontsize=8)
    ax.legend(fontsize=5, loc="lower right")
    for j, la in enumerate(las, start=1):
        a = axes[0, j]
        a.imshow(la.images[0], cmap="gray")
        tr = trace_in_slice(la.plane, cine.plane)
        seg = None if tr is None else line_segment_in_image(tr[0], tr[1], la.images.shape[1:])
        if seg is not None:
            a.plot([seg[0][1], seg[1][1]], [seg[0][0], seg[1][0]], "-", color="yellow", linewidth=0.9)
        a.set_title(f"{la.view} with the SA slice's trace", fontsize=8)
        p = axes[1, j]
        prof = line_profiles(cine, la)
        prof_after = line_profiles(cine, la, corr_p)
        if prof is not None:
            t, before, lav = prof
            z = lambda x: (x - x.mean()) / (x.std() or 1.0)  # noqa: E731
            p.plot(t, z(lav), color="k", linewidth=1.0, label=f"{la.view} image")
            p.plot(t, z(before), ":", color="tab:red", linewidth=0.9, label="SA before")
            p.plot(t, z(prof_after[1]), "-", color="tab:blue", linewidth=0.9, label="SA after")
            p.legend(fontsize=5)
        p.set_title(f"profiles along the {la.view} trace (z-scored)", fontsize=8)
        p.set_xlabel("mm along the line", fontsize=7)
    shifts = [r["shift_mm"] for r in ok]
    axes[1, 0].bar([r["slice_index"] for r in ok], shifts, color="tab:purple")
    axes[1, 0].set_xlabel("SA slice (0 = base)", fontsize=7)
    axes[1, 0].set_ylabel("misregistration mm", fontsize=7)
    axes[1, 0].set_title("every slice", fontsize=8)
    for a in axes[0]:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"{subject_id}: geometry QC (median {np.median(shifts):.1f} mm)", fontsize=10)
    fig.tight_layout()
    path = out / f"{subject_id}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def register(cohort_app: typer.Typer) -> None:
    @cohort_app.command("qc")
    def qc_command(
        store_path: Path = typer.Argument(..., help="Cohort store (a zarr folder written by cardiossl)."),
        out: Path = typer.Option(None, "--out", "-o", help="Report folder (default: <STORE>-qc)."),
        subject: list[str] = typer.Option(None, "--subject", "-s", help="Only these subjects (repeatable)."),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes (one subject each at a time)."),
        flag_mm: float = typer.Option(FLAG_MM, "--flag-mm", min=0.0, help="Flag subjects whose median "
                                      "misregistration exceeds this (mm)."),
        search_mm: float = typer.Option(SEARCH_MM, "--search-mm", min=1.0, max=60.0, help="Largest shift searched (mm)."),
        max_frames: int = typer.Option(16, "--max-frames", min=1, help="Cine frames pooled per slice."),
        figures: str = typer.Option("flagged", "--figures", help="PNG per subject: flagged | all | none."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Measure each SA slice's in-plane misregistration against the LA images; store and report it."""
        from rich.console import Console
        from rich.progress import Progress
        from rich.table import Table

        from ...datasets.plane_qc_store import run_qc
        from ...datasets.store import CohortStore, StoreError, write_qc
        from ...datasets.store.qc import summarise

        con, err = Console(), Console(stderr=True)
        if figures not in ("flagged", "all", "none"):
            raise typer.BadParameter("choose flagged, all or none", param_hint="--figures")
        try:
            store = CohortStore(store_path)
            ids = list(subject) if subject else store.subject_ids()
            results = run_qc(store_path, ids, workers=workers, search_mm=search_mm, max_frames=max_frames)
            rows: list[dict] = []
            by_subject: dict[str, list[dict]] = {}
            with Progress(console=err, disable=quiet, transient=True) as bar:
                task = bar.add_task("geometry QC", total=len(ids))
                for sid, r in results:
                    rows.extend(r)
                    by_subject[sid] = r
                    bar.advance(task)
        except StoreError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        params = {"flag_mm": flag_mm, "search_mm": search_mm, "max_frames": max_frames}
        stored = write_qc(store.path, rows, params=params, parts=store.part_ids())
        subjects = summarise(rows, flag_mm)
        out = Path(out) if out is not None else store.path.with_name(store.path.name + "-qc")
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(out / "slices.csv", rows)
        _write_subjects(out / "subjects.csv", subjects)
        dist = distribution(rows, subjects)
        flagged = sorted(s for s, d in subjects.items() if d["flagged"])
        (out / "summary.json").write_text(json.dumps({"store": str(store.path), "params": params,
                                                      "distribution": dist, "flagged": flagged}, indent=2))
        pngs = []
        for sid in (flagged if figures == "flagged" else list(by_subject) if figures == "all" else []):
            if any(math.isfinite(r["shift_mm"]) for r in by_subject[sid]):
                pngs.append(draw_subject(store.path, sid, by_subject[sid], out))
        table = Table(title=f"geometry QC of {store.path.name}: {len(subjects)} subjects")
        for col in ("", "n", "min", "p10", "median", "p90", "max"):
            table.add_column(col, justify="left" if not col else "right")
        for label, key in (("SA slice misregistration mm", "slice_shift_mm"),
                           ("subject median mm", "subject_median_shift_mm")):
            d = dist[key]
            table.add_row(label, str(d.get("n", 0)), *(f"{d[k]:.1f}" if d else "-" for k in
                                                        ("min", "p10", "median", "p90", "max")))
        con.print(table)
        con.print(f"slices: {', '.join(f'{k} {v}' for k, v in dist['status'].items())}; flagged (median > "
                  f"{flag_mm:g} mm): {len(flagged)}{': ' + ', '.join(flagged[:20]) if flagged else ''}",
                  highlight=False, soft_wrap=True)
        con.print(f"estimates stored in {stored}; report in {out} (slices.csv, subjects.csv, summary.json"
                  f"{', ' + str(len(pngs)) + ' PNG' if pngs else ''})", highlight=False, soft_wrap=True)
