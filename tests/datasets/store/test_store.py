"""CohortStore on real Zarr v3 on disk: round trips, atomic parts, concurrent writers, refused input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.records import RecordError
from cardiossl.datasets.resample import resample_slice
from cardiossl.datasets.store import SHARD_SLICES, CohortStore, StoreError, intensity_stats
sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/datasets: the record builders
from store_records import make_subject  # noqa: E402

G, SP = 32, 1.5


def _snapshot(path: Path) -> dict[str, int]:
    """Every file in the store with its size: what 'the store is unchanged' means."""
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path):
    return CohortStore.create(tmp_path / "cohort.zarr", grid_size=G, spacing_mm=SP)


def test_round_trip_images_labels_geometry_meta(store):
    recs = [make_subject("s1", 1), make_subject("s2", 2, labelled=False, la_views=("2ch", "4ch"))]
    p1 = store.write_subjects(recs)
    p2 = store.write_subjects([make_subject("s3", 3)])
    assert store.subject_ids() == ["s1", "s2", "s3"] and store.part_ids() == [p1, p2]
    reopened = CohortStore(store.path)
    assert reopened.grid_size == G and reopened.spacing_mm == SP and reopened.has_subject("s2")
    assert not reopened.has_subject("s4")

    for rec in recs:
        stored = reopened.subject_slices(rec.subject_id)
        assert len(stored) == len(rec.slices)
        by_key = {(s.view, s.slice_index, s.frame): s for s in rec.slices}
        for meta in stored:
            src = by_key[(meta["view"], meta["slice_index"], meta["frame"])]
            img_g, lab_g, plane_g = resample_slice(src.image, src.plane, G, SP, src.label)
            np.testing.assert_allclose(_vector(meta["plane"]), plane_g.to_vector(), atol=1e-9)
            np.testing.assert_allclose(_vector(meta["source_plane"]), src.plane.to_vector(), atol=1e-12)
            assert meta["source_shape"] == list(src.image.shape) and meta["phase"] == src.phase
            assert meta["has_label"] == (src.label is not None)
            image, label = reopened.read_slice(meta["part"], meta["row"])
            step = (img_g.max() - img_g.min()) / 65534  # int16 quantisation step
            assert np.abs(image - img_g).max() <= step / 2 + 1e-4
            if src.label is None:
                assert label is None
            else:
                np.testing.assert_array_equal(label, lab_g)
    assert reopened.subject_meta("s1") == {"seed": 1, "ed_frame": 0, "es_frame": 1, "level": 500.0}

    # the direct metadata reader agrees with zarr-python on every per-slice array
    import zarr

    from cardiossl.datasets.store import SLICE_ARRAYS, read_small_array

    for pid in reopened.part_ids():
        for name in SLICE_ARRAYS:
            ref = zarr.open_array(str(reopened.path / "parts" / pid / name), mode="r")[...]
            got = read_small_array(reopened.path / "parts" / pid / name)
            assert got.dtype == ref.dtype and np.array_equal(got, ref, equal_nan=True), name
    t = reopened.slice_table()
    assert len(t) == sum(len(r.slices) for r in recs) + len(make_subject("s3", 3).slices)
    assert t.subject_ids == ["s1", "s2", "s3"] and set(np.unique(t.subject)) == {0, 1, 2}
    # per-slice normalisation stats are those of the slice's (subject, view) source pixels
    sa = [s.image for s in recs[0].slices if s.view == "sa"]
    st = intensity_stats(sa)
    row = np.flatnonzero((t.subject == 0) & (t.view == 0))[0]
    np.testing.assert_allclose(t.norm[row], [st["p0_5"], st["p99_5"], st["mean"], st["std"]], rtol=1e-6)


def _plane_kwargs(d):
    return {"origin": d["origin"], "row_dir": d["row_dir"], "col_dir": d["col_dir"], "spacing": d["pixel_spacing"]}


def _vector(d):
    return Plane(**_plane_kwargs(d)).to_vector()


def test_slices_are_sharded_one_chunk_per_slice(store):
    rec = make_subject("big", 7, n_sa=10, frames=14, la_views=())  # 140 slices -> 2 shards
    pid = store.write_subjects([rec])
    meta = json.loads((store.path / "parts" / pid / "image" / "zarr.json").read_text())
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    assert shard == [SHARD_SLICES, G, G] and inner == [1, G, G]
    files = [p for p in (store.path / "parts" / pid / "image").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 2


def test_create_refuses_another_grid_and_non_stores(tmp_path, store):
    store.write_subjects([make_subject("a", 1)])
    assert CohortStore.create(store.path, grid_size=G, spacing_mm=SP).subject_ids() == ["a"]
    with pytest.raises(StoreError, match="32px grid"):
        CohortStore.create(store.path, grid_size=64, spacing_mm=SP)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="not a cardiossl cohort store"):
        CohortStore(tmp_path / "plain")
    with pytest.raises(StoreError, match="not empty"):
        CohortStore.create(tmp_path / "plain")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not a cardiossl cohort store"):
        CohortStore(tmp_path / "other.zarr")


def test_duplicates_and_bad_ids_leave_the_store_intact(tmp_path, store):
    store.write_subjects([make_subject("a", 1), make_subject("b", 2)])
    before = _snapshot(store.path)
    with pytest.raises(StoreError, match="duplicate subject ids in one write: c"):
        store.write_subjects([make_subject("c", 3), make_subject("c", 4)])
    with pytest.raises(StoreError, match="already in .*: b"):
        store.write_subjects([make_subject("d", 5), make_subject("b", 6)])
    with pytest.raises(RecordError, match=r"invalid subject id '\.\./x'"):
        store.write_subjects([make_subject("../x", 7)])
    bad = make_subject("e", 8)
    bad.slices[0].label = np.zeros((3, 3), np.uint8)
    with pytest.raises(RecordError, match="label shape"):
        store.write_subjects([make_subject("f", 9), bad])
    with pytest.raises(StoreError, match="invalid part id"):
        store.write_subjects([make_subject("g", 9)], part_id="../evil")
    assert _snapshot(store.path) == before
    assert store.subject_ids() == ["a", "b"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "evil").exists()


def test_failure_while_writing_removes_the_part(store, monkeypatch):
    store.write_subjects([make_subject("a", 1)])
    before = _snapshot(store.path)
    import cardiossl.datasets.store.parts as store_module

    calls = {"n": 0}
    real = store_module.resample_slice

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "resample_slice", failing)
    with pytest.raises(OSError, match="disk full"):
        store.write_subjects([make_subject("b", 2)])
    assert _snapshot(store.path) == before and store.subject_ids() == ["a"]


def _crash_writer(path: str, where: str) -> None:
    """Child process: write a part and die by SIGKILL at ``where`` (no cleanup code can run)."""
    import cardiossl.datasets.store.parts as store_parts

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "before_commit":
        store_parts._prepare_marker = die
    else:  # in the middle of the slices
        real, calls = store_parts.resample_slice, {"n": 0}

        def sometimes(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 7:
                die()
            return real(*args, **kwargs)

        store_parts.resample_slice = sometimes
    CohortStore(path, lease_s=LEASE_S).write_subjects([make_subject("b", 2, n_sa=6), make_subject("c", 3)])


LEASE_S = 1.0  # the writers' lease in these tests: garbage is collectable 1.25 s after its writer died


@pytest.mark.parametrize("where", ["mid_part", "before_commit"])
def test_crash_leaves_part_invisible_and_gc_removes_it_once_the_lease_lapses(store, where):
    store.write_subjects([make_subject("a", 1)])
    before_ids = store.subject_ids()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_crash_writer, args=(str(store.path), where))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    leftovers = [d.name for d in (store.path / "parts").iterdir() if d.is_dir() and d.name not in store.part_ids()]
    assert len(leftovers) == 1  # the half-written part is on disk ...
    fresh = CohortStore(store.path)
    assert fresh.subject_ids() == before_ids and len(fresh.slice_table()) == len(make_subject("a", 1).slices)  # ... invisible
    time.sleep(LEASE_S * 1.25 + 0.3)
    assert fresh.gc().uncommitted == leftovers
    assert [d.name for d in (store.path / "parts").iterdir() if d.is_dir()] == fresh.part_ids()
    fresh.write_subjects([make_subject("b", 2, n_sa=6), make_subject("c", 3)])  # the retry goes through
    assert fresh.subject_ids() == ["a", "b", "c"]


def test_gc_spares_a_part_whose_writer_renews_its_lease_without_any_lock(store):
    """Defect 9: with node-local locks another node's flock is invisible, so the old clean-up (flock
    taken = writer gone) deleted a part its writer was still writing. A renewed lease keeps it."""
    import fcntl

    from cardiossl.datasets.store.lease import Lease

    part = store.path / "parts" / "in-progress"
    part.mkdir()
    # the old protocol's lock file, free as seen from this node (its writer's flock is on another node)
    fd = os.open(part / ".writer.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    lease = Lease(part, lease_s=0.8).start()
    try:
        for _ in range(3):  # well past the lease: renewals keep it
            time.sleep(0.6)
            assert store.gc().uncommitted == [] and part.exists()
    finally:
        lease.stop()
    assert store.gc().uncommitted == [] and part.exists()  # just stopped: still within its lease
    time.sleep(0.8 * 1.25 + 0.3)
    assert store.gc().uncommitted == ["in-progress"] and not part.exists()


def test_a_writer_whose_lease_lapsed_does_not_commit(store, monkeypatch):
    """A writer stalled past its lease (its part may have been collected) must not publish a marker."""
    import cardiossl.datasets.store.parts as store_parts

    real = store_parts.make_durable

    def stalled(part_dir, fd):
        real(part_dir, fd)
        store_parts.Lease.stop(lease_of[0])  # the heartbeat stops, as in a process frozen for a while
        time.sleep(0.6)

    lease_of = []
    real_start = store_parts.Lease.start
    monkeypatch.setattr(store_parts.Lease, "start", lambda self: lease_of.append(self) or real_start(self))
    monkeypatch.setattr(store_parts, "make_durable", stalled)
    slow = CohortStore(store.path, lease_s=0.4)
    with pytest.raises(StoreError, match="lease lapsed"):
        slow.write_subjects([make_subject("z", 5)])
    assert store.subject_ids() == [] and not [d for d in (store.path / "parts").iterdir() if d.is_dir()]


def _concurrent_writer(path: str, ids: list[str], seeds: list[int], barrier) -> str:
    barrier.wait(60)
    store = CohortStore(path)
    try:
        store.write_subjects([make_subject(i, s, n_sa=4, frames=3) for i, s in zip(ids, seeds)])
        return "ok"
    except StoreError as exc:
        return f"refused: {exc}"


def test_concurrent_writers_into_different_parts_lose_nothing(store):
    jobs = [(["w0a", "w0b"], [10, 11]), (["w1a", "dup"], [12, 15]), (["w2a", "dup"], [14, 15])]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(jobs))
        with ctx.Pool(len(jobs)) as pool:
            results = pool.starmap(_concurrent_writer, [(str(store.path), ids, seeds, barrier) for ids, seeds in jobs])
    # "dup" is written by two processes: exactly one commit wins, the other is refused and removed
    assert results.count("ok") == 2 and sum("dup" in r for r in results if r != "ok") == 1
    ids = store.subject_ids()
    # a refused write is refused whole: its other subject is not stored either
    expected = {i for (job, _), r in zip(jobs, results) if r == "ok" for i in job}
    assert sorted(ids) == sorted(expected) and len(ids) == 4 and ids.count("dup") == 1
    assert len(store.part_ids()) == 2 and store.cleanup_incomplete() == []
    # every slice of every committed subject is intact
    for (sids, seeds), r in zip(jobs, results):
        for sid, seed in zip(sids, seeds):
            if sid == "dup" or r != "ok":
                continue
            rec = make_subject(sid, seed, n_sa=4, frames=3)
            stored = store.subject_slices(sid)
            assert len(stored) == len(rec.slices)
            for meta, src in zip(stored, sorted(rec.slices, key=lambda s: ({"sa": 0, "4ch": 3}[s.view], s.frame, s.slice_index))):
                img_g, _, _ = resample_slice(src.image, src.plane, G, SP)
                image, _ = store.read_slice(meta["part"], meta["row"])
                assert np.abs(image - img_g).max() < 0.1


def test_fingerprint_and_summary(store):
    store.write_subjects([make_subject("a", 1), make_subject("b", 2, labelled=False)])
    store.write_subjects([make_subject("c", 3, spacing=(1.2, 1.2), la_views=("2ch", "4ch"))])
    assert store.fingerprint == {}
    fp = store.update_fingerprint()
    again = CohortStore(store.path).fingerprint
    assert again["subjects"] == fp["subjects"] == 3
    assert fp["labelled_subjects"] == 2 and fp["views"]["sa"]["slices"] == 18 and fp["views"]["2ch"]["slices"] == 2
    assert fp["views"]["sa"]["source_row_spacing_mm"]["min"] == pytest.approx(1.2)
    assert fp["views"]["sa"]["source_row_spacing_mm"]["max"] == pytest.approx(1.8)
    assert fp["views"]["sa"]["source_cols"]["median"] == 28
    assert fp["sa_slice_gap_mm"]["median"] == pytest.approx(8.0)
    assert 250 < fp["intensity"]["p50"]["median"] < 600 and fp["intensity"]["min"] < fp["intensity"]["max"]
    s = store.summary()
    assert s["subjects"] == 3 and s["slices_per_view"] == {"sa": 18, "2ch": 2, "4ch": 6}
    assert s["labelled_subjects"] == 2 and s["stored_fingerprint_current"]
    store.write_subjects([make_subject("d", 4)])
    assert not store.summary()["stored_fingerprint_current"]
    with pytest.raises(StoreError, match="did you mean 'a'"):
        store.subject_slices("aa")


# ---- direct shard/chunk writes == zarr-python writes; _percentiles == np.percentile ----------------

import cardiossl.datasets.store.parts as store_mod  # noqa: E402
from cardiossl.datasets.store.parts import _ChunkWriter  # noqa: E402
from cardiossl.datasets.store.stats import _percentiles  # noqa: E402


class _NoTemplates(dict):
    """Stands in for the zarr.json template cache: never hands out a template (zarr-python writes every one)."""

    def get(self, key, default=None):
        return None


def _force_zarr_python(monkeypatch):
    monkeypatch.setattr(store_mod._ChunkWriter, "for_array", classmethod(lambda cls, folder: None))
    monkeypatch.setattr(store_mod, "_ARRAY_META_TEMPLATES", _NoTemplates())


def _part_bytes(part_dir: Path) -> dict[str, bytes]:
    """Every zarr file of a part; the part's own zarr.json without its write time (the only thing that
    may differ). The writer's lease and the index summary are not zarr files."""
    out = {}
    for p in sorted(part_dir.rglob("*")):
        if not p.is_file() or p.name in (".lease", "summary.npz"):
            continue
        key, data = str(p.relative_to(part_dir)), p.read_bytes()
        if key == "zarr.json":
            meta = json.loads(data)
            meta["attributes"]["cardiossl_part"].pop("created_at")
            data = json.dumps(meta, sort_keys=True).encode()
        out[key] = data
    return out


def _awkward_records():
    """An unlabelled subject, an all-zero slice (quantises to all-zero int16: an unstored chunk), a
    constant slice, and a labelled slice whose label is all background (an unstored label chunk)."""
    const = make_subject("c", 4)
    const.slices[0].image[:] = 0.0
    const.slices[1].image[:] = 5.0
    first_labelled = next(s for s in const.slices if s.label is not None)
    first_labelled.label[:] = 0
    return [make_subject("u", 3, labelled=False, la_views=("2ch",)), const]


def _read_zarr(part_dir: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(part_dir), mode="r", zarr_format=3)
    return {name: np.asarray(group[name][...]) for name in ("image", "label", *store_mod.SLICE_ARRAYS)}


def _read_tensorstore(part_dir: Path, name: str) -> np.ndarray:
    import tensorstore as ts

    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(part_dir / name)}}, open=True).result()
    return np.asarray(arr.read().result())


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param((SHARD_SLICES, store_mod.META_CHUNK), id="production-two-shards"),
        # 4-slice shards and metadata chunks: short last shard/chunk, whole shards and chunks of zeros
        pytest.param((4, 4), id="small-shards-and-chunks"),
    ],
)
def test_direct_writes_are_byte_identical_to_zarr_python(tmp_path, monkeypatch, layout):
    shard_slices, meta_chunk = layout
    monkeypatch.setattr(store_mod, "SHARD_SLICES", shard_slices)
    monkeypatch.setattr(store_mod, "META_CHUNK", meta_chunk)
    if shard_slices == SHARD_SLICES:  # 140 SA slices + the awkward ones: 2 shards, the last one short
        recs = [make_subject("big", 7, n_sa=10, frames=14, la_views=()), *_awkward_records()]
    else:
        recs = [make_subject("s1", 1), *_awkward_records()]
    monkeypatch.setattr(store_mod, "_ARRAY_META_TEMPLATES", {})
    direct = CohortStore.create(tmp_path / "direct.zarr", grid_size=G, spacing_mm=SP)
    warm = make_subject("warm", 9, n_sa=2, frames=1)
    direct.write_subjects([warm], part_id="warm")  # its arrays' zarr.json (zarr-python) become templates
    direct.write_subjects(recs, part_id="p1")  # arrays' zarr.json from templates, chunks and shards direct
    templates = store_mod._ARRAY_META_TEMPLATES
    assert templates and all(v is not None for v in templates.values()), "zarr.json templates were not used"
    part = direct.path / "parts" / "p1"
    for name in ("image", "label", *store_mod.SLICE_ARRAYS):
        assert _ChunkWriter.for_array(part / name) is not None, f"{name} is not written by the direct path"

    with monkeypatch.context() as m:
        _force_zarr_python(m)
        m.setattr(store_mod, "_fill_missing_chunks", lambda folder: None)  # zarr-python's own files only
        reference = CohortStore.create(tmp_path / "zarr_python.zarr", grid_size=G, spacing_mm=SP)
        reference.write_subjects(recs, part_id="p1")
    ref_part = reference.path / "parts" / "p1"

    got, want = _part_bytes(part), _part_bytes(ref_part)
    assert set(want) <= set(got)
    differing = [k for k in want if got[k] != want[k]]
    assert not differing, f"files differ from zarr-python's: {differing}"
    # the awkward cases really are there: a second shard, unstored (all-zero) chunks
    n = sum(len(r.slices) for r in recs)
    assert n > shard_slices
    assert "image/c/1/0/0" in got and "label/c/1/0/0" in got
    # with per-chunk checksums every chunk file is written, empty ones too (zarr-python leaves those
    # out), so a missing file is damage: the extra files hold only empty shard indexes or zeros
    n_label_shards = sum(k.startswith("label/c/") for k in got)
    assert n_label_shards == -(-n // shard_slices)
    extra = sorted(set(got) - set(want))
    if shard_slices == 4:
        assert any(k.startswith("label/c/") for k in extra), "an all-background label shard is written too"
    for k in extra:
        name = k.split("/")[0]
        if name in ("image", "label"):
            assert got[k][:-4 - 16 * shard_slices] == b"", f"{k}: an empty shard holds no chunk"

    # and the direct part reads back the same through zarr-python and tensorstore
    want_arrays = _read_zarr(ref_part)
    got_arrays = _read_zarr(part)
    for name, expected in want_arrays.items():
        assert got_arrays[name].dtype == expected.dtype
        np.testing.assert_array_equal(got_arrays[name], expected, err_msg=f"{name} via zarr-python")
        np.testing.assert_array_equal(_read_tensorstore(part, name), expected, err_msg=f"{name} via tensorstore")
    assert (got_arrays["image"] == 0).all(axis=(1, 2)).any()  # the all-zero slice
    assert not got_arrays["has_label"].all() and got_arrays["has_label"].any()
    assert len(direct.slice_table()) == n + len(warm.slices) and got_arrays["subject"].shape == (n,)


@pytest.mark.parametrize(
    "dtype,trailing,sharded",
    [("int16", (6, 5), True), ("uint8", (6, 5), True), ("float32", (4, 3), True),
     ("float64", (11,), False), ("int32", (), False), ("bool", (), False), ("int8", (2,), False),
     ("float32", (4,), False)],
)
def test_chunk_writer_matches_zarr_python_create_array(tmp_path, dtype, trailing, sharded):
    """_ChunkWriter against zarr-python's own `create_array(...)[...] = data` with the store's codecs."""
    import zarr
    from zarr.codecs import BloscCodec

    rng = np.random.default_rng(11)
    n, rows = 11, 4  # shards/chunks of 4 rows: 2 whole, 1 short
    data = (rng.normal(size=(n, *trailing)) * 300).astype(dtype)
    if dtype == "bool":
        data = rng.random((n, *trailing)) < 0.3
    data[1] = 0  # an all-zero (fill value) row
    data[4:8] = 0  # a whole shard/chunk of zeros: no file
    if np.dtype(dtype).kind == "f":
        data[2] = -0.0  # bitwise non-zero: stored by zarr-python
    if sharded:
        kw = dict(chunks=(1, *trailing), shards=(rows, *trailing), fill_value=0,
                  compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))
    else:
        kw = dict(chunks=(rows, *trailing), fill_value=0)
    group = zarr.open_group(str(tmp_path / "g"), mode="w", zarr_format=3)
    group.create_array("ref", shape=data.shape, dtype=dtype, **kw)[...] = data
    group.create_array("direct", shape=data.shape, dtype=dtype, **kw)
    writer = _ChunkWriter.for_array(tmp_path / "g" / "direct")
    assert writer is not None and writer.sharded == sharded
    for i in range(0, n, writer.chunk_rows):
        writer.write_chunk(i // writer.chunk_rows, data[i : i + writer.chunk_rows])

    def files(name):
        root = tmp_path / "g" / name
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "zarr.json"}

    ref, got = files("ref"), files("direct")
    assert sorted(got) == sorted(ref) and len(ref) == 2  # the all-zero shard/chunk is not stored
    assert all(got[k] == ref[k] for k in ref)
    back = zarr.open_array(str(tmp_path / "g" / "direct"), mode="r", zarr_format=3)[...]
    np.testing.assert_array_equal(back, data)
    np.testing.assert_array_equal(_read_tensorstore(tmp_path / "g", "direct"), data)
    if np.dtype(dtype).kind == "f":
        assert np.signbit(back[2]).all()


_PCTS = (0.5, 50.0, 99.5)
_MORE_PCTS = (0.0, 1.0, 25.0, 33.3, 75.0, 99.0, 100.0)


def _percentile_arrays():
    rng = np.random.default_rng(5)
    sizes = {d: (1, 2, 3, 10, 999, 65536, 65537) for d in ("float64", "uint8", "int32", "uint16")}
    sizes.update({d: (1, 2, 10, 65537, 300_001) for d in ("float32", "int16")})  # the sampled path
    for dtype, ns in sizes.items():
        for n in ns:
            kind = np.dtype(dtype).kind
            if kind == "f":
                yield f"normal-{n}-{dtype}", (rng.normal(size=n) * 1000).astype(dtype)
            else:
                hi = 250 if kind == "u" else 3000
                yield f"ints-{n}-{dtype}", rng.integers(0 if kind == "u" else -hi, hi, n).astype(dtype)
            yield f"ties-{n}-{dtype}", rng.integers(0, 3, n).astype(dtype)
            yield f"const-{n}-{dtype}", np.full(n, 7, dtype)
            yield f"sorted-{n}-{dtype}", np.sort(rng.integers(0, 250, n)).astype(dtype)
    yield "skewed-1M-float32", rng.exponential(size=1 << 20).astype(np.float32) ** 4
    x = np.zeros(1 << 20, np.int16)
    x[-8000:] = rng.integers(1, 5000, 8000)  # 99.2 % zeros: p0.5 and p50 are ties, p99.5 in the tail
    yield "mostly-zero-1M-int16", x
    yield "reversed-200k-float64", np.arange(200_000, 0, -1, dtype=np.float64) / 7
    # a period equal to the sampling stride: a strided sample sees one value only and is no guide
    periodic = rng.normal(size=1 << 20).astype(np.float32) * 100 + 1000
    periodic[:: (1 << 20) // 8192] = 0.0
    yield "periodic-1M-float32", periodic
    yield "periodic-high-1M-float32", -periodic


def test_percentiles_equal_numpy_bit_for_bit():
    for name, x in _percentile_arrays():
        for pcts in (_PCTS, _MORE_PCTS):
            before = x.copy()
            got = np.array(_percentiles(x, pcts))
            want = np.percentile(x.astype(np.float64), pcts)
            assert np.array_equal(got, want), f"{name} {pcts}: {got} != numpy {want}"
            assert np.array_equal(x, before), f"{name}: _percentiles changed its input"


def test_intensity_stats_percentiles_equal_numpy():
    rng = np.random.default_rng(8)
    images = [(rng.gamma(2.0, 100.0, size=(70, 90))).astype(np.float32) for _ in range(5)]
    images[2][:] = 42.0
    stats = intensity_stats(images)
    flat = np.concatenate([im.ravel() for im in images]).astype(np.float64)
    p = np.percentile(flat, _PCTS)
    assert [stats["p0_5"], stats["p50"], stats["p99_5"]] == [float(v) for v in p]
    clipped = np.clip(flat, p[0], p[2])
    assert stats["mean"] == float(clipped.mean()) and stats["std"] == float(clipped.std())
    assert stats["min"] == float(flat.min()) and stats["max"] == float(flat.max())


def test_quantise_in_place_equals_the_plain_formula_and_leaves_its_input():
    from cardiossl.datasets.store import QMAX, quantise

    rng = np.random.default_rng(4)
    images = [(rng.normal(size=(33, 31)) * 500).astype(np.float32), rng.normal(size=(8, 8)),
              np.full((5, 5), 3.5, np.float32), np.zeros((4, 4), np.float32), np.array([[-0.0, 1e-30]], np.float32),
              np.array([[-32767.0, 32767.0, 0.5, 1.5, 2.5, -0.5, -2.5]])]  # scale 1, offset 0: exact halves round to even
    for image in images:
        before = image.copy()
        q, scale, offset = quantise(image)
        lo, hi = float(image.min()), float(image.max())
        want_offset = (hi + lo) / 2.0
        want_scale = (hi - lo) / (2 * QMAX) if hi > lo else 1.0
        want = np.clip(np.rint((image.astype(np.float64) - want_offset) / want_scale), -QMAX, QMAX).astype(np.int16)
        assert (scale, offset) == (want_scale, want_offset)
        assert q.dtype == np.int16 and np.array_equal(q, want)
        assert np.array_equal(image, before) and image.dtype == before.dtype
        assert np.abs(q * scale + offset - image).max() <= scale / 2 * (1 + 1e-9) + 1e-12
