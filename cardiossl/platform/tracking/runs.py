"""MLflow runs on the driver: a client bound to one store, runs created and finished, the job record,
and the identity of what ran (git commit, cohort fingerprint hash)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import flatten


def mlflow_client(tracking_uri: str | None):
    """An MlflowClient whose Model Registry is the same store as its tracking URI.

    Without an explicit ``registry_uri`` MLflow takes the registry from process-wide state
    (``mlflow.set_registry_uri``, the environment), so a client could read another database's registry."""
    from mlflow import MlflowClient

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
    """CARDIOSSL_GIT_COMMIT, else ``git rev-parse HEAD`` (+ "-dirty"), else "unknown"."""
    env = os.environ.get("CARDIOSSL_GIT_COMMIT")
    if env:
        return env
    import subprocess

    for where in [search_from, os.getcwd(), Path(__file__).resolve().parents[3]]:
        if where is None:
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
