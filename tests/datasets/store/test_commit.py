"""The commit protocol under interrupts at every step: a committed part is never removed, an
uncommitted one is never visible and is collected once its writer's lease lapses.

The steps of a commit are the calls that make it durable or visible (``os.fsync``, ``os.replace``,
the durability barrier): the writer's lease, the part's summary, the barrier, the marker under its
temporary name, the rename that is the commit point, the fsync of the commits folder, the index
update. Each test interrupts the k-th of them, for every k until a write runs through.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import cardiossl.datasets.store.parts as parts_mod
from cardiossl.datasets.store import CohortStore
from cardiossl.datasets.torch_dataset import CohortDataset

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/datasets: the record builders
from store_records import make_subject  # noqa: E402

G, SP, LEASE_S = 32, 1.5, 0.4


class Steps:
    """Counts the commit's steps; at step ``k`` calls ``action`` before or after the step runs.

    Only the writing thread's calls count (zarr-python's event-loop thread writes files too, and an
    interrupt there is not one a user can deliver)."""

    def __init__(self, k: int, when: str, action) -> None:
        self.k, self.when, self.action, self.n = k, when, action, 0
        self.thread = threading.get_ident()

    def wrap(self, real):
        def step(*args, **kwargs):
            if threading.get_ident() != self.thread:
                return real(*args, **kwargs)
            self.n += 1
            if self.n == self.k and self.when == "before":
                self.action()
            out = real(*args, **kwargs)
            if self.n == self.k and self.when == "after":
                self.action()
            return out

        return step

    def install(self, patch) -> None:
        patch(os, "fsync", self.wrap(os.fsync))
        patch(os, "replace", self.wrap(os.replace))
        patch(parts_mod, "make_durable", self.wrap(parts_mod.make_durable))


def _interrupt():
    raise KeyboardInterrupt


def _state(path: Path, sid: str) -> tuple[bool, list[str]]:
    """(committed, leftover part folders), after checking the store is whole: it opens, every live
    part verifies, and a committed subject reads completely."""
    store = CohortStore(path)
    ids = store.subject_ids()
    assert ids.count(sid) <= 1
    store.slice_table()  # never "committed part missing or damaged"
    report = store.verify()
    assert report.ok, report.to_dict()
    committed = sid in ids
    if committed:
        ds = CohortDataset(path, subjects=[sid], views=None)
        assert len(ds) == len(make_subject(sid, 7).slices)
        for i in range(len(ds)):
            assert np.isfinite(ds[i]["image"]).all()
    leftovers = sorted(d.name for d in (path / "parts").iterdir() if d.is_dir() and d.name not in store.view().markers)
    return committed, leftovers


def _fresh_store(tmp_path: Path, name: str) -> CohortStore:
    store = CohortStore.create(tmp_path / name, grid_size=G, spacing_mm=SP)
    store.write_subjects([make_subject("base", 1)])
    return store


def _check_sequence(states: list[tuple[bool, list[str]]], path: Path) -> None:
    committed = [c for c, _ in states]
    # the commit point is one step: never committed before it, always after
    assert committed == sorted(committed) and committed[0] is False and committed[-1] is True, committed
    for c, leftovers in states:
        assert len(leftovers) <= 1 and (not c or not leftovers)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupt_at_any_step_of_a_commit_leaves_a_whole_store(tmp_path, monkeypatch, when):
    """Defect 2: a KeyboardInterrupt after the commit point (e.g. in the final fsync of the commits
    folder) made the writer's clean-up delete a committed part: every later read failed."""
    states, k = [], 0
    while True:
        k += 1
        path = tmp_path / f"s{k}.zarr"
        _fresh_store(tmp_path, path.name)
        steps = Steps(k, when, _interrupt)
        with monkeypatch.context() as m:
            steps.install(m.setattr)
            try:
                CohortStore(path, lease_s=LEASE_S).write_subjects([make_subject("x", 7)])
                finished = True
            except KeyboardInterrupt:
                finished = False
        states.append(_state(path, "x"))
        if finished:
            assert steps.n < k  # the write ran through: every step has been interrupted once
            break
        assert k < 40, "a commit should take fewer steps"
    assert len(states) >= 6
    _check_sequence(states, tmp_path)
    time.sleep(LEASE_S * 1.25 + 0.2)
    for i in range(1, k + 1):  # interrupted writes leave garbage only until its lease lapses
        store = CohortStore(tmp_path / f"s{i}.zarr")
        store.gc()
        assert sorted(d.name for d in (store.path / "parts").iterdir() if d.is_dir()) == sorted(store.part_ids())


def _die_at(path: str, k: int) -> None:
    steps = Steps(k, "after", lambda: os._exit(17))
    steps.install(lambda mod, name, value: setattr(mod, name, value))
    CohortStore(path, lease_s=LEASE_S).write_subjects([make_subject("x", 7)])
    os._exit(0)


def _kill_at_each_step(paths: list[str], codes) -> None:
    """A fresh interpreter that forks one writer per step count (forking is cheap, and safe here:
    this process has not started zarr-python's event-loop thread)."""
    for k, path in enumerate(paths, start=1):
        pid = os.fork()
        if pid == 0:
            _die_at(path, k)
        _, status = os.waitpid(pid, 0)
        codes.put(os.waitstatus_to_exitcode(status))
        if os.waitstatus_to_exitcode(status) == 0:
            break
    codes.put(None)


def test_a_writer_killed_at_any_step_of_a_commit_leaves_a_whole_store(tmp_path):
    """The same with the process gone (``os._exit``: no clean-up, no finally) right after each step."""
    paths = [_fresh_store(tmp_path, f"k{k}.zarr").path for k in range(1, 16)]
    ctx = mp.get_context("spawn")
    codes = ctx.Queue()
    p = ctx.Process(target=_kill_at_each_step, args=([str(x) for x in paths], codes))
    p.start()
    exits = list(iter(lambda: codes.get(timeout=300), None))
    p.join(60)
    assert exits[-1] == 0 and set(exits[:-1]) == {17}, exits  # killed after each step, then one ran through
    states = [_state(path, "x") for path in paths[: len(exits)]]
    assert len(states) >= 6
    _check_sequence(states, tmp_path)
    time.sleep(LEASE_S * 1.25 + 0.2)
    for path in paths[: len(exits)]:
        store = CohortStore(path)
        store.gc()
        assert sorted(d.name for d in (store.path / "parts").iterdir() if d.is_dir()) == sorted(store.part_ids())
