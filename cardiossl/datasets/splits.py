"""Subject-level splits, the one place that decides which subject goes where.

Every split here is of subjects, never of slices, so no subject's slices land on two sides. The
rule is hash-based: each subject gets a key in [0, 1) from ``sha256(seed, subject id)``
(``subject_key``) and the groups are ranges of that key, held-out groups (test, then validation)
at the bottom. So a subject's group depends on its own id and the seed, not on which other
subjects exist or in what order they were listed:

* a **fraction** is a range of keys: ``test: 0.1`` is every subject with key < 0.1. Adding subjects
  never moves an existing one (the group grows with the cohort); the group's size is
  Binomial(n, fraction), not exactly ``round(fraction * n)``;
* a **count** is a cut in the key ranking: ``test: 10`` is the 10 subjects with the smallest keys,
  cut halfway to the 11th. On a grown cohort a newcomer whose key falls below the cut (chance
  about 10 / n per newcomer) takes the held-out place of the member with the largest key, which
  moves to the next group; nobody else moves. ``split_cuts`` returns the cuts; a split file that
  records them (``write_split_file``) pins the groups for good: listed subjects keep their group,
  newcomers are placed by the recorded cuts, so a pinned count group only ever grows.

Split files follow nnU-Net's ``splits_final.json`` (Isensee et al., Nat Methods 2021): a dict
``{"test": [...], "val": [...], "train": [...]}`` or a list of such folds. Subjects a file does not
list train, unless the file records ``seed`` and ``cuts`` (ours do): then they are placed by them.

Plain arguments only (ids, sizes, seeds, parsed files): the jobs that ask for splits live higher up
and pass their fields in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

HELD_OUT = ("test", "val")
REST = "rest"
GROUPS = ("test", "val", "train")


class SplitError(ValueError):
    """A split that cannot be made from the subjects given; the message says what to change."""


def subject_key(subject_id: str, seed: int | str) -> float:
    """The subject's place in [0, 1) for ``seed``: the first 8 bytes of sha256, so it is the same in
    every process, Python version and cohort."""
    h = hashlib.sha256(f"cardiossl-split\0{seed}\0{subject_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def subjects_hash(subject_ids: Iterable[str]) -> str:
    """A short content hash of a set of subject ids (order and repeats do not matter)."""
    return hashlib.sha256("\n".join(sorted(set(subject_ids))).encode()).hexdigest()[:16]


def _unique(subject_ids: Sequence[str]) -> list[str]:
    ids = list(subject_ids)
    if len(set(ids)) != len(ids):
        dup = sorted({s for s in ids if ids.count(s) > 1})
        raise ValueError(f"duplicate subject ids: {', '.join(dup[:10])}")
    return sorted(ids)


def _is_count(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def split_cuts(subject_ids: Sequence[str], sizes: Mapping[str, float | int], seed: int = 0) -> dict[str, float]:
    """The upper key of each group, in the order given: a fraction adds its width to the previous cut;
    a count cuts halfway between its last member's key and the next subject's."""
    ids = _unique(subject_ids)
    if not sizes:
        raise ValueError("a split needs at least one group, e.g. {'train': 0.8, 'test': 0.2}")
    values = [v for v in sizes.values() if not (isinstance(v, str) and v == REST)]
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0 for v in values):
        raise ValueError(f"split sizes must be non-negative numbers (or {REST!r} last), got {dict(sizes)}")
    if any(isinstance(v, str) for v in list(sizes.values())[:-1]):
        raise ValueError(f"only the last split group may be {REST!r}, got {dict(sizes)}")
    fr = sum(float(v) for v in values if not _is_count(v))
    if fr > 1 + 1e-9:
        raise ValueError(f"split fractions {dict(sizes)} sum to {fr:.3f} > 1")
    counts = sum(int(v) for v in values if _is_count(v))
    if counts > len(ids):
        raise ValueError(f"split counts {dict(sizes)} need {counts} subjects; only {len(ids)} given")
    keys = np.sort(np.array([subject_key(s, seed) for s in ids]))
    cuts, cut = {}, 0.0
    for name, v in sizes.items():
        if isinstance(v, str):  # REST: everything above the previous cut
            cut = 1.0
        elif _is_count(v):
            start = int(np.searchsorted(keys, cut))
            end = start + int(v)
            if end > len(keys):
                raise ValueError(f"split group {name!r} needs {int(v)} subjects; only {len(keys) - start} remain")
            if v == 0:
                pass
            elif end == len(keys):
                cut = float(np.nextafter(keys[-1], 1.0)) if start < len(keys) else cut
            else:
                cut = float((keys[end - 1] + keys[end]) / 2)
        else:
            cut = min(1.0, cut + float(v))
        cuts[name] = cut
    return cuts


def assign(subject_ids: Sequence[str], cuts: Mapping[str, float], seed: int = 0) -> dict[str, list[str]]:
    """Groups by key range: group g holds the subjects with previous cut <= key < cuts[g] (sorted ids);
    subjects above the last cut are in no group."""
    ids = _unique(subject_ids)
    out: dict[str, list[str]] = {g: [] for g in cuts}
    bounds = list(cuts.items())
    for s in ids:
        k = subject_key(s, seed)
        for g, upper in bounds:
            if k < upper:
                out[g].append(s)
                break
    return out


def split_subjects(subject_ids: Sequence[str], sizes: Mapping[str, float | int], seed: int = 0) -> dict[str, list[str]]:
    """Split subjects (never slices) into named groups of key ranges, in the order given:
    ``{"test": 0.1, "val": 0.1, "train": 0.8}`` (fractions: stable as the cohort grows) or
    ``{"test": 20, "train": 5}`` (counts: exact sizes); a last group ``"rest"`` takes everyone left.
    Fractions summing to 1 assign everyone; less leaves the rest out. Groups are disjoint by construction."""
    return assign(subject_ids, split_cuts(subject_ids, sizes, seed), seed)


def train_val_test_split(subject_ids: Sequence[str], *, val: float | int, test: float | int,
                         seed: int) -> dict[str, list[str]]:
    """{"train", "val", "test"} of a pretraining cohort (test, then val, at the bottom of the key
    ranking); a non-zero ``val`` that catches nobody takes the subject with the next key; at least
    one subject must train."""
    ids = list(subject_ids)
    n = len(ids)
    if n == 0:
        raise SplitError("no subjects to split")
    parts = split_subjects(ids, {"test": test, "val": val, "train": REST}, seed)
    if val and not parts["val"] and len(parts["train"]) > 1:
        first = min(parts["train"], key=lambda s: subject_key(s, seed))
        parts["val"], parts["train"] = [first], [s for s in parts["train"] if s != first]
    if not parts["train"]:
        raise SplitError(
            f"cohort.split: {len(parts['val'])} validation + {len(parts['test'])} test subjects leave "
            f"none of {n} for training"
        )
    return {k: list(parts[k]) for k in ("train", "val", "test")}


def held_out_split(labelled: Sequence[str], *, test: float | int, val: float | int, seed: int) -> dict[str, list[str]]:
    """{"test", "val", "pool"} of a labelled few-shot cohort: the fixed test and validation subjects
    and the pool the training subjects are drawn from. Refuses an empty test set or an empty pool."""
    ids = sorted(set(labelled))
    n = len(ids)
    try:
        parts = split_subjects(ids, {"test": test, "val": val, "pool": REST}, seed)
    except ValueError as exc:
        raise SplitError(f"{n} labelled subjects cannot hold test={test!r} + val={val!r}: {exc}; lower "
                         "cohort.split.test / cohort.split.val or ingest more labels") from None
    if not parts["test"]:
        raise SplitError(f"test split of {test!r} of {n} labelled subjects is empty; raise cohort.split.test "
                         "(a fraction is a key range: with few subjects give a count)")
    if not parts["pool"]:
        raise SplitError(
            f"{n} labelled subjects cannot hold {len(parts['test'])} test + {len(parts['val'])} validation "
            "subjects and still leave one to train on; lower cohort.split.test / cohort.split.val or ingest more labels"
        )
    return parts


def draw_train(pool: Sequence[str], n_train: int | str, seed: int) -> list[str]:
    """The first ``n_train`` of the pool in the key order of ``seed`` (its own namespace): nested over
    N for one seed (the N = 2 set contains the N = 1 set)."""
    order = sorted(set(pool), key=lambda s: (subject_key(s, f"train:{int(seed)}"), s))
    if n_train == "all":
        return order
    k = int(n_train)
    if k > len(order):
        raise SplitError(
            f"n_train={k} but only {len(order)} labelled subjects remain after the test and validation "
            "subjects; lower n_train or use n_train: all"
        )
    return order[:k]


def fewshot_split(
    labelled: list[str], *, test: float | int, val: float | int, split_seed: int,
    n_train: int | str, seed: int, held_out: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """{"test", "val", "train", "pool"}: test and val fixed by ``split_seed`` (or given as
    ``held_out``, e.g. from a split file or pinned by the study); train = the first ``n_train`` of
    the pool drawn by ``seed`` (nested over N). Depends only on the ids and the seeds."""
    ids = sorted(set(labelled))
    if held_out is None:
        parts = held_out_split(ids, test=test, val=val, seed=split_seed)
    else:
        test_ids = sorted(set(held_out.get("test", [])) & set(ids))
        val_ids = sorted(set(held_out.get("val", [])) & set(ids) - set(test_ids))
        pool = sorted(set(ids) - set(test_ids) - set(val_ids))
        if not test_ids:
            raise SplitError("the given split holds none of the labelled subjects in its test group")
        if not pool:
            raise SplitError("the given split leaves no labelled subject to train on")
        parts = {"test": test_ids, "val": val_ids, "pool": pool}
    return {"test": parts["test"], "val": parts["val"], "train": draw_train(parts["pool"], n_train, seed),
            "pool": parts["pool"]}


# -- split files --------------------------------------------------------------------------------
def parse_split_file(data, *, fold: int = 0, where: str = "split file") -> dict:
    """Validate a parsed ``splits.json``: ``{"test", "val", "train"}`` id lists (any may be absent),
    or a list of such folds (nnU-Net) of which ``fold`` is taken; optional ``seed`` and ``cuts``.
    Returns {"test", "val", "train", "seed", "cuts"} (seed/cuts None when absent)."""
    if isinstance(data, list):
        if not data:
            raise SplitError(f"{where}: an empty list of folds")
        if not 0 <= fold < len(data):
            raise SplitError(f"{where}: fold {fold} requested but the file holds folds 0..{len(data) - 1}")
        data = data[fold]
    if not isinstance(data, dict):
        raise SplitError(f"{where}: expected {{'test': [...], 'val': [...], 'train': [...]}} or a list of "
                         f"such folds, got {type(data).__name__}")
    unknown = sorted(set(data) - set(GROUPS) - {"seed", "cuts", "note"})
    if unknown:
        raise SplitError(f"{where}: unknown key(s) {unknown}; a split file holds test / val / train id lists")
    out: dict = {}
    seen: dict[str, str] = {}
    for g in GROUPS:
        ids = data.get(g, [])
        if not isinstance(ids, list) or not all(isinstance(s, str) and s for s in ids):
            raise SplitError(f"{where}: '{g}' must be a list of subject id strings")
        for s in ids:
            if s in seen:
                raise SplitError(f"{where}: subject {s!r} is in both '{seen[s]}' and '{g}'")
            seen[s] = g
        out[g] = sorted(ids)
    cuts = data.get("cuts")
    if cuts is not None and (not isinstance(cuts, dict) or not all(
            g in GROUPS and isinstance(v, (int, float)) and 0 <= v <= 1 for g, v in cuts.items())):
        raise SplitError(f"{where}: 'cuts' must map test / val / train to key bounds in [0, 1]")
    seed = data.get("seed")
    if cuts is not None and not isinstance(seed, int):
        raise SplitError(f"{where}: 'cuts' need the integer 'seed' they were computed with")
    out["seed"], out["cuts"] = seed, cuts
    return out


def load_split_file(path: str | os.PathLike, *, fold: int = 0) -> dict:
    """Read and validate a split file (see ``parse_split_file``); errors name the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise SplitError(f"split file {p} does not exist; give the path of a splits.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SplitError(f"split file {p}: not readable JSON ({exc})") from None
    return parse_split_file(data, fold=fold, where=f"split file {p}")


def apply_split_file(subject_ids: Sequence[str], spec: Mapping) -> dict[str, list[str]]:
    """{"test", "val", "train"} of ``subject_ids`` under a parsed split file: listed subjects keep
    their group; the others are placed by the file's seed and cuts when it has them, else train.
    Listed subjects that are not among ``subject_ids`` are left out."""
    ids = _unique(subject_ids)
    listed = {s: g for g in GROUPS for s in spec.get(g, [])}
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    rest = [s for s in ids if s not in listed]
    for s in ids:
        if s in listed:
            out[listed[s]].append(s)
    if spec.get("cuts"):
        cuts = {g: float(spec["cuts"][g]) for g in GROUPS if g in spec["cuts"]}
        placed = assign(rest, cuts, int(spec["seed"]))
        for g, members in placed.items():
            out[g] += members
        rest = sorted(set(rest) - {s for m in placed.values() for s in m})
    out["train"] = sorted(out["train"] + rest)
    return {g: sorted(v) for g, v in out.items()}


def write_split_file(path: str | os.PathLike, groups: Mapping[str, Sequence[str]], *, seed: int | None = None,
                     cuts: Mapping[str, float] | None = None, note: str | None = None) -> Path:
    """Write ``{"test", "val", "train"[, "seed", "cuts", "note"]}`` atomically (the pin of a split)."""
    data: dict = {g: sorted(groups.get(g, [])) for g in GROUPS}
    if cuts is not None:
        data["seed"], data["cuts"] = int(seed if seed is not None else 0), {k: float(v) for k, v in cuts.items()}
    if note:
        data["note"] = note
    parse_split_file(data, where=str(path))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, p)
    return p


def excluded_ids(exclude: Sequence[str] | str | os.PathLike | None, *, fold: int = 0) -> set[str]:
    """The subjects ``cohort.exclude`` names: a list of ids, or a split file whose held-out (test and
    val) subjects are excluded."""
    if exclude is None:
        return set()
    if isinstance(exclude, (str, os.PathLike)):
        spec = load_split_file(exclude, fold=fold)
        return set(spec["test"]) | set(spec["val"])
    return {str(s) for s in exclude}
