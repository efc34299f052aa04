"""A job as a record: its resolved YAML, the hash of what decides the weights, flat MLflow params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel


def job_to_yaml(job: BaseModel) -> str:
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


# Fields of every job that do not change the learned weights: where things are stored and logged,
# how the work is spread. Each job kind adds its own (``JobBase.NOT_IN_HASH``); everything else of a
# job is in its hash. The weights depend on the data too: that enters as the snapshot's content
# hash, never as the store's path.
NOT_IN_HASH = (
    "name",  # a label for runs and folders
    "mlflow", "checkpoint", "debug", "progress",  # where results go, resuming, fault injection, progress lines
    "scaling",  # workers and placement (a run may resume on other hardware; the checkpoint keeps the world size)
    "cohort.store",  # the store's location (its content is the snapshot hash)
)


# Options added after jobs were hashed: left out of the hash while unset, so a job that does not use
# one keeps the hash (and its cached trials, resumable runs and model lineage) it had before.
HASHED_ONLY_WHEN_SET = ("augment.appearance", "inference")


def _get(data: dict, dotted: str, default=None):
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _drop(data: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in data:
        return
    if rest:
        if isinstance(data[head], dict):
            _drop(data[head], rest)
    else:
        del data[head]


def drop_unset_options(data: dict) -> dict:
    """``data`` (a job's JSON dump) without the ``HASHED_ONLY_WHEN_SET`` options that are unset; in place."""
    for dotted in HASHED_ONLY_WHEN_SET:
        if _get(data, dotted, default=0) is None:
            _drop(data, dotted)
    return data


def config_hash(job: BaseModel, snapshot_hash: str | None = None, exclude: tuple[str, ...] | None = None) -> str:
    """Hash of exactly what decides the learned weights: the job minus its kind's ``NOT_IN_HASH``,
    and the content hash of the cohort snapshot it trains on (``docs/training.md`` lists both sides).

    Changing ``loader.num_workers``, ``scaling``, the validation cadence or moving the store leaves it
    unchanged, so such a run still resumes; changing the learning rate, a pretext parameter or the
    data (another snapshot) changes it."""
    data = job.model_dump(mode="json")
    for dotted in exclude if exclude is not None else getattr(job, "NOT_IN_HASH", NOT_IN_HASH):
        _drop(data, dotted)
    drop_unset_options(data)
    if snapshot_hash is not None:
        data["__snapshot__"] = snapshot_hash
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value} (lists kept as their JSON text), for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        key = prefix[:-1]
        out[key] = json.dumps(data) if isinstance(data, list | tuple) else data
    return out
