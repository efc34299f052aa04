"""`cardiossl ingest SOURCE --out STORE`: a cohort folder in any registered layout -> the cohort store.

Exit codes: 0 every subject landed or was already there, 1 some subjects were skipped (reasons
printed and in the JSON report), 2 the ingest could not start (bad path, layout, grid or option).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_command(
        source: Path = typer.Argument(..., help="Cohort folder (UK Biobank, cardiossl NIfTI export, ACDC, M&Ms-2, DICOM exams, Sunnybrook)."),
        out: Path = typer.Option(
            ..., "--out", "-o",
            help="Cohort store to create or add to; the jobs read $CARDIOSSL_HOME/cohort.zarr (or $CARDIOSSL_COHORT).",
        ),
        layout: str = typer.Option(
            "auto", "--layout", help="auto, or a registered layout: ukbb, cardiossl-nifti, acdc, mnms2, dicom, sunnybrook, ..."
        ),
        workers: int = typer.Option(1, "--workers", "-j", help="Local parallel workers (dask processes)."),
        ray_address: str = typer.Option(
            None, "--ray-address", help="Run as Ray tasks on this cluster ('auto', 'host:port', 'ray://...')."
        ),
        grid_size: int = typer.Option(128, "--grid-size", help="Store grid, pixels per side."),
        spacing_mm: float = typer.Option(1.5, "--spacing-mm", help="Store grid pixel spacing (mm)."),
        batch_size: int = typer.Option(
            None, "--batch-size", help="Subjects per task / store part (default: about 4 tasks per worker)."
        ),
        json_output: bool = typer.Option(False, "--json", help="Print the report as JSON instead of text."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Ingest a cohort into the Zarr store: parallel, resumable, bad subjects skipped with reasons."""
        from rich.console import Console

        from ...datasets.ingest import IngestError, ingest
        from ...datasets.store import StoreError
        from cardiossl.registry import RegistryError

        from .paths import announce

        err = Console(stderr=True)
        announce("the cohort store", out)
        try:
            report = ingest(
                source,
                out,
                layout=layout,
                workers=workers,
                ray_address=ray_address,
                grid_size=grid_size,
                spacing_mm=spacing_mm,
                batch_size=batch_size,
                progress=not quiet and not json_output,
                console=err,
            )
        except (IngestError, StoreError, RegistryError) as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        if json_output:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            for line in report.summary_lines():
                typer.echo(line)
        raise typer.Exit(0 if report.ok else 1)
