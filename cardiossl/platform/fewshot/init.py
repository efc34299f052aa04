"""Pretrained initialisations for fine-tuning: what a registered encoder brings, as plain tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FinetuneError
from ..tracking import load_pretrained, resolve_version


@dataclass
class InitWeights:
    """What a pretrained init brings: backbone weights and (optionally) its pretext and head.

    Plain tensors and JSON-able specs, so the study driver resolves a registered model once and
    ships it to every Ray task (tasks never touch the tracking database)."""

    source: str
    backbone: dict  # {"name", "params"}
    backbone_state: dict  # state dict of the backbone (encoder.* and possibly decoder.*)
    decoder_pretrained: bool
    pretext: dict | None = None  # {"name", "params"}
    head_state: dict | None = None
    info: dict = field(default_factory=dict)
    resolved: str | None = None  # models:/NAME/VERSION an alias pointed at when it was loaded


def _state_of(module) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def resolve_init(init: str, tracking_uri: str | None = None) -> InitWeights | None:
    """Load a pretrained init with ``cardiossl.platform.tracking.load_pretrained``; None for scratch.

    An alias (``models:/NAME@current``) is resolved to the version it points at first, and that
    version is what is loaded and recorded (``InitWeights.resolved``): the alias may move later."""
    if init == "scratch":
        return None
    resolved = resolve_version(init, tracking_uri)
    backbone, head, meta = load_pretrained(resolved, tracking_uri=tracking_uri)
    weights = init_from_loaded(init, backbone, head, meta)
    weights.resolved = resolved
    return weights


def init_from_loaded(source: str, backbone, head, meta: dict) -> InitWeights:
    """InitWeights from ``load_pretrained``'s (backbone, head, model.json)."""
    if "backbone" not in meta:
        raise FinetuneError(f"{source}: model.json has no backbone spec")
    return InitWeights(
        source=source,
        backbone={"name": meta["backbone"]["name"], "params": dict(meta["backbone"].get("params") or {})},
        backbone_state=_state_of(backbone),
        decoder_pretrained=bool(meta.get("decoder_trained", True)),
        pretext=meta.get("pretext"),
        head_state=_state_of(head) if head is not None else None,
        info={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
    )
