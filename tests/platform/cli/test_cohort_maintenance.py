"""`cardiossl cohort verify | gc | remove` and `cohort info` on real stores written by `cardiossl ingest`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from cardiossl.datasets.ingest import ingest
from cardiossl.datasets.slice_sources import OPEN_SHARDS
from cardiossl.datasets.store import CohortStore
from cardiossl.datasets.store.layout import NO_CHUNK, decode_shard_index, read_layout
from cardiossl.datasets.torch_dataset import CohortDataset
from cardiossl.platform.cli import app

sys.path.insert(0, str(Path(__file__).parents[2] / "datasets" / "readers"))
from nifti_cohorts import oblique, write_acdc_patient  # noqa: E402

runner = CliRunner()
GRID = dict(grid_size=32, spacing_mm=2.0)


def _cohort(root: Path, numbers) -> Path:
    for n in numbers:
        write_acdc_patient(root, n, oblique(), seed=n, n_frames=3, ed=1, es=2)
    return root


def test_remove_withdraws_from_new_snapshots_keeps_old_ones_until_gc_and_ingest_does_not_bring_it_back(tmp_path):
    src = _cohort(tmp_path / "src", range(1, 5))
    store_path = tmp_path / "store"
    ingest(src, store_path, progress=False, batch_size=2, **GRID)
    store = CohortStore(store_path)
    before = store.snapshot()
    assert len(before.parts) == 2

    r = runner.invoke(app, ["cohort", "remove", str(store_path), "patient002", "patient003", "--json"])
    assert r.exit_code == 0, r.output
    replaced = json.loads(r.stdout)["replaced_parts"]
    assert sorted(replaced) == sorted(before.part_ids) and all(replaced.values())
    after = store.snapshot()
    assert after.subject_ids == ["patient001", "patient004"] and after.content_hash != before.content_hash
    # a run pinned to the old snapshot still reads the withdrawn subjects (until gc)
    old = CohortDataset(store_path, snapshot=before, views=None)
    assert {old.meta(i)["subject_id"] for i in range(len(old))} == set(before.subject_ids)
    new = CohortDataset(store_path, views=None)
    assert {new.meta(i)["subject_id"] for i in range(len(new))} == {"patient001", "patient004"}
    # the kept subjects' stored bytes are unchanged: the same content hash as a store that never had the others
    ref = tmp_path / "ref"
    fresh = _cohort(tmp_path / "src_ref", (1, 4))
    ingest(fresh, ref, progress=False, **GRID)
    assert CohortStore(ref).snapshot().content_hash == after.content_hash

    again = ingest(src, store_path, progress=False, **GRID)  # the source still has them
    assert sorted(again.withdrawn) == ["patient002", "patient003"] and again.ingested == [] and again.ok
    assert store.subject_ids() == ["patient001", "patient004"]

    r = runner.invoke(app, ["cohort", "gc", str(store_path), "--dry-run", "--json"])
    assert r.exit_code == 0 and sorted(json.loads(r.stdout)["retired"]) == sorted(before.part_ids)
    assert all((store_path / "parts" / p).is_dir() for p in before.part_ids)
    r = runner.invoke(app, ["cohort", "gc", str(store_path)])
    assert r.exit_code == 0 and "removed 0 uncommitted part(s), 2 replaced part(s)" in r.output
    assert not any((store_path / "parts" / p).exists() for p in before.part_ids)  # physically gone
    assert runner.invoke(app, ["cohort", "verify", str(store_path)]).exit_code == 0
    r = runner.invoke(app, ["cohort", "remove", str(store_path), "patient009"])
    assert r.exit_code == 2 and "patient009" in r.output


def test_verify_reports_damage_by_subject(tmp_path):
    src = _cohort(tmp_path / "src", range(1, 4))
    store_path = tmp_path / "store"
    ingest(src, store_path, progress=False, **GRID)
    r = runner.invoke(app, ["cohort", "verify", str(store_path)])
    assert r.exit_code == 0 and r.output.strip().endswith("ok"), r.output
    store = CohortStore(store_path)
    pid = store.part_ids()[0]
    folder = store_path / "parts" / pid / "label"
    layout = read_layout(folder)
    shard = layout.chunk_path(folder, 0)
    data = bytearray(shard.read_bytes())
    index = decode_shard_index(bytes(data[-layout.index_nbytes:]), layout.chunk_rows)
    row = next(j for j in range(layout.chunk_rows) if index[j][0] != NO_CHUNK)
    off, nbytes = (int(x) for x in index[row])
    data[off + nbytes - 6] ^= 0x01  # one bit of one label chunk
    shard.write_bytes(bytes(data))
    subject = CohortDataset(store_path, views=None, labelled_only=True).meta(0)["subject_id"]
    r = runner.invoke(app, ["cohort", "verify", str(store_path), "--json"])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert list(report["damaged_subjects"]) == [subject] and "crc32c" in report["damaged_subjects"][subject][0]
    assert runner.invoke(app, ["cohort", "verify", str(store_path), "--quick"]).exit_code == 0  # indexes are fine
    OPEN_SHARDS.clear()
    assert runner.invoke(app, ["cohort", "verify", str(tmp_path / "nope")]).exit_code == 2


def test_cohort_info_does_not_recompute_a_current_fingerprint(tmp_path, monkeypatch):
    src = _cohort(tmp_path / "src", range(1, 3))
    store_path = tmp_path / "store"
    ingest(src, store_path, progress=False, **GRID)
    import cardiossl.datasets.store.cohort as cohort_mod

    def refuse(*a, **k):
        raise AssertionError("cohort info recomputed a fingerprint that was stored and current")

    monkeypatch.setattr(cohort_mod, "compute_fingerprint", refuse)
    r = runner.invoke(app, ["cohort", "info", str(store_path), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["stored_fingerprint_current"] and info["subjects"] == 2
    assert info["content_hash"] == info["fingerprint"]["content_hash"] == CohortStore(store_path).snapshot().content_hash
