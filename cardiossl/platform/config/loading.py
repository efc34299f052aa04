"""Reading a job: ``yaml.safe_load``, ``--set a.b=c`` overrides on the raw mapping, ``${VAR:-default}``
expansion, then validation by the model registered for the YAML's ``kind``."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cardiossl.home import with_defaults

from .base import ConfigError
from .errors import format_validation_error
from .jobs import JobBase, _job_class


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}")  # innermost first


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set and has no default (${{{name}:-...}})")

        out, prev = value, None
        while out != prev:  # nested defaults: ${A:-${B:-/tmp}/x}
            prev, out = out, _ENV.sub(sub, out)
        if out != value and value.startswith("${") and value.endswith("}") and "/" not in value:
            # a whole-value substitution may be a number or bool: parse it like YAML would
            try:
                parsed = yaml.safe_load(out)
            except yaml.YAMLError:
                return out
            return parsed if isinstance(parsed, int | float | bool) else out
        return out
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["optim.lr=3e-4", "cohort.views=[sa,4ch]"]`` -> [(path, value)]; values parsed as YAML."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key part in {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.problem})") from None
        out.append((key.split("."), value))
    return out


def apply_overrides(data: dict, overrides: list[tuple[list[str], Any]] | list[str] | None) -> dict:
    """Set each dotted path in a copy of the raw mapping; the result goes through full validation."""
    if overrides and isinstance(overrides[0], str):
        overrides = parse_overrides(overrides)  # type: ignore[arg-type]
    data = copy.deepcopy(data)
    for path, value in overrides or []:
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {'.'.join(path)}: {where} is not a valid list index") from None
                continue
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict | list):
                raise ConfigError(f"--set {'.'.join(path)}: {where} is a value ({nxt!r}), not a section")
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"--set {'.'.join(path)}: not a valid list index") from None
        else:
            node[last] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"job file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(p)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a job file must be a mapping of sections (kind, cohort, ...)", source=str(p))
    return data


def switch_pretext(original: dict, data: dict, overrides: list[tuple[list[str], Any]]) -> dict:
    """``--set pretext.name=rotation`` on a position job means a rotation job: the params of the
    old pretext are dropped (the new one starts from its own defaults, plus any ``pretext.params.*``
    given with it) unless ``pretext.params`` is set as a whole, and a job name or registered model
    named after the old pretext (``cardiossl-position-encoder``) is renamed after the new one
    unless set too."""
    old = (original.get("pretext") or {}).get("name")
    new = (data.get("pretext") or {}).get("name")
    if not isinstance(old, str) or not isinstance(new, str) or old == new:
        return data
    given = {".".join(path) for path, _ in overrides}
    if "pretext.params" not in given:
        data["pretext"]["params"] = {}
        data = apply_overrides(data, [(p, v) for p, v in overrides if ".".join(p).startswith("pretext.params.")])
    if "name" not in given and data.get("name") == old:
        data["name"] = new
    mlflow = data.get("mlflow")
    if (isinstance(mlflow, dict) and "mlflow.registered_model" not in given
            and isinstance(mlflow.get("registered_model"), str)):
        model = mlflow["registered_model"]
        mlflow["registered_model"] = re.sub(rf"(?<![A-Za-z0-9]){re.escape(old)}(?![A-Za-z0-9])", new, model)
    return data


def load_job_dict(data: dict, overrides=None, source: str | None = None, env: dict | None = None) -> JobBase:
    """Validate a raw mapping (after overrides and ``${VAR}`` expansion) into its job model."""
    if overrides and isinstance(overrides[0], str):
        overrides = parse_overrides(overrides)
    original = data
    data = apply_overrides(data, overrides)
    data = switch_pretext(original, data, overrides or [])
    data = expand_env(data, with_defaults(env))  # ${CARDIOSSL_HOME} defaults as cardiossl.home says
    cls = _job_class(data.get("kind"))
    try:
        job = cls.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc)
        raise ConfigError(
            f"{len(problems)} problem(s):\n  " + "\n  ".join(problems), source=source, problems=problems
        ) from None
    return job


def load_job(path: str | os.PathLike, overrides: list[str] | None = None, env: dict | None = None) -> JobBase:
    """Read ``path`` (yaml.safe_load), apply ``--set`` overrides, validate; raise ConfigError."""
    return load_job_dict(read_yaml(path), overrides, source=str(path), env=env)
