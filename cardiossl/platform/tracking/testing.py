"""An in-memory tracker for tests of the training loop without MLflow (production never imports it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .trackers import NullTracker


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
