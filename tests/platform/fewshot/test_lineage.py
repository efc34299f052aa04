"""What a fine-tuning run records: the version an alias resolved to, a name that says which trial it
is, the lineage tags every run carries, the segmenter's own description and provenance; and a job
that cannot run leaves no run behind."""

from __future__ import annotations

import pytest
import torch

from cardiossl.platform import tracking
from cardiossl.platform.config import ConfigError, load_job_dict
from cardiossl.platform.fewshot.finetune import run_finetune_job

BACKBONE = {"name": "unet", "params": {"depth": 3, "width": 4, "norm": "batch"}}


def _job(store, uri, **over):
    data = {"kind": "finetune", "name": "t", "seed": 0,
            "cohort": {"store": str(store), "split": {"test": 2, "val": 1, "seed": 0}},
            "init": "scratch", "mode": "all", "n_train": 2, "backbone": BACKBONE, "steps": 2, "batch_size": 4,
            "image_size": 64, "validation": {"every_steps": 2}, "device": "cpu",
            "mlflow": {"tracking_uri": uri, "experiment": "lineage", "registered_model": "seg-l", "alias": "current"}}
    data.update(over)
    return load_job_dict(data)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A position encoder registered twice; @current points at version 2."""
    from cardiossl.backbones import build_backbone
    from cardiossl.pretexts import build_pretext

    root = tmp_path_factory.mktemp("lineage")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run_id = tracking.create_run(uri, "pretrain", "enc")
    torch.manual_seed(0)
    bb = build_backbone(BACKBONE["name"], **BACKBONE["params"])
    pre = build_pretext("position")
    folder = tracking.save_pretrained(root / "enc", bb, pre.build_head(bb), backbone=BACKBONE,
                                      pretext={"name": "position", "params": pre.config.model_dump(mode="json")})
    tracking.MlflowTracker(run_id, uri).log_artifacts(str(folder), "pretrained")
    for _ in range(2):
        tracking.register_pretrained(uri, run_id, "enc", alias="current")
    return uri


def test_a_finetune_run_records_the_resolved_version_and_its_lineage(tiny_store, encoder):
    client = tracking.mlflow_client(encoder)
    a = run_finetune_job(_job(tiny_store, encoder, init="models:/enc@current"), progress=False, say=lambda *x: None)
    b = run_finetune_job(_job(tiny_store, encoder), progress=False, say=lambda *x: None)
    ra, rb = client.get_run(a["run_id"]), client.get_run(b["run_id"])
    assert ra.data.tags["init"] == "models:/enc@current" and ra.data.tags["init_resolved"] == "models:/enc/2"
    assert ra.data.params["init_resolved"] == "models:/enc/2"
    assert ra.info.run_name.startswith("t-position-all-N2-seed0-") and rb.info.run_name.startswith("t-scratch-all-N2")
    for run in (ra, rb):
        assert run.data.tags["kind"] == "finetune" and run.data.tags["git_commit"] not in ("", "unknown")
    model = client.get_registered_model("seg-l")
    assert model.description == tracking.models.SEGMENTER_DESCRIPTION  # not the encoders' description
    mv = client.get_model_version("seg-l", a["model_version"])
    assert mv.tags["init_resolved"] == "models:/enc/2" and mv.tags["kind"] == "finetune"
    from cardiossl.platform.fewshot.predict import load_with_provenance

    _, spec, prov = load_with_provenance(f"models:/seg-l/{a['model_version']}", encoder)
    assert spec["training"]["cohort_kind"] == "synthetic" and spec["training"]["init_resolved"] == "models:/enc/2"
    assert prov["version"] == a["model_version"] and prov["run_id"] == a["run_id"]


def test_a_finetune_that_cannot_run_creates_no_run(tiny_store, encoder):
    client = tracking.mlflow_client(encoder)
    exp = client.get_experiment_by_name("lineage")
    before = len(client.search_runs([exp.experiment_id])) if exp else 0
    with pytest.raises(ConfigError, match="init: .*enc@nope"):
        run_finetune_job(_job(tiny_store, encoder, init="models:/enc@nope"), progress=False)
    with pytest.raises(ConfigError, match="n_train"):
        run_finetune_job(_job(tiny_store, encoder, n_train=50), progress=False)
    with pytest.raises(ConfigError, match="cohort.store: /nonexistent/c.zarr does not exist"):
        run_finetune_job(_job("/nonexistent/c.zarr", encoder), progress=False)
    exp = client.get_experiment_by_name("lineage")
    assert (len(client.search_runs([exp.experiment_id])) if exp else 0) == before


def test_git_commit_of_an_editable_checkout_outside_it(tmp_path, monkeypatch):
    from cardiossl.platform.tracking import runs

    monkeypatch.delenv("CARDIOSSL_GIT_COMMIT", raising=False)
    monkeypatch.chdir(tmp_path)  # a `ray job submit` copy of the working dir: no .git
    runs._git_commit.cache_clear()
    sha = runs.git_commit()
    assert len(sha.split("-")[0]) == 40  # found through the package or its editable install
    monkeypatch.setattr(runs, "Path", lambda *a: tmp_path / "copy" / "cardiossl" / "platform" / "tracking" / "x.py")
    runs._git_commit.cache_clear()
    assert runs._editable_checkout() and runs.git_commit() == sha
    runs._git_commit.cache_clear()


def test_pretrain_run_names_say_what_changed():
    from pathlib import Path

    from cardiossl.platform.config import load_job
    from cardiossl.platform.launch import run_name_for

    job = load_job(Path(__file__).resolve().parents[3] / "jobs" / "pretrain_position.yaml")
    sets = ["steps=2000", "optim.lr=3e-4", "cohort.store=/x/y.zarr", "mlflow.tracking_uri=sqlite:////x"]
    name = run_name_for(job, sets)
    assert name.startswith("position-steps=2000-lr=3e-4-2") and "store" not in name and "tracking" not in name
    assert run_name_for(job, sets) != name  # distinct even within one second
