"""Subject-level splits: hash-based (a subject's group depends on its id and the seed only), stable
as the cohort grows, disjoint, nested over N; split files; impossible requests refused."""

from __future__ import annotations

import json

import pytest

from cardiossl.datasets.splits import (
    SplitError, apply_split_file, excluded_ids, fewshot_split, held_out_split, load_split_file,
    split_cuts, split_subjects, subject_key, subjects_hash, train_val_test_split, write_split_file,
)

IDS = [f"s{i:04d}" for i in range(1000)]


def _group_of(split: dict) -> dict[str, str]:
    return {s: g for g, members in split.items() for s in members}


def test_adding_a_subject_leaves_every_existing_subjects_split_unchanged():
    """Fractions are key ranges: 1,000 subjects + 1 (and + 100) move nobody, in pretraining and
    few-shot splits alike."""
    before = _group_of(train_val_test_split(IDS, val=0.1, test=0.05, seed=3))
    for extra in (["s9999"], [f"new{i}" for i in range(100)]):
        after = _group_of(train_val_test_split(IDS + extra, val=0.1, test=0.05, seed=3))
        assert {s: after[s] for s in IDS} == before
    few = held_out_split(IDS, test=0.05, val=0.02, seed=0)
    grown = held_out_split(IDS + [f"new{i}" for i in range(50)], test=0.05, val=0.02, seed=0)
    for g in ("test", "val"):
        assert set(grown[g]) >= set(few[g])  # groups only grow
    assert set(grown["pool"]) & set(IDS) == set(few["pool"])


def test_a_count_is_a_cut_in_the_key_ranking_and_moves_at_most_one_subject_per_newcomer():
    base = held_out_split(IDS, test=10, val=2, seed=0)
    assert len(base["test"]) == 10 and len(base["val"]) == 2
    keys = sorted(subject_key(s, 0) for s in IDS)
    assert max(subject_key(s, 0) for s in base["test"]) == keys[9]
    moved_total = 0
    for i in range(40):
        grown = held_out_split(IDS + [f"x{i}"], test=10, val=2, seed=0)
        moved = [s for g in ("test", "val") for s in base[g] if s not in grown[g]]
        moved_total += len(moved)
        assert len(moved) <= 1 and len(grown["test"]) == 10
    assert moved_total < 10  # about 12 / 1000 per newcomer; the old permutation moved all ten


def test_groups_do_not_depend_on_order_or_on_the_other_subjects():
    a = train_val_test_split(IDS, val=0.2, test=0.1, seed=1)
    assert a == train_val_test_split(list(reversed(IDS)), val=0.2, test=0.1, seed=1)
    sub = train_val_test_split(IDS[::3], val=0.2, test=0.1, seed=1)
    ga, gs = _group_of(a), _group_of(sub)
    assert all(ga[s] == gs[s] for s in IDS[::3])
    assert a != train_val_test_split(IDS, val=0.2, test=0.1, seed=2)
    n = {g: len(v) for g, v in a.items()}
    assert 60 <= n["test"] <= 140 and 150 <= n["val"] <= 250  # Binomial sizes around 100 and 200


def test_split_is_disjoint_fixed_and_nested():
    ids = [f"s{i:02d}" for i in range(20)]
    a1 = fewshot_split(ids, test=5, val=3, split_seed=0, n_train=1, seed=0)
    a5 = fewshot_split(list(reversed(ids)), test=5, val=3, split_seed=0, n_train=5, seed=0)
    b5 = fewshot_split(ids, test=5, val=3, split_seed=0, n_train=5, seed=1)
    for s in (a1, a5, b5):
        assert not set(s["train"]) & set(s["test"])
        assert not set(s["train"]) & set(s["val"])
        assert not set(s["val"]) & set(s["test"])
    assert a1["test"] == a5["test"] == b5["test"] and a1["val"] == a5["val"] == b5["val"]
    assert a5["train"][:1] == a1["train"]  # nested in N for one seed
    assert a5["train"] != b5["train"]  # the seed draws the subjects
    all_ = fewshot_split(ids, test=5, val=3, split_seed=0, n_train="all", seed=0)
    assert len(all_["train"]) == 20 - 5 - 3 and len(all_["test"]) == 5
    given = fewshot_split(ids, test=0, val=0, split_seed=0, n_train=2, seed=0,
                          held_out={"test": ["s00", "s01", "zz"], "val": ["s02"]})
    assert given["test"] == ["s00", "s01"] and given["val"] == ["s02"] and len(given["pool"]) == 17


def test_split_refuses_impossible_requests():
    ids = [f"s{i}" for i in range(6)]
    with pytest.raises(SplitError, match="n_train=5 but only 2"):
        fewshot_split(ids, test=3, val=1, split_seed=0, n_train=5, seed=0)
    with pytest.raises(SplitError, match="cannot hold"):
        fewshot_split(ids, test=4, val=2, split_seed=0, n_train=1, seed=0)
    with pytest.raises(SplitError, match="is empty"):
        fewshot_split(ids, test=0.001, val=1, split_seed=0, n_train=1, seed=0)
    with pytest.raises(ValueError, match="sum to"):
        split_subjects(ids, {"a": 0.8, "b": 0.3})
    with pytest.raises(ValueError, match="duplicate"):
        split_subjects(["a", "a", "b"], {"a": 0.5})
    with pytest.raises(ValueError, match="only 6"):
        split_subjects(ids, {"train": 5, "test": 10})


def test_train_val_test_split_keeps_a_validation_subject_and_refuses_an_empty_train_side():
    ids = [f"s{i}" for i in range(10)]
    s = train_val_test_split(ids, val=0.01, test=2, seed=0)
    assert len(s["val"]) == 1 and len(s["test"]) == 2 and len(s["train"]) == 7
    assert s == train_val_test_split(list(reversed(ids)), val=0.01, test=2, seed=0)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    with pytest.raises(SplitError, match="leave none of 10 for training"):
        train_val_test_split(ids, val=5, test=5, seed=0)


def test_split_files_pin_groups_and_place_newcomers_by_their_cuts(tmp_path):
    ids = [f"p{i:03d}" for i in range(30)]
    cuts = split_cuts(ids, {"test": 5, "val": 2, "train": "rest"}, seed=4)
    groups = held_out_split(ids, test=5, val=2, seed=4)
    path = write_split_file(tmp_path / "splits.json", {"test": groups["test"], "val": groups["val"],
                                                      "train": groups["pool"]}, seed=4, cuts=cuts)
    spec = load_split_file(path)
    grown = [f"p{i:03d}" for i in range(300)]
    out = apply_split_file(grown, spec)
    assert set(out["test"]) >= set(groups["test"]) and set(out["val"]) >= set(groups["val"])
    newcomers_test = set(out["test"]) - set(groups["test"])
    assert all(subject_key(s, 4) < cuts["test"] for s in newcomers_test)  # placed by the recorded cut
    # an nnU-Net fold list without cuts: unlisted subjects train
    nn = tmp_path / "splits_final.json"
    nn.write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}, {"train": ["a", "c"], "val": ["b"]}]))
    out = apply_split_file(["a", "b", "c", "d"], load_split_file(nn, fold=1))
    assert out == {"test": [], "val": ["b"], "train": ["a", "c", "d"]}
    assert excluded_ids(str(nn)) == {"c"} and excluded_ids(["x", "y"]) == {"x", "y"} and excluded_ids(None) == set()


def test_bad_split_files_are_refused_with_the_file_named(tmp_path):
    p = tmp_path / "s.json"
    for text, msg in [("{", "not readable JSON"), ('{"test": ["a"], "val": ["a"]}', "in both"),
                      ('{"tests": ["a"]}', "unknown key"), ('{"test": "a"}', "list of subject id"),
                      ("[]", "empty list"), ('{"test": ["a"], "cuts": {"test": 0.1}}', "integer 'seed'")]:
        p.write_text(text)
        with pytest.raises(SplitError, match=msg) as e:
            load_split_file(p)
        assert str(p) in str(e.value)
    with pytest.raises(SplitError, match="does not exist"):
        load_split_file(tmp_path / "missing.json")
    p.write_text('[{"val": ["a"]}]')
    with pytest.raises(SplitError, match="fold 2"):
        load_split_file(p, fold=2)


def test_subjects_hash_is_a_set_hash():
    assert subjects_hash(["b", "a", "a"]) == subjects_hash(["a", "b"]) != subjects_hash(["a"])
