"""The MLflow Model Registry: register weight folders logged to a run, resolve and load them back.

A pretrained model is logged to its MLflow run as the artifact folder ``pretrained`` and registered
as a model version whose source is that folder; a segmenter likewise as ``segmenter``.
``load_pretrained("models:/NAME@ALIAS")`` downloads the folder and rebuilds the modules from the
registries (``weights``): loading never executes pickled code (``mlflow.pytorch``'s pickle format
would; its pt2 format loses the class)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .runs import mlflow_client
from .weights import ModelLoadError, load_pretrained_dir


ARTIFACT_PATH = "pretrained"


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_model_dir(ref: str, tracking_uri: str | None = None, dst: str | os.PathLike | None = None) -> Path:
    """Download (or locate) the model folder for ``ref``:

    ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/pretrained``, a bare run id,
    or a local folder."""
    if os.path.isdir(ref):
        return Path(ref)
    import mlflow

    if _RUN_ID.match(ref):
        ref = f"runs:/{ref}/{ARTIFACT_PATH}"
    if not ref.startswith(("models:/", "runs:/")):
        raise ModelLoadError(
            f"cannot load {ref!r}: use models:/NAME@ALIAS, models:/NAME/VERSION, a run id, "
            "runs:/RUN_ID/pretrained or a local folder"
        )
    dst = str(dst) if dst is not None else tempfile.mkdtemp(prefix="cardiossl-model-")
    try:
        if ref.startswith("models:/"):
            mv = model_version(ref, tracking_uri)
            run_path = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=dst,
                                                           tracking_uri=tracking_uri)
        else:
            run_path = mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=dst,
                                                           tracking_uri=tracking_uri)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot fetch {ref!r} from {tracking_uri or mlflow.get_tracking_uri()}: "
                             f"{type(exc).__name__}: {exc}") from exc
    return Path(run_path)


def model_version(ref: str, tracking_uri: str | None = None):
    """The registry's ModelVersion of ``models:/NAME@ALIAS`` | ``models:/NAME/VERSION`` |
    ``models:/NAME/latest`` (its ``version`` pins what an alias pointed at, its ``run_id`` the run)."""
    client = mlflow_client(tracking_uri)
    name, version = _parse_models_uri(ref)
    if version.startswith("@"):
        return client.get_model_version_by_alias(name, version[1:])
    if version.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ModelLoadError(f"{ref!r}: registered model {name!r} has no versions")
        return max(versions, key=lambda m: int(m.version))
    return client.get_model_version(name, version)


def _parse_models_uri(ref: str) -> tuple[str, str]:
    body = ref[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, "@" + alias
    if "/" in body:
        name, version = body.rsplit("/", 1)
        return name, version
    raise ModelLoadError(f"{ref!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def load_pretrained(ref: str, tracking_uri: str | None = None, map_location: str | torch.device = "cpu",
                    with_head: bool = True) -> tuple[nn.Module, nn.Module | None, dict]:
    """``(backbone, head, config)`` for ``models:/NAME@ALIAS`` | ``models:/NAME/VERSION`` | run id |
    ``runs:/ID/pretrained`` | a local folder. ``config`` is model.json (backbone and pretext specs,
    ``decoder_trained``, the step and validation metrics at save time)."""
    with tempfile.TemporaryDirectory(prefix="cardiossl-model-") as tmp:
        d = resolve_model_dir(ref, tracking_uri, dst=None if os.path.isdir(ref) else tmp)
        backbone, head, meta = load_pretrained_dir(d, map_location, with_head)
    meta["source"] = ref
    return backbone, head, meta


PRETRAINED_DESCRIPTION = ("cardiossl pretrained backbones: encoder, decoder and pretext head as safetensors "
                          "+ model.json; load with cardiossl.platform.tracking.load_pretrained")
SEGMENTER_DESCRIPTION = ("cardiossl short-axis segmenters (LV cavity, LV myocardium, RV cavity): an MLflow pyfunc "
                         "model whose weights are safetensors + segmenter.json; `cardiossl predict`, "
                         "mlflow.pyfunc.load_model or `mlflow models serve --env-manager local`")


def resolve_version(ref: str, tracking_uri: str | None = None) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/latest`` -> ``models:/NAME/VERSION`` (what the alias
    points at now, so a record names the weights actually used); other references unchanged."""
    if not ref.startswith("models:/"):
        return ref
    name, version = _parse_models_uri(ref)
    client = mlflow_client(tracking_uri)
    try:
        if version.startswith("@"):
            version = str(client.get_model_version_by_alias(name, version[1:]).version)
        elif version.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelLoadError(f"{ref!r}: registered model {name!r} has no versions")
            version = str(max(int(m.version) for m in versions))
        else:
            client.get_model_version(name, version)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot resolve {ref!r} in {tracking_uri}: {type(exc).__name__}: {exc}") from exc
    return f"models:/{name}/{version}"


def register_pretrained(tracking_uri: str, run_id: str, name: str, *, alias: str | None = None,
                        tags: dict[str, Any] | None = None, description: str | None = None,
                        artifact_path: str = ARTIFACT_PATH, model_description: str = PRETRAINED_DESCRIPTION) -> str:
    """Register the run's ``pretrained`` folder as a new version of ``name``; set ``alias``.

    Returns the version. The source is the run's artifact folder, so the registry never holds a
    pickled model. ``model_description`` describes the registered model when this creates it."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        client.create_registered_model(name, description=model_description)
    except MlflowException as exc:
        if "already exists" not in str(exc) and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    mv = client.create_model_version(
        name, source=source, run_id=run_id,
        tags={k: str(v) for k, v in (tags or {}).items()}, description=description,
    )
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def register_segmenter(tracking_uri: str, run_id: str, artifact_path: str, name: str, alias: str | None,
                       tags: dict | None = None) -> str:
    """Register ``runs:/RUN/<artifact_path>`` (safetensors + segmenter.json) as a version of
    ``name`` with ``alias``; returns the version."""
    return register_pretrained(tracking_uri, run_id, name, alias=alias, tags=tags,
                               description=f"few-shot SA segmenter, run {run_id}",
                               artifact_path=artifact_path, model_description=SEGMENTER_DESCRIPTION)
