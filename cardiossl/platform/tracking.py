"""MLflow tracking: the driver owns the run, rank 0 writes into it, every other rank gets a no-op.

One run per job, created on the driver before Ray starts (a run opened on a worker stays RUNNING
after a failure and every restart would open another). The run id travels to rank 0 with the loop
config. sqlite allows one writer at a time, so the driver does not write while workers train:
it logs the record of the job (params, resolved YAML, cohort fingerprint) before ``fit`` and the
registration after.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import flatten

MAX_PARAM_LEN = 6000


class NullTracker:
    """What ranks other than 0 (and runs without MLflow) log to."""

    active = False
    run_id: str | None = None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_figure(self, figure, artifact_file: str) -> None: ...

    def last_step(self, key: str) -> int:
        return -1

    def close(self) -> None: ...


class MemoryTracker(NullTracker):
    """Keeps everything in memory; for tests of the loop without MLflow."""

    active = True

    def __init__(self) -> None:
        self.metrics: list[tuple[int, str, float]] = []
        self.params: dict = {}
        self.tags: dict = {}
        self.artifacts: dict[str, Any] = {}

    def log_params(self, params: dict) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics += [(int(step), k, float(v)) for k, v in metrics.items()]

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.artifacts[artifact_file] = text

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.artifacts[artifact_file] = data

    def log_figure(self, figure, artifact_file: str) -> None:
        self.artifacts[artifact_file] = figure

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        for p in Path(local_dir).rglob("*"):
            if p.is_file():
                self.artifacts[f"{artifact_path}/{p.relative_to(local_dir)}"] = p.read_bytes()

    def history(self, key: str) -> list[tuple[int, float]]:
        return [(s, v) for s, k, v in self.metrics if k == key]

    def last_step(self, key: str) -> int:
        steps = [s for s, k, _ in self.metrics if k == key]
        return max(steps) if steps else -1


class MlflowTracker(NullTracker):
    """Writes into an existing run through ``MlflowClient`` (no global active-run state)."""

    active = True

    def __init__(self, run_id: str, tracking_uri: str | None = None, system_metrics: bool = False,
                 sampling_interval: float = 10.0) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)
        self._monitor = None
        if system_metrics:
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                self._monitor = SystemMetricsMonitor(
                    run_id, sampling_interval=sampling_interval, resume_logging=True,
                    tracking_uri=tracking_uri,
                )
                self._monitor.start()
            except Exception as exc:  # system metrics are a nice-to-have; never kill training
                print(f"cardiossl: system metrics disabled ({type(exc).__name__}: {exc})")
                self._monitor = None

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500], synchronous=True)

    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def last_step(self, key: str) -> int:
        hist = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in hist), default=-1)

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:
                pass
            self._monitor = None


def make_tracker(rank: int, run_id: str | None, tracking_uri: str | None, system_metrics: bool = False,
                 sampling_interval: float = 10.0):
    """MlflowTracker on rank 0 when a run id is given, NullTracker everywhere else."""
    if rank != 0 or not run_id:
        return NullTracker()
    return MlflowTracker(run_id, tracking_uri, system_metrics=system_metrics, sampling_interval=sampling_interval)


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------
def mlflow_client(tracking_uri: str | None):
    """An MlflowClient whose Model Registry is the same store as its tracking URI.

    Without an explicit ``registry_uri`` MLflow takes the registry from process-wide state
    (``mlflow.set_registry_uri``, the environment), so a client could read another database's registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<folder of the sqlite db>/mlartifacts`` for a sqlite URI; None (the server decides) else.

    MLflow's own default for a database store is ``./mlruns`` under the *current* directory, which
    inside a Ray job is a temporary copy of the working directory that disappears with the job."""
    if tracking_uri.startswith("sqlite:////"):
        return str(Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None


def create_run(tracking_uri: str, experiment: str, run_name: str | None = None,
               tags: dict | None = None, artifact_location: str | None = None) -> str:
    """Create (or reuse) the experiment and a new run; return its id. Driver only."""
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(
            experiment, artifact_location=artifact_location or default_artifact_location(tracking_uri))
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()})
    return run.info.run_id


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    mlflow_client(tracking_uri).set_terminated(run_id, status=status)


def log_job_record(tracker, job, fingerprint: dict | None = None, extra_params: dict | None = None) -> None:
    """Params (the resolved config, flattened), the resolved YAML, the cohort fingerprint."""
    params = flatten(job.to_dict())
    params.update(extra_params or {})
    tracker.log_params(params)
    tracker.log_text(job.to_yaml(), "job/resolved.yaml")
    if fingerprint is not None:
        tracker.log_dict(fingerprint, "cohort/fingerprint.json")


# --------------------------------------------------------------------------------------------
# rank 0 at the end of training
# --------------------------------------------------------------------------------------------
def log_training_outputs(tracker, job, result, n_slices: int | None = None) -> None:
    """Pretrained weights (safetensors + JSON), final metrics, and the target / prediction figure."""
    from .models import save_pretrained

    if not tracker.active:
        return
    model = result.model
    with tempfile.TemporaryDirectory(prefix="cardiossl-pretrained-") as tmp:
        save_pretrained(
            tmp, model.backbone, model.head,
            backbone={"name": job.backbone.name, "params": job.backbone.params},
            pretext={"name": job.pretext.name, "params": job.pretext.params},
            decoder_trained=bool(result.pretext.uses_decoder),
            extra={"step": result.step, "config_hash": job.hash(), "image_size": job.image_size,
                   "val_metrics": result.val_metrics},
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


def _draw_prediction(ax, pretext, sample: dict, output) -> None:
    """Generic picture of a network output, shaped like the pretext's target."""
    import numpy as np

    img = np.asarray(sample["input"])[0]
    out = np.asarray(output, dtype=np.float32)
    target = np.asarray(sample["target"])
    ax.imshow(img, cmap="gray", interpolation="nearest")
    if out.ndim == 3 and target.ndim == 2:  # per-pixel classes
        pred = out.argmax(0)
        masked = np.ma.masked_where(pred == 0, pred)
        ax.imshow(masked, cmap="tab10", alpha=0.5, interpolation="nearest", vmin=0, vmax=10)
        ax.set_xlabel("prediction (argmax)", fontsize=7)
    elif out.ndim == 3 and out.shape[-2:] == img.shape and target.ndim == 3 and out.shape[0] == target.shape[0]:
        if "target_mask" in sample:  # reconstruction
            ax.imshow(out[0], cmap="gray", interpolation="nearest")
            ax.set_xlabel("reconstruction", fontsize=7)
        else:  # heatmaps
            ax.imshow(out.max(0), cmap="magma", alpha=0.6, interpolation="nearest", vmin=0, vmax=1)
            ax.set_xlabel("predicted heatmaps (max)", fontsize=7)
    else:
        flat = out.reshape(-1)
        if flat.size > 1:
            ax.set_xlabel(f"pred class {int(flat.argmax())} / target {int(np.asarray(target).reshape(-1)[0])}",
                          fontsize=7)
        else:
            ax.set_xlabel(f"pred {float(flat[0]):.2f} / target {float(np.asarray(target).reshape(-1)[0]):.2f}",
                          fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_figure(job, result, n_slices: int = 4):
    """Rows: validation slices; columns: the pretext target (its own ``draw``) and the prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from .train import collate, make_dataset, split_cohort, to_device

    splits = split_cohort(job)
    subjects = splits["val"] or splits["train"]
    ds = make_dataset(job, subjects, result.pretext, train=False)
    if len(ds) == 0:
        return None
    idx = np.linspace(0, len(ds) - 1, num=min(n_slices, len(ds))).round().astype(int)
    samples = [ds[int(i)] for i in idx]
    model = result.model
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        batch = to_device(collate(samples), device)
        out = model(batch["input"]).float().cpu().numpy()
    fig, axes = plt.subplots(len(samples), 2, figsize=(5, 2.5 * len(samples)), squeeze=False)
    for r, (s, o) in enumerate(zip(samples, out)):
        result.pretext.draw(axes[r, 0], s)
        axes[r, 0].set_title(f"{s.get('subject_id', '')} {s.get('view', '')} z{s.get('slice_index', '')}",
                             fontsize=7)
        _draw_prediction(axes[r, 1], result.pretext, s, o)
    fig.suptitle(f"{job.pretext.name}: target (left) and prediction (right), step {result.step}", fontsize=8)
    fig.tight_layout()
    return fig


def git_commit(search_from: str | os.PathLike | None = None) -> str:
    """CARDIOSSL_GIT_COMMIT, else ``git rev-parse HEAD`` (+ "-dirty"), else "unknown"."""
    env = os.environ.get("CARDIOSSL_GIT_COMMIT")
    if env:
        return env
    import subprocess

    for where in [search_from, os.getcwd(), Path(__file__).resolve().parents[2]]:
        if where is None:
            continue
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                 timeout=10)
            if sha.returncode != 0:
                continue
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                   capture_output=True, text=True, timeout=10)
            return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def fingerprint_hash(fingerprint: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]
