"""pydantic validation errors as one line per problem, each starting with the field's YAML path."""

from __future__ import annotations

from pydantic import ValidationError

from .base import short


def _loc_str(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds the validator's name for union/function branches ("function-after[...]")
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p and "]" in p)))


def format_validation_error(exc: ValidationError, prefix: tuple = ()) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + _clean_loc(tuple(err["loc"]))
        ctx = err.get("ctx") or {}
        if err["type"] == "plugin_params":
            for sub in ctx["errors"]:
                sub_loc = loc + ("params",) + tuple(sub["loc"])
                lines.append(f"{_loc_str(sub_loc)}: {sub['msg']}" + (f" (got {sub['input']})" if sub.get("input") and "Extra inputs" not in sub["msg"] and "unknown parameter" not in sub["msg"] else ""))
            continue
        if "field" in ctx:
            loc = loc + (ctx["field"],)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section; check the spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif err["type"] == "assertion_error" and msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, "):]
        if err["type"] not in ("extra_forbidden", "missing", "unknown_plugin", "plugin_params", "value_error") \
                and "input" in err:
            if not isinstance(err["input"], dict | list):
                msg += f" (got {short(err['input'])})"
        lines.append(f"{_loc_str(loc)}: {msg}")
    return lines
