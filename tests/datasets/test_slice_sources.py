"""The direct shard reader at store scale: a bounded number of open files, a handful of files read to
open a store, checksums that catch a flipped byte, and damage errors that name the file and subject."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cardiossl.datasets.slice_sources import OPEN_SHARDS
from cardiossl.datasets.store import CohortStore, DamagedDataError
from cardiossl.datasets.store.layout import NO_CHUNK, decode_shard_index, read_layout
from cardiossl.datasets.store.testing import write_synthetic_parts
from cardiossl.datasets.torch_dataset import CohortDataset


@pytest.fixture(scope="module")
def many_parts(tmp_path_factory):
    """300 committed parts of one subject each (13 slices: 10 SA positions, 3 LA views)."""
    store = CohortStore.create(tmp_path_factory.mktemp("parts") / "c.zarr", grid_size=16, spacing_mm=1.5)
    write_synthetic_parts(store, 300, 1, frames=1)
    return store


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_a_300_part_store_reads_at_random_under_a_low_open_file_limit(many_parts):
    """Defect 3: caches of 64 open shards per array, one array per part and name, ran out of file
    descriptors (``ulimit -n 256``) on a 300-part store read at random."""
    out = _python(f"""
        import json, resource
        import numpy as np
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        from cardiossl.datasets.slice_sources import OPEN_SHARDS
        from cardiossl.datasets.torch_dataset import CohortDataset
        ds = CohortDataset({str(many_parts.path)!r}, views=None)
        rng = np.random.default_rng(0)
        seen, peak = set(), 0
        for i in rng.integers(0, len(ds), 2000):
            s = ds[int(i)]
            seen.add(s["subject_id"])
            peak = max(peak, OPEN_SHARDS.open_count)
        print(json.dumps({{"subjects": len(seen), "peak_open": peak, "cap": 256 // 4, "opened": OPEN_SHARDS.opened}}))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["subjects"] > 290  # reads really went all over the store
    assert r["peak_open"] <= r["cap"]  # one process-wide LRU, a quarter of the limit
    assert r["opened"] > r["cap"]  # ... that did evict and reopen


def test_opening_a_store_and_taking_a_snapshot_reads_a_handful_of_files(many_parts):
    """Defect 10: every reader used to read every part's metadata (13 files a part); the index is a
    few files. Counted with an audit hook on every file opened under the store."""
    out = _python(f"""
        import json, sys
        store = {str(many_parts.path)!r}
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and str(args[0]).startswith(store) else None)
        from cardiossl.datasets.store import CohortStore
        st = CohortStore(store)
        snap = st.snapshot()
        n_open = len(opened)
        t = st.slice_table(snap)
        print(json.dumps({{"snapshot_files": n_open, "table_files": len(opened), "parts": len(snap.parts),
                           "slices": len(t)}}))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["parts"] == 300 and r["slices"] == 300 * 13
    assert r["snapshot_files"] <= 16, r  # root, manifest and a few index segments for 300 parts
    assert r["table_files"] <= 2 * r["snapshot_files"], r


def test_a_reader_opens_only_the_parts_it_reads(many_parts):
    OPEN_SHARDS.clear()
    before = OPEN_SHARDS.opened
    ds = CohortDataset(many_parts.path, views=None)
    ds[0], ds[len(ds) - 1]
    assert OPEN_SHARDS.opened - before <= 4  # two parts' image and label shards, not 600 files


def test_the_slice_table_costs_at_most_64_bytes_a_slice(tmp_path):
    store = CohortStore.create(tmp_path / "c.zarr", grid_size=16, spacing_mm=1.5)
    write_synthetic_parts(store, 2, 50, frames=4)  # 100 subjects x 13 positions x 4 cine frames
    t = store.slice_table()
    assert len(t) == 100 * 13 * 4
    assert t.nbytes / len(t) <= 64, t.nbytes / len(t)
    # and it still gives every per-slice value: interned planes and norms expand to the stored rows
    assert t.plane.shape == (len(t), 11) and np.isfinite(t.plane).all()
    assert t.part.tolist() == [0] * 2600 + [1] * 2600 and t.row[2600] == 0


def _small_store(tmp_path):
    store = CohortStore.create(tmp_path / "c.zarr", grid_size=16, spacing_mm=1.5)
    write_synthetic_parts(store, 1, 3, frames=2)
    return store


def _chunk_of(store, subject: str, name: str = "image"):
    """(shard path, byte offset, nbytes, dataset index) of the first slice of ``subject``."""
    ds = CohortDataset(store.path, views=None)
    i = next(i for i in range(len(ds)) if ds.meta(i)["subject_id"] == subject)
    part, row = int(ds._part[i]), int(ds._row[i])
    folder = store.path / "parts" / ds.part_ids[part] / name
    layout = read_layout(folder)
    path = layout.chunk_path(folder, row // layout.chunk_rows)
    data = path.read_bytes()
    off, nbytes = decode_shard_index(data[-layout.index_nbytes:], layout.chunk_rows)[row % layout.chunk_rows]
    assert off != NO_CHUNK
    return path, int(off), int(nbytes), i


def test_a_flipped_payload_byte_is_caught_by_its_checksum_naming_file_and_subject(tmp_path):
    """Defect 8: without a per-chunk checksum a flipped byte in a chunk decoded silently."""
    store = _small_store(tmp_path)
    sid = store.subject_ids()[1]
    path, off, nbytes, i = _chunk_of(store, sid)
    data = bytearray(path.read_bytes())
    data[off + nbytes // 2] ^= 0x10  # inside the compressed chunk, not the index
    path.write_bytes(bytes(data))
    OPEN_SHARDS.clear()
    with pytest.raises(DamagedDataError, match=rf"{re.escape(str(path))} \(row \d+\): crc32c.*subject {sid}"):
        CohortDataset(store.path, views=None)[i]
    report = store.verify()
    assert not report.ok and list(report.damaged_subjects) == [sid]
    assert "crc32c" in report.damaged_subjects[sid][0] and str(path) in report.damaged_subjects[sid][0]


def test_a_missing_shard_is_an_error_not_zeros_and_a_truncated_one_names_the_file(tmp_path):
    """Defect 8: a missing image shard read as zeros; a truncated one raised OSError without a path."""
    store = _small_store(tmp_path)
    sid = store.subject_ids()[0]
    path, off, nbytes, i = _chunk_of(store, sid)
    original = path.read_bytes()
    path.unlink()
    OPEN_SHARDS.clear()
    with pytest.raises(DamagedDataError, match=rf"{re.escape(str(path))}: shard file is missing.*subject {sid}"):
        CohortDataset(store.path, views=None)[i]
    assert sid in store.verify().damaged_subjects
    path.write_bytes(original[:10])
    OPEN_SHARDS.clear()
    with pytest.raises(DamagedDataError, match=rf"{re.escape(str(path))}: shard file is truncated.*subject {sid}"):
        CohortDataset(store.path, views=None)[i]
    path.write_bytes(original)
    OPEN_SHARDS.clear()
    assert store.verify().ok and CohortDataset(store.path, views=None)[i]["subject_id"] == sid
