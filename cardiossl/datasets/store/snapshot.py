"""A store snapshot: the committed parts, their subjects and the content hash, at one moment.

A training run reads the store through one snapshot taken by its driver: every worker, the split,
the validation figure and a resumed run then see the same parts, so an ingest (or a ``cohort
remove``) during training changes nothing for it. Parts are immutable and a part replaced by
``cohort remove`` stays on disk until ``cohort gc``, so a snapshot stays readable until then.

The content hash identifies the data, not the files: sha256 over the grid and every subject's id and
digest (its slices' metadata and pixel checksums, ``index.subject_digests``), in id order. Re-ingesting
the same data, in other batches or parts, or into a copy of the store elsewhere, gives the same hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class PartRef:
    part_id: str
    seq: int
    n_slices: int
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    """What a run reads: ``parts`` in commit order, their subjects, and the ``content_hash``."""

    store: str  # the path it was taken from (informational: a moved store keeps its snapshots)
    grid_size: int
    spacing_mm: float
    parts: tuple[PartRef, ...]
    content_hash: str
    taken_at: str = ""
    schema_version: int = 2

    @property
    def part_ids(self) -> list[str]:
        return [p.part_id for p in self.parts]

    @property
    def subject_ids(self) -> list[str]:
        return [s for p in self.parts for s in p.subjects]

    @property
    def n_slices(self) -> int:
        return sum(p.n_slices for p in self.parts)

    def to_dict(self) -> dict:
        return {"store": self.store, "grid_size": self.grid_size, "spacing_mm": self.spacing_mm,
                "content_hash": self.content_hash, "taken_at": self.taken_at,
                "schema_version": self.schema_version,
                "parts": [{"part_id": p.part_id, "seq": p.seq, "n_slices": p.n_slices, "subjects": list(p.subjects)}
                          for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict) -> Snapshot:
        parts = tuple(PartRef(str(p["part_id"]), int(p["seq"]), int(p["n_slices"]), tuple(p["subjects"]))
                      for p in d["parts"])
        return cls(str(d["store"]), int(d["grid_size"]), float(d["spacing_mm"]), parts, str(d["content_hash"]),
                   str(d.get("taken_at", "")), int(d.get("schema_version", 2)))

    def summary(self) -> dict:
        """The small record of a snapshot (MLflow tags, logs): hash, counts, store path."""
        return {"content_hash": self.content_hash, "parts": len(self.parts),
                "subjects": sum(len(p.subjects) for p in self.parts), "slices": self.n_slices,
                "store": self.store, "taken_at": self.taken_at}

    def difference(self, other: Snapshot) -> str:
        """What changed from ``other`` to this one, in words (for refusals)."""
        mine, theirs = set(self.subject_ids), set(other.subject_ids)
        added, gone = sorted(mine - theirs), sorted(theirs - mine)
        words = []
        if added:
            words.append(f"{len(added)} subject(s) added ({', '.join(added[:3])}{', ...' if len(added) > 3 else ''})")
        if gone:
            words.append(f"{len(gone)} subject(s) gone ({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''})")
        if not words:
            words.append("the same subjects with different content")
        return "; ".join(words)


def content_hash(grid_size: int, spacing_mm: float, ids_and_digests) -> str:
    """sha256 of the grid and the (subject id, digest) pairs in id order: the data's identity."""
    h = hashlib.sha256(f"cardiossl.cohort grid={int(grid_size)} spacing={float(spacing_mm)!r}\n".encode())
    for sid, digest in sorted(ids_and_digests):
        h.update(sid.encode() + b"\0" + bytes(digest))
    return h.hexdigest()
