"""MLflow runs on the driver: a client bound to one store, runs created and finished, the job record,
and the identity of what ran (git commit, cohort fingerprint hash)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from ..config import flatten


def quiet_mlflow_logs() -> None:
    """MLflow announces every database it creates or migrates at INFO (``Creating initial MLflow
    database tables...``, alembic's ``Context impl SQLiteImpl``), and its system-metrics monitor its
    start and the missing GPU: routine, and it reads like trouble. Warnings and errors still show."""
    import logging

    for name in ("mlflow.store.db.utils", "mlflow.store.sqlalchemy", "alembic", "alembic.runtime.migration",
                 "mlflow.system_metrics"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ui_command(tracking_uri: str) -> str:
    """How to look at a tracking store: ``mlflow ui`` with one worker for a sqlite file (the default
    four take half a minute to start on a small machine and a local file needs no more), else the URL."""
    if tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {tracking_uri} --workers 1"
    return f"open {tracking_uri}"


def mlflow_client(tracking_uri: str | None):
    """An MlflowClient whose Model Registry is the same store as its tracking URI.

    Without an explicit ``registry_uri`` MLflow takes the registry from process-wide state
    (``mlflow.set_registry_uri``, the environment), so a client could read another database's registry."""
    from mlflow import MlflowClient

    quiet_mlflow_logs()

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<folder of the sqlite db>/mlartifacts`` for a sqlite URI; None (the server decides) else.

    MLflow's own default for a database store is ``./mlruns`` under the *current* directory, which
    inside a Ray job is a temporary copy of the working directory that disappears with the job."""
    if tracking_uri.startswith("sqlite:////"):
        return str(Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None


def create_run(tracking_uri: str, experiment: str, run_name: str | None = None,
               tags: dict | None = None, artifact_location: str | None = None) -> str:
    """Create (or reuse) the experiment and a new run; return its id. Driver only."""
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(
            experiment, artifact_location=artifact_location or default_artifact_location(tracking_uri))
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()})
    return run.info.run_id


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    mlflow_client(tracking_uri).set_terminated(run_id, status=status)


def log_job_record(tracker, job, fingerprint: dict | None = None, extra_params: dict | None = None) -> None:
    """Params (the resolved config, flattened), the resolved YAML, the cohort fingerprint."""
    params = flatten(job.to_dict())
    params.update(extra_params or {})
    tracker.log_params(params)
    tracker.log_text(job.to_yaml(), "job/resolved.yaml")
    if fingerprint is not None:
        tracker.log_dict(fingerprint, "cohort/fingerprint.json")



def git_commit(search_from: str | os.PathLike | None = None) -> str:
    """CARDIOSSL_GIT_COMMIT, else ``git rev-parse HEAD`` (+ "-dirty") of the checkout cardiossl runs
    from, else "unknown".

    The checkout is looked for where the code was imported from, in the current directory, and
    where an editable install points (``direct_url.json``): a ``ray job submit --working-dir .``
    job runs a copy without ``.git``, but the virtual environment that runs it was installed from
    the checkout."""
    env = os.environ.get("CARDIOSSL_GIT_COMMIT")
    if env:
        return env
    return _git_commit(None if search_from is None else str(search_from), os.getcwd())


@functools.lru_cache(maxsize=8)
def _git_commit(search_from: str | None, cwd: str) -> str:
    import subprocess

    for where in [search_from, Path(__file__).resolve().parents[3], cwd, _editable_checkout()]:
        if where is None or not os.path.isdir(where):
            continue
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                 timeout=10)
            if sha.returncode != 0:
                continue
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                   capture_output=True, text=True, timeout=10)
            return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def _editable_checkout() -> str | None:
    """The folder an editable ``pip install -e`` of cardiossl points at (PEP 610 direct_url.json)."""
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    for dist in distributions(name="cardiossl"):  # a stray egg-info on sys.path may come first
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except (ValueError, OSError):
            continue
        url = info.get("url", "")
        if (info.get("dir_info") or {}).get("editable") and url.startswith("file://"):
            return unquote(urlparse(url).path)
    return None


def lineage_tags(kind: str, **extra) -> dict[str, str]:
    """The tags every run and registered version carries, under one set of names: ``kind``
    (pretrain, finetune, benchmark, finetune-trial), ``git_commit``, ``cardiossl_version``, and
    ``extra`` (config_hash, cohort_fingerprint, pretext, init, ...)."""
    from cardiossl import __version__

    tags = {"kind": kind, "git_commit": git_commit(), "cardiossl_version": __version__}
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def fingerprint_hash(fingerprint: dict) -> str:
    """The cohort's identity for tags: its content hash (the same data gives the same hash, however
    and whenever it was ingested); for a fingerprint from before content hashes, a hash of its
    content without the time it was written."""
    if fingerprint.get("content_hash"):
        return str(fingerprint["content_hash"])[:16]
    import hashlib

    data = {k: v for k, v in fingerprint.items() if k not in ("updated_at", "parts")}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def log_snapshot_input(tracker, snapshot, context: str = "training") -> None:
    """The cohort snapshot as the run's MLflow dataset input: digest = the content hash (its first 32
    hex digits, the length MLflow stores), source = the store, profile = counts and the full hash."""
    if not getattr(tracker, "active", False):
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=f"cohort:{Path(snapshot.store).name}",
        digest=snapshot.content_hash[:32],
        source_type="local",
        source=json.dumps({"uri": snapshot.store}),
        profile=json.dumps(snapshot.summary()),
    )
    tracker.client.log_inputs(tracker.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])
