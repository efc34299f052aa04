"""What the loop needs from its runner: rank, world size, device, report, latest checkpoint.

``LocalSession`` runs the loop in one process (tests, debugging); ``RaySession`` wraps ``ray.train``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch


class Session:
    """What the loop needs from its runner."""

    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_dir: str | None = None  # the run's folder on shared storage (fault-injection markers)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield None


class LocalSession(Session):
    """One process; checkpoints are folders ``run_dir/checkpoint_<step>`` (newest wins)."""

    def __init__(self, run_dir: str | os.PathLike, num_to_keep: int = 2, device: str = "cpu") -> None:
        self.run_dir = str(run_dir)
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        self.num_to_keep = num_to_keep
        self._device = torch.device(device)
        self.reports: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self._device

    def _checkpoints(self) -> list[Path]:
        return sorted(Path(self.run_dir).glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            return
        step = int(metrics["step"])
        dst = Path(self.run_dir) / f"checkpoint_{step:08d}"
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)  # atomic: a half-copied checkpoint is never "latest"
        for old in self._checkpoints()[: -self.num_to_keep]:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        found = self._checkpoints()
        yield str(found[-1]) if found else None


class RaySession(Session):
    """``ray.train`` behind the Session interface (call inside a TorchTrainer worker)."""

    def __init__(self, run_dir: str | None = None) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self._train = ray.train
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.run_dir = run_dir

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        ckpt = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d
