"""Cohort ingest: any registered layout on disk -> the Zarr cohort store, in parallel and resumable.

The driver plans; tasks read and write. The plan (discover subjects, drop those already committed,
refuse duplicate or unsafe ids, cut the rest into batches) is made once on the driver. Each batch is
one task that reads its subjects and writes them as its own store part(s): one writer per part, so no
shard ever has two writers (two writers into one shard silently lose slices, see the store docs).
A part becomes visible only when its commit marker is written, so a killed ingest leaves no
half-written subject; the next run removes the debris (``cleanup_incomplete``), skips what is
committed and finishes the rest, giving the store an uninterrupted run would have given.

Locally the tasks run under dask (in-process for one worker, a process pool for more); given a Ray
address they run as Ray tasks across the cluster (the store path must then be on storage every node
sees). A subject that fails to read or validate is skipped with a one-line reason; the others land.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .readers import READERS, LayoutReader, ReadError, SubjectSource
from .records import RecordError, SubjectRecord, check_subject_id

REPORTS_DIR = "ingest-reports"
DEFAULT_PART_BYTES = 256 * 2**20  # a task flushes a part once its records hold this many pixel bytes
MAX_AUTO_BATCH = 16


class IngestError(ValueError):
    """The ingest cannot start (missing source, unknown or ambiguous layout, no subjects)."""


@dataclass
class SkippedSubject:
    subject_id: str
    reason: str  # one line
    source: str = ""  # the files or folder it came from


@dataclass
class IngestReport:
    """What one ingest did; ``ok`` when nothing was skipped. Written as JSON next to the store."""

    source: str
    store: str
    layout: str
    layout_detected: bool
    scheduler: str  # "sync", "threads", "processes" or "ray"
    workers: int
    batch_size: int
    ingested: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    skipped: list[SkippedSubject] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    removed_incomplete_parts: list[str] = field(default_factory=list)
    slices: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0  # summed over tasks
    write_seconds: float = 0.0  # summed over tasks
    started_at: str = ""
    report_path: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped

    @property
    def subjects_per_s(self) -> float:
        n = len(self.ingested) + len(self.skipped)
        return n / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["subjects_per_s"] = self.subjects_per_s
        return d

    def summary_lines(self) -> list[str]:
        how = "auto-detected" if self.layout_detected else "given"
        lines = [
            f"layout: {self.layout} ({how})",
            f"store: {self.store}",
            f"ingested: {len(self.ingested)} subjects ({self.slices} slices) in {self.seconds:.1f} s "
            f"({self.subjects_per_s:.2f} subjects/s, {self.scheduler}, {self.workers} worker(s))",
            f"already present: {len(self.already_present)}",
            f"skipped: {len(self.skipped)}",
        ]
        lines += [f"  {s.subject_id}: {s.reason}" for s in self.skipped]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return lines


# --------------------------------------------------------------------------------------------
# planning (driver)


def _refines(cls: type, other: type, other_name: str) -> bool:
    """Whether layout ``cls`` is a more specific form of ``other`` (a subclass, or it says so)."""
    return (cls is not other and issubclass(cls, other)) or other_name in getattr(cls, "refines", ())


def _detects(reader_cls, root: Path) -> bool:
    try:
        return bool(reader_cls.detect(root))
    except Exception:  # a reader that cannot even look at the folder does not match it
        return False


def detect_layout(root: Path) -> str:
    """The registered layout whose ``detect`` accepts ``root``; IngestError when none or several.

    When several match and one refines the others (Sunnybrook is DICOM plus contours: a reader
    says so with ``refines = ("dicom",)``), the specific one is chosen, provided it finds every
    folder the generic ones would read; otherwise the folder is a mix and the user must choose.
    """
    root = Path(root)
    matches: dict[str, type] = {}
    for entry in READERS.entries():
        if _detects(entry.obj, root):
            matches[entry.name] = entry.obj
    names = ", ".join(READERS.names()) or "(none registered)"
    if not matches:
        raise IngestError(
            f"no registered layout recognises {root} (layouts: {names}); check the path or pass "
            "--layout NAME"
        )
    if len(matches) > 1:
        specific = [
            n for n, c in matches.items() if all(_refines(c, o, m) for m, o in matches.items() if m != n)
        ]
        if len(specific) == 1:
            chosen = specific[0]
            try:  # every folder a generic layout would read lies in a subject of the specific one
                covered = [Path(p).resolve() for s in matches[chosen]().discover(root) for p in s.paths]
                if all(
                    any(q == c or c in q.parents for c in covered)
                    for m in matches
                    if m != chosen
                    for s in matches[m]().discover(root)
                    for q in (Path(p).resolve() for p in s.paths)
                ):
                    return chosen
            except Exception:
                pass
        raise IngestError(
            f"{root} looks like several layouts ({', '.join(matches)}); choose one with --layout NAME"
        )
    return next(iter(matches))


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or repr(exc)
    if not isinstance(exc, (ReadError, RecordError)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(source: SubjectSource) -> str:
    return ", ".join(str(p) for p in source.paths) or str(source.root)


def plan_subjects(
    sources: list[SubjectSource], committed: set[str]
) -> tuple[list[SubjectSource], list[str], list[SkippedSubject]]:
    """(to ingest, already present, skipped): unsafe and duplicate ids are refused, never guessed."""
    counts = Counter(s.subject_id for s in sources)
    todo, present, skipped = [], [], []
    for s in sources:
        try:
            check_subject_id(s.subject_id)
        except RecordError as exc:
            skipped.append(SkippedSubject(str(s.subject_id), _one_line(exc), _where(s)))
            continue
        if s.subject_id in committed:
            if s.subject_id not in present:
                present.append(s.subject_id)
            continue
        if counts[s.subject_id] > 1:
            others = [_where(o) for o in sources if o.subject_id == s.subject_id]
            skipped.append(
                SkippedSubject(
                    s.subject_id,
                    f"duplicate subject id {s.subject_id!r} ({counts[s.subject_id]} sources: "
                    f"{'; '.join(others)}); rename all but one",
                    _where(s),
                )
            )
            continue
        todo.append(s)
    return todo, present, skipped


def auto_batch_size(n_subjects: int, width: int) -> int:
    """About four batches per worker (load balance, fine-grained resume), at most MAX_AUTO_BATCH."""
    return max(1, min(MAX_AUTO_BATCH, math.ceil(n_subjects / (4 * max(1, width)))))


# --------------------------------------------------------------------------------------------
# one task: read a batch, write its part(s)


def ingest_batch(
    reader_cls: type[LayoutReader],
    sources: list[SubjectSource],
    store_path: str,
    max_part_bytes: int = DEFAULT_PART_BYTES,
) -> dict[str, Any]:
    """Read ``sources`` and write them as store part(s) by this one writer; errors come back as data.

    Idempotent: subjects already committed (a retried task whose first attempt committed) are
    reported as already present, not written twice.
    """
    from .store import CohortStore

    out: dict[str, Any] = {
        "batch": [s.subject_id for s in sources],
        "ingested": [],
        "already_present": [],
        "skipped": [],
        "parts": [],
        "slices": 0,
        "read_s": 0.0,
        "write_s": 0.0,
    }
    try:
        store = CohortStore(store_path)
        committed = set(store.subject_ids())  # one look at the commit markers per task
        reader = reader_cls()
    except Exception as exc:
        out["skipped"] = [(s.subject_id, f"ingest task could not start: {_one_line(exc)}", _where(s))
                          for s in sources]
        return out

    pending: list[tuple[SubjectSource, SubjectRecord]] = []
    pending_bytes = 0

    def skip(src: SubjectSource, why: str) -> None:
        out["skipped"].append((src.subject_id, why, _where(src)))

    def write(items: list[tuple[SubjectSource, SubjectRecord]]) -> None:
        """One part for ``items``; if the store refuses it, land every record it accepts."""
        t0 = time.perf_counter()
        try:
            out["parts"].append(store.write_subjects([r for _, r in items]))
            out["ingested"] += [r.subject_id for _, r in items]
            out["slices"] += sum(len(r.slices) for _, r in items)
            return
        except Exception as exc:
            error = exc
        finally:
            out["write_s"] += time.perf_counter() - t0
        if len(items) == 1:
            src, rec = items[0]
            if store.has_subject(rec.subject_id):  # a concurrent ingest committed it meanwhile
                out["already_present"].append(rec.subject_id)
            else:
                skip(src, _one_line(error))
            return
        valid = []
        for src, rec in items:  # the usual refusal: one bad record; the rest stay one part
            try:
                rec.validate()
                valid.append((src, rec))
            except Exception as exc:
                skip(src, _one_line(exc))
        if valid and len(valid) < len(items):
            write(valid)
        else:
            for item in valid:
                write([item])

    for src in sources:
        if src.subject_id in committed:
            out["already_present"].append(src.subject_id)
            continue
        t0 = time.perf_counter()
        try:
            rec = reader.read(src)
            if not isinstance(rec, SubjectRecord):
                raise ReadError(f"reader {reader_cls.__name__} returned {type(rec).__name__}")
            if rec.subject_id != src.subject_id:
                raise ReadError(
                    f"reader returned subject id {rec.subject_id!r} for source {src.subject_id!r}"
                )
        except Exception as exc:
            skip(src, _one_line(exc))
            continue
        finally:
            out["read_s"] += time.perf_counter() - t0
        pending.append((src, rec))
        pending_bytes += sum(
            s.image.nbytes + (0 if s.label is None else s.label.nbytes) for s in rec.slices
        )
        if pending_bytes >= max_part_bytes:
            write(pending)
            pending, pending_bytes = [], 0
    if pending:
        write(pending)
    return out


# --------------------------------------------------------------------------------------------
# schedulers


def _run_dask(batches, reader_cls, store_path, max_part_bytes, workers, scheduler, on_done) -> None:
    import dask
    from dask.callbacks import Callback

    class _Done(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, dict) and "batch" in result and "read_s" in result:
                on_done(result)

    tasks = [
        dask.delayed(ingest_batch, pure=False)(reader_cls, list(b), store_path, max_part_bytes)
        for b in batches
    ]
    kwargs = {} if scheduler == "sync" else {"num_workers": workers}
    with _Done():
        dask.compute(*tasks, scheduler=scheduler, **kwargs)


def _run_ray(batches, reader_cls, store_path, max_part_bytes, on_done) -> None:
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(ingest_batch)
    pending = {remote.remote(reader_cls, list(b), store_path, max_part_bytes): b for b in batches}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            batch = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the worker died on every retry
                result = {
                    "batch": [s.subject_id for s in batch], "ingested": [], "already_present": [],
                    "parts": [], "slices": 0, "read_s": 0.0, "write_s": 0.0, "skipped": [],
                    "lost": [(s.subject_id, f"ray task failed: {_one_line(exc)}", _where(s))
                             for s in batch],
                }
            on_done(result)


@contextmanager
def _ray_session(address: str | None):
    """Attached to the Ray cluster for the ingest, detached after; as is when already attached
    (a driver inside a Ray job)."""
    if address is None:
        yield
        return
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------------
# the entry point


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

    ``workers`` > 1 runs batches in a dask process pool (spawned: a calling script needs the
    ``if __name__ == "__main__":`` guard; ``scheduler="threads"`` for threads);
    ``ray_address`` ("auto", "ray://...", "host:port") runs them as Ray tasks instead. ``batch_size``
    subjects form one task (default: about four tasks per worker, at most 16 subjects).
    Raises IngestError / StoreError before touching the store when the job cannot start.
    """
    from rich.console import Console

    from .store import CohortStore

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
        others = [n for n in READERS.names() if n != layout_name and _detects(READERS.get(n), root)]
        hint = f"; it looks like {', '.join(repr(n) for n in others)} (--layout {others[0]} or auto)" if others else ""
        raise IngestError(f"layout {layout_name!r} finds no subjects in {root}{hint}")

    store = CohortStore.create(store_path, grid_size=grid_size, spacing_mm=spacing_mm)
    removed = store.cleanup_incomplete()
    todo, present, skipped = plan_subjects(sources, set(store.subject_ids()))

    if ray_address is not None:
        sched = "ray"
    elif scheduler is not None:
        if scheduler not in ("sync", "threads", "processes"):
            raise IngestError(f"scheduler must be sync, threads or processes, got {scheduler!r}")
        sched = scheduler
    else:
        sched = "sync" if workers == 1 else "processes"
    with _ray_session(ray_address if sched == "ray" and todo else None):
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

    from .store import CohortStore

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

        def on_done(result: dict) -> None:
            report.ingested += result["ingested"]
            report.already_present += result["already_present"]
            report.parts += result["parts"]
            report.slices += result["slices"]
            report.read_seconds += result["read_s"]
            report.write_seconds += result["write_s"]
            for sid, reason, where in result["skipped"]:
                report.skipped.append(SkippedSubject(sid, reason, where))
            for sid, reason, where in result.get("lost", []):
                if CohortStore(store_path).has_subject(sid):
                    report.ingested.append(sid)
                else:
                    report.skipped.append(SkippedSubject(sid, reason, where))
            bar.advance(task_id, len(result["batch"]))

        if batches and report.scheduler == "ray":
            _run_ray(batches, reader_cls, str(store_path), max_part_bytes, on_done)
        elif batches:
            _run_dask(batches, reader_cls, str(store_path), max_part_bytes, workers, report.scheduler, on_done)

    accounted = set(report.ingested) | set(report.already_present) | {s.subject_id for s in report.skipped}
    for sid in sorted(set(todo) - accounted):  # only if a scheduler dropped a result
        report.skipped.append(SkippedSubject(sid, "no result came back from its task", _where(todo[sid])))


def write_report(report: IngestReport, store_path: Path, when: datetime) -> Path:
    """``<store>/ingest-reports/<UTC time>.json``, written atomically (temporary file, then rename)."""
    folder = Path(store_path) / REPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{when.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.json"
    tmp = path.with_suffix(".json.tmp")
    report.report_path = str(path)
    tmp.write_text(json.dumps(report.to_dict(), indent=2))
    os.replace(tmp, path)
    return path
