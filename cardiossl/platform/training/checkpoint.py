"""Training checkpoints: weights as safetensors, optimiser/scheduler/RNG loadable with ``weights_only=True``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn


CKPT_MODEL = "model.safetensors"
CKPT_OPTIM = "optim.pt"
CKPT_STATE = "state.json"


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer, scheduler, state: dict) -> None:
    """Weights as safetensors, optimiser/scheduler/RNG via torch.save of tensors and plain
    containers only (loadable with ``weights_only=True``), the rest as JSON."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(d / CKPT_MODEL))
    extra = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        extra["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(extra, d / CKPT_OPTIM)
    (d / CKPT_STATE).write_text(json.dumps(state, indent=1))


def load_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer=None, scheduler=None) -> dict:
    from safetensors.torch import load_file

    d = Path(directory)
    model.load_state_dict(load_file(str(d / CKPT_MODEL)))
    extra = torch.load(d / CKPT_OPTIM, weights_only=True, map_location="cpu")
    if optimizer is not None:
        optimizer.load_state_dict(extra["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    if "cuda_rng" in extra and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(extra["cuda_rng"])
    return json.loads((d / CKPT_STATE).read_text())
