"""The reader contract: a layout finds its subjects in a folder and reads one into a SubjectRecord.

Readers are registered in ``READERS`` (the platform registry, entry-point group
``cardiossl.readers``), so a site with its own folder layout can add one from another package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..records import SubjectRecord


class ReadError(ValueError):
    """A subject that cannot be read; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class SubjectSource:
    """Where one subject's files are; ``paths`` are what the reader needs, ``root`` the cohort folder."""

    subject_id: str
    root: Path
    paths: tuple[Path, ...] = field(default_factory=tuple)


class LayoutReader(ABC):
    """One cohort layout (UK Biobank, the cardiossl NIfTI export, ACDC, M&Ms-2, DICOM exams, ...)."""

    name: str = ""

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like a cohort in this layout (cheap: file names only)."""

    @abstractmethod
    def discover(self, root: Path) -> list[SubjectSource]:
        """Every subject under ``root``, sorted by id."""

    @abstractmethod
    def read(self, source: SubjectSource) -> SubjectRecord:
        """Read one subject; raise ReadError (never a bare exception) for bad input."""
