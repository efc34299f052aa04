"""Cohort ingest: any registered layout on disk -> the Zarr cohort store, in parallel and resumable.

The driver plans; tasks read and write. The plan (discover subjects, drop those already committed,
refuse duplicate or unsafe ids, cut the rest into batches) is made once on the driver. Each batch is
one task that reads its subjects and writes them as its own store part(s): one writer per part, so no
shard ever has two writers (two writers into one shard silently lose slices, see the store docs).
A part becomes visible only when its commit marker is written, so a killed ingest leaves no
half-written subject; the next run removes the debris (``cleanup_incomplete``), skips what is
committed and finishes the rest, giving the store an uninterrupted run would have given.

Locally the tasks run in-process (one worker), in worker processes or threads; given a Ray address
they run as Ray tasks across the cluster (the store path must then be on storage every node sees).
A subject that fails to read or validate is skipped with a one-line reason; a worker process that
dies costs the subject it was reading, named in the report; the others land.

Modules: ``plan`` (layout detection, subjects, batches), ``task`` (one batch), ``schedulers``
(where tasks run), ``report`` (the JSON report), ``driver`` (the entry point).
"""

from .driver import ingest
from .plan import MAX_AUTO_BATCH, auto_batch_size, detect_layout, plan_subjects
from .report import REPORTS_DIR, IngestError, IngestReport, SkippedSubject, write_report
from .task import DEFAULT_PART_BYTES, ingest_batch

__all__ = [
    "DEFAULT_PART_BYTES", "MAX_AUTO_BATCH", "REPORTS_DIR", "IngestError", "IngestReport", "SkippedSubject",
    "auto_batch_size", "detect_layout", "ingest", "ingest_batch", "plan_subjects", "write_report",
]
