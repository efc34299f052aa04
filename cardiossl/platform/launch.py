"""Driver of a pretraining job: validate -> MLflow run -> Ray TorchTrainer.fit -> Model Registry.

Runs three ways, one code path:

* ``cardiossl pretrain jobs/pretrain_position.yaml [--set k=v ...]`` joins the cluster named by
  ``--address`` / RAY_ADDRESS, else a running local one, else starts a local Ray instance;
* ``ray job submit --working-dir . -- jobs/pretrain_position.yaml [--set k=v ...]``: the YAML's
  first line ``#!/usr/bin/env -S python -m cardiossl.platform.launch`` makes it executable, so the
  job supervisor runs this module with the YAML path;
* ``python -m cardiossl.platform.launch FILE.yaml``.

Before anything is created the job passes the preflight (``preflight``: the store, its views, the
split, the batch size; the plugins, asked of the cluster itself), so a job that cannot run fails
with one message and no MLflow run, instead of three Ray Train restarts. The MLflow run is created
here, before any worker starts, and its id is handed to rank 0: a failed worker group restarts into
the same run (FailureConfig), and a re-submitted job with the same ``checkpoint.run_name`` resumes
both the Ray Train run and the MLflow run. The workers' environment carries ``CARDIOSSL_HOME`` and
ships plugins registered from Python (``runtime``).

The cohort store is read here once, as a snapshot (its committed parts, subjects and content hash):
the split is computed from it, and both go to every worker, into every checkpoint, into the run
record and into MLflow as the run's dataset input. Nothing committed to the store later reaches
the run; a resume whose store has changed is refused unless ``checkpoint.allow_new_snapshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from cardiossl import home

from .config import ConfigError, PretrainJob, load_job
from .preflight import check_pretrain, check_workers_know, open_store
from .runtime import import_plugin_modules, init_ray, plugin_modules

RUN_RECORD = "cardiossl_run.json"


@dataclass
class LaunchResult:
    run_id: str
    run_name: str
    storage_path: str
    tracking_uri: str
    model_version: str | None
    metrics: dict
    checkpoint_path: str | None


def _storage_fs(storage_path: str):
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    return fs, root


def _read_record(storage_path: str, run_name: str) -> dict | None:
    import pyarrow.fs

    fs, root = _storage_fs(storage_path)
    path = f"{root.rstrip('/')}/{run_name}/{RUN_RECORD}"
    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _write_record(storage_path: str, run_name: str, record: dict) -> None:
    fs, root = _storage_fs(storage_path)
    folder = f"{root.rstrip('/')}/{run_name}"
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/{RUN_RECORD}") as f:
        f.write(json.dumps(record, indent=1).encode())


def pretrain_identity(job: PretrainJob, snapshot=None) -> dict[str, str]:
    """The tags that identify a pretrained model: the config hash (with the data) and the cohort's
    content hash. ``snapshot``: the cohort as the run read it (default: the store as it is now)."""
    from .tracking import fingerprint_hash

    snapshot = snapshot or open_store(job.cohort.store).snapshot()
    return {"config_hash": job.hash(snapshot.content_hash),
            "cohort_fingerprint": fingerprint_hash({"content_hash": snapshot.content_hash})}


def _resume_snapshot(job: PretrainJob, record: dict, live, run_name: str, storage: str):
    """The snapshot a resumed run continues on: its own, unless the store changed and the job allows it."""
    from cardiossl.datasets.store import Snapshot

    if "snapshot" not in record or "job_hash" not in record:
        raise ConfigError(
            f"checkpoint.run_name: {run_name!r} under {storage} was started by a cardiossl that did not pin "
            "its cohort snapshot; choose a new run_name to start fresh"
        )
    if record["job_hash"] != job.hash():
        raise ConfigError(
            f"checkpoint.run_name: {run_name!r} under {storage} was started with another config "
            f"(hash {record['job_hash']}, this one {job.hash()}); choose a new run_name to start fresh"
        )
    pinned = Snapshot.from_dict(record["snapshot"])
    if pinned.content_hash == live.content_hash:
        return pinned, record.get("splits")
    if not job.checkpoint.allow_new_snapshot:
        raise ConfigError(
            f"checkpoint.run_name: {run_name!r} started on cohort snapshot {pinned.content_hash[:16]}; the store "
            f"now holds {live.content_hash[:16]} ({live.difference(pinned)}). Resuming would train on other "
            "data under the same run: choose a new run_name, or resume on the new data with "
            "--set checkpoint.allow_new_snapshot=true (cardiossl pretrain --allow-new-snapshot)"
        )
    return live, None


def subjects_record(job: PretrainJob, splits: dict[str, list[str]]) -> dict:
    """The subjects a pretraining run uses, as logged to MLflow (``cohort/subjects.json``): its
    train / val / test groups after ``cohort.exclude``, and ``seen`` = train + val with its hash (the
    model version's ``subjects_hash`` tag), so a study can check an encoder never saw its test subjects."""
    from cardiossl.datasets.splits import subjects_hash

    seen = sorted(set(splits["train"]) | set(splits["val"]))
    return {**{k: sorted(v) for k, v in splits.items()}, "seen": seen, "subjects_hash": subjects_hash(seen)}


class ClusterError(RuntimeError):
    """The Ray cluster cannot be reached or refuses this client (its token, most often)."""


def _init_ray(address: str | None, **kwargs) -> None:
    """``runtime.init_ray``; a cluster that cannot be joined, or refuses this client, is a ClusterError
    that names the token when this client has none."""
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():
        return
    try:
        init_ray(address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if _ray_token_available():
            hint = "check the address, that the cluster is running and that it uses this client's Ray token"
        else:
            hint = ("this client has no Ray token, and clusters with token authentication (the default) refuse "
                    "it: give it the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, "
                    "with RAY_AUTH_MODE=token; docs/training.md)")
        raise ClusterError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS') or 'local'}: "
                           f"{hint} ({first})") from None


def _ray_token_available() -> bool:
    """Whether this process would present a Ray token (Ray's own lookup order)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return False
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return os.path.isfile(path) if path else os.path.isfile(os.path.expanduser("~/.ray/auth_token"))


def run_name_for(job: PretrainJob, overrides: list[str] | None = None) -> str:
    """``<job name>-<key overrides>-<time>-<6 hex>``: distinct, and says what changed from the YAML."""
    keys = []
    for item in overrides or []:
        key, _, value = item.partition("=")
        leaf = key.strip().split(".")[-1]
        if leaf in ("store", "storage_path", "tracking_uri", "experiment", "run_name", "registered_model"):
            continue  # where things go, not what runs
        value = "".join(c if c.isalnum() or c in ".-" else "_" for c in value.strip())[:16]
        keys.append(f"{leaf}={value}")
    label = "-".join([job.name, *keys[:4]])[:90]
    return f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"


def _plugin_entries(job: PretrainJob):
    from cardiossl.backbones import BACKBONES
    from cardiossl.pretexts import PRETEXTS

    return [PRETEXTS.entry(job.pretext.name), BACKBONES.entry(job.backbone.name)]


def launch(job: PretrainJob, *, address: str | None = None, register: bool = True,
           quiet: bool = False, verbose: bool = False, overrides: list[str] | None = None) -> LaunchResult:
    """Run ``job`` on Ray and return what landed in MLflow. Raises ConfigError, before creating
    anything, when the job cannot run. ``quiet``: no progress lines and no driver chatter;
    ``verbose``: Ray's own INFO logs too."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from . import tracking
    from .tracking import register_pretrained
    from .training import ray_train_loop

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if not isinstance(job, PretrainJob):
        raise ConfigError(f"kind: {job.kind!r} jobs are not pretraining jobs; use the matching command")
    if quiet:
        job = job.model_copy(update={"progress": job.progress.model_copy(update={"every_steps": 0})})
    say(f"cardiossl: {home.describe()}")

    # preflight: nothing is created before the job is known to be able to run ----------------------
    store = open_store(job.cohort.store)
    snapshot = store.snapshot()  # the one read of the store's state for this run
    storage = job.checkpoint.storage_path
    uri = job.mlflow.tracking_uri

    run_name = job.checkpoint.run_name
    record = _read_record(storage, run_name) if run_name else None
    splits = None
    if record is not None:
        snapshot, splits = _resume_snapshot(job, record, snapshot, run_name, storage)
    found = check_pretrain(job, snapshot=snapshot, splits=splits)
    splits = found["splits"]
    subjects = subjects_record(job, splits)
    say(f"cardiossl: cohort {found['store']}: {found['subjects']['train']} training / "
        f"{found['subjects']['val']} validation subjects, {found['train_slices']} training slices")
    modules, ship = plugin_modules(_plugin_entries(job))
    # before anything is written: a cluster that refuses us leaves no run behind
    _init_ray(address, py_modules=ship, verbose=verbose, say=say)
    check_workers_know({"cardiossl.pretexts:PRETEXTS": [job.pretext.name],
                        "cardiossl.backbones:BACKBONES": [job.backbone.name]}, modules)
    fingerprint = dict(store.current_fingerprint(snapshot)[0])
    fp_hash = tracking.fingerprint_hash(fingerprint)
    cfg_hash = job.hash(snapshot.content_hash)
    new_record = {"config_hash": cfg_hash, "job_hash": job.hash(), "tracking_uri": uri,
                  "snapshot": snapshot.to_dict(), "splits": splits}

    # the run ---------------------------------------------------------------------------------------
    if record is not None:
        run_id = record["run_id"]
        say(f"cardiossl: resuming Ray Train run {run_name} and MLflow run {run_id}")
        tracking.mlflow_client(uri).update_run(run_id, status="RUNNING")
        if record["snapshot"]["content_hash"] != snapshot.content_hash:  # allowed by the job: say so everywhere
            driver_tracker = tracking.MlflowTracker(run_id, uri)
            driver_tracker.set_tags({"cohort_fingerprint": fp_hash, "config_hash": cfg_hash,
                                     "cohort_snapshot": snapshot.content_hash})
            tracking.log_snapshot_input(driver_tracker, snapshot, context="training-resumed")
            _write_record(storage, run_name, {**record, **new_record, "resumed_on_new_snapshot": time.time()})
            say(f"cardiossl: continuing on the store's new snapshot {snapshot.content_hash[:16]} (allowed)")
    else:
        run_name = run_name or run_name_for(job, overrides)
        tags = tracking.lineage_tags(job.kind, pretext=job.pretext.name, cohort_fingerprint=fp_hash,
                                     config_hash=cfg_hash, ray_run_name=run_name,
                                     cohort_snapshot=snapshot.content_hash,
                                     cohort_subjects=len(snapshot.subject_ids),
                                     subjects_hash=subjects["subjects_hash"], n_subjects_seen=len(subjects["seen"]))
        run_id = tracking.create_run(uri, job.mlflow.experiment, job.mlflow.run_name or run_name, tags,
                                     artifact_location=job.mlflow.artifact_location)
        driver_tracker = tracking.MlflowTracker(run_id, uri)
        tracking.log_job_record(driver_tracker, job, fingerprint)
        tracking.log_snapshot_input(driver_tracker, snapshot)
        driver_tracker.log_dict({"snapshot": snapshot.to_dict(), "splits": splits}, "cohort/snapshot.json")
        driver_tracker.log_dict(subjects, "cohort/subjects.json")
        if job.cohort.split.file:
            driver_tracker.log_artifact(job.cohort.split.file, "cohort")
        _write_record(storage, run_name, {"run_id": run_id, **new_record, "created": time.time()})
    say(f"cardiossl: cohort snapshot {snapshot.content_hash[:16]}: {len(snapshot.parts)} parts, "
        f"{len(snapshot.subject_ids)} subjects (train {len(splits['train'])}, val {len(splits['val'])}, "
        f"test {len(splits['test'])})")
    run_dir = f"{storage.rstrip('/')}/{run_name}"
    say(f"cardiossl: MLflow run {run_id} in experiment {job.mlflow.experiment!r} at {uri}")
    say(f"cardiossl: checkpoints under {run_dir}")
    if job.progress.every_steps:
        say(f"cardiossl: a progress line every {job.progress.every_steps} steps (progress.every_steps; "
            f"--quiet for none); metrics to MLflow every {job.mlflow.log_every_steps}")

    sc = job.scaling
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"job": job.to_dict(), "run_id": run_id, "tracking_uri": uri, "run_dir": run_dir,
                           "snapshot": snapshot.to_dict(), "splits": splits,
                           "plugin_modules": modules, "verbose": verbose},
        torch_config=TorchConfig(backend=sc.torch_backend()),
        scaling_config=ray.train.ScalingConfig(
            num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=sc.ray_resources(),
            placement_strategy=sc.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=job.checkpoint.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=job.checkpoint.num_to_keep),
            # Ray Train's INFO lines (resource requests, checkpoint paths, every TrainingReport)
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
    )
    try:
        result = trainer.fit()
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    err = getattr(result, "error", None)
    if err is not None:
        tracking.finish_run(uri, run_id, "FAILED")
        raise err

    version = None
    if register and job.mlflow.registered_model:
        tags = tracking.lineage_tags(
            job.kind,
            pretext=job.pretext.name,
            pretext_params=json.dumps(job.pretext.params, sort_keys=True),
            backbone=job.backbone.name,
            cohort_fingerprint=fp_hash,
            config_hash=cfg_hash,
            subjects_hash=subjects["subjects_hash"],
            n_subjects_seen=len(subjects["seen"]),
            decoder_trained=str(bool(job.pretext.build().uses_decoder)).lower(),
            step=str(int(result.metrics.get("step", 0))) if result.metrics else "",
            ray_run_name=run_name,
        )
        version = register_pretrained(uri, run_id, job.mlflow.registered_model, alias=job.mlflow.alias,
                                      tags=tags, description=f"{job.pretext.name} pretraining, run {run_id}")
        say(f"cardiossl: registered models:/{job.mlflow.registered_model}/{version}"
            + (f" (alias @{job.mlflow.alias})" if job.mlflow.alias else ""))
    tracking.finish_run(uri, run_id, "FINISHED")
    ckpt = getattr(result, "checkpoint", None)
    say(f"cardiossl: done. Look at it with:\n  {tracking.ui_command(uri)}")
    return LaunchResult(run_id, run_name, storage, uri, version, dict(result.metrics or {}),
                        ckpt.path if ckpt is not None else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cardiossl-launch",
        description="Run a cardiossl pretraining job YAML on Ray (local or the cluster in RAY_ADDRESS).",
    )
    p.add_argument("job", help="job YAML (kind: pretrain)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, validated like the file (repeatable): --set optim.lr=3e-4")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    p.add_argument("--no-register", action="store_true", help="do not register the encoder")
    p.add_argument("--allow-new-snapshot", action="store_true",
                   help="resume checkpoint.run_name although the cohort store changed since it started")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers plugins; shipped to the workers); repeatable")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines, only errors and the summary")
    p.add_argument("--verbose", "-v", action="store_true", help="Ray's own INFO logs as well")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = args.overrides + (["checkpoint.allow_new_snapshot=true"] if args.allow_new_snapshot else [])
    try:
        import_plugin_modules(args.plugins)
        job = load_job(args.job, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(job, PretrainJob):
        print(f"error: {args.job}: kind {job.kind!r} is not run by this launcher", file=sys.stderr)
        return 2
    try:
        res = launch(job, address=args.address, register=not args.no_register, quiet=args.quiet,
                     verbose=args.verbose, overrides=args.overrides)
    except (ConfigError, ClusterError, ValueError) as exc:  # ValueError: StoreError, SplitError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from ray.train import TrainingFailedError

        if not isinstance(exc, TrainingFailedError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: training failed on the workers ({first}); their traceback is above, the MLflow "
              "run is marked FAILED", file=sys.stderr)
        return 1
    print(json.dumps({"run_id": res.run_id, "run_name": res.run_name, "model_version": res.model_version,
                      "tracking_uri": res.tracking_uri, "storage": f"{res.storage_path}/{res.run_name}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
