"""What every config section shares: strict models, the error type, paths-or-URIs, plugin-error helpers."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A job file that cannot run; one line per problem, each starting with the field's YAML path."""

    def __init__(self, message: str, source: str | None = None, problems: list[str] | None = None):
        self.source = source
        self.problems = problems or [message]
        super().__init__(f"{source}: {message}" if source else message)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def absolute_or_uri(value: str, what: str) -> str:
    if is_uri(value):
        if value.startswith("file://"):
            path = value[len("file://"):]
            if not path.startswith("/"):
                raise ValueError(f"{what} must be absolute, got {value!r}")
        return value
    if not os.path.isabs(value):
        raise ValueError(
            f"{what} must be an absolute path or a URI (s3://, gs://, ...), got {value!r}: a Ray job "
            "runs in a temporary copy of the working directory, so relative paths land nowhere useful"
        )
    return os.path.normpath(value)


def plugin_errors(exc: ValidationError) -> list[dict]:
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "input": short(e.get("input"))}
        for e in exc.errors()
    ]


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def params_error(kind: str, name: str, errors: list[dict]) -> PydanticCustomError:
    return PydanticCustomError(
        "plugin_params",
        "invalid params for {kind} {name!r}",
        {"kind": kind, "name": name, "errors": errors},
    )
