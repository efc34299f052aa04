"""The slice table: per-slice metadata of a set of parts, columnar and compact (<= 64 B a slice).

A slice holds the index of its subject, of its plane (with its stack position) and of its
normalisation row (interned tables), never copies of them; its part and row inside the part are
implied by ``part_start``. Cine frames of one position share a plane row, so the table costs
35 + 92 / F bytes a slice for F frames per position: at 150 million slices (a 100,000-subject UK
Biobank-like cine cohort, 50 frames) ~5.5 GB instead of ~37 GB, once per training process. Source
planes (fingerprint, tools) are loaded only on request; the full per-slice arrays (``plane``,
``norm``, ``part``, ...) are properties that build them on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import index


@dataclass
class SliceTable:
    """Per-slice metadata over some committed parts, in their order (part by part, row by row)."""

    part_ids: list[str]
    part_start: np.ndarray  # int64 [P + 1]: the slices of part p are part_start[p]:part_start[p + 1]
    part_shard_slices: np.ndarray  # int64 [P]
    subject_ids: list[str]  # table subject index -> id (commit order)
    subject_digest: np.ndarray  # S32 [S]
    subject: np.ndarray  # int32, index into subject_ids
    view: np.ndarray  # int8
    frame: np.ndarray  # int16
    phase: np.ndarray  # int8
    slice_index: np.ndarray  # int16
    has_label: np.ndarray  # bool
    image_scale: np.ndarray  # float64 [N, 2]
    plane_index: np.ndarray  # int32, row of ``planes`` and ``plane_stack``
    norm_index: np.ndarray  # int32, row of ``norms``
    planes: np.ndarray  # float64 [U, 11]
    plane_stack: np.ndarray  # float32 [U]: the stack position of the slices on that plane
    norms: np.ndarray  # float32 [K, 4]
    source_index: np.ndarray | None = None  # int32, row of ``source_planes`` / ``source_shapes`` (on request)
    source_planes: np.ndarray | None = None  # float64 [V, 11]
    source_shapes: np.ndarray | None = None  # int32 [V, 2]
    stats_subject: np.ndarray | None = None  # (subject, view) intensity statistics, index.STATS_FIELDS
    stats_view: np.ndarray | None = None
    stats: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.subject.shape[0])

    # the full per-slice arrays, built on demand ---------------------------------------------
    @property
    def part(self) -> np.ndarray:
        """int32 part index of every slice."""
        return np.repeat(np.arange(len(self.part_ids), dtype=np.int32), np.diff(self.part_start))

    @property
    def row(self) -> np.ndarray:
        """int64 row of every slice inside its part."""
        return np.arange(len(self), dtype=np.int64) - np.repeat(self.part_start[:-1], np.diff(self.part_start))

    @property
    def plane(self) -> np.ndarray:
        return self.planes[self.plane_index]

    @property
    def stack_position(self) -> np.ndarray:
        return self.plane_stack[self.plane_index]

    def _sources(self) -> np.ndarray:
        if self.source_index is None:
            raise ValueError("this slice table was built without source planes; build it with with_sources=True")
        return self.source_index

    @property
    def source_plane(self) -> np.ndarray:
        return self.source_planes[self._sources()]

    @property
    def source_shape(self) -> np.ndarray:
        return self.source_shapes[self._sources()]

    @property
    def norm(self) -> np.ndarray:
        return self.norms[self.norm_index]

    def locate(self, i) -> tuple[np.ndarray, np.ndarray]:
        """(part index, row) of slice(s) ``i``."""
        i = np.asarray(i, dtype=np.int64)
        p = np.searchsorted(self.part_start, i, side="right") - 1
        return p, i - self.part_start[p]

    @property
    def nbytes(self) -> int:
        """Bytes held by the table (arrays and subject id strings), the measure of its compactness."""
        arrays = [self.part_start, self.part_shard_slices, self.subject_digest, self.subject, self.view,
                  self.frame, self.phase, self.slice_index, self.has_label, self.image_scale, self.plane_index,
                  self.norm_index, self.planes, self.plane_stack, self.norms, self.source_index,
                  self.source_planes, self.source_shapes]
        return int(sum(a.nbytes for a in arrays if a is not None) + sum(len(s) for s in self.subject_ids)
                   + sum(len(s) for s in self.part_ids))


def build_table(view: index.IndexView, part_ids: list[str], with_stats: bool = False,
                with_sources: bool | None = None) -> SliceTable:
    """The slice table of ``part_ids`` (in that order) from the store's index view."""
    a = index.concat([view.where[p] for p in part_ids], with_stats=with_stats, with_sources=with_sources)
    part_start = np.concatenate([[0], np.cumsum(a["part_n_slices"])]).astype(np.int64)
    return SliceTable(
        part_ids=list(part_ids),
        part_start=part_start,
        part_shard_slices=a["part_shard_slices"].astype(np.int64),
        subject_ids=[s.decode() for s in a["subject_ids"].tolist()],
        subject_digest=a["subject_digest"],
        **{k: a[k] for k in index.SLICE_COLUMNS},
        **{k: a[k] for k in index.TABLES},
        **{k: a.get(k) for k in (index.SOURCE_COLUMN, *index.SOURCE_TABLES)},
        stats_subject=a.get("stats_subject"), stats_view=a.get("stats_view"), stats=a.get("stats"),
    )
