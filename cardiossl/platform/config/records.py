"""A job as a record: its resolved YAML, the hash of what decides the weights, flat MLflow params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel


def job_to_yaml(job: BaseModel) -> str:
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


def config_hash(job: BaseModel, exclude: tuple[str, ...] = ("mlflow", "checkpoint", "debug", "progress")) -> str:
    """Hash of what decides the learned weights (not where they are stored, how often progress is shown
    or how many workers)."""
    data = job.model_dump(mode="json", exclude=set(exclude))
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
