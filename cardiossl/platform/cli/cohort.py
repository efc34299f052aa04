"""`cardiossl cohort info | list | qc STORE`: what a cohort store holds, and how far its planes can be trusted.

``info`` summarises the store: views, labels, fingerprint, which subjects lack which long-axis view,
for every pretext and target mode how many SA slices get a target and why the others do not
(``cohort_report``), and the geometry QC summary when the store has one. With ``--subject`` a
subject is summarised per view (frames, slices, ED/ES, labels, source geometry);
``--view``/``--frame``/``--all`` list each selected slice with its plane in DICOM patient
coordinates (LPS, mm): the stored-grid plane the network sees and the source plane it was resampled
from, so the geometry can be checked against the original DICOM/NIfTI headers (origin =
ImagePositionPatient, row and column directions = ImageOrientationPatient, spacing = PixelSpacing as
(row, column)).

``list`` prints every subject id with its views, frames and labelled phases. ``qc`` is in ``cohort_qc``.
Exit codes: 0 done, 2 not a store / unknown subject.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

cohort_app = typer.Typer(help="Inspect cohort stores.", no_args_is_help=True)


def _vec(v) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def _spacing(v) -> str:
    return f"{v[0]:.3f} x {v[1]:.3f}"


def format_meta(meta: dict, limit: int = 600) -> str:
    """Subject meta on one line: numbers rounded to 4 significant digits, whole ``key=value`` items
    only (never cut inside a number), then how many keys were left out."""

    def rounded(v):
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rounded(x) for x in v]
        return v

    items = [f"{k}={json.dumps(rounded(v), separators=(',', ':'))}" for k, v in meta.items()]
    shown, used = [], 0
    for item in items:
        if shown and used + len(item) > limit:
            break
        shown.append(item)
        used += len(item) + 2
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f", ... {rest} more (--json for all)" if rest else "")


def subject_overview(slices: list[dict]) -> list[dict]:
    """One row per view: frames, slices per frame, ED/ES frames, labelled slices, source geometry."""
    rows = []
    for view in sorted({s["view"] for s in slices}, key=lambda v: (v != "sa", v)):
        vs = [s for s in slices if s["view"] == view]
        frames = sorted({int(s["frame"]) for s in vs})
        first = min(vs, key=lambda s: (s["frame"], s["slice_index"]))
        src = first["source_plane"]
        rows.append({
            "view": view, "frames": len(frames), "slices_per_frame": len(vs) // max(1, len(frames)),
            "ed": sorted({s["frame"] for s in vs if s["phase"] == "ed"}),
            "es": sorted({s["frame"] for s in vs if s["phase"] == "es"}),
            "labelled": sum(bool(s["has_label"]) for s in vs), "row_dir": src["row_dir"], "col_dir": src["col_dir"],
            "spacing": src["pixel_spacing"], "shape": first["source_shape"],
        })
    return rows


def select_slices(slices: list[dict], view: str | None, frame: int | None) -> list[dict]:
    return [s for s in slices if (view is None or s["view"] == view) and (frame is None or int(s["frame"]) == frame)]


def print_subject(out, store, subject: str, slices: list[dict], meta: dict, *, view: str | None,
                  frame: int | None, every: bool) -> None:
    """The compact overview of a subject (one row per view), or with ``--view``/``--frame``/``--all``
    every selected slice with its stored and source planes."""
    from rich.table import Table

    out.print(f"[bold]{subject}[/] in {store.path}: {len(slices)} slices; planes in LPS mm "
              f"(origin = centre of pixel (0, 0); row dir = direction of increasing column index; "
              f"spacing = (row, column) mm)", highlight=False)
    if meta:
        out.print("meta: " + format_meta(meta), highlight=False, soft_wrap=True)
    if view is None and frame is None and not every:
        table = Table(title="per view (source planes of the first slice)")
        for col in ("view", "frames", "slices/frame", "ED", "ES", "labelled", "row dir", "col dir", "spacing",
                    "shape"):
            table.add_column(col, justify="left" if col == "view" else "right")
        for r in subject_overview(slices):
            table.add_row(r["view"], str(r["frames"]), str(r["slices_per_frame"]), ",".join(map(str, r["ed"])) or "-",
                          ",".join(map(str, r["es"])) or "-", str(r["labelled"]), _vec(r["row_dir"]),
                          _vec(r["col_dir"]), _spacing(r["spacing"]), f"{r['shape'][0]}x{r['shape'][1]}")
        out.print(table)
        out.print("every slice's planes: --view VIEW and/or --frame N (or --all)", highlight=False)
        return
    chosen = select_slices(slices, view, frame)
    if not chosen:
        out.print(f"no slice of view {view or 'any'} at frame {frame if frame is not None else 'any'}; views: "
                  f"{', '.join(sorted({s['view'] for s in slices}))}, frames: "
                  f"{', '.join(map(str, sorted({s['frame'] for s in slices})))}", highlight=False)
        raise typer.Exit(2)
    table = Table(show_lines=False)
    for col in ("view", "frame", "phase", "slice", "label", "plane", "origin", "row dir", "col dir", "spacing", "shape"):
        table.add_column(col, justify="left" if col in ("view", "phase", "plane") else "right")
    for s in chosen:
        for kind, key, shape in (("stored", "plane", s["grid_shape"]), ("source", "source_plane", s["source_shape"])):
            p = s[key]
            first = kind == "stored"
            table.add_row(
                s["view"] if first else "", str(s["frame"]) if first else "", s["phase"] if first else "",
                str(s["slice_index"]) if first else "", ("yes" if s["has_label"] else "no") if first else "",
                kind, _vec(p["origin"]), _vec(p["row_dir"]), _vec(p["col_dir"]), _spacing(p["pixel_spacing"]),
                f"{shape[0]}x{shape[1]}",
            )
    out.print(table)


@cohort_app.command("info")
def info_command(
    store_path: Path = typer.Argument(..., help="Cohort store (a zarr folder written by cardiossl)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    subject: str | None = typer.Option(None, "--subject", "-s",
                                       help="One subject: an overview per view (--view/--frame/--all: its slices)."),
    view: str | None = typer.Option(None, "--view", help="With --subject: only this view's slices (sa, 4ch, ...)."),
    frame: int | None = typer.Option(None, "--frame", help="With --subject: only this cine frame's slices."),
    every: bool = typer.Option(False, "--all", help="With --subject: every slice with its planes."),
) -> None:
    """Subjects, slices per view, labelled subjects and fingerprint; or one subject's slices and planes."""
    from rich.console import Console
    from rich.table import Table

    from ...datasets.store import CohortStore, StoreError

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:  # piped or captured: do not squeeze the plane columns into 80 characters
        out = Console(width=200)
    try:
        store = CohortStore(store_path)
        if subject is not None:
            slices = store.subject_slices(subject)
            meta = store.subject_meta(subject)
        else:
            summary = store.summary()
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    if subject is not None:
        if as_json:
            chosen = select_slices(slices, view, frame)
            typer.echo(json.dumps({"subject_id": subject, "meta": meta, "coordinates": "LPS mm", "slices": chosen},
                                  indent=2))
            return
        print_subject(out, store, subject, slices, meta, view=view, frame=frame, every=every)
        return

    from ...datasets.store import read_qc
    from .cohort_report import missing_views, subject_listing, target_availability

    summary["missing_views"] = missing_views(subject_listing(store))
    summary["targets"] = target_availability(store.path)
    qc = read_qc(store.path)
    summary["qc"] = None if qc is None else _qc_summary(qc, store)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    fp = summary["fingerprint"]
    out.print(
        f"[bold]{summary['path']}[/]: cohort store schema v{summary['schema_version']}, grid "
        f"{summary['grid_size']}x{summary['grid_size']} px at {summary['spacing_mm']} mm; "
        f"{summary['subjects']} subjects, {summary['slices']} slices in {summary['parts']} parts, "
        f"{summary['labelled_subjects']} labelled subjects ({summary['labelled_slices']} labelled slices); "
        f"content hash {summary['content_hash'][:16]}",
        highlight=False,
    )
    table = Table(title="per view")
    for col in ("view", "slices", "subjects", "labelled subjects", "frames/subject (median)",
                "source spacing mm (median row x col)", "source shape (median)"):
        table.add_column(col, justify="left" if col == "view" else "right")
    for view, d in fp["views"].items():
        med = lambda k: d[k]["median"] if d.get(k) else float("nan")  # noqa: E731
        table.add_row(
            view, str(d["slices"]), str(d["subjects"]), str(d["labelled_subjects"]),
            f"{med('frames_per_subject'):.0f}",
            f"{med('source_row_spacing_mm'):.2f} x {med('source_col_spacing_mm'):.2f}",
            f"{med('source_rows'):.0f} x {med('source_cols'):.0f}",
        )
    out.print(table)
    fpt = Table(title="fingerprint")
    fpt.add_column("item")
    fpt.add_column("value", justify="right")
    if fp.get("sa_slice_gap_mm"):
        g = fp["sa_slice_gap_mm"]
        fpt.add_row("SA slice gap mm (min / median / max)", f"{g['min']:.2f} / {g['median']:.2f} / {g['max']:.2f}")
    if fp.get("intensity"):
        it = fp["intensity"]
        fpt.add_row("intensity mean / std (pooled, clipped)", f"{it['mean']:.2f} / {it['std']:.2f}")
        fpt.add_row("intensity min / max", f"{it['min']:.2f} / {it['max']:.2f}")
        fpt.add_row("p0.5 / p50 / p99.5 (median over subject-views)",
                    f"{it['p0_5']['median']:.2f} / {it['p50']['median']:.2f} / {it['p99_5']['median']:.2f}")
    fpt.add_row("stored fingerprint up to date", "yes" if summary["stored_fingerprint_current"] else "no")
    out.print(fpt)

    mv = Table(title="subjects without a view")
    for col in ("view", "subjects without it", "ids"):
        mv.add_column(col, justify="right" if col == "subjects without it" else "left")
    for view, ids in summary["missing_views"].items():
        mv.add_row(view, str(len(ids)), ", ".join(ids[:8]) + (f" ... (+{len(ids) - 8})" if len(ids) > 8 else ""))
    out.print(mv)

    tt = Table(title="pretext targets per SA slice (one stack position; its cine frames share its geometry)")
    for col in ("pretext", "target mode", "SA slices", "with a target", "why not (slices)"):
        tt.add_column(col, justify="right" if col in ("SA slices", "with a target") else "left")
    for row in summary["targets"]:
        mode = ", ".join(f"{k}={v}" for k, v in row["config"].items()) or "default"
        why = "; ".join(f"{k}: {v}" for k, v in row["reasons"].items()) or "-"
        tt.add_row(row["pretext"], mode, str(row["slices"]), str(row["with_target"]), why)
    out.print(tt)
    if summary["qc"] is not None:
        q = summary["qc"]
        out.print(f"geometry QC ({q['created_at']}): {q['subjects']} subjects, {q['slices_ok']} SA slices measured; "
                  f"misregistration median {q['median_shift_mm']:.1f} mm, 90th percentile {q['p90_shift_mm']:.1f} mm; "
                  f"{len(q['flagged'])} flagged above {q['flag_mm']:g} mm"
                  + (f" ({', '.join(q['flagged'][:8])})" if q["flagged"] else "")
                  + (f"; {len(q['not_covered'])} subjects not covered (run cardiossl cohort qc again)"
                     if q["not_covered"] else ""), highlight=False, soft_wrap=True)


def _qc_summary(qc, store) -> dict:
    import numpy as np

    from ...datasets.store.qc import MEASURED

    shifts = qc.columns["shift_mm"][np.isin(qc.columns["status"], MEASURED)]
    subjects = qc.info.get("subjects") or {}
    pct = (lambda q: float(np.percentile(shifts, q)) if shifts.size else float("nan"))  # noqa: E731
    return {
        "created_at": qc.info.get("created_at"), "subjects": len(subjects), "slices_ok": int(shifts.size),
        "median_shift_mm": pct(50), "p90_shift_mm": pct(90), "flag_mm": qc.info.get("params", {}).get("flag_mm"),
        "flagged": sorted(s for s, d in subjects.items() if d.get("flagged")),
        "not_covered": sorted(set(store.subject_ids()) - set(subjects)),
    }


@cohort_app.command("list")
def list_command(
    store_path: Path = typer.Argument(..., help="Cohort store (a zarr folder written by cardiossl)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every subject id with its views (slices x frames) and labelled phases."""
    from rich.console import Console
    from rich.table import Table

    from ...datasets.store import CohortStore, StoreError
    from .cohort_report import subject_listing

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=200)
    try:
        listing = subject_listing(CohortStore(store_path))
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    table = Table(title=f"{store_path}: {len(listing)} subjects")
    for col in ("subject", "views (slices x frames)", "labelled"):
        table.add_column(col)
    for s in listing:
        views = ", ".join(f"{v} {d['slices']}x{d['frames']}" for v, d in s["views"].items())
        labelled = "; ".join(f"{v}: {', '.join(p)}" for v, p in s["labelled"].items()) or "-"
        table.add_row(s["subject_id"], views, labelled)
    out.print(table)


def register(app: typer.Typer) -> None:
    from . import cohort_qc

    cohort_qc.register(cohort_app)
    app.add_typer(cohort_app, name="cohort")
