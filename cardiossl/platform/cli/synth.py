"""`cardiossl synth`: the synthetic cohort, straight into a cohort store or as NIfTI (the cardiossl export, readers.nifti_export).

Subject ``i`` of seed ``S`` is ``synth_subject(subject_id_for(i, N), S)`` whatever the number of
workers, so a cohort is reproducible and an interrupted run can be resumed: subjects already in the
store (or already written as folders) are skipped. Exit codes: 0 done, 2 could not start.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import typer

STORE_BATCH = 32  # subjects per store part (one part = one writer = whole shards)


def _make(index: int, seed: int, n_subjects: int, n_frames: int, nifti_out: str | None):
    """Worker task: generate one subject; write it as NIfTI in the worker, or return the record."""
    from ...datasets.synthetic import subject_id_for, synth_subject

    record = synth_subject(subject_id_for(index, n_subjects), seed, n_frames=n_frames, index=index)
    if nifti_out is None:
        return record
    from ...datasets.readers.nifti_export import write_export_subject

    write_export_subject(record, Path(nifti_out))
    return record.subject_id


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_command(
        subjects: int = typer.Option(20, "--subjects", "-n", min=1, help="Number of subjects."),
        seed: int = typer.Option(0, "--seed", help="Cohort seed; subject i draws from (seed, i)."),
        out: Path = typer.Option(..., "--out", "-o", help="Cohort store (zarr) or folder (nifti) to write."),
        fmt: str = typer.Option("zarr", "--format", help="zarr (cohort store) or nifti (the cardiossl NIfTI export)."),
        frames: int = typer.Option(4, "--frames", min=2, help="Cine frames per slice (ED 0, ES at ~3/8)."),
        grid_size: int = typer.Option(128, "--grid-size", help="Store grid, pixels per side (zarr)."),
        spacing_mm: float = typer.Option(1.5, "--spacing-mm", help="Store grid pixel spacing in mm (zarr)."),
        workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel generator processes."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Generate a synthetic cardiac cine cohort (SA stack + 2/3/4-chamber views, ED/ES labels)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from ...datasets.synthetic import subject_id_for

        from .paths import announce

        err = Console(stderr=True)
        if fmt not in ("zarr", "nifti"):
            err.print(f"[red]error:[/] --format must be zarr or nifti, got {fmt!r}", highlight=False)
            raise typer.Exit(2)
        announce("a synthetic cohort store" if fmt == "zarr" else "synthetic NIfTI subjects", out)
        ids = [subject_id_for(i, subjects) for i in range(subjects)]
        store = None
        if fmt == "zarr":
            from ...datasets.store import CohortStore, StoreError

            try:
                store = CohortStore.create(out, grid_size=grid_size, spacing_mm=spacing_mm)
            except (StoreError, OSError) as exc:
                err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            present = set(store.subject_ids())
        else:
            if out.exists() and not out.is_dir():
                err.print(f"[red]error:[/] {out} exists and is not a folder", highlight=False)
                raise typer.Exit(2)
            out.mkdir(parents=True, exist_ok=True)
            present = {sid for sid in ids if (out / sid).is_dir()}
        todo = [i for i, sid in enumerate(ids) if sid not in present]
        nifti_out = str(out) if fmt == "nifti" else None

        start = time.perf_counter()
        progress = Progress(
            TextColumn("[bold]synth[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
        batch: list = []

        def flush() -> None:
            if batch:
                store.write_subjects(batch)
                batch.clear()

        def done(result) -> None:
            if store is not None:
                batch.append(result)
                if len(batch) >= STORE_BATCH:
                    flush()
            progress.advance(task)

        with progress:
            task = progress.add_task("synth", total=len(todo))
            if workers == 1:
                for i in todo:
                    done(_make(i, seed, subjects, frames, nifti_out))
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                window: deque = deque()
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    for i in todo:  # bounded window: results consumed in subject order
                        window.append(pool.submit(_make, i, seed, subjects, frames, nifti_out))
                        if len(window) >= 4 * workers:
                            done(window.popleft().result())
                    while window:
                        done(window.popleft().result())
            flush()
        elapsed = time.perf_counter() - start
        per = elapsed / len(todo) if todo else 0.0
        typer.echo(
            f"wrote {len(todo)} subjects ({len(present & set(ids))} already present) to {out} [{fmt}] "
            f"in {elapsed:.1f} s ({per:.2f} s/subject, {workers} worker(s))"
        )
