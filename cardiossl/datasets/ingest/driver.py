"""The ingest entry point: plan on the driver, run the batches, fold the results into the report."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from ..readers import READERS
from . import schedulers
from .plan import auto_batch_size, detect_layout, detects, plan_subjects
from .report import IngestError, IngestReport, SkippedSubject, where, write_report
from .task import DEFAULT_PART_BYTES


def ingest(
    source: str | os.PathLike,
    store_path: str | os.PathLike,
    *,
    layout: str = "auto",
    workers: int = 1,
    ray_address: str | None = None,
    grid_size: int = 128,
    spacing_mm: float = 1.5,
    batch_size: int | None = None,
    scheduler: str | None = None,
    max_part_bytes: int = DEFAULT_PART_BYTES,
    progress: bool = True,
    console=None,
) -> IngestReport:
    """Ingest every subject of ``source`` (layout ``auto`` or a READERS name) into ``store_path``.

    ``workers`` > 1 runs batches in worker processes (spawned: a calling script needs the
    ``if __name__ == "__main__":`` guard; ``scheduler="threads"`` for threads; a worker that dies
    costs the subject it was reading, see ``schedulers``);
    ``ray_address`` ("auto", "ray://...", "host:port") runs them as Ray tasks instead. ``batch_size``
    subjects form one task (default: about four tasks per worker, at most 16 subjects).
    Raises IngestError / StoreError before touching the store when the job cannot start.
    """
    from rich.console import Console

    from ..store import CohortStore

    t_start = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    console = console or Console(stderr=True)
    if workers < 1:
        raise IngestError(f"workers must be >= 1, got {workers}")
    if batch_size is not None and batch_size < 1:
        raise IngestError(f"batch size must be >= 1, got {batch_size}")
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise IngestError(f"source {source} is not a folder; point it at the cohort root")
    store_path = Path(store_path).expanduser().resolve()
    if store_path == root or root in store_path.parents:
        raise IngestError(f"store {store_path} lies inside the source {root}; write it elsewhere")

    if layout == "auto":
        layout_name, detected = detect_layout(root), True
        if progress:
            console.print(f"[bold]layout[/]: {layout_name} (auto-detected in {root})")
    else:
        try:
            READERS.get(layout)
        except LookupError as exc:
            raise IngestError(f"--layout {layout}: {exc}") from None
        layout_name, detected = layout, False
    reader_cls = READERS.get(layout_name)
    sources = reader_cls().discover(root)
    if not sources:
        others = [n for n in READERS.names() if n != layout_name and detects(READERS.get(n), root)]
        hint = f"; it looks like {', '.join(repr(n) for n in others)} (--layout {others[0]} or auto)" if others else ""
        raise IngestError(f"layout {layout_name!r} finds no subjects in {root}{hint}")

    store = CohortStore.create(store_path, grid_size=grid_size, spacing_mm=spacing_mm)
    removed = store.cleanup_incomplete()
    todo, present, skipped, withdrawn = plan_subjects(sources, set(store.subject_ids()),
                                                      set(store.removed_subject_ids()))

    if ray_address is not None:
        sched = "ray"
    elif scheduler is not None:
        if scheduler not in ("sync", "threads", "processes"):
            raise IngestError(f"scheduler must be sync, threads or processes, got {scheduler!r}")
        sched = scheduler
    else:
        sched = "sync" if workers == 1 else "processes"
    with schedulers.ray_session(ray_address if sched == "ray" and todo else None):
        if batch_size is None:
            width = workers
            if sched == "ray" and todo:
                import ray

                width = max(1, int(ray.cluster_resources().get("CPU", 1)))
            batch_size = auto_batch_size(len(todo), width)
        report = IngestReport(
            source=str(root),
            store=str(store_path),
            layout=layout_name,
            layout_detected=detected,
            scheduler=sched,
            workers=workers,
            batch_size=batch_size,
            already_present=present,
            withdrawn=withdrawn,
            skipped=skipped,
            removed_incomplete_parts=list(removed or []),
            started_at=started_at.isoformat(),
        )
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        _run(batches, reader_cls, store_path, report, workers, max_part_bytes, progress, console)

    CohortStore(store_path).update_fingerprint()
    report.seconds = time.perf_counter() - t_start
    report.report_path = str(write_report(report, store_path, started_at))
    return report


def _run(batches, reader_cls, store_path: Path, report: IngestReport, workers: int, max_part_bytes: int,
         progress: bool, console) -> None:
    """Run every batch under the report's scheduler, folding results into the report as they come."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from ..store import CohortStore

    class _Rate(ProgressColumn):
        def render(self, task) -> Text:
            rate = task.completed / task.elapsed if task.elapsed else 0.0
            return Text(f"{rate:.2f} subjects/s")

    bar = Progress(
        TextColumn("ingest {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )
    todo = {s.subject_id: s for b in batches for s in b}
    with bar:
        task_id = bar.add_task(report.layout, total=len(todo))

        retried: set[str] = set()  # subjects run again after their worker died: committed = ingested

        def on_done(result: dict) -> None:
            report.ingested += result["ingested"]
            for sid in result["already_present"]:
                (report.ingested if sid in retried else report.already_present).append(sid)
            retried.update(result.get("requeued", []))
            report.parts += result["parts"]
            report.slices += result["slices"]
            report.read_seconds += result["read_s"]
            report.write_seconds += result["write_s"]
            for sid, reason, source in result["skipped"]:
                report.skipped.append(SkippedSubject(sid, reason, source))
            for sid, reason, source in result.get("lost", []):
                if CohortStore(store_path).has_subject(sid):
                    report.ingested.append(sid)
                else:
                    report.skipped.append(SkippedSubject(sid, reason, source))
            bar.advance(task_id, len(result["batch"]))

        args = (batches, reader_cls, str(store_path), max_part_bytes)
        if report.scheduler == "ray":
            schedulers.run_ray(*args, on_done)
        elif report.scheduler == "processes":
            schedulers.run_processes(*args, workers, on_done)
        elif report.scheduler == "threads":
            schedulers.run_threads(*args, workers, on_done)
        else:  # "sync", or nothing to do
            schedulers.run_inline(*args, on_done)

    accounted = set(report.ingested) | set(report.already_present) | {s.subject_id for s in report.skipped}
    for sid in sorted(set(todo) - accounted):  # only if a scheduler dropped a result
        report.skipped.append(SkippedSubject(sid, "no result came back from its task", where(todo[sid])))


