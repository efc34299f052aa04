"""`cardiossl cohort info STORE [--json] [--subject ID]`: what a cohort store holds, and where.

With ``--subject`` every stored slice is listed with its plane in DICOM patient coordinates (LPS, mm):
the stored-grid plane the network sees and the source plane it was resampled from, so the geometry
can be checked against the original DICOM/NIfTI headers (origin = ImagePositionPatient, row and
column directions = ImageOrientationPatient, spacing = PixelSpacing as (row, column)).
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


@cohort_app.command("info")
def info_command(
    store_path: Path = typer.Argument(..., help="Cohort store (a zarr folder written by cardiossl)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    subject: str | None = typer.Option(None, "--subject", "-s", help="List every stored slice of this subject."),
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
            typer.echo(json.dumps({"subject_id": subject, "meta": meta, "coordinates": "LPS mm", "slices": slices}, indent=2))
            return
        out.print(f"[bold]{subject}[/] in {store.path}: {len(slices)} slices; planes in LPS mm "
                  f"(origin = centre of pixel (0, 0); row dir = direction of increasing column index; "
                  f"spacing = (row, column) mm)", highlight=False)
        if meta:
            out.print("meta: " + json.dumps(meta)[:400], highlight=False, soft_wrap=True)
        table = Table(show_lines=False)
        for col in ("view", "frame", "phase", "slice", "label", "plane", "origin", "row dir", "col dir", "spacing", "shape"):
            table.add_column(col, justify="left" if col in ("view", "phase", "plane") else "right")
        for s in slices:
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
        return

    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    fp = summary["fingerprint"]
    out.print(
        f"[bold]{summary['path']}[/]: cohort store schema v{summary['schema_version']}, grid "
        f"{summary['grid_size']}x{summary['grid_size']} px at {summary['spacing_mm']} mm; "
        f"{summary['subjects']} subjects, {summary['slices']} slices in {summary['parts']} parts, "
        f"{summary['labelled_subjects']} labelled subjects ({summary['labelled_slices']} labelled slices)",
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


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")
