"""`cardiossl plugins list` / `show NAME`: every registered pretext, backbone, head and reader, where it
came from, and a plugin's parameters with their defaults and help.

A third-party plugin that cannot be loaded is listed as broken, with its package and the error, and
skipped; every other plugin is still listed (and usable). Exit code 1 when any is broken.
"""

from __future__ import annotations

import json

import typer


REGISTRIES = {
    "pretext": ("cardiossl.pretexts", "PRETEXTS"),
    "backbone": ("cardiossl.backbones", "BACKBONES"),
    "head": ("cardiossl.backbones", "HEADS"),
    "reader": ("cardiossl.datasets.readers", "READERS"),
}


def collect() -> tuple[list[dict], list[str], list[dict]]:
    """(rows of kind/name/source/description, errors of registries that failed to load, broken plugins)."""
    import importlib
    import warnings

    from cardiossl.registry import PluginWarning, RegistryError, describe

    rows, errors, broken = [], [], []
    for kind, (module, attr) in REGISTRIES.items():
        try:
            registry = getattr(importlib.import_module(module), attr)
            with warnings.catch_warnings():  # listed below instead
                warnings.simplefilter("ignore", PluginWarning)
                entries = registry.entries()
        except (ImportError, AttributeError, RegistryError) as exc:
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        for e in entries:
            rows.append({"kind": kind, "name": e.name, "source": e.source, "description": describe(e.obj)})
        broken += [{"kind": kind, "name": b.name, "source": b.source, "error": b.error} for b in registry.load_errors]
    return rows, errors, broken


def _type_name(annotation) -> str:
    import typing

    if annotation is None:
        return ""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in args)
    name = getattr(annotation, "__name__", None)
    return name if name and not args else str(annotation).replace("typing.", "")


def plugin_params(obj) -> list[dict]:
    """``[{name, type, default, help}]``: a plugin's ``Config`` (pydantic) fields, else the fields of its
    ``params_model`` (with its ``param_defaults``), else its signature."""
    import inspect

    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    model = getattr(obj, "Config", None)
    overrides: dict = {}
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        model, overrides = getattr(obj, "params_model", None), dict(getattr(obj, "param_defaults", {}) or {})
    if isinstance(model, type) and issubclass(model, BaseModel):
        rows = []
        for name, f in model.model_fields.items():
            default = overrides.get(name, f.default)
            if default is PydanticUndefined:
                default = f.default_factory() if f.default_factory is not None else "(required)"
            rows.append({"name": name, "type": _type_name(f.annotation), "default": default,
                         "help": f.description or ""})
        return rows
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [{"name": n, "type": _type_name(p.annotation) if p.annotation is not p.empty else "",
             "default": "(required)" if p.default is p.empty else p.default, "help": ""}
            for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]


def find_plugin(name: str, kind: str | None = None) -> tuple[list[dict], list[str]]:
    """(matching rows of ``collect()`` with their objects, registry errors)."""
    import importlib

    rows, errors, _ = collect()
    hits = [r for r in rows if r["name"] == name and (kind is None or r["kind"] == kind)]
    for r in hits:
        module, attr = REGISTRIES[r["kind"]]
        r["obj"] = getattr(importlib.import_module(module), attr).get(name)
    return hits, errors


def register(app: typer.Typer) -> None:
    plugins = typer.Typer(help="Registered plugins (pretexts, backbones, heads, readers).", no_args_is_help=True)

    @plugins.command("list")
    def list_plugins(
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        kind: str = typer.Option(None, "--kind", help="only this kind: pretext, backbone, head or reader"),
    ) -> None:
        """List every registered plugin with its source (module, or entry point and package)."""
        rows, errors, broken = collect()
        if kind:
            rows = [r for r in rows if r["kind"] == kind]
            broken = [b for b in broken if b["kind"] == kind]
        if as_json:
            typer.echo(json.dumps({"plugins": rows, "broken": broken, "errors": errors}, indent=2))
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table(show_lines=False)
            for col in ("kind", "name", "source", "description"):
                table.add_column(col, overflow="fold")
            for r in rows:
                table.add_row(r["kind"], r["name"], r["source"], r["description"])
            console = Console(width=max(Console().width, 160))
            console.print(table)
            for b in broken:
                console.print(f"[red]broken {b['kind']} plugin[/red] {b['name']} ({b['source']}): {b['error']} "
                              "(skipped; fix or uninstall that package)", highlight=False, soft_wrap=True)
            for e in errors:
                console.print(f"[red]error[/red] {e}")
        if errors or broken:
            raise typer.Exit(1)

    @plugins.command("show")
    def show_plugin(
        name: str = typer.Argument(..., help="plugin name, as in `cardiossl plugins list`"),
        kind: str = typer.Option(None, "--kind", help="pretext, backbone, head or reader (when a name is in several)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
    ) -> None:
        """A plugin's description, source and parameters (type, default, help): what `params:` may hold."""
        import inspect

        from cardiossl.registry import plain_doc

        hits, errors = find_plugin(name, kind)
        if not hits:
            import difflib

            rows, _, _ = collect()
            names = sorted({r["name"] for r in rows if kind is None or r["kind"] == kind})
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            typer.echo(f"error: no {kind or 'plugin'} named {name!r}{hint} Known: {', '.join(names)}", err=True)
            for e in errors:
                typer.echo(f"error {e}", err=True)
            raise typer.Exit(2)
        if len(hits) > 1:
            typer.echo(f"error: {name!r} names a {' and a '.join(h['kind'] for h in hits)}; add --kind", err=True)
            raise typer.Exit(2)
        hit = hits[0]
        params = plugin_params(hit["obj"])
        doc = plain_doc(inspect.getdoc(hit["obj"]) or "")
        if as_json:
            typer.echo(json.dumps({"kind": hit["kind"], "name": name, "source": hit["source"], "doc": doc,
                                   "params": params}, indent=2, default=str))
            return
        typer.echo(f"{hit['kind']} {name}  ({hit['source']})")
        if doc:
            typer.echo("\n" + doc + "\n")
        if not params:
            typer.echo("no parameters")
            return
        width = max(len(p["name"]) for p in params)
        typer.echo("parameters (YAML: params: {name: value}):")
        for p in params:
            default = p["default"] if p["default"] == "(required)" else json.dumps(p["default"], default=str)
            typer.echo(f"  {p['name']:<{width}}  {p['type']} = {default}" + (f"\n  {'':<{width}}  {p['help']}"
                                                                           if p["help"] else ""))

    app.add_typer(plugins, name="plugins")
