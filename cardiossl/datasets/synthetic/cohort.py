"""Writing a synthetic cohort in batches: one task makes whole subjects and writes them whole.

A batch of subject indices is one task, locally (in-process or a process pool) or as a Ray task on a
cluster, as ``cardiossl ingest`` does: for a store, the task writes its subjects as its own part (one
writer per part, so no shard has two writers); for NIfTI, one folder per subject, each renamed into
place. Subject ``i`` of seed ``S`` depends on nothing else, so any split into tasks gives the same cohort.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MAX_BATCH = 32  # subjects per task (and per store part)


def batch_size_for(n_subjects: int, width: int) -> int:
    """About four tasks per worker (load balance, fine-grained resume), at most ``MAX_BATCH``."""
    return max(1, min(MAX_BATCH, math.ceil(n_subjects / (4 * max(1, width)))))


def write_batch(
    indices: list[int],
    *,
    seed: int,
    n_subjects: int,
    n_frames: int,
    version: int,
    out: str | os.PathLike,
    fmt: str,
    population: dict | None = None,
    random_contrast: float = 0.0,
    on_subject=None,
) -> list[str]:
    """Generate subjects ``indices`` and write them to ``out`` (``fmt`` zarr or nifti); their ids.

    For ``zarr`` the store must exist (``CohortStore.create``); the batch lands as one part or not at all.
    ``on_subject()`` (in-process callers) is called after each subject is generated.
    """
    from . import subject_id_for, synth_subject

    records = []
    for i in indices:
        sid = subject_id_for(i, n_subjects)
        records.append(
            synth_subject(sid, seed, n_frames=n_frames, index=i, version=version, population=population,
                          random_contrast=random_contrast)
        )
        if on_subject is not None:
            on_subject()
    if fmt == "zarr":
        from ..store import CohortStore

        CohortStore(Path(out)).write_subjects(records)
    elif fmt == "nifti":
        from ..readers.nifti_export import write_export_subject

        for rec in records:
            write_export_subject(rec, Path(out))
    else:
        raise ValueError(f"format must be zarr or nifti, got {fmt!r}")
    return [r.subject_id for r in records]
