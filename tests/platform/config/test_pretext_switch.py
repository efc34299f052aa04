"""``--set pretext.name=...``: a job of the new pretext, with its defaults and its own registered model,
and CARDIOSSL_HOME's default filled in by the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardiossl.platform.config import ConfigError, load_job

REPO = Path(__file__).resolve().parents[3]
POSITION = REPO / "jobs" / "pretrain_position.yaml"


def test_switching_pretext_starts_from_its_defaults_and_renames_what_was_named_after_the_old():
    job = load_job(POSITION, ["pretext.name=rotation"])
    assert job.pretext.name == "rotation" and job.pretext.params == {"n_rotations": 4}
    assert job.mlflow.registered_model == "cardiossl-rotation-encoder" and job.name == "rotation"
    kept = load_job(POSITION, ["pretext.name=context", "pretext.params.mode=restore",
                               "mlflow.registered_model=my-encoder", "name=trial"])
    assert kept.pretext.params["mode"] == "restore" and kept.pretext.params["mask_fraction"] == 0.25
    assert kept.mlflow.registered_model == "my-encoder" and kept.name == "trial"
    same = load_job(POSITION, ["pretext.name=position", "pretext.params.box_mm=25"])
    assert same.pretext.params["box_mm"] == 25 and same.mlflow.registered_model == "cardiossl-position-encoder"
    with pytest.raises(ConfigError, match="n_rotations"):  # the new pretext's own config validates params
        load_job(POSITION, ["pretext.name=rotation", "pretext.params={n_rotations: 9}"])


def test_the_home_default_comes_from_one_place(monkeypatch):
    from cardiossl import home

    monkeypatch.delenv("CARDIOSSL_HOME", raising=False)
    monkeypatch.delenv("CARDIOSSL_COHORT", raising=False)
    job = load_job(POSITION)
    assert job.cohort.store == f"{home.DEFAULT_HOME}/cohort.zarr"
    assert job.mlflow.tracking_uri == home.tracking_uri() == f"sqlite:///{home.DEFAULT_HOME}/mlflow.db"
    monkeypatch.setenv("CARDIOSSL_HOME", "/data/h")
    job = load_job(POSITION)
    assert job.checkpoint.storage_path == "/data/h/ray_results" and job.cohort.store == "/data/h/cohort.zarr"
    assert "from CARDIOSSL_HOME" in home.describe() and "/data/h" in home.describe()
    monkeypatch.setenv("CARDIOSSL_COHORT", "/elsewhere/c.zarr")
    assert load_job(POSITION).cohort.store == "/elsewhere/c.zarr"
    for name in ("finetune_fewshot", "benchmark_fewshot", "pretrain_rotation", "pretrain_context"):
        assert ":-/tmp" not in (REPO / "jobs" / f"{name}.yaml").read_text()  # one default, not five
