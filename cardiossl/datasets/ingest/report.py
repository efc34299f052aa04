"""What one ingest did (``IngestReport``, written as JSON next to the store), and how a failure is
put in one line."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from ..readers import ReadError, SubjectSource
from ..records import RecordError

REPORTS_DIR = "ingest-reports"


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
    withdrawn: list[str] = field(default_factory=list)  # taken out by `cohort remove`: never re-ingested
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
            *([f"withdrawn (cohort remove), not re-ingested: {len(self.withdrawn)}"] if self.withdrawn else []),
            f"skipped: {len(self.skipped)}",
        ]
        lines += [f"  {s.subject_id}: {s.reason}" for s in self.skipped]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return lines



def one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or repr(exc)
    if not isinstance(exc, (ReadError, RecordError)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def where(source: SubjectSource) -> str:
    return ", ".join(str(p) for p in source.paths) or str(source.root)


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
