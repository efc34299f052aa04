"""`cardiossl plugins list`: every registered pretext, backbone, head and reader, and where it came from.

A third-party plugin that cannot be loaded is listed as broken, with its package and the error, and
skipped; every other plugin is still listed (and usable). Exit code 1 when any is broken.
"""

from __future__ import annotations

import json

import typer


def collect() -> tuple[list[dict], list[str], list[dict]]:
    """(rows of kind/name/source/description, errors of registries that failed to load, broken plugins)."""
    import importlib
    import warnings

    from cardiossl.registry import PluginWarning, RegistryError, describe

    registries = [
        ("pretext", "cardiossl.pretexts", "PRETEXTS"),
        ("backbone", "cardiossl.backbones", "BACKBONES"),
        ("head", "cardiossl.backbones", "HEADS"),
        ("reader", "cardiossl.datasets.readers", "READERS"),
    ]
    rows, errors, broken = [], [], []
    for kind, module, attr in registries:
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

    app.add_typer(plugins, name="plugins")
