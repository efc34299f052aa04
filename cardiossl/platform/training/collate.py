"""Batches from dict samples: stack arrays and numbers, keep strings as lists, move to the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Collate:
    """``collate`` restricted to ``keep`` keys (when given) and without ``drop`` keys.

    The training loader keeps only what the loss reads: each extra key is another tensor to
    unpickle, pin and copy in the main process, which on a GPU is time the GPU waits."""

    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] | None = None

    def __call__(self, samples: list[dict]) -> dict:
        if self.keep is not None:
            samples = [{k: s[k] for k in self.keep if k in s} for s in samples]
        return collate(samples, self.drop)


def collate(samples: list[dict], drop: tuple[str, ...] = ()) -> dict:
    """Stack arrays and numbers; keep strings as lists; drop keys that are None in any sample."""
    keys = [k for k in samples[0] if k not in drop and all(s.get(k) is not None for s in samples)]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in samples]
        v0 = vals[0]
        if isinstance(v0, np.ndarray):
            out[k] = torch.from_numpy(np.stack(vals))
        elif isinstance(v0, torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(v0, bool | np.bool_):
            out[k] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(v0, int | np.integer):
            out[k] = torch.tensor(vals, dtype=torch.int64)
        elif isinstance(v0, float | np.floating):
            out[k] = torch.tensor(vals, dtype=torch.float64)
        else:
            out[k] = vals
    return out


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out
