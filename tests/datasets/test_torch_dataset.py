"""CohortDataset, BlockShuffleSampler and split_subjects on a real store written to disk."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.slice_sources import OPEN_SHARDS
from cardiossl.datasets.store import CohortStore, DamagedDataError, StoreError, intensity_stats
from cardiossl.datasets.store.layout import NO_CHUNK, decode_shard_index, read_layout
from cardiossl.datasets.splits import split_subjects
from cardiossl.datasets.torch_dataset import BlockShuffleSampler, CohortDataset
from store_records import make_subject

G = 32


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = CohortStore.create(tmp_path_factory.mktemp("ds") / "cohort.zarr", grid_size=G, spacing_mm=1.5)
    # s0: source grid == store grid (identity resampling), so normalisation can be checked exactly
    st.write_subjects([
        make_subject("s0", 0, shape=(G, G), spacing=(1.5, 1.5), level=800.0, la_views=("2ch", "4ch")),
        make_subject("s1", 1, level=300.0, labelled=False),
        make_subject("s2", 2, frames=3, la_views=()),
    ])
    st.write_subjects([make_subject(f"t{i}", 10 + i, n_sa=4) for i in range(3)])
    # a part without any label (an empty label shard) and with an all-zero slice (no chunk written)
    blank = make_subject("u0", 20, labelled=False, la_views=())
    blank.slices[1].image = np.zeros_like(blank.slices[1].image)
    st.write_subjects([blank])
    return st


def test_sample_keys_types_and_values(store):
    ds = CohortDataset(store.path, views=None)
    assert len(ds) == len(store.slice_table())
    s = ds[0]
    assert s["image"].dtype == np.float32 and s["image"].shape == (1, G, G)
    assert s["label"].dtype == np.int64 and s["label"].shape == (G, G)
    assert s["plane"].dtype == np.float64 and s["plane"].shape == (11,) and s["la_planes"].shape == (3, 11)
    assert {"has_label", "stack_position", "subject_id", "subject", "view", "frame", "phase", "slice_index", "index"} <= set(s)
    for i in range(len(ds)):
        m = ds.meta(i)
        stored = {(x["view"], x["frame"], x["slice_index"]): x for x in store.subject_slices(m["subject_id"])}[
            (m["view"], m["frame"], m["slice_index"])]
        np.testing.assert_allclose(m["plane"], Plane(stored["plane"]["origin"], stored["plane"]["row_dir"],
                                   stored["plane"]["col_dir"], stored["plane"]["pixel_spacing"]).to_vector())
        assert m["has_label"] == stored["has_label"] and m["phase"] == stored["phase"]
        src = stored["source_plane"]  # the image centre is the source image's centre, in world mm
        centre = Plane(src["origin"], src["row_dir"], src["col_dir"], src["pixel_spacing"]).center(stored["source_shape"])
        np.testing.assert_allclose(m["image_centre"], centre, atol=1e-6)
    # la_planes: the subject's own 2ch/3ch/4ch planes, NaN where the view is absent
    s0 = next(ds[i] for i in range(len(ds)) if ds.meta(i)["subject_id"] == "s0")
    two = [x for x in store.subject_slices("s0") if x["view"] == "2ch"][0]["plane"]
    np.testing.assert_allclose(s0["la_planes"][0, :3], two["origin"])
    assert np.isnan(s0["la_planes"][1]).all() and not np.isnan(s0["la_planes"][2]).any()
    s2 = next(ds[i] for i in range(len(ds)) if ds.meta(i)["subject_id"] == "s2")
    assert np.isnan(s2["la_planes"]).all()


def test_labels_and_normalisation_match_an_independent_computation(store):
    rec = make_subject("s0", 0, shape=(G, G), spacing=(1.5, 1.5), level=800.0, la_views=("2ch", "4ch"))
    st = intensity_stats([s.image for s in rec.slices if s.view == "sa"])
    ds = CohortDataset(store.path, subjects=["s0"], views=("sa",))
    src = {(s.frame, s.slice_index): s for s in rec.slices if s.view == "sa"}
    lo, hi = (st["p0_5"] - st["mean"]) / st["std"], (st["p99_5"] - st["mean"]) / st["std"]
    images = []
    for i in range(len(ds)):
        s = ds[i]
        r = src[(s["frame"], s["slice_index"])]
        expected = np.clip((r.image - st["mean"]) / st["std"], lo, hi)  # identity grid: no resampling
        np.testing.assert_allclose(s["image"][0], expected, atol=2e-3)
        if r.label is not None:
            np.testing.assert_array_equal(s["label"], r.label)
            assert s["has_label"]
        else:
            assert not s["has_label"] and not s["label"].any()
        images.append(s["image"])
    z = np.concatenate(images)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    raw = CohortDataset(store.path, subjects=["s0"], views=("sa",), normalise=False)[0]
    r = src[(raw["frame"], raw["slice_index"])]
    np.testing.assert_allclose(raw["image"][0], r.image, atol=0.05)


def test_readers_agree_and_dataset_pickles(store):
    base = CohortDataset(store.path, views=None)
    others = [CohortDataset(store.path, views=None, reader=r) for r in ("tensorstore", "memory")]
    for i in range(0, len(base), 3):
        a = base[i]
        for o in others:
            b = o[i]
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])
    last = store.part_ids()[-1]  # unlabelled: its label shard is written, and holds no chunk at all
    label = store.path / "parts" / last / "label"
    layout = read_layout(label)
    shard = layout.chunk_path(label, 0).read_bytes()
    assert len(shard) == layout.index_nbytes
    assert (decode_shard_index(shard, layout.chunk_rows) == NO_CHUNK).all()
    u0 = [i for i in range(len(base)) if base.meta(i)["subject_id"] == "u0"]
    raw = CohortDataset(store.path, subjects=["u0"], views=None, normalise=False)
    assert not raw[1]["image"].any() and raw[0]["image"].any() and not raw[0]["label"].any()
    for i in u0:
        np.testing.assert_array_equal(base[i]["image"], others[1][i]["image"])
    clone = pickle.loads(pickle.dumps(base))
    assert clone._source is None
    np.testing.assert_array_equal(clone[5]["image"], base[5]["image"])
    with pytest.raises(ValueError, match="unknown reader"):
        CohortDataset(store.path, reader="hdf5")


def test_selection_filters_and_skipped(store, caplog):
    all_sa = CohortDataset(store.path)
    assert {all_sa.meta(i)["view"] for i in range(len(all_sa))} == {"sa"}
    sub = CohortDataset(store.path, subjects=["s1", "t0"], views=("sa", "4ch"))
    assert sorted(sub.subjects) == ["s1", "t0"] and len(sub) == 3 * 2 + 2 + 4 * 2 + 2
    ed = CohortDataset(store.path, phases=["ed"], views=None)
    assert {ed.meta(i)["phase"] for i in range(len(ed))} == {"ed"}
    lab = CohortDataset(store.path, labelled_only=True)
    assert len(lab) > 0 and all(lab.meta(i)["has_label"] for i in range(len(lab))) and "s1" not in lab.subjects

    def flt(meta):
        if meta["subject_id"] == "t2":
            raise KeyError("no target for t2")
        return meta["slice_index"] > 0

    with caplog.at_level("INFO"):
        f = CohortDataset(store.path, filter=flt)
    assert all(f.meta(i)["slice_index"] > 0 and f.meta(i)["subject_id"] != "t2" for i in range(len(f)))
    assert f.skipped == len(all_sa) - len(f) > 0 and "no target for t2" in caplog.text
    with pytest.raises(StoreError, match="nobody"):
        CohortDataset(store.path, subjects=["s0", "nobody"])
    with pytest.raises(ValueError, match="unknown views"):
        CohortDataset(store.path, views=("axial",))


def test_transform_rng_is_seeded_by_seed_epoch_rank_index(store):
    def tf(sample, rng):
        sample["noise"] = float(rng.random())
        return sample

    a = CohortDataset(store.path, transform=tf, seed=3, rank=0)
    b = CohortDataset(store.path, transform=tf, seed=3, rank=0)
    assert a[4]["noise"] == b[4]["noise"] and a[4]["noise"] != a[5]["noise"]
    expected = np.random.default_rng([3, 0, 0, 4]).random()
    assert a[4]["noise"] == expected
    a.set_epoch(1)
    assert a[4]["noise"] != b[4]["noise"]
    assert CohortDataset(store.path, transform=tf, seed=3, rank=1)[4]["noise"] != b[4]["noise"]


@pytest.mark.parametrize("n,replicas,drop_last", [(96, 1, False), (96, 3, False), (97, 2, False), (97, 3, True), (10, 4, False)])
def test_block_sampler_covers_each_index_once_across_ranks(n, replicas, drop_last):
    ds = list(range(n))
    samplers = [BlockShuffleSampler(ds, 8, num_replicas=replicas, rank=r, seed=5, drop_last=drop_last) for r in range(replicas)]
    for s in samplers:
        s.set_epoch(2)
    parts = [list(s) for s in samplers]
    assert len({len(p) for p in parts}) == 1 and all(len(p) == len(s) for p, s in zip(parts, samplers))
    flat = np.concatenate(parts)
    if n % replicas == 0:
        assert sorted(flat.tolist()) == list(range(n))
    elif drop_last:
        assert len(set(flat.tolist())) == len(flat) == n // replicas * replicas
    else:
        assert set(flat.tolist()) == set(range(n)) and len(flat) == -(-n // replicas) * replicas
    # deterministic per (seed, epoch); another epoch gives another order
    again = BlockShuffleSampler(ds, 8, num_replicas=replicas, rank=0, seed=5, drop_last=drop_last)
    again.set_epoch(2)
    assert list(again) == parts[0]
    again.set_epoch(3)
    assert n < 16 or list(again) != parts[0]


def test_block_sampler_keeps_reads_local():
    n, block, window = 1024, 16, 4
    order = BlockShuffleSampler(list(range(n)), block, num_replicas=1, rank=0, seed=0, window=window).order()
    assert sorted(order.tolist()) == list(range(n))
    for w in range(0, n, block * window):
        assert len(np.unique(order[w : w + block * window] // block)) <= window  # each window: `window` blocks
    assert not np.array_equal(order, np.arange(n))
    assert list(BlockShuffleSampler(list(range(20)), 4, 1, 0, shuffle=False)) == list(range(20))


def test_dataloader_workers_and_distributed_sampler(store):
    ds = CohortDataset(store.path, views=None)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        seen += [ds[i]["index"] for i in sampler]  # plain random access
    assert set(seen) == set(range(len(ds)))
    loader = DataLoader(ds, batch_size=8, num_workers=2, sampler=BlockShuffleSampler(ds, 8, 1, 0, seed=1))
    got = []
    for batch in loader:
        assert batch["image"].shape[1:] == (1, G, G) and batch["image"].dtype == torch.float32
        got += batch["index"].tolist()
    assert sorted(got) == list(range(len(ds)))


def test_split_subjects_never_leaks_and_is_deterministic(store):
    ids = [f"id{i:03d}" for i in range(53)]
    sp = split_subjects(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4)
    assert sum(len(v) for v in sp.values()) == 53 and set().union(*map(set, sp.values())) == set(ids)
    assert not (set(sp["train"]) & set(sp["test"])) and not (set(sp["train"]) & set(sp["val"]))
    assert len(sp["train"]) > len(sp["test"]) > 0 and len(sp["val"]) > 0  # key ranges: Binomial sizes
    assert split_subjects(list(reversed(ids)), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4) == sp
    assert split_subjects(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5) != sp
    few = split_subjects(ids, {"train": 5, "test": 20}, seed=0)
    assert len(few["train"]) == 5 and len(few["test"]) == 20 and not set(few["train"]) & set(few["test"])
    with pytest.raises(ValueError, match="sum to"):
        split_subjects(ids, {"a": 0.8, "b": 0.3})
    with pytest.raises(ValueError, match="duplicate"):
        split_subjects(["a", "a", "b"], {"a": 0.5})
    with pytest.raises(ValueError, match="only 53"):
        split_subjects(ids, {"train": 50, "test": 10})
    # datasets built on the split share no subject and no slice of one
    halves = split_subjects(store.subject_ids(), {"train": 0.5, "test": 0.5}, seed=0)
    tr = CohortDataset(store.path, subjects=halves["train"], views=None)
    te = CohortDataset(store.path, subjects=halves["test"], views=None)
    assert not set(tr.sample_subjects) & set(te.sample_subjects) and len(tr) + len(te) == len(store.slice_table())


def test_direct_reader_checks_the_shard_index(tmp_path):
    st = CohortStore.create(tmp_path / "c.zarr", grid_size=G, spacing_mm=1.5)
    pid = st.write_subjects([make_subject("a", 1)])
    ds = CohortDataset(st.path, views=None)
    ds[0]
    shard = st.path / "parts" / pid / "image" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the index, before its crc32c
    shard.write_bytes(bytes(data))
    OPEN_SHARDS.clear()  # parts are immutable: a reader keeps each shard's index once read
    with pytest.raises(DamagedDataError, match=r"crc32c.*subject a"):
        CohortDataset(st.path, views=None)[0]
