"""Planning an ingest on the driver: which layout, which subjects, in which batches."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from ..readers import READERS, SubjectSource
from ..records import RecordError, check_subject_id
from .report import IngestError, SkippedSubject, one_line, where

MAX_AUTO_BATCH = 16


def _refines(cls: type, other: type, other_name: str) -> bool:
    """Whether layout ``cls`` is a more specific form of ``other`` (a subclass, or it says so)."""
    return (cls is not other and issubclass(cls, other)) or other_name in getattr(cls, "refines", ())


def detects(reader_cls, root: Path) -> bool:
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
        if detects(entry.obj, root):
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


def plan_subjects(
    sources: list[SubjectSource], committed: set[str], withdrawn: set[str] = frozenset()
) -> tuple[list[SubjectSource], list[str], list[SkippedSubject], list[str]]:
    """(to ingest, already present, skipped, withdrawn): unsafe and duplicate ids are refused, never
    guessed; subjects withdrawn by ``cohort remove`` are not brought back."""
    counts = Counter(s.subject_id for s in sources)
    todo, present, skipped, gone = [], [], [], []
    for s in sources:
        try:
            check_subject_id(s.subject_id)
        except RecordError as exc:
            skipped.append(SkippedSubject(str(s.subject_id), one_line(exc), where(s)))
            continue
        if s.subject_id in committed:
            if s.subject_id not in present:
                present.append(s.subject_id)
            continue
        if s.subject_id in withdrawn:
            if s.subject_id not in gone:
                gone.append(s.subject_id)
            continue
        if counts[s.subject_id] > 1:
            others = [where(o) for o in sources if o.subject_id == s.subject_id]
            skipped.append(
                SkippedSubject(
                    s.subject_id,
                    f"duplicate subject id {s.subject_id!r} ({counts[s.subject_id]} sources: "
                    f"{'; '.join(others)}); rename all but one",
                    where(s),
                )
            )
            continue
        todo.append(s)
    return todo, present, skipped, gone


def auto_batch_size(n_subjects: int, width: int) -> int:
    """About four batches per worker (load balance, fine-grained resume), at most MAX_AUTO_BATCH."""
    return max(1, min(MAX_AUTO_BATCH, math.ceil(n_subjects / (4 * max(1, width)))))


