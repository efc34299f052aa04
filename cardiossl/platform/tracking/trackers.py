"""MLflow tracking: the driver owns the run, rank 0 writes into it, every other rank gets a no-op.

One run per job, created on the driver before Ray starts (a run opened on a worker stays RUNNING
after a failure and every restart would open another). The run id travels to rank 0 with the loop
config. sqlite allows one writer at a time, so the driver does not write while workers train:
it logs the record of the job (params, resolved YAML, cohort fingerprint) before ``fit`` and the
registration after.
"""

from __future__ import annotations

import math
import time

from .runs import mlflow_client

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

