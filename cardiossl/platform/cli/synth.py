"""`cardiossl synth`: the synthetic cohort, straight into a cohort store or as NIfTI (the cardiossl export, readers.nifti_export).

Subject ``i`` of seed ``S`` and version ``V`` is ``synth_subject(subject_id_for(i, N), S, version=V)``
whatever the number of workers, so a cohort is reproducible and an interrupted run can be resumed:
subjects already in the store (or already written as folders) are skipped. Subjects are made in
batches, each batch one task that writes its subjects whole (a store part, or NIfTI folders): in
this process, in ``--workers`` processes, or as Ray tasks on ``--ray-address``. Exit codes: 0 done,
2 could not start.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def _parse_groups(text: str | None) -> dict | None:
    """``NOR=2,DCM=1`` -> {"NOR": 2.0, "DCM": 1.0} (weights; the generator checks the group names)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        if not sep:
            raise ValueError(f"--groups item {item!r} is not NAME=WEIGHT (e.g. NOR=2,DCM=1)")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"--groups: weight of {name.strip()!r} is not a number: {weight!r}") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_command(
        subjects: int = typer.Option(20, "--subjects", "-n", min=1, help="Number of subjects."),
        seed: int = typer.Option(0, "--seed", help="Cohort seed; subject i draws from (seed, i)."),
        out: Path = typer.Option(..., "--out", "-o", help="Cohort store (zarr) or folder (nifti) to write."),
        fmt: str = typer.Option("zarr", "--format", help="zarr (cohort store) or nifti (the cardiossl NIfTI export)."),
        frames: int = typer.Option(4, "--frames", min=2, help="Cine frames per slice (ED 0, ES at ~3/8)."),
        version: int = typer.Option(
            None, "--version", help="Population version: 1, 2 (the default), 3 or 4 (harder; docs/synthetic.md)."
        ),
        groups: str = typer.Option(
            None, "--groups", help="Group weights, e.g. NOR=2,DCM=1,HCM=1,MINF=1,RV=1 (version 2 on; default: equal)."
        ),
        random_contrast: float = typer.Option(
            0.0, "--random-contrast", help="Share of subjects (0-1) with SynthSeg-style random tissue intensities, "
            "for segmenters meant for other scanners (version 2 on; default 0: every subject looks like its site)."
        ),
        grid_size: int = typer.Option(128, "--grid-size", help="Store grid, pixels per side (zarr)."),
        spacing_mm: float = typer.Option(1.5, "--spacing-mm", help="Store grid pixel spacing in mm (zarr)."),
        workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel generator processes."),
        ray_address: str = typer.Option(
            None, "--ray-address", help="Run as Ray tasks on this cluster ('auto', 'host:port', 'ray://...')."
        ),
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

        from ...datasets.synthetic import (
            DEFAULT_VERSION,
            check_population,
            check_random_contrast,
            check_version,
            subject_id_for,
        )
        from ...datasets.synthetic.cohort import MAX_BATCH, batch_size_for, write_batch

        from .paths import announce

        err = Console(stderr=True)

        def fail(msg: str):
            err.print(f"[red]error:[/] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)

        if fmt not in ("zarr", "nifti"):
            fail(f"--format must be zarr or nifti, got {fmt!r}")
        try:
            version = check_version(DEFAULT_VERSION if version is None else version)
            population = _parse_groups(groups)
            check_population(population, version)
            check_random_contrast(random_contrast, version)
        except ValueError as exc:
            fail(str(exc))
        announce("a synthetic cohort store" if fmt == "zarr" else "synthetic NIfTI subjects", out)
        ids = [subject_id_for(i, subjects) for i in range(subjects)]
        store = None
        if fmt == "zarr":
            from ...datasets.store import CohortStore, StoreError

            try:
                store = CohortStore.create(out, grid_size=grid_size, spacing_mm=spacing_mm)
                store.cleanup_incomplete()
            except (StoreError, OSError) as exc:
                fail(str(exc))
            present = set(store.subject_ids())
        else:
            if out.exists() and not out.is_dir():
                fail(f"{out} exists and is not a folder")
            out.mkdir(parents=True, exist_ok=True)
            present = {sid for sid in ids if (out / sid).is_dir()}
        todo = [i for i, sid in enumerate(ids) if sid not in present]
        kwargs = dict(seed=seed, n_subjects=subjects, n_frames=frames, version=version, out=str(out.resolve()), fmt=fmt,
                      population=population, random_contrast=random_contrast)

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
        with progress:
            task = progress.add_task("synth", total=len(todo))
            if ray_address is not None and todo:
                from ...datasets.ingest.schedulers import ray_session

                with ray_session(ray_address):
                    import ray

                    width = max(1, int(ray.cluster_resources().get("CPU", 1)))
                    size = batch_size_for(len(todo), width)
                    remote = ray.remote(num_cpus=1, max_retries=2)(write_batch)
                    pending = [remote.remote(todo[i : i + size], **kwargs) for i in range(0, len(todo), size)]
                    while pending:
                        done, pending = ray.wait(pending, num_returns=1)
                        progress.advance(task, len(ray.get(done[0])))
                where = f"Ray tasks on {ray_address}"
            elif workers == 1:
                for i in range(0, len(todo), MAX_BATCH):
                    write_batch(todo[i : i + MAX_BATCH], **kwargs, on_subject=lambda: progress.advance(task))
                where = "1 worker"
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor, as_completed

                size = batch_size_for(len(todo), workers)
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    futures = [pool.submit(write_batch, todo[i : i + size], **kwargs)
                               for i in range(0, len(todo), size)]
                    for fut in as_completed(futures):
                        progress.advance(task, len(fut.result()))
                where = f"{workers} workers"
        if store is not None and todo:
            store.update_fingerprint()  # as `cardiossl ingest` does: the study keys encoders by it
        elapsed = time.perf_counter() - start
        per = elapsed / len(todo) if todo else 0.0
        what = f"{fmt}, version {version}" + (f", random contrast {random_contrast:g}" if random_contrast else "")
        typer.echo(
            f"wrote {len(todo)} subjects ({len(present & set(ids))} already present) to {out} [{what}] in "
            f"{elapsed:.1f} s ({per:.2f} s/subject, {where})"
        )
