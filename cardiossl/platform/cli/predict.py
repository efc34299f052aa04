"""`cardiossl predict --model REF INPUT --out OUT`: labels in the input geometry, measures with their
plausibility, the segmenter's provenance and a QC picture, for one case or a folder of cases.

Exit codes: 0 every case segmented (flags are warnings, in measures.json and on stderr), 1 some
cases could not be read (reasons printed), 2 nothing could start (bad model, input or option).
"""

from __future__ import annotations

from pathlib import Path

import typer

KEYS = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "lv_mass_g")


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        input_path: Path = typer.Argument(
            ..., help="a NIfTI SA stack (3-D or 4-D), a UK Biobank-like (sa.nii.gz), ACDC (Info.cfg), M&Ms-2 "
            "(NNN_SA_ED/ES) or DICOM exam folder, or a folder of such cases"),
        model: str = typer.Option("models:/cardiossl-seg@champion", "--model",
                                  help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/segmenter or a folder"),
        out: Path = typer.Option(..., "--out", "-o",
                                 help="output folder (labels, measures.json, qc.png; one subfolder per case)"),
        tracking_uri: str = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                         help="MLflow tracking URI (default: $CARDIOSSL_HOME/mlflow.db)"),
        ed: int = typer.Option(None, "--ed", help="end-diastolic frame (default: from the input, else 0)"),
        es: str = typer.Option("auto", "--es", help="end-systolic frame, or 'auto' (input's, else smallest LV volume)"),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
        no_postprocess: bool = typer.Option(False, "--no-postprocess",
                                            help="keep every connected component (default: the largest per structure)"),
        no_qc: bool = typer.Option(False, "--no-qc", help="no QC picture"),
    ) -> None:
        """Segment LV cavity, LV myocardium and RV cavity; write labels with the input's affine, LV/RV EDV,
        ESV, EF and LV mass with plausibility flags, and a QC picture per case."""
        import json

        from rich.console import Console

        from cardiossl import home
        from cardiossl.platform.config import FinetuneError
        from cardiossl.platform.fewshot.plausibility import describe
        from cardiossl.platform.fewshot.predict import PredictError, predict_all

        from .paths import announce

        err = Console(stderr=True)
        if es != "auto":
            try:
                es_v: int | str = int(es)
            except ValueError:
                err.print(f"[red]error:[/] --es must be a frame number or 'auto', got {es!r}")
                raise typer.Exit(2) from None
        else:
            es_v = "auto"
        uri = tracking_uri or home.tracking_uri()
        announce("predictions", out)
        if not tracking_uri and model.startswith(("models:/", "runs:/")):
            err.print(f"cardiossl: models from {uri} (--tracking-uri or MLFLOW_TRACKING_URI to change)",
                      highlight=False, soft_wrap=True)

        def report(res: dict) -> None:
            if "error" in res:
                err.print(f"[red]{res['case']}: skipped[/]: {res['error']}", highlight=False, soft_wrap=True)
                return
            for flag in res.get("flags", []):
                colour = "red" if flag["flag"] == "implausible" else "yellow"
                err.print(f"[{colour}]{res['case']}: {describe(flag)}[/]", highlight=False, soft_wrap=True)

        try:
            results = predict_all(model, input_path, out, tracking_uri=uri, ed=ed, es=es_v, device=device,
                                  postprocess=not no_postprocess, qc=not no_qc, on_case=report)
        except (PredictError, FinetuneError) as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        rows = []
        for res in results:
            if "error" in res:
                rows.append({"case": res["case"], "error": res["error"]})
                continue
            summary = {k: round(res[k], 2) for k in KEYS if isinstance(res.get(k), float)}
            rows.append({"case": res["case"], "labels": res["labels"], "qc": res.get("qc"),
                         "measures": str(Path(res["labels"] if isinstance(res["labels"], str)
                                              else next(iter(res["labels"].values()))).parent / "measures.json"),
                         "ed_frame": res["ed_frame"], "es_frame": res["es_frame"], **summary,
                         "plausible": res["plausible"],
                         "flags": [f"{f['measure']}:{f['flag']}" for f in res.get("flags", [])]})
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1))
        raise typer.Exit(1 if any("error" in r for r in rows) else 0)
