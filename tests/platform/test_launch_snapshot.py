"""The driver pins a run to one cohort snapshot: a resume whose store has changed is refused before
any Ray work, unless the job allows it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cardiossl.datasets.store import CohortStore
from cardiossl.datasets.synthetic import synth_subject
from cardiossl.platform.config import ConfigError, load_job
from cardiossl.platform.launch import _write_record, launch, pretrain_identity
from cardiossl.platform.training import split_cohort

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[2]


def _job(store, root, **extra):
    sets = tiny_pretrain_overrides(store, root, **{"checkpoint.run_name": "pinned", **extra})
    return load_job(REPO / "jobs" / "pretrain_position.yaml", sets)


def test_a_resume_on_a_changed_store_is_refused_before_any_ray_work(tiny_store, tmp_path):
    store = tmp_path / "cohort.zarr"
    shutil.copytree(tiny_store, store)
    job = _job(store, tmp_path)
    snapshot = CohortStore(store).snapshot()
    record = {"run_id": "0" * 32, "config_hash": job.hash(snapshot.content_hash), "job_hash": job.hash(),
              "snapshot": snapshot.to_dict(), "splits": split_cohort(job, snapshot)}
    _write_record(job.checkpoint.storage_path, "pinned", record)
    CohortStore(store).write_subjects([synth_subject("late000", 3, n_frames=2, n_sub=1)])
    with pytest.raises(ConfigError, match=r"1 subject\(s\) added \(late000\).*allow_new_snapshot"):
        launch(job, quiet=True)
    with pytest.raises(ConfigError, match="another config"):
        launch(_job(store, tmp_path, **{"optim.lr": 0.5}), quiet=True)
    _write_record(job.checkpoint.storage_path, "pinned", {k: v for k, v in record.items() if k != "job_hash"})
    with pytest.raises(ConfigError, match="did not pin its cohort snapshot"):
        launch(job, quiet=True)


def test_the_identity_of_a_pretrained_model_follows_the_data_not_the_path(tiny_store, tmp_path):
    moved = tmp_path / "elsewhere.zarr"
    shutil.copytree(tiny_store, moved)
    a = pretrain_identity(_job(tiny_store, tmp_path))
    b = pretrain_identity(_job(moved, tmp_path, **{"loader.num_workers": 2, "scaling.num_workers": 2}))
    assert a == b
    CohortStore(moved).write_subjects([synth_subject("late000", 3, n_frames=2, n_sub=1)])
    c = pretrain_identity(_job(moved, tmp_path))
    assert c["config_hash"] != a["config_hash"] and c["cohort_fingerprint"] != a["cohort_fingerprint"]
