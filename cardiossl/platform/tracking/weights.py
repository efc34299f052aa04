"""The two folder formats of trained weights: safetensors plus the JSON that rebuilds the modules.

Nothing is unpickled: loading never executes stored code (safetensors holds only tensors).

A pretrained model is a folder::

    model.json            {"format": 1, "backbone": {name, params}, "pretext": {name, params},
                           "decoder_trained": bool, ...}
    encoder.safetensors   backbone.encoder state dict
    decoder.safetensors   backbone.decoder state dict (present whatever was trained; see
                          decoder_trained: only a pretext with a decoder head trains it)
    head.safetensors      the pretext head

A few-shot segmenter is a folder ``model.safetensors`` + ``segmenter.json`` (backbone spec, classes,
grid, normalisation). Both are logged to MLflow runs and registered from there (``models``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..config import FinetuneError

FORMAT_VERSION = 1
N_CLASSES = 4
SEGMENTER_WEIGHTS = "model.safetensors"
SEGMENTER_SPEC = "segmenter.json"
SEGMENTER_FORMAT = "cardiossl-segmenter/1"


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


def build_segmenter(backbone, n_classes: int = N_CLASSES):
    """Backbone (encoder + decoder) + 1x1 segmentation head, as one nn.Module."""
    from cardiossl.backbones import build_head

    class Segmenter(nn.Module):
        """``forward(x) -> logits [B, n_classes, H, W]``."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = build_head("segmentation", in_ch=backbone.decoder.out_channels, n_classes=n_classes)

        def forward(self, x):
            return self.head(self.backbone.decoder(self.backbone.encoder(x)))

    return Segmenter()


def save_segmenter(model, spec: dict, folder: str | os.PathLike, *, mlflow_model: bool = True) -> Path:
    """Write ``model.safetensors`` + ``segmenter.json`` (the config that rebuilds the module), as an
    MLflow pyfunc model around them (``serving``) unless ``mlflow_model`` is False.

    No pickles: loading never executes stored code (safetensors holds only tensors)."""
    from safetensors.torch import save_file

    if mlflow_model:
        import tempfile

        from .serving import save_mlflow_model

        with tempfile.TemporaryDirectory(prefix="cardiossl-seg-") as tmp:
            save_segmenter(model, spec, tmp, mlflow_model=False)
            return save_mlflow_model(tmp, folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (SEGMENTER_WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, folder / SEGMENTER_WEIGHTS)
    (folder / SEGMENTER_SPEC).write_text(json.dumps({"format": SEGMENTER_FORMAT, **spec}, indent=2))
    return folder


def segmenter_from_state(spec: dict, state: dict):
    from cardiossl.backbones import build_backbone

    bb = spec["backbone"]
    model = build_segmenter(build_backbone(bb["name"], **bb.get("params", {})), int(spec.get("n_classes", N_CLASSES)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FinetuneError(
            f"segmenter weights do not match its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.eval()
    return model


def load_segmenter_folder(folder: str | os.PathLike):
    """(model, spec) from a folder written by ``save_segmenter``."""
    from safetensors.torch import load_file

    from .serving import weights_folder

    folder = weights_folder(folder)
    spec_path, w_path = folder / SEGMENTER_SPEC, folder / SEGMENTER_WEIGHTS
    if not spec_path.is_file() or not w_path.is_file():
        raise FinetuneError(
            f"{folder} is not a saved segmenter: expected {SEGMENTER_SPEC} and {SEGMENTER_WEIGHTS} "
            "(written by `cardiossl finetune` / `cardiossl benchmark`)"
        )
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != SEGMENTER_FORMAT:
        raise FinetuneError(f"{spec_path}: unknown format {spec.get('format')!r}; expected {SEGMENTER_FORMAT}")
    return segmenter_from_state(spec, load_file(str(w_path))), spec
