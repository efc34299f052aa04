"""``pretext:`` and ``backbone:`` sections: a registered plugin by name, its params validated by the plugin's own Config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cardiossl.registry import Registry, RegistryError

from .base import StrictModel, params_error, plugin_errors


class PluginSpec(StrictModel):
    """A registered plugin by name plus its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _pretext_registry() -> Registry:
    from cardiossl.pretexts import PRETEXTS

    return PRETEXTS


def _backbone_registry() -> Registry:
    from cardiossl.backbones import BACKBONES

    return BACKBONES


class PretextSpec(PluginSpec):
    """``pretext: {name, params}``; params are validated (and completed with defaults) by the
    plugin's own ``Config`` model."""

    @model_validator(mode="after")
    def _validate_params(self) -> PretextSpec:
        try:
            cls = _pretext_registry().get(self.name)
        except RegistryError as exc:
            raise PydanticCustomError("unknown_plugin", "{msg}", {"msg": str(exc), "field": "name"})
        cfg_model = getattr(cls, "Config", None)
        if cfg_model is None:
            return self
        try:
            cfg = cfg_model.model_validate(self.params)
        except ValidationError as exc:
            raise params_error("pretext", self.name, plugin_errors(exc)) from None
        object.__setattr__(self, "params", cfg.model_dump(mode="json"))
        return self

    def build(self):
        """Instantiate the pretext plugin with its validated params."""
        cls = _pretext_registry().get(self.name)
        return cls(self.params)


class BackboneSpec(PluginSpec):
    """``backbone: {name, params}``; params are checked against the factory's Config model when
    it has one, else against its signature."""

    name: str = "unet"

    @model_validator(mode="after")
    def _validate_params(self) -> BackboneSpec:
        try:
            factory = _backbone_registry().get(self.name)
        except RegistryError as exc:
            raise PydanticCustomError("unknown_plugin", "{msg}", {"msg": str(exc), "field": "name"})
        cfg_model = getattr(factory, "Config", None)
        if isinstance(cfg_model, type) and issubclass(cfg_model, BaseModel):
            try:
                cfg = cfg_model.model_validate(self.params)
            except ValidationError as exc:
                raise params_error("backbone", self.name, plugin_errors(exc)) from None
            object.__setattr__(self, "params", cfg.model_dump(mode="json"))
            return self
        import inspect

        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            return self
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        if accepts_any:
            # No declared schema: building the module is the only complete check (milliseconds).
            try:
                factory(**self.params)
            except (TypeError, ValueError) as exc:
                raise params_error("backbone", self.name, [{"loc": [], "msg": str(exc), "input": ""}]) from None
        else:
            known = [
                n
                for n, p in sig.parameters.items()
                if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            bad = [k for k in self.params if k not in known]
            if bad:
                raise params_error(
                    "backbone",
                    self.name,
                    [
                        {"loc": [k], "msg": f"unknown parameter; accepted: {', '.join(known) or '(none)'}",
                         "input": ""}
                        for k in bad
                    ],
                )
        return self

    def build(self):
        from cardiossl.backbones import build_backbone

        return build_backbone(self.name, **self.params)
