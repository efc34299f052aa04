"""Stores written with schema version 1 stay readable: ``data/store_v1.tar.gz`` was written by the
version 1 writer (three subjects from ``store_records.make_subject``, two parts, grid 16 at 2 mm)."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cardiossl.datasets.store import CohortStore
from cardiossl.datasets.torch_dataset import CohortDataset

sys.path.insert(0, str(Path(__file__).parents[1]))
from store_records import make_subject  # noqa: E402

DATA = Path(__file__).parent / "data" / "store_v1.tar.gz"


@pytest.fixture
def v1(tmp_path):
    with tarfile.open(DATA) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store_v1"


def test_a_version_1_store_reads_like_the_same_data_written_now(v1, tmp_path):
    old = CohortStore(v1)
    assert old.schema_version == 1 and old.subject_ids() == ["old-a", "old-b", "old-c"]
    now = CohortStore.create(tmp_path / "v2.zarr", grid_size=16, spacing_mm=2.0)
    now.write_subjects([make_subject("old-a", 1, n_sa=3, frames=2), make_subject("old-b", 2, n_sa=3, frames=2,
                                                                                 labelled=False)])
    now.write_subjects([make_subject("old-c", 3, n_sa=2, frames=2)])
    a, b = CohortDataset(v1, views=None), CohortDataset(now.path, views=None)
    assert len(a) == len(b) == 22
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert sa["subject_id"] == sb["subject_id"] and sa["slice_index"] == sb["slice_index"]
        np.testing.assert_array_equal(sa["image"], sb["image"])
        np.testing.assert_array_equal(sa["label"], sb["label"])
        np.testing.assert_array_equal(sa["plane"], sb["plane"])
    assert old.verify().ok  # no per-chunk checksums to check, but every part is complete
    assert len(old.snapshot().parts) == 2


def test_writing_into_a_version_1_store_indexes_its_old_parts(v1):
    store = CohortStore(v1)
    assert len(store.view().unindexed) == 2  # read from their own files, every time
    new = make_subject("new-d", 4, n_sa=2, frames=1)
    store.write_subjects([new])
    view = store.view()
    assert view.unindexed == [] and store.subject_ids() == ["old-a", "old-b", "old-c", "new-d"]
    assert (v1 / "parts").is_dir() and not any((v1 / "parts" / p / "summary.npz").exists() for p in view.live[:2])
    assert len(CohortDataset(v1, views=None)) == 22 + len(new.slices)
    assert store.verify().ok and store.update_fingerprint()["subjects"] == 4


def test_gc_indexes_a_version_1_store(v1):
    store = CohortStore(v1)
    store.gc()
    assert store.view().unindexed == [] and store.subject_ids() == ["old-a", "old-b", "old-c"]
