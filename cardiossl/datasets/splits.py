"""Subject-level splits, the one place that decides which subject goes where.

Every split here is of subjects, never of slices, so no subject's slices land on two sides, and
each is deterministic in (the set of ids, the seeds): ids are sorted before any seeded shuffle, so
input order never matters. Plain arguments only (ids, sizes, seeds): the jobs that ask for splits
live higher up and pass their fields in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class SplitError(ValueError):
    """A split that cannot be made from the subjects given; the message says what to change."""


def _count(spec: float | int, total: int) -> int:
    """A fraction (float) of ``total``, rounded, or a count (int)."""
    if isinstance(spec, float):
        return int(round(spec * total))
    return int(spec)


def split_subjects(
    subject_ids: Sequence[str],
    sizes: Mapping[str, float | int],
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split subjects (never slices) into named groups: ``{"train": 0.8, "val": 0.1, "test": 0.1}``
    (fractions) or ``{"train": 5, "test": 20}`` (counts).

    Deterministic in (the set of ids, seed): ids are sorted before the seeded shuffle, so the input
    order does not matter. Fractions summing to 1 assign everyone (largest remainder rounding);
    fractions or counts summing to less leave the rest out. Groups are disjoint by construction.
    """
    ids = list(subject_ids)
    dup = sorted({s for s in ids if ids.count(s) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise ValueError(f"duplicate subject ids: {', '.join(dup[:10])}")
    if not sizes:
        raise ValueError("split_subjects needs at least one group, e.g. {'train': 0.8, 'test': 0.2}")
    values = list(sizes.values())
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0 for v in values):
        raise ValueError(f"split sizes must be non-negative numbers, got {dict(sizes)}")
    n = len(ids)
    if all(isinstance(v, (int, np.integer)) for v in values):
        counts = [int(v) for v in values]
        if sum(counts) > n:
            raise ValueError(f"split counts {dict(sizes)} need {sum(counts)} subjects; only {n} given")
    else:
        fr = np.array(values, dtype=np.float64)
        if fr.sum() > 1 + 1e-9:
            raise ValueError(f"split fractions {dict(sizes)} sum to {fr.sum():.3f} > 1")
        exact = fr * n
        counts = np.floor(exact + 1e-9).astype(int)
        target = int(round(fr.sum() * n))
        for k in np.argsort(-(exact - counts), kind="stable")[: max(0, target - counts.sum())]:
            counts[k] += 1
        counts = counts.tolist()
    order = sorted(ids)
    perm = np.random.default_rng([int(seed), n]).permutation(n)
    shuffled = [order[k] for k in perm]
    out, start = {}, 0
    for name, c in zip(sizes, counts):
        out[name] = shuffled[start : start + c]
        start += c
    return out


def train_val_test_split(subject_ids: Sequence[str], *, val: float | int, test: float | int,
                         seed: int) -> dict[str, list[str]]:
    """{"train", "val", "test"} of a pretraining cohort: ``val`` / ``test`` are fractions or counts;
    a non-zero ``val`` keeps at least one validation subject; at least one subject must train."""
    ids = list(subject_ids)
    n = len(ids)
    n_val, n_test = _count(val, n), _count(test, n)
    if val and n_val == 0:
        n_val = 1
    if n_val + n_test >= n:
        raise SplitError(
            f"cohort.split: {n_val} validation + {n_test} test subjects leave none of {n} for training"
        )
    counts = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    parts = split_subjects(ids, {k: v for k, v in counts.items() if v > 0}, seed=seed)
    return {k: list(parts.get(k, [])) for k in ("train", "val", "test")}


def fewshot_split(
    labelled: list[str], *, test: float | int, val: float | int, split_seed: int,
    n_train: int | str, seed: int,
) -> dict[str, list[str]]:
    """{"test", "val", "train", "pool"}: test and val fixed by ``split_seed``; train = the first
    ``n_train`` of the pool (labelled minus test minus val) shuffled by ``seed`` (nested over N).

    The order of ``labelled`` does not matter (it is sorted first), so the split depends only on
    the subject ids and the seeds.
    """
    ids = sorted(set(labelled))
    n = len(ids)
    n_test, n_val = _count(test, n), _count(val, n)
    if n_test < 1:
        raise SplitError(f"test split of {test!r} of {n} labelled subjects is empty; raise cohort.split.test")
    if n_test + n_val >= n:
        raise SplitError(
            f"{n} labelled subjects cannot hold {n_test} test + {n_val} validation subjects and still "
            "leave one to train on; lower cohort.split.test / cohort.split.val or ingest more labels"
        )
    perm = np.random.default_rng([int(split_seed), 0x5E11]).permutation(n)
    test_ids = sorted(ids[i] for i in perm[:n_test])
    val_ids = sorted(ids[i] for i in perm[n_test : n_test + n_val])
    pool = sorted(ids[i] for i in perm[n_test + n_val :])
    order = np.random.default_rng([int(seed), 0x7EA1]).permutation(len(pool))
    if n_train == "all":
        k = len(pool)
    else:
        k = int(n_train)
        if k > len(pool):
            raise SplitError(
                f"n_train={k} but only {len(pool)} labelled subjects remain after {n_test} test and "
                f"{n_val} validation subjects; lower n_train or use n_train: all"
            )
    train_ids = [pool[i] for i in order[:k]]
    return {"test": test_ids, "val": val_ids, "train": train_ids, "pool": pool}
