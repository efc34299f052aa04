"""Finished trials on disk, so a long study resumes where it stopped.

A trial is identified by everything that decides its result: the resolved fine-tuning job (with
the pinned pretrained model version), the held-out subjects and the labelled pool. Its result is
two files, ``<key>.safetensors`` (the best weights) and ``<key>.json`` (metrics, per-subject and
per-phase rows, split, validation curve, segmenter spec); the JSON is written last, atomically, so
its presence means the trial is complete. A rerun of the same study finds it and skips the work;
change anything that matters and the key changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cardiossl.platform.config import drop_unset_options

CACHE_FORMAT = 1


def trial_key(job_dict: Mapping, held_out: Mapping[str, Iterable[str]], pool: Iterable[str],
              init_identity: str = "") -> str:
    """Content hash of what decides a trial (``threads`` and ``device`` do not). ``init_identity``
    names the pretrained weights beyond their registry reference (the run that produced them), so a
    recreated registry whose version numbers start again cannot hand back another encoder's trials.
    Options added later and left unset (``config.records.HASHED_ONLY_WHEN_SET``) leave the key as it was."""
    job = {k: v for k, v in job_dict.items() if k not in ("threads", "device", "mlflow")}
    job = drop_unset_options(copy.deepcopy(job))
    blob = json.dumps({"format": CACHE_FORMAT, "job": job, "init": init_identity, "test": sorted(held_out.get("test", [])),
                       "val": sorted(held_out.get("val", [])), "pool": sorted(pool)},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class TrialCache:
    """``load(key)`` -> the task's output dict or None; ``save(key, out)``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.json", self.folder / f"{key}.safetensors"

    def load(self, key: str) -> dict | None:
        from safetensors.torch import load_file

        meta_p, w_p = self._paths(key)
        if not (meta_p.is_file() and w_p.is_file()):
            return None
        try:
            out = json.loads(meta_p.read_text())
            out["state_dict"] = load_file(str(w_p))
        except (OSError, ValueError):
            return None  # damaged: the trial runs again and overwrites it
        out["cached"] = True
        return out

    def save(self, key: str, out: Mapping) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        meta_p, w_p = self._paths(key)
        pid = os.getpid()
        tmp_w = w_p.with_name(f".{w_p.name}.{pid}")
        save_file({k: v.contiguous() for k, v in out["state_dict"].items()}, str(tmp_w))
        os.replace(tmp_w, w_p)
        meta = {k: v for k, v in out.items() if k not in ("state_dict", "cached")}
        tmp_m = meta_p.with_name(f".{meta_p.name}.{pid}")
        tmp_m.write_text(json.dumps(meta, default=_json_default))
        os.replace(tmp_m, meta_p)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)
