"""Optimiser, learning-rate schedule and mixed precision, shared by pretraining and fine-tuning."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from ..config import OptimConfig, ScheduleConfig


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


@dataclass
class LRSchedule:
    """Linear warm-up then cosine / linear decay / constant (Loshchilov & Hutter, SGDR 2017).

    A callable object, not a lambda, so ``LambdaLR.state_dict`` records it and resuming is exact."""

    total_steps: int
    warmup_steps: int = 0
    name: str = "cosine"
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        if self.name == "linear":
            f = 1.0 - t
        else:
            f = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * f


def build_scheduler(optimizer, cfg: ScheduleConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    sched = LRSchedule(total_steps, cfg.warmup_steps, cfg.name, cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, sched)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA (``auto`` or ``bf16``); a no-op elsewhere unless ``bf16`` is forced."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
