"""Subject-level splits: disjoint, deterministic in the ids and seeds, nested over N; impossible requests refused."""

from __future__ import annotations

import pytest

from cardiossl.datasets.splits import SplitError, fewshot_split, train_val_test_split


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
    all_ = fewshot_split(ids, test=0.25, val=3, split_seed=0, n_train="all", seed=0)
    assert len(all_["train"]) == 20 - 5 - 3 and len(all_["test"]) == 5


def test_split_refuses_impossible_requests():
    ids = [f"s{i}" for i in range(6)]
    with pytest.raises(SplitError, match="n_train=5 but only 2"):
        fewshot_split(ids, test=3, val=1, split_seed=0, n_train=5, seed=0)
    with pytest.raises(SplitError, match="cannot hold"):
        fewshot_split(ids, test=4, val=2, split_seed=0, n_train=1, seed=0)


def test_train_val_test_split_keeps_a_validation_subject_and_refuses_an_empty_train_side():
    ids = [f"s{i}" for i in range(10)]
    s = train_val_test_split(ids, val=0.01, test=2, seed=0)
    assert len(s["val"]) == 1 and len(s["test"]) == 2 and len(s["train"]) == 7
    assert s == train_val_test_split(list(reversed(ids)), val=0.01, test=2, seed=0)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    with pytest.raises(SplitError, match="leave none of 10 for training"):
        train_val_test_split(ids, val=5, test=5, seed=0)
