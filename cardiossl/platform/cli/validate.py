"""`cardiossl validate FILE.yaml [--set k=v]`: check a job file without running it."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        job: str = typer.Argument(..., help="job YAML (any kind: pretrain, finetune, benchmark)"),
        set_: list[str] = typer.Option([], "--set", help="override KEY=VALUE, validated like the file"),
        show: bool = typer.Option(False, "--show", help="print the resolved YAML (defaults filled in)"),
        plugin: list[str] = typer.Option([], "--plugin", help="import MODULE first (it registers plugins); repeatable"),
    ) -> None:
        """Validate a job YAML (types, ranges, plugin params, absolute paths) and print its summary.

        This checks the file; whether the job can run (store, split, models, workers) is checked
        by `pretrain`/`finetune`/`benchmark` before they create anything."""
        from cardiossl.platform.config import ConfigError, load_job
        from cardiossl.platform.runtime import import_plugin_modules

        try:
            import_plugin_modules(plugin)
            cfg = load_job(job, set_)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if show:
            typer.echo(cfg.to_yaml())
        typer.echo(f"ok: {job} is a valid {cfg.kind} job (config hash {cfg.hash()})")
