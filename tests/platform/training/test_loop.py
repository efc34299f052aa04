"""The per-worker loop without Ray: it learns, it checkpoints, and a resumed run continues exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cardiossl.platform.config import load_job
from cardiossl.platform.tracking.testing import MemoryTracker
from cardiossl.platform.training import (
    InjectedFault,
    LocalSession,
    LRSchedule,
    LiveMetrics,
    collate,
    run_pretraining,
    split_cohort,
)

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and polite on a shared machine
    yield
    torch.set_num_threads(n)


def job_for(store, root, pretext="position", **extra):
    return load_job(REPO / "jobs" / f"pretrain_{pretext}.yaml", tiny_pretrain_overrides(store, root, pretext, **extra))


def test_loss_decreases_on_a_tiny_store(tiny_store, tmp_path):
    job = job_for(tiny_store, tmp_path, steps=40, batch_size=8, **{"optim.lr": 0.01, "augment.enabled": "false",
                                                                  "checkpoint.every_steps": 20})
    tracker = MemoryTracker()
    res = run_pretraining(job, LocalSession(tmp_path / "run"), tracker)
    losses = [v for _, v in tracker.history("train/loss")]
    assert [s for s, _ in tracker.history("train/loss")] == list(range(1, 41))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert res.step == 40
    for key in ("train/lr", "train/images_per_s", "train/pixel_accuracy", "val/loss", "val/mean_iou"):
        assert tracker.history(key), key
    assert np.isfinite(res.val_metrics["loss"])


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_resume_from_checkpoint_continues_exactly(tiny_store, tmp_path, loader_workers):
    # batch 16: 7 batches per epoch on this store, so the run crosses an epoch boundary after the restart
    extra = {"steps": 10, "batch_size": 16, "checkpoint.every_steps": 3, "validation.every_steps": 5,
             "loader.num_workers": loader_workers}
    # uninterrupted
    ref_tracker = MemoryTracker()
    ref = run_pretraining(job_for(tiny_store, tmp_path / "a", **extra), LocalSession(tmp_path / "a/run"), ref_tracker)
    # the same job, rank 0 raises at step 8 (after the step-6 checkpoint), then the run is restarted
    job = job_for(tiny_store, tmp_path / "b", **extra, **{"debug.fail_at_step": 8})
    session = LocalSession(tmp_path / "b/run", num_to_keep=2)
    tracker = MemoryTracker()
    with pytest.raises(InjectedFault):
        run_pretraining(job, session, tracker)
    assert [s for s, _ in tracker.history("train/loss")] == list(range(1, 8))  # live: every step computed
    assert sorted(p.name for p in Path(session.run_dir).glob("checkpoint_*")) == [
        "checkpoint_00000003", "checkpoint_00000006"]
    res = run_pretraining(job, session, tracker)  # the marker file stops a second failure
    assert res.resumed_from == 6 and res.step == 10
    # same weights, bit for bit, and the same metric history without gaps or duplicates
    for (k, a), (_, b) in zip(ref.model.state_dict().items(), res.model.state_dict().items()):
        assert torch.equal(a, b), k
    epochs = [v for _, v in tracker.history("train/epoch")]
    assert epochs == [v for _, v in ref_tracker.history("train/epoch")] and epochs[-1] > 1
    assert tracker.history("train/loss") == ref_tracker.history("train/loss")
    assert tracker.history("val/loss") == ref_tracker.history("val/loss")
    assert [s for s, _ in tracker.history("train/loss")] == list(range(1, 11))
    assert len(list(Path(session.run_dir).glob("checkpoint_*"))) == 2  # num_to_keep


def test_epochs_mode_and_rotation_without_decoder(tiny_store, tmp_path):
    job = job_for(tiny_store, tmp_path, "rotation", steps="null", epochs=1, batch_size=16)
    res = run_pretraining(job, LocalSession(tmp_path / "run"), MemoryTracker())
    sp = split_cohort(job)
    assert sp["val"] and len(sp["train"]) + len(sp["val"]) == 6 and res.step > 1
    assert "accuracy" in res.val_metrics
    assert res.pretext.uses_decoder is False


def test_a_checkpoint_from_another_config_is_refused(tiny_store, tmp_path):
    session = LocalSession(tmp_path / "run")
    run_pretraining(job_for(tiny_store, tmp_path, steps=4), session, MemoryTracker())
    with pytest.raises(ValueError, match="different config"):
        run_pretraining(job_for(tiny_store, tmp_path, steps=4, **{"optim.lr": 0.5}), session, MemoryTracker())


def test_too_small_a_cohort_for_the_batch_is_a_clear_error(tiny_store, tmp_path):
    job = job_for(tiny_store, tmp_path, batch_size=4096)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        run_pretraining(job, LocalSession(tmp_path / "run"), MemoryTracker())


def test_split_is_subject_level_and_deterministic(tiny_store, tmp_path):
    job = job_for(tiny_store, tmp_path, **{"cohort.split": "{val: 2, test: 1, seed: 3}"})
    a, b = split_cohort(job), split_cohort(job)
    assert a == b
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (3, 2, 1)
    assert not (set(a["train"]) & set(a["val"])) and not (set(a["val"]) & set(a["test"]))


def test_cohort_exclude_and_split_files_decide_the_pretraining_subjects(tiny_store, tmp_path):
    """``cohort.exclude`` (ids, or a split file's test + val) removes subjects from every group; a
    ``cohort.split.file`` gives the groups, unlisted subjects train."""
    import json

    ids = sorted(split_cohort(job_for(tiny_store, tmp_path))["train"]
                 + split_cohort(job_for(tiny_store, tmp_path))["val"])
    by_id = split_cohort(job_for(tiny_store, tmp_path, **{"cohort.exclude": json.dumps(ids[:2])}))
    assert not set(ids[:2]) & set(by_id["train"] + by_id["val"] + by_id["test"])
    f = tmp_path / "splits.json"
    f.write_text(json.dumps({"test": [ids[0]], "val": [ids[1]], "train": []}))
    by_file = split_cohort(job_for(tiny_store, tmp_path, **{"cohort.exclude": str(f)}))
    assert not {ids[0], ids[1]} & set(by_file["train"] + by_file["val"])
    given = split_cohort(job_for(tiny_store, tmp_path, **{"cohort.split.file": str(f)}))
    assert given == {"train": ids[2:], "val": [ids[1]], "test": [ids[0]]}


def test_schedule_warmup_and_cosine_end():
    s = LRSchedule(total_steps=100, warmup_steps=10, name="cosine", min_lr_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0) and s(100) == pytest.approx(0.1)
    assert s(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert LRSchedule(100, 0, "linear")(50) == pytest.approx(0.5)
    assert LRSchedule(100, 0, "constant")(99) == 1.0


def test_live_metrics_skip_what_the_run_holds_per_key():
    t = MemoryTracker()
    t.log_metrics({"train/loss": 1.0, "val/loss": 2.0}, 1)
    t.log_metrics({"train/loss": 1.5}, 2)  # the failure came between train and val of step 2
    live = LiveMetrics(t)  # a restarted group recomputes steps 1 and 2
    assert live.log(1, {"train/loss": 9.0, "val/loss": 9.0}) == {}
    assert live.log(2, {"train/loss": 9.0, "val/loss": 2.5}) == {"val/loss": 2.5}
    assert live.log(3, {"train/loss": 3.0}) == {"train/loss": 3.0}
    assert live.log(3, {"train/loss": 3.0}) == {}  # never twice
    assert t.history("train/loss") == [(1, 1.0), (2, 1.5), (3, 3.0)] and t.history("val/loss") == [(1, 2.0), (2, 2.5)]


def test_collate():
    batch = collate([{"a": np.zeros((1, 2, 2), np.float32), "b": 1, "c": "x", "d": None, "e": 0.5},
                     {"a": np.ones((1, 2, 2), np.float32), "b": 2, "c": "y", "d": None, "e": float("nan")}])
    assert batch["a"].shape == (2, 1, 2, 2) and batch["b"].tolist() == [1, 2]
    assert batch["c"] == ["x", "y"] and "d" not in batch and batch["e"].dtype == torch.float64


def test_a_pretext_that_refuses_every_slice_says_why(tiny_store, tmp_path):
    """Corrected planes asked for on a store without geometry QC: a clear error, not an empty loader."""
    job = job_for(tiny_store, tmp_path, **{"pretext.params.plane_correction": "qc"})
    with pytest.raises(ValueError, match=r"none of the \d+ slices .* gets a target \(no QC estimate \(run cardiossl "
                                         r"cohort qc\): \d+\).*cardiossl cohort info"):
        run_pretraining(job, LocalSession(tmp_path / "run"), MemoryTracker())


# ---- every rank reads the driver's snapshot, whatever is committed meanwhile -----------------------


class _Rank(LocalSession):
    def __init__(self, run_dir, rank: int, world: int = 2) -> None:
        super().__init__(run_dir)
        self.world_rank, self.world_size = rank, world


def _growing_store(tiny_store, tmp_path):
    import shutil

    path = tmp_path / "cohort.zarr"
    shutil.copytree(tiny_store, path)
    return path


def _ingest_more(path, n: int = 4):
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject

    CohortStore(path).write_subjects([synth_subject(f"late{i:03d}", 7, n_frames=2, n_sub=1) for i in range(n)])


def test_ranks_train_on_the_driver_snapshot_while_an_ingest_commits(tiny_store, tmp_path):
    """Defect 1: each rank split the live store; an ingest between two ranks' starts gave them other
    subject sets (in epochs mode other step totals: the collectives hang)."""
    from cardiossl.datasets.store import CohortStore
    from cardiossl.platform.training import prediction_figure

    store = _growing_store(tiny_store, tmp_path)
    job = job_for(store, tmp_path, "rotation", steps="null", epochs=1, batch_size=4)
    snapshot = CohortStore(store).snapshot()  # the driver's, before any worker starts
    splits = split_cohort(job, snapshot)
    r0 = run_pretraining(job, _Rank(tmp_path / "r0", 0), MemoryTracker(), snapshot=snapshot, splits=splits)
    _ingest_more(store)  # committed while the run is going on
    r1 = run_pretraining(job, _Rank(tmp_path / "r1", 1), None, snapshot=snapshot, splits=splits)
    assert r0.step == r1.step and r0.splits == r1.splits == splits
    assert not any(s.startswith("late") for part in r1.splits.values() for s in part)
    # what happened before: a rank that looked at the store itself saw other subjects and other totals
    live = run_pretraining(job, _Rank(tmp_path / "r2", 1), None)
    assert live.step != r1.step and any(s.startswith("late") for s in live.splits["train"] + live.splits["val"])
    # the checkpoint records the snapshot and split; the figure draws the run's own validation subjects
    import json

    ckpt = sorted((tmp_path / "r0").glob("checkpoint_*"))[-1]  # rank 0 writes them
    state = json.loads((ckpt / "state.json").read_text())
    assert state["snapshot"]["content_hash"] == snapshot.content_hash and state["splits"] == splits
    fig = prediction_figure(job, r1, 3)
    titles = [ax.get_title().split()[0] for ax in fig.axes[::2]]
    assert titles and set(titles) <= set(splits["val"])


def test_resume_refuses_a_store_that_changed_unless_told(tiny_store, tmp_path):
    store = _growing_store(tiny_store, tmp_path)
    session = LocalSession(tmp_path / "run")
    with pytest.raises(InjectedFault):  # a run that fails after its step-4 checkpoint
        run_pretraining(job_for(store, tmp_path, steps=6, **{"checkpoint.every_steps": 2, "debug.fail_at_step": 5}),
                        session, MemoryTracker())
    _ingest_more(store, 2)
    with pytest.raises(ValueError, match="store changed"):
        run_pretraining(job_for(store, tmp_path, steps=6, **{"checkpoint.every_steps": 2}), session, MemoryTracker())
    job = job_for(store, tmp_path, steps=6, **{"checkpoint.every_steps": 2, "checkpoint.allow_new_snapshot": "true"})
    res = run_pretraining(job, session, MemoryTracker())
    assert res.resumed_from == 4 and res.step == 6
    assert any(s.startswith("late") for part in res.splits.values() for s in part)
