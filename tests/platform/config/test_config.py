"""Job YAML validation: every error names the YAML path of the field; overrides validate the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml

from cardiossl.platform.config import (
    ConfigError,
    JobBase,
    PretrainJob,
    config_hash,
    expand_env,
    flatten,
    load_job,
    load_job_dict,
    parse_overrides,
    register_job_kind,
)

REPO = Path(__file__).resolve().parents[3]
JOBS = sorted((REPO / "jobs").glob("pretrain_*.yaml"))


def base() -> dict:
    return {
        "kind": "pretrain",
        "cohort": {"store": "/data/cohort.zarr"},
        "pretext": {"name": "position", "params": {}},
        "steps": 10,
        "checkpoint": {"storage_path": "/tmp/ckpt"},
        "mlflow": {"tracking_uri": "sqlite:////tmp/mlflow.db"},
    }


def problems(data: dict, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_job_dict(data, overrides)
    return exc.value.problems


def test_the_three_pretrain_jobs_exist_are_executable_and_valid():
    names = {p.name for p in JOBS}
    assert {"pretrain_position.yaml", "pretrain_rotation.yaml", "pretrain_context.yaml"} <= names
    for p in JOBS:
        assert p.read_text().splitlines()[0] == "#!/usr/bin/env -S python -m cardiossl.platform.launch"
        assert p.stat().st_mode & 0o111, f"{p.name} is not executable"
        job = load_job(p, env={})
        assert isinstance(job, PretrainJob)
        assert job.pretext.name in p.name
        assert job.cohort.store.startswith("/") and job.checkpoint.storage_path.startswith("/")
        assert job.mlflow.tracking_uri.startswith("sqlite:////")


def test_defaults_are_resolved_and_plugin_params_completed():
    job = load_job_dict(base())
    assert job.pretext.params["target"] == "boxes"  # filled in by PositionPretext.Config
    assert job.pretext.params["box_mm"] > 0
    assert job.backbone.name == "unet"
    assert job.pretext.build().config.target == "boxes"


@pytest.mark.parametrize(
    "override, path, words",
    [
        ("pretext.params.box_mm=-3", "pretext.params.box_mm", "greater than 0"),
        ("pretext.params.boxmm=3", "pretext.params.boxmm", "Extra inputs"),
        ("pretext.name=positon", "pretext.name", "did you mean 'position'"),
        ("optim.lr=fast", "optim.lr", "valid number"),
        ("optim.lr=0", "optim.lr", "greater than 0"),
        ("optim.lrr=1e-3", "optim.lrr", "unknown key"),
        ("optim.name=lamb", "optim.name", "adamw"),
        ("batch_size=0", "batch_size", "greater than or equal to 1"),
        ("checkpoint.storage_path=runs/x", "checkpoint.storage_path", "absolute"),
        ("cohort.store=cohort.zarr", "cohort.store", "absolute"),
        ("mlflow.tracking_uri=sqlite:///mlflow.db", "mlflow.tracking_uri", "four slashes"),
        ("mlflow.tracking_uri=./mlruns", "mlflow.tracking_uri", "unsupported"),
        ("cohort.views=[sa, 5ch]", "cohort.views", "unknown view"),
        ("augment.spatial.scale=[1.2, 0.8]", "augment.spatial.scale", "empty"),
        ("scaling.num_workers=0", "scaling.num_workers", "greater than or equal to 1"),
        ("backbone.params.depth=1", "backbone.params", "depth"),
        ("debug.fail_at_step=0", "debug.fail_at_step", "greater than or equal to 1"),
        ("image_size=40", "image_size", "multiple of 16"),
        ("epochs=2", "(top level)", "exactly one of steps or epochs"),
    ],
)
def test_errors_name_the_yaml_path(override, path, words):
    found = problems(base(), [override])
    assert any(p.startswith(f"{path}:") and words in p for p in found), found


def test_overrides_parse_yaml_values_and_go_through_validation():
    job = load_job_dict(base(), ["optim.lr=3e-4", "cohort.views=[sa, 4ch]", "scaling.use_gpu=true",
                                 "pretext.params.target=lines"])
    assert job.optim.lr == pytest.approx(3e-4)
    assert job.cohort.views == ["sa", "4ch"]
    assert job.scaling.use_gpu is True
    assert job.pretext.params["target"] == "lines"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="not a section"):
        load_job_dict(base(), ["steps.x=1"])


def test_env_expansion_with_nested_defaults():
    env = {"CARDIOSSL_HOME": "/data/h"}
    assert expand_env("${CARDIOSSL_COHORT:-${CARDIOSSL_HOME:-/tmp}/c.zarr}", env) == "/data/h/c.zarr"
    assert expand_env("sqlite:///${CARDIOSSL_HOME:-/tmp}/m.db", {}) == "sqlite:////tmp/m.db"
    assert expand_env({"n": "${N:-3}"}, {}) == {"n": 3}
    with pytest.raises(ConfigError, match="NOPE"):
        expand_env("${NOPE}", {})


def test_resolved_yaml_round_trips_to_the_same_hash(tmp_path):
    job = load_job_dict(base(), ["optim.lr=3e-4"])
    f = tmp_path / "resolved.yaml"
    f.write_text(job.to_yaml())
    again = load_job(f)
    assert again == job
    assert config_hash(again) == job.hash()
    # what decides the weights changes the hash; where they are stored does not
    assert load_job_dict(base(), ["optim.lr=1e-4"]).hash() != job.hash()
    assert load_job_dict(base(), ["optim.lr=3e-4", "checkpoint.storage_path=/elsewhere"]).hash() == job.hash()


@pytest.mark.parametrize("override", [
    "loader.num_workers=3", "loader.prefetch_factor=5", "scaling.num_workers=4", "scaling.use_gpu=true",
    "validation.every_steps=7", "validation.max_batches=3", "cohort.store=/moved/cohort.zarr", "name=other",
    "mlflow.experiment=x", "checkpoint.every_steps=9", "train.compile=true",
])
def test_the_config_hash_ignores_how_and_where_a_run_goes(override):
    """Defect 7: scaling, loader, validation and the store path were in the hash, so changing
    ``loader.num_workers`` or moving the store prevented resuming."""
    job = load_job_dict(base(), ["optim.lr=3e-4"])
    other = load_job_dict(base(), ["optim.lr=3e-4", override])
    assert other.hash() == job.hash() and other.hash("abc") == job.hash("abc")


@pytest.mark.parametrize("override", [
    "optim.lr=1e-3", "pretext.params.box_mm=11", "seed=1", "batch_size=7", "loader.block_size=8",
    "cohort.split.seed=2", "cohort.views=[sa,4ch]", "train.precision=bf16", "steps=99",
])
def test_the_config_hash_covers_what_changes_the_model(override):
    job = load_job_dict(base(), ["optim.lr=3e-4"])
    assert load_job_dict(base(), ["optim.lr=3e-4", override]).hash() != job.hash()


def test_an_unset_augment_appearance_leaves_the_hash_as_it_was_before_the_option():
    """Jobs written before ``augment.appearance`` existed keep their hash (cached trials, resumable
    runs and registered lineage stay valid); setting it changes the hash. The literal is the hash of
    ``base()`` computed by the code before the option was added."""
    job = load_job_dict(base(), [])
    assert job.augment.appearance is None
    assert job.hash() == "76dec41f0a4f793e" and job.hash("a" * 64) == "bc22b759b3d7b152"
    on = load_job_dict(base(), ["augment.appearance={}"])
    assert on.augment.appearance is not None and on.hash() != job.hash()
    assert load_job_dict(base(), ["augment.appearance.p=0.3"]).hash() not in (job.hash(), on.hash())


def test_an_unset_inference_leaves_the_finetune_hash_and_trial_key_as_they_were():
    """``inference`` came after fine-tuning jobs were hashed and their trials cached: unset, the job
    hash and the study's trial key are the literals the code gave before (the trial key as before
    ``augment.appearance`` too, so studies cached then are found again); set, both change."""
    from cardiossl.platform.fewshot.trial_cache import trial_key

    data = {"kind": "finetune", "cohort": {"store": "/data/cohort.zarr", "split": {"test": 2}}, "steps": 10,
            "mlflow": {"tracking_uri": "sqlite:////tmp/mlflow.db"}}
    held = {"test": ["a"], "val": ["b"]}
    job = load_job_dict(data)
    dump = job.model_dump(mode="json")
    assert job.inference is None and dump["augment"]["appearance"] is None
    assert job.hash() == "5447771c3718bbec" and job.hash("a" * 64) == "856a6655dbd9159f"
    assert trial_key(dump, held, ["c"]) == "afde551478b8f10b7bc343b4"
    assert "inference" in dump and "appearance" in dump["augment"]  # the caller's dump is not edited
    on = load_job_dict(data, ["inference={}"])
    assert on.hash() != job.hash()
    assert trial_key(on.model_dump(mode="json"), held, ["c"]) != trial_key(dump, held, ["c"])


def test_rotation_tta_needs_a_model_trained_with_any_orientation():
    data = {"kind": "finetune", "cohort": {"store": "/x.zarr", "split": {"test": 2}},
            "mlflow": {"tracking_uri": "sqlite:////tmp/mlflow.db"}}
    with pytest.raises(ConfigError, match="augment.spatial.rotation_deg: 180"):
        load_job_dict(data, ["inference.tta=rot90"])
    job = load_job_dict(data, ["inference.tta=rot90", "augment.spatial.rotation_deg=180"])
    assert job.inference.tta == "rot90" and job.inference.largest_component
    with pytest.raises(ConfigError, match="inference.tta"):
        load_job_dict(data, ["inference.tta=flip"])


def test_augment_appearance_is_refused_on_the_device_path():
    with pytest.raises(ConfigError, match="augment.on: loader"):
        load_job_dict(base(), ["augment.on=device", "augment.appearance={}"])


def test_the_config_hash_covers_the_data_snapshot():
    job = load_job_dict(base(), [])
    assert job.hash("a" * 64) != job.hash("b" * 64) != job.hash()


def test_bad_yaml_and_bad_kind_are_clear(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kind: pretrain\ncohort: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_job(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="kind"):
        load_job_dict({**base(), "kind": "pretrian"})
    with pytest.raises(ConfigError, match="kind: missing"):
        load_job_dict({k: v for k, v in base().items() if k != "kind"})


def test_other_job_kinds_register_and_share_the_loader():
    @register_job_kind("unit-test-kind")
    class Probe(JobBase):
        kind: Literal["unit-test-kind"] = "unit-test-kind"
        n_labelled: int = 5

    from cardiossl.platform.config import JOB_KINDS

    try:
        data = {k: v for k, v in base().items() if k not in ("pretext", "steps")}
        job = load_job_dict({**data, "kind": "unit-test-kind"}, ["n_labelled=2"])
        assert isinstance(job, Probe) and job.n_labelled == 2
        assert any(p.startswith("n_labelled:") for p in problems({**data, "kind": "unit-test-kind"},
                                                                  ["n_labelled=x"]))
    finally:
        JOB_KINDS.unregister("unit-test-kind")


def test_flatten_for_mlflow_params():
    flat = flatten(load_job_dict(base()).to_dict())
    assert flat["optim.lr"] == pytest.approx(1e-3)
    assert flat["pretext.params.target"] == "boxes"
    assert flat["cohort.views"] == '["sa"]'


def test_cli_validate_reports_paths_and_exit_codes(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(yaml.safe_dump(base()))
    cmd = [sys.executable, "-m", "cardiossl.platform.cli", "validate", str(f)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "valid pretrain job" in ok.stdout
    bad = subprocess.run(cmd + ["--set", "pretext.params.box_mm=-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "pretext.params.box_mm:" in bad.stderr


def test_cohort_exclude_and_split_file_in_every_job_kind(tmp_path):
    """Ids or an absolute split-file path; a relative path is refused naming the field."""
    from cardiossl.platform.config import load_job

    jobs = REPO / "jobs"
    for name in ("pretrain_position.yaml", "finetune_fewshot.yaml", "benchmark_fewshot.yaml"):
        job = load_job(jobs / name, [f"cohort.exclude={tmp_path}/splits.json", "cohort.store=/x"])
        assert job.cohort.exclude == f"{tmp_path}/splits.json"
        job = load_job(jobs / name, ["cohort.exclude=[a, b]", "cohort.store=/x",
                                     f"cohort.split.file={tmp_path}/s.json"])
        assert job.cohort.exclude == ["a", "b"] and job.cohort.split.file == f"{tmp_path}/s.json"
        with pytest.raises(ConfigError, match="cohort.exclude"):
            load_job(jobs / name, ["cohort.exclude=splits.json", "cohort.store=/x"])
