"""What rank 0 records at the end of pretraining: the pretrained weights, final metrics, the figure."""

from __future__ import annotations

import tempfile

from ..tracking import save_pretrained
from .figures import prediction_figure


def log_training_outputs(tracker, job, result, n_slices: int | None = None) -> None:
    """Pretrained weights (safetensors + JSON), final metrics, and the target / prediction figure."""
    if not tracker.active:
        return
    model = result.model
    with tempfile.TemporaryDirectory(prefix="cardiossl-pretrained-") as tmp:
        save_pretrained(
            tmp, model.backbone, model.head,
            backbone={"name": job.backbone.name, "params": job.backbone.params},
            pretext={"name": job.pretext.name, "params": job.pretext.params},
            decoder_trained=bool(result.pretext.uses_decoder),
            extra={"step": result.step, "image_size": job.image_size, "val_metrics": result.val_metrics,
                   "config_hash": job.hash(result.snapshot.content_hash if result.snapshot else None),
                   "cohort_snapshot": result.snapshot.content_hash if result.snapshot else None},
        )
        tracker.log_artifacts(tmp, "pretrained")
    tracker.log_dict(
        {"step": result.step, "train": result.train_metrics, "val": result.val_metrics},
        "metrics/final.json",
    )
    if job.mlflow.figures:
        n = job.validation.figure_slices if n_slices is None else n_slices
        if n > 0:
            try:
                fig = prediction_figure(job, result, n)
            except Exception as exc:  # a figure must never fail a finished training run
                tracker.log_text(f"{type(exc).__name__}: {exc}", "figures/ERROR.txt")
            else:
                if fig is not None:
                    tracker.log_figure(fig, "figures/validation_predictions.png")
                    import matplotlib.pyplot as plt

                    plt.close(fig)
