"""`cardiossl pretrain FILE.yaml [--set k=v] [--address ADDR]`: run a pretraining job on Ray."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain(
        job: str = typer.Argument(..., help="pretraining job YAML (kind: pretrain)"),
        set_: list[str] = typer.Option([], "--set", help="override KEY=VALUE, validated like the file"),
        address: str = typer.Option(None, "--address", help="Ray address; default RAY_ADDRESS, a running "
                                    "local cluster, or a new local instance"),
        no_register: bool = typer.Option(False, "--no-register", help="skip the Model Registry"),
        allow_new_snapshot: bool = typer.Option(
            False, "--allow-new-snapshot",
            help="resume checkpoint.run_name although the cohort store changed since it started (new split)"),
        plugin: list[str] = typer.Option([], "--plugin", help="import MODULE first: it registers plugins "
                                         "(shipped to the Ray workers); repeatable"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines; errors and the summary only"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Ray's own INFO logs as well"),
    ) -> None:
        """Pretrain a backbone with a pretext task on Ray Train; track in MLflow; register the encoder."""
        from cardiossl.platform.launch import main

        argv = [job] + [a for s in set_ for a in ("--set", s)]
        if address:
            argv += ["--address", address]
        if no_register:
            argv.append("--no-register")
        if allow_new_snapshot:
            argv.append("--allow-new-snapshot")
        argv += [a for m in plugin for a in ("--plugin", m)]
        argv += ["--quiet"] if quiet else []
        argv += ["--verbose"] if verbose else []
        raise typer.Exit(main(argv))
