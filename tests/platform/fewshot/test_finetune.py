"""Few-shot fine-tuning on a tiny store: splits, transfer modes, results, saved segmenters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiossl.platform.config import ConfigError, load_job_dict
from cardiossl.platform.config import FinetuneJob
from cardiossl.platform.fewshot.finetune import finetune
from cardiossl.platform.fewshot.init import init_from_loaded, resolve_init
from cardiossl.platform.fewshot.samples import labelled_subjects
from cardiossl.platform.tracking import load_segmenter_folder, save_segmenter

BACKBONE = {"name": "unet", "params": {"depth": 3, "width": 4, "norm": "batch"}}


@pytest.fixture(scope="module")
def store(tiny_store) -> str:
    """conftest's session store: six synthetic subjects, 64x64 grid at 2.5 mm."""
    return str(tiny_store)


def _job(store: str, tmp_path, **over) -> FinetuneJob:
    data = {
        "kind": "finetune", "name": "t", "seed": 0,
        "cohort": {"store": store, "split": {"test": 2, "val": 1, "seed": 0}},
        "init": "scratch", "mode": "all", "n_train": 2, "backbone": BACKBONE,
        "steps": 4, "batch_size": 4, "image_size": 64, "validation": {"every_steps": 2},
        "augment": {"enabled": True}, "device": "cpu",
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    for k, v in over.items():
        data[k] = v
    return load_job_dict(data)


def _pretrained(pretext: dict | None = None):
    """What load_pretrained returns for a freshly initialised backbone (no file needed)."""
    from cardiossl.backbones import build_backbone

    torch.manual_seed(123)
    bb = build_backbone(BACKBONE["name"], **BACKBONE["params"])
    # make the BN running statistics non-default, so "unchanged" is a real check
    with torch.no_grad():
        bb.train()
        bb(torch.randn(4, 1, 64, 64))
    meta = {"backbone": BACKBONE, "pretext": pretext, "decoder_trained": True}
    return init_from_loaded("test", bb, None, meta)


def test_config_rejects_meaningless_combinations(tmp_path):
    with pytest.raises(ConfigError, match="mode: mode 'decoder' freezes a pretrained encoder"):
        _job("/x", tmp_path, mode="decoder")
    with pytest.raises(ConfigError, match="cohort.split.test|test set"):
        _job("/x", tmp_path, cohort={"store": "/x", "split": {"test": 0}})
    with pytest.raises(ConfigError, match="n_train"):
        _job("/x", tmp_path, n_train=0)


# -- training --------------------------------------------------------------------------------
def test_scratch_trial_reports_per_subject_metrics_and_saves(store, tmp_path):
    job = _job(store, tmp_path)
    res = finetune(job, init=None)
    assert labelled_subjects(store) == sorted(res.split["test"] + res.split["val"] + res.split["pool"])
    assert sorted(r["subject_id"] for r in res.per_subject) == res.split["test"]
    assert {r["phase"] for r in res.per_phase} == {"ed", "es"}
    for k in ("test_dice_mean", "test_dice_lv_cavity", "test_hd95_mean"):
        assert np.isfinite(res.metrics[k])
    assert 0.0 <= res.metrics["test_dice_mean"] <= 1.0
    assert res.metrics["n_train_subjects"] == 2 and [h["step"] for h in res.history] == [2, 4]
    # the saved segmenter reloads to the same function, without pickles
    folder = save_segmenter(res.model(), res.spec, tmp_path / "seg")
    assert not list(folder.rglob("*.pt")) and not list(folder.rglob("*.pkl"))
    assert (folder / "MLmodel").is_file() and (folder / "data" / "weights" / "model.safetensors").is_file()
    model, spec = load_segmenter_folder(folder)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), res.model()(x))
    assert spec["image_size"] == 64 and spec["spacing_mm"] == 2.5


def test_channels_last_trains_the_same_function(store, tmp_path):
    """The memory format is a speed choice only: same losses, same validation Dice, same weights
    (up to the rounding of another convolution algorithm), and the saved state is contiguous."""
    kw = dict(steps=3, validation={"every_steps": 1}, augment={"enabled": False})
    a = finetune(_job(store, tmp_path, channels_last=False, **kw), init=None)
    b = finetune(_job(store, tmp_path, channels_last=True, **kw), init=None)
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["seg_loss"] == pytest.approx(hb["seg_loss"], rel=1e-4)
        assert ha["val_dice"] == pytest.approx(hb["val_dice"], abs=1e-3)
    for k, v in a.state_dict.items():
        assert b.state_dict[k].is_contiguous(), k
        if v.is_floating_point():
            assert torch.allclose(v, b.state_dict[k], rtol=1e-3, atol=1e-5), k


def test_decoder_mode_leaves_the_encoder_bit_identical(store, tmp_path):
    init = _pretrained()
    res = finetune(_job(store, tmp_path, init="test-init", mode="decoder"), init=init)
    enc = {k: v for k, v in init.backbone_state.items() if k.startswith("encoder.")}
    assert enc and any("running_mean" in k for k in enc)
    for k, v in enc.items():
        assert torch.equal(res.state_dict[f"backbone.{k}"], v), k
    dec_changed = [k for k, v in init.backbone_state.items()
                   if k.startswith("decoder.") and v.is_floating_point()
                   and not torch.equal(res.state_dict[f"backbone.{k}"], v)]
    assert dec_changed


def test_all_mode_starts_from_the_pretrained_weights_and_trains_them(store, tmp_path):
    init = _pretrained()
    job = _job(store, tmp_path, init="test-init", mode="all", steps=2, validation={"every_steps": 1})
    res = finetune(job, init=init)
    changed = [k for k, v in init.backbone_state.items() if k.startswith("encoder.") and v.is_floating_point()
               and not torch.equal(res.state_dict[f"backbone.{k}"], v)]
    assert changed
    # one step from the pretrained weights stays close to them; a random init would not
    w = "encoder.stages.0.0.weight"
    assert torch.allclose(res.state_dict[f"backbone.{w}"], init.backbone_state[w], atol=0.05)


def test_multitask_adds_the_pretext_loss_on_unlabelled_slices(store, tmp_path):
    init = _pretrained(pretext={"name": "rotation", "params": {}})
    job = _job(store, tmp_path, init="test-init", mode="multitask",
               multitask={"weight": 0.5, "batch_size": 4, "max_slices": 16})
    res = finetune(job, init=init)
    assert all(np.isfinite(h["pretext_loss"]) for h in res.history)
    assert "pretext_loss" in res.history[-1] and res.metrics["n_train_subjects"] == 2


def test_resolve_init_reads_a_saved_pretrained_folder(tmp_path):
    from cardiossl.backbones import build_backbone
    from cardiossl.platform.tracking import save_pretrained

    bb = build_backbone(BACKBONE["name"], **BACKBONE["params"])
    folder = save_pretrained(tmp_path / "pre", bb, None, backbone=BACKBONE,
                             pretext={"name": "rotation", "params": {}}, decoder_trained=False)
    init = resolve_init(str(folder))
    assert init.backbone == BACKBONE and init.pretext["name"] == "rotation"
    assert init.decoder_pretrained is False
    assert torch.equal(init.backbone_state["encoder.stages.0.0.weight"], bb.state_dict()["encoder.stages.0.0.weight"])


def test_decoder_not_pretrained_is_not_loaded(store, tmp_path):
    init = _pretrained()
    init.decoder_pretrained = False
    res = finetune(_job(store, tmp_path, init="x", mode="decoder", steps=1, validation={"every_steps": 1}), init=init)
    k = "decoder.blocks.0.0.weight"
    assert not torch.allclose(res.state_dict[f"backbone.{k}"], init.backbone_state[k])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_runs_the_finetune_yaml(ray_cluster, tiny_store, tmp_path):
    """`ray job submit --working-dir . -- jobs/finetune_fewshot.yaml`: one tracked run, registered."""
    from mlflow import MlflowClient

    from cardiossl.platform.fewshot.predict import load_segmenter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = {"cohort.store": str(tiny_store), "cohort.split": "{test: 2, val: 1, seed: 0}", "n_train": 2,
            "backbone.params": "{depth: 3, width: 4}", "steps": 3, "batch_size": 4, "image_size": 32,
            "validation.every_steps": 1, "mlflow.tracking_uri": uri, "mlflow.experiment": "ft-submit",
            "mlflow.registered_model": "seg-submit", "mlflow.alias": "champion"}
    entry = ["jobs/finetune_fewshot.yaml", "--no-progress"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    status, logs = ray_cluster.submit(entry, f"ft-{tmp_path.name[-12:]}")
    assert status == "SUCCEEDED", logs[-4000:]
    client = MlflowClient(uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ft-submit").experiment_id])
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["test_dice_mean"] <= 1.0
    assert run.data.params["cohort.store"] == str(tiny_store)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/per_subject.csv" in arts
    model, spec = load_segmenter("models:/seg-submit@champion", tracking_uri=uri)
    assert spec["image_size"] == 32 and spec["n_train"] == 2


def test_training_stops_when_validation_dice_stops_improving(store, tmp_path):
    job = _job(store, tmp_path, steps=30, validation={"every_steps": 1, "patience": 2, "min_delta": 1.0})
    res = finetune(job, init=None)
    assert [h["step"] for h in res.history] == [1, 2, 3]  # no gain of 1.0 after the first: stop
    assert res.metrics["best_step"] == 1 and res.metrics["stopped_step"] == 3 and res.metrics["converged"] == 1.0


def test_partial_label_subjects_train_on_their_classes_and_are_scored_on_them(tmp_path):
    """Two subjects annotate LV cavity + myocardium only (as Sunnybrook): training uses the marginal
    loss, and their test rows have no RV score; a split file places them."""
    import json

    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject

    recs = []
    for i in range(5):
        rec = synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1)
        if i in (0, 3):
            for s in rec.slices:
                if s.label is not None:
                    s.label = np.where(s.label == 3, 0, s.label).astype(s.label.dtype)
            rec.meta["label_classes"] = [1, 2]
        recs.append(rec)
    path = tmp_path / "mixed.zarr"
    CohortStore.create(path, grid_size=64, spacing_mm=2.5).write_subjects(recs)
    split = tmp_path / "splits.json"
    split.write_text(json.dumps({"test": ["synth00003", "synth00004"], "val": ["synth00002"]}))
    job = _job(str(path), tmp_path, n_train="all", cohort={"store": str(path), "split": {"file": str(split)}})
    res = finetune(job, init=None)
    assert res.split["test"] == ["synth00003", "synth00004"] and sorted(res.split["train"]) == ["synth00000", "synth00001"]
    assert res.metrics["partial_labels"] == 1.0
    rows = {r["subject_id"]: r for r in res.per_subject}
    assert np.isnan(rows["synth00003"]["dice_rv_cavity"]) and np.isnan(rows["synth00003"]["rv_edv_ml_err"])
    assert np.isfinite(rows["synth00004"]["dice_rv_cavity"]) and np.isfinite(rows["synth00003"]["dice_mean"])


def test_cohort_exclude_removes_subjects_from_the_pool(store, tmp_path):
    from cardiossl.platform.fewshot.finetune import trial_split

    pool = labelled_subjects(store)
    job = _job(store, tmp_path, n_train="all", cohort={"store": store, "split": {"test": 2, "val": 1},
                                                       "exclude": pool[:2]})
    sp = trial_split(job, pool)
    assert not set(pool[:2]) & set(sp["test"] + sp["val"] + sp["train"])
    assert sorted(sp["test"] + sp["val"] + sp["train"]) == pool[2:]


def test_inference_changes_the_test_predictions_not_the_training(store, tmp_path):
    """``inference`` acts after model selection: the same trial trains to the same weights with and
    without it; its test rows count what the largest-component step removed, and the segmenter's
    spec carries it, so the pyfunc segments with the same test-time augmentation."""
    from cardiossl.platform.tracking.serving import SegmenterPyfunc, predict_batches

    kw = dict(steps=3, validation={"every_steps": 1}, augment={"spatial": {"rotation_deg": 180}})
    plain = finetune(_job(store, tmp_path, **kw), init=None)
    tuned = finetune(_job(store, tmp_path, inference={"tta": "rot90"}, **kw), init=None)
    for k, v in plain.state_dict.items():
        assert torch.equal(v, tuned.state_dict[k]), k
    assert [h["val_dice"] for h in plain.history] == [h["val_dice"] for h in tuned.history]
    assert "inference" not in plain.spec and tuned.spec["inference"] == {"tta": "rot90", "largest_component": True}
    structures = ("lv_cavity", "lv_myocardium", "rv_cavity")
    assert all(plain.metrics[f"test_removed_px_{s}"] == 0 for s in structures)
    assert all(np.isfinite(tuned.metrics[f"test_removed_px_{s}"]) for s in structures)
    model, spec = load_segmenter_folder(save_segmenter(tuned.model(), tuned.spec, tmp_path / "seg"))
    x = np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32)
    pyfunc = SegmenterPyfunc(model, spec).predict(x)
    assert pyfunc.shape == (3, 64, 64)
    assert np.array_equal(SegmenterPyfunc(model, {**spec, "inference": None}).predict(x),
                          predict_batches(model, SegmenterPyfunc.normalise(x)[:, None]))
    assert np.array_equal(pyfunc, predict_batches(model, SegmenterPyfunc.normalise(x)[:, None], tta="rot90"))
