"""Metrics of a training run: reduced over ranks, logged live (once per step and key, across restarts)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from .collate import to_device
from .optim import autocast


def all_reduce_mean(values: dict[str, float], weight: float, world_size: int) -> dict[str, float]:
    """Mean of scalar metrics over ranks, weighted (by samples); a non-finite value (say a mean IoU
    over a batch without boxes) carries no weight. Identity without a process group."""
    keys = sorted(values)
    vals = [float(values[k]) for k in keys]
    ws = [float(weight) if math.isfinite(v) else 0.0 for v in vals]
    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return {k: v for k, v in zip(keys, vals)}
    t = torch.tensor([v * w if w else 0.0 for v, w in zip(vals, ws)] + ws, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = t.cpu().tolist()
    n = len(keys)
    return {k: (t[i] / t[n + i]) if t[n + i] > 0 else float("nan") for i, k in enumerate(keys)}



class LiveMetrics:
    """Metrics to the tracker as they happen, each step at most once per key.

    A restarted worker group resumes from its last checkpoint and recomputes the steps after it,
    some of which rank 0 had already logged before the failure. The first time a key is logged by
    this process, the highest step the run already holds for it is read back, and steps up to
    there are skipped: the history has no gap (nothing is logged before it is computed) and no
    duplicate (nothing is logged twice)."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.floor: dict[str, int] = {}

    def log(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Log what the run does not hold yet; return it."""
        fresh = {}
        for k, v in metrics.items():
            if k not in self.floor:
                self.floor[k] = self.tracker.last_step(k)
            if step > self.floor[k]:
                fresh[k] = float(v)
                self.floor[k] = int(step)
        if fresh:
            self.tracker.log_metrics(fresh, step=int(step))
        return fresh


def evaluate(model: nn.Module, pretext, loader, device: torch.device, precision: str = "auto",
             channels_last: bool = False, max_batches: int | None = None,
             world_size: int = 1) -> dict[str, float]:
    """Mean loss and pretext metrics over a loader (weighted by samples, reduced over ranks)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = to_device(batch, device, channels_last)
            with autocast(device, precision):
                out = model(batch["input"])
            out = out.float()
            losses = pretext.loss(out, batch)
            vals = {f"{k}": float(v.detach()) for k, v in losses.items()}
            vals.update({k: float(v) for k, v in pretext.metrics(out, batch).items()})
            b = int(batch["input"].shape[0])
            for k, v in vals.items():
                if math.isfinite(v):
                    sums[k] = sums.get(k, 0.0) + v * b
                    counts[k] = counts.get(k, 0.0) + b
                else:
                    sums.setdefault(k, 0.0)
                    counts.setdefault(k, 0.0)
            n += b
    model.train(was_training)
    keys = sorted(sums)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        t = torch.tensor([sums[k] for k in keys] + [counts[k] for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t = t.cpu().tolist()
        sums = {k: t[i] for i, k in enumerate(keys)}
        counts = {k: t[len(keys) + i] for i, k in enumerate(keys)}
    return {k: sums[k] / counts[k] if counts[k] > 0 else float("nan") for k in keys}
