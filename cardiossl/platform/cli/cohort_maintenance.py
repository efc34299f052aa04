"""`cardiossl cohort verify | gc | remove`: checking a store, collecting its garbage, withdrawing subjects.

* ``verify STORE``: every live part complete, every shard present with a good index, every chunk's
  crc32c (``--quick`` skips reading the pixel chunks); damage is reported by subject. Exit 1 when
  anything is damaged.
* ``gc STORE``: removes parts that were never committed and whose writer's lease has lapsed (a part
  being written, on any machine, is kept), parts replaced by ``remove``, and unused index files.
* ``remove STORE SUBJECT...``: the subjects leave every new snapshot now; their parts are rewritten
  without them. Runs pinned to an older snapshot can still read them until the next ``gc``, which
  deletes the old parts (the withdrawal is physically complete then).

Exit codes: 0 done, 1 damage found (verify), 2 not a store / unknown subject.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _open(store_path: Path, err):
    from ...datasets.store import CohortStore, StoreError

    try:
        return CohortStore(store_path)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def verify_command(
    store_path: Path = typer.Argument(..., help="Cohort store."),
    quick: bool = typer.Option(False, "--quick", help="Check files and shard indexes only, not every chunk."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check every committed part: files present, shard indexes and chunk checksums; damage by subject."""
    from rich.console import Console

    err = Console(stderr=True)
    report = _open(store_path, err).verify(payload=not quick)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(f"{report.store}: {report.parts_checked} parts, {report.subjects_checked} subjects, "
                   f"{report.chunks_checked} chunks checked" + (" (files and indexes only)" if quick else ""))
        for sid, problems in sorted(report.damaged_subjects.items()):
            typer.echo(f"  damaged subject {sid}: " + "; ".join(problems))
        for pid, problems in sorted(report.damaged_parts.items()):
            typer.echo(f"  damaged part {pid}: " + "; ".join(problems))
        typer.echo("ok" if report.ok else "DAMAGED: re-ingest the subjects named (cardiossl cohort remove, then ingest)")
    raise typer.Exit(0 if report.ok else 1)


def gc_command(
    store_path: Path = typer.Argument(..., help="Cohort store."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    min_lease_s: float = typer.Option(0.0, "--min-lease-s",
                                      help="Treat every writer's lease as at least this long (seconds)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove uncommitted parts past their writer's lease, parts replaced by `cohort remove`, unused index files."""
    from rich.console import Console

    err = Console(stderr=True)
    report = _open(store_path, err).gc(min_lease_s=min_lease_s, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(report.uncommitted)} uncommitted part(s), {len(report.retired)} replaced part(s), "
               f"{len(report.index_files)} unused index file(s)")
    for name, items in (("uncommitted", report.uncommitted), ("replaced", report.retired),
                        ("index", report.index_files)):
        for item in items:
            typer.echo(f"  {name}: {item}")


def remove_command(
    store_path: Path = typer.Argument(..., help="Cohort store."),
    subjects: list[str] = typer.Argument(..., help="Subject ids to withdraw."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Withdraw subjects: gone from new snapshots now, physically deleted by the next `cohort gc`."""
    from rich.console import Console

    from ...datasets.store import StoreError

    err = Console(stderr=True)
    store = _open(store_path, err)
    try:
        report = store.remove_subjects(subjects)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"removed": report.removed, "replaced_parts": report.replaced_parts}, indent=2))
        return
    typer.echo(f"removed {len(report.removed)} subject(s) from new snapshots of {store.path}: {', '.join(report.removed)}")
    for old, new in report.replaced_parts.items():
        typer.echo(f"  part {old} -> {new or '(no subjects left)'}")
    typer.echo(f"their data is deleted by the next `cardiossl cohort gc {store.path}` (runs pinned to an older "
               "snapshot can read it until then); `cardiossl ingest` will not bring them back")


def register(app: typer.Typer) -> None:
    from .cohort import cohort_app

    cohort_app.command("verify")(verify_command)
    cohort_app.command("gc")(gc_command)
    cohort_app.command("remove")(remove_command)
