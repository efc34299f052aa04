"""`cardiossl finetune FILE.yaml [--set k=v]`: few-shot fine-tuning of SA segmentation, tracked in MLflow."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune(
        job: str = typer.Argument(..., help="fine-tuning job YAML (kind: finetune)"),
        set_: list[str] = typer.Option([], "--set", help="override KEY=VALUE, validated like the file"),
        no_register: bool = typer.Option(False, "--no-register", help="skip the Model Registry"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Fine-tune a segmenter on N labelled subjects (scratch or a registered pretrained model)."""
        from cardiossl.platform.fewshot.finetune import main

        import sys

        from cardiossl import home

        print(f"cardiossl: {home.describe()}", file=sys.stderr, flush=True)
        argv = [job] + [a for s in set_ for a in ("--set", s)]
        if no_register:
            argv.append("--no-register")
        if no_progress:
            argv.append("--no-progress")
        raise typer.Exit(main(argv))
