"""`cardiossl predict --model REF INPUT --out OUT`: labels in the input geometry + volumes JSON."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        input_path: Path = typer.Argument(..., help="NIfTI SA stack (sa.nii.gz, 3-D or 4-D), a folder "
                                          "holding sa.nii.gz, or a DICOM exam folder"),
        model: str = typer.Option("models:/cardiossl-seg@champion", "--model",
                                  help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/segmenter or a folder"),
        out: Path = typer.Option(..., "--out", "-o", help="output folder (labels.nii.gz, measures.json)"),
        tracking_uri: str = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                         help="MLflow tracking URI (sqlite:////abs/mlflow.db or http://...)"),
        ed: int = typer.Option(None, "--ed", help="end-diastolic frame (default: from the input, else 0)"),
        es: str = typer.Option("auto", "--es", help="end-systolic frame, or 'auto' (input's, else smallest LV volume)"),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    ) -> None:
        """Segment LV cavity, LV myocardium and RV cavity; write labels with the input's affine and
        LV/RV EDV, ESV, EF and LV mass."""
        import json

        from rich.console import Console

        from cardiossl.platform.config import FinetuneError
        from cardiossl.platform.fewshot.predict import PredictError
        from cardiossl.platform.fewshot.predict import predict as run

        err = Console(stderr=True)
        if es != "auto":
            try:
                es_v: int | str = int(es)
            except ValueError:
                err.print(f"[red]error:[/] --es must be a frame number or 'auto', got {es!r}")
                raise typer.Exit(2) from None
        else:
            es_v = "auto"
        try:
            res = run(model, input_path, out, tracking_uri=tracking_uri, ed=ed, es=es_v, device=device)
        except (PredictError, FinetuneError) as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        keys = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "lv_mass_g")
        summary = {k: round(res[k], 2) for k in keys if k in res}
        print(json.dumps({"labels": res["labels"], "measures": str(Path(out) / "measures.json"),
                          "ed_frame": res["ed_frame"], "es_frame": res["es_frame"], **summary}, indent=1))
