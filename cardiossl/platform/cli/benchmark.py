"""`cardiossl benchmark FILE.yaml [--set k=v]`: the few-shot comparison study as one job."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("benchmark")
    def benchmark(
        job: str = typer.Argument(..., help="study job YAML (kind: benchmark)"),
        set_: list[str] = typer.Option([], "--set", help="override KEY=VALUE, validated like the file"),
        write_split: str = typer.Option(None, "--write-split", help="only write the study's split (splits.json) "
                                        "to this path and exit; pretraining excludes it with --set cohort.exclude=PATH"),
    ) -> None:
        """Pretrain once per pretext without the test subjects (or reuse), fine-tune the grid on Ray, tables,
        figures, statistics, champion."""
        from cardiossl.platform.fewshot.study import main

        import sys

        from cardiossl import home

        print(f"cardiossl: {home.describe()}", file=sys.stderr, flush=True)
        extra = ["--write-split", write_split] if write_split else []
        raise typer.Exit(main([job] + [a for s in set_ for a in ("--set", s)] + extra))
