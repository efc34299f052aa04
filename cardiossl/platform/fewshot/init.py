"""Pretrained initialisations for fine-tuning: what a registered encoder brings, as plain tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FinetuneError
from ..tracking import load_pretrained


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


def _state_of(module) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def resolve_init(init: str, tracking_uri: str | None = None) -> InitWeights | None:
    """Load a pretrained init with ``cardiossl.platform.tracking.load_pretrained``; None for scratch."""
    if init == "scratch":
        return None
    backbone, head, meta = load_pretrained(init, tracking_uri=tracking_uri)
    return init_from_loaded(init, backbone, head, meta)


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
