"""`cardiossl` command line: one typer app, one module per command (each exposes ``register(app)``).

The top room: it may import every room below it. Command modules import heavy libraries (torch,
ray, mlflow) inside their functions so that ``cardiossl --help`` and ``cardiossl validate`` stay fast.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "synth",
    "ingest",
    "cohort",
    "cohort_maintenance",
    "plugins",
    "show",
    "validate",
    "pretrain",
    "finetune",
    "benchmark",
    "predict",
)

app = typer.Typer(
    name="cardiossl",
    help="Self-supervised pretraining for cardiac MR segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"cardiossl.platform.cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
