"""Pretrained weights: safetensors + JSON round trip; the registry alias loads back what trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cardiossl.backbones import build_backbone
from cardiossl.platform.tracking import (
    ModelLoadError,
    load_pretrained,
    load_pretrained_dir,
    register_pretrained,
    save_pretrained,
)
from cardiossl.pretexts import PRETEXTS

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[3]


def _modules(pretext="position", params=None):
    torch.manual_seed(0)
    backbone = build_backbone("unet", depth=3, width=4)
    pre = PRETEXTS.get(pretext)(params or {})
    head = pre.build_head(backbone)
    # make BatchNorm buffers non-trivial so a missing buffer would show
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(4, 1, 32, 32))
    return backbone.eval(), head.eval(), pre


def test_safetensors_round_trip_reproduces_outputs(tmp_path):
    backbone, head, pre = _modules()
    x = torch.randn(2, 1, 32, 32)
    ref = pre.forward(backbone, head, x)
    save_pretrained(tmp_path, backbone, head, backbone={"name": "unet", "params": {"depth": 3, "width": 4}},
                    pretext={"name": "position", "params": pre.config.model_dump(mode="json")},
                    decoder_trained=True, extra={"step": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decoder.safetensors", "encoder.safetensors", "head.safetensors", "model.json"]
    b2, h2, meta = load_pretrained_dir(tmp_path)
    assert meta["step"] == 7 and meta["decoder_trained"] is True
    assert torch.equal(pre.forward(b2.eval(), h2.eval(), x), ref)
    # no pickle anywhere: every weight file is safetensors, the rest JSON
    for p in tmp_path.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), p.name


def test_broken_folders_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="model.json"):
        load_pretrained_dir(tmp_path)
    backbone, head, _ = _modules("rotation")
    save_pretrained(tmp_path, backbone, head, backbone={"name": "unet", "params": {"depth": 3, "width": 4}},
                    pretext={"name": "rotation", "params": {}}, decoder_trained=False)
    (tmp_path / "encoder.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="encoder.safetensors"):
        load_pretrained_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="models:/NAME@ALIAS"):
        load_pretrained("not-a-reference")


def test_registry_alias_and_run_id_load_the_same_weights(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    backbone, head, pre = _modules()
    folder = tmp_path / "m"
    save_pretrained(folder, backbone, head, backbone={"name": "unet", "params": {"depth": 3, "width": 4}},
                    pretext={"name": "position", "params": pre.config.model_dump(mode="json")})
    client.log_artifacts(run_id, str(folder), "pretrained")
    v1 = register_pretrained(uri, run_id, "enc", alias="current", tags={"pretext": "position"})
    v2 = register_pretrained(uri, run_id, "enc", alias="current")
    assert (v1, v2) == ("1", "2")
    mv = client.get_model_version_by_alias("enc", "current")
    assert str(mv.version) == "2" and mv.run_id == run_id
    assert client.get_model_version("enc", "1").tags["pretext"] == "position"
    x = torch.randn(1, 1, 32, 32)
    ref = pre.forward(backbone, head, x)
    import mlflow

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    for ref_str in ("models:/enc@current", "models:/enc/1", "models:/enc/latest", run_id):
        b, h, meta = load_pretrained(ref_str, tracking_uri=uri)
        assert torch.equal(pre.forward(b.eval(), h.eval(), x), ref), ref_str
        assert meta["source"] == ref_str
    # Loading from one tracking URI must not redirect later clients of another process-wide.
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before


def test_registered_encoder_reproduces_the_logged_validation_metric(tiny_store, tmp_path):
    """Train locally into a real MLflow run, register, load by alias, re-evaluate: same number."""
    from mlflow import MlflowClient

    from cardiossl.platform import tracking
    from cardiossl.platform.config import load_job
    from cardiossl.platform.training import (
        LocalSession,
        PretextModel,
        evaluate,
        log_training_outputs,
        make_dataset,
        make_loader,
        make_sampler,
        run_pretraining,
        split_cohort,
    )

    torch.set_num_threads(1)
    job = load_job(REPO / "jobs" / "pretrain_context.yaml", tiny_pretrain_overrides(tiny_store, tmp_path, "context"))
    uri = job.mlflow.tracking_uri
    run_id = tracking.create_run(uri, job.mlflow.experiment, "t")
    tr = tracking.MlflowTracker(run_id, uri)
    res = run_pretraining(job, LocalSession(tmp_path / "run"), tr)
    log_training_outputs(tr, job, res)
    version = register_pretrained(uri, run_id, "ctx-enc", alias="current")
    # artifacts live beside the database, not under whatever the current directory was
    assert (tmp_path / "mlartifacts").is_dir()
    assert str(tmp_path / "mlartifacts") in MlflowClient(uri, registry_uri=uri).get_run(run_id).info.artifact_uri
    client = MlflowClient(uri, registry_uri=uri)
    logged = client.get_run(run_id).data.metrics  # latest value per key
    assert logged["val/loss"] == pytest.approx(res.val_metrics["loss"])
    arts = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/validation_predictions.png" in arts

    backbone, head, meta = load_pretrained("models:/ctx-enc@current", tracking_uri=uri)
    assert meta["val_metrics"]["loss"] == pytest.approx(logged["val/loss"])
    pre = PRETEXTS.get(meta["pretext"]["name"])(meta["pretext"]["params"])
    model = PretextModel(backbone, head, pre)

    class _S:  # one process, rank 0
        world_rank, world_size = 0, 1

    ds = make_dataset(job, split_cohort(job)["val"], pre, train=False)
    loader = make_loader(ds, make_sampler(ds, job, _S, shuffle=False, drop_last=False), job.batch_size, job,
                         torch.device("cpu"), drop_last=False)
    again = evaluate(model, pre, loader, torch.device("cpu"), max_batches=job.validation.max_batches)
    assert again["loss"] == pytest.approx(logged["val/loss"], rel=1e-6)
    assert version == "1"
    assert json.loads(json.dumps(meta))["backbone"]["name"] == "unet"
