"""One ingest task: read a batch of subjects and write them as store part(s), errors as data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..readers import LayoutReader, ReadError, SubjectSource
from ..records import SubjectRecord
from .report import one_line, where

DEFAULT_PART_BYTES = 256 * 2**20  # a task flushes a part once its records hold this many pixel bytes


def ingest_batch(
    reader_cls: type[LayoutReader],
    sources: list[SubjectSource],
    store_path: str,
    max_part_bytes: int = DEFAULT_PART_BYTES,
    progress: Callable[[str, list[str]], None] | None = None,
) -> dict[str, Any]:
    """Read ``sources`` and write them as store part(s) by this one writer; errors come back as data.

    ``progress(phase, ids)`` is told before each read ("read", [id]) and each write ("write", ids),
    so a scheduler whose worker process dies knows which subject it died on.

    Idempotent: subjects already committed (a retried task whose first attempt committed) are
    reported as already present, not written twice.
    """
    from ..store import CohortStore

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
        committed = set(store.subject_ids())  # one look at the store index per task (a few files)
        reader = reader_cls()
    except Exception as exc:
        out["skipped"] = [(s.subject_id, f"ingest task could not start: {one_line(exc)}", where(s))
                          for s in sources]
        return out

    pending: list[tuple[SubjectSource, SubjectRecord]] = []
    pending_bytes = 0

    def skip(src: SubjectSource, why: str) -> None:
        out["skipped"].append((src.subject_id, why, where(src)))

    def write(items: list[tuple[SubjectSource, SubjectRecord]]) -> None:
        """One part for ``items``; if the store refuses it, land every record it accepts."""
        if progress is not None:
            progress("write", [r.subject_id for _, r in items])
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
                skip(src, one_line(error))
            return
        valid = []
        for src, rec in items:  # the usual refusal: one bad record; the rest stay one part
            try:
                rec.validate()
                valid.append((src, rec))
            except Exception as exc:
                skip(src, one_line(exc))
        if valid and len(valid) < len(items):
            write(valid)
        else:
            for item in valid:
                write([item])

    for src in sources:
        if src.subject_id in committed:
            out["already_present"].append(src.subject_id)
            continue
        if progress is not None:
            progress("read", [src.subject_id])
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
            skip(src, one_line(exc))
            continue
        finally:
            out["read_s"] += time.perf_counter() - t0
        # where the subject came from, so evaluation can score on the source pixels later
        rec.meta.setdefault("ingest", {"layout": reader_cls.name, "root": str(src.root),
                                       "paths": [str(p) for p in src.paths]})
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


