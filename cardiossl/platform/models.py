"""Pretrained weights as safetensors plus the JSON that rebuilds the modules: nothing unpickled.

A pretrained model is a folder::

    model.json            {"format": 1, "backbone": {name, params}, "pretext": {name, params},
                           "decoder_trained": bool, ...}
    encoder.safetensors   backbone.encoder state dict
    decoder.safetensors   backbone.decoder state dict (present whatever was trained; see
                          decoder_trained: only a pretext with a decoder head trains it)
    head.safetensors      the pretext head

It is logged to the MLflow run as the artifact folder ``pretrained`` and registered as a model
version whose source is that folder. ``load_pretrained("models:/NAME@ALIAS")`` downloads the
folder and rebuilds the modules from the registries: loading never executes pickled code
(``mlflow.pytorch``'s pickle format would; its pt2 format loses the class).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1
ARTIFACT_PATH = "pretrained"


class ModelLoadError(ValueError):
    """A model reference or folder that cannot be loaded; the message says what is missing."""


def _parts(backbone: nn.Module) -> dict[str, nn.Module]:
    if hasattr(backbone, "encoder") and hasattr(backbone, "decoder"):
        return {"encoder": backbone.encoder, "decoder": backbone.decoder}
    return {"backbone": backbone}


def _save(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def save_pretrained(directory: str | os.PathLike, backbone_module: nn.Module, head: nn.Module | None = None,
                    *, backbone: dict, pretext: dict | None = None, decoder_trained: bool = True,
                    extra: dict | None = None) -> Path:
    """Write the folder described in the module docstring; return its path.

    ``backbone``/``pretext`` are ``{"name", "params"}`` specs that rebuild the modules."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, module in _parts(backbone_module).items():
        _save(module, d / f"{part}.safetensors")
        files[part] = f"{part}.safetensors"
    if head is not None:
        _save(head, d / "head.safetensors")
        files["head"] = "head.safetensors"
    meta = {
        "format": FORMAT_VERSION,
        "backbone": {"name": backbone["name"], "params": dict(backbone.get("params") or {})},
        "pretext": None if pretext is None else {"name": pretext["name"], "params": dict(pretext.get("params") or {})},
        "decoder_trained": bool(decoder_trained),
        "files": files,
        **(extra or {}),
    }
    (d / "model.json").write_text(json.dumps(meta, indent=1, default=str))
    return d


def load_pretrained_dir(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                        with_head: bool = True) -> tuple[nn.Module, nn.Module | None, dict]:
    """Rebuild (backbone, head, config) from a folder written by ``save_pretrained``."""
    from safetensors.torch import load_file

    from cardiossl.backbones import build_backbone

    d = Path(directory)
    meta_path = d / "model.json"
    if not meta_path.is_file():
        raise ModelLoadError(f"{d} holds no model.json: not a cardiossl pretrained model folder")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{meta_path}: format {meta.get('format')!r}, this cardiossl reads {FORMAT_VERSION}")
    backbone = build_backbone(meta["backbone"]["name"], **meta["backbone"]["params"])
    for part, module in _parts(backbone).items():
        f = d / meta["files"].get(part, f"{part}.safetensors")
        if not f.is_file():
            raise ModelLoadError(f"{d}: missing {f.name}")
        module.load_state_dict(load_file(str(f), device=str(map_location)))
    head = None
    if with_head and meta.get("pretext") and "head" in meta["files"]:
        from cardiossl.pretexts import PRETEXTS

        pretext = PRETEXTS.get(meta["pretext"]["name"])(meta["pretext"]["params"])
        head = pretext.build_head(backbone)
        head.load_state_dict(load_file(str(d / meta["files"]["head"]), device=str(map_location)))
        head.to(map_location)
    backbone.to(map_location)
    return backbone, head, meta


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
            from .tracking import mlflow_client

            client = mlflow_client(tracking_uri)
            name, version = _parse_models_uri(ref)
            if version.startswith("@"):
                mv = client.get_model_version_by_alias(name, version[1:])
            elif version.lower() == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise ModelLoadError(f"{ref!r}: registered model {name!r} has no versions")
                mv = max(versions, key=lambda m: int(m.version))
            else:
                mv = client.get_model_version(name, version)
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


def register_pretrained(tracking_uri: str, run_id: str, name: str, *, alias: str | None = None,
                        tags: dict[str, Any] | None = None, description: str | None = None,
                        artifact_path: str = ARTIFACT_PATH) -> str:
    """Register the run's ``pretrained`` folder as a new version of ``name``; set ``alias``.

    Returns the version. The source is the run's artifact folder, so the registry never holds a
    pickled model."""
    from mlflow.exceptions import MlflowException

    from .tracking import mlflow_client

    client = mlflow_client(tracking_uri)
    try:
        client.create_registered_model(name, description="cardiossl pretrained backbones (safetensors + model.json)")
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
