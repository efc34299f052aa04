"""A segmenter as an MLflow model: pyfunc flavour, signature, weights as safetensors.

The folder a fine-tuning run or the study logs (``segmenter/``) is an MLflow model whose
``python_function`` flavour names this module as its loader (``loader_module``): MLflow calls
``_load_pyfunc(data path)``, which rebuilds the network from ``segmenter.json`` and loads
``model.safetensors``. Nothing is pickled, no code is stored in the model; the serving environment
needs cardiossl installed. So both of these work on a registered segmenter::

    mlflow.pyfunc.load_model("models:/cardiossl-seg@champion").predict(images)
    mlflow models serve -m models:/cardiossl-seg@champion --env-manager local -p 5001

Input: one short-axis stack (or any batch of slices) already on the model grid (``image_size``
pixels at ``spacing_mm``; ``cardiossl predict`` resamples a scan onto it), raw intensities, float32
``[N, H, W]``; the stack is normalised as in training (robust percentiles and z-score over the
request). Output: labels ``[N, H, W]`` (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity),
with the test-time augmentation the run was evaluated with (``spec["inference"]``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

DATA_DIR = "weights"  # the folder inside the MLflow model that holds model.safetensors + segmenter.json


class SegmenterPyfunc:
    """What ``mlflow.pyfunc.load_model`` returns the ``predict`` of."""

    def __init__(self, model, spec: dict) -> None:
        self.model, self.spec = model, spec

    def predict(self, model_input, params: dict | None = None) -> np.ndarray:
        x = np.asarray(getattr(model_input, "values", model_input), dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"expected slices [N, H, W] on the model grid, got shape {x.shape}")
        return predict_batches(self.model, self.normalise(x)[:, None], tta=inference_tta(self.spec))

    @staticmethod
    def normalise(x: np.ndarray) -> np.ndarray:
        """Robust percentile clip and z-score over the whole request (``store.intensity_stats``)."""
        from cardiossl.datasets.store import intensity_stats

        stats = intensity_stats(list(x))
        return (np.clip(x, stats["p0_5"], stats["p99_5"]) - stats["mean"]) / stats["std"]


def predict_batches(model, images: np.ndarray, batch_size: int = 16, *, tta: str = "none", device="cpu") -> np.ndarray:
    """Argmax labels [N, H, W] (int64) of a segmenter on normalised images [N, 1, H, W].

    ``tta="rot90"``: the argmax of the softmax averaged over the four 90-degree rotations of each
    slice (turned back before averaging); square slices, for a model trained with any in-plane
    orientation (``InferenceConfig``)."""
    import torch

    if tta not in ("none", "rot90"):
        raise ValueError(f"tta {tta!r}: use none or rot90")
    turns = range(4) if tta == "rot90" else range(1)
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
            if len(turns) == 1:
                out.append(model(x).argmax(1).cpu().numpy().astype(np.int64))
                continue
            prob = sum(torch.rot90(torch.softmax(model(torch.rot90(x, k, (2, 3))), 1), -k, (2, 3)) for k in turns)
            out.append(prob.argmax(1).cpu().numpy().astype(np.int64))
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[2:], np.int64)


def inference_tta(spec: dict) -> str:
    """The test-time augmentation a segmenter was evaluated with (its spec's ``inference``)."""
    return str((spec.get("inference") or {}).get("tta", "none"))


def _load_pyfunc(data_path: str) -> SegmenterPyfunc:
    """MLflow's entry point (``loader_module``): the weights folder -> a model with ``predict``."""
    from .weights import load_segmenter_folder

    model, spec = load_segmenter_folder(data_path)
    return SegmenterPyfunc(model, spec)


def signature(image_size: int):
    """Tensor in, tensor out: ``[-1, S, S]`` float32 slices -> ``[-1, S, S]`` int64 labels."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size))]),
                          outputs=Schema([TensorSpec(np.dtype(np.int64), (-1, image_size, image_size))]))


def save_mlflow_model(weights_folder: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Wrap a weights folder (``save_segmenter``) as an MLflow pyfunc model at ``folder``."""
    import mlflow.pyfunc

    spec = json.loads((Path(weights_folder) / "segmenter.json").read_text())
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory(prefix="cardiossl-pyfunc-") as tmp:
        data = Path(tmp) / DATA_DIR
        shutil.copytree(weights_folder, data)
        # explicit requirements: MLflow's inference would import-scan for ~10 s and still miss cardiossl.
        # No input example: the signature says it all, and an example would be stored and run at save.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(
                str(folder), loader_module=__name__, data_path=str(data),
                signature=signature(int(spec["image_size"])),
                pip_requirements=["cardiossl", "torch", "safetensors", "numpy"],
            )
    return folder


def weights_folder(folder: str | os.PathLike) -> Path:
    """The folder holding ``model.safetensors`` + ``segmenter.json``: ``folder`` itself (older runs), or
    the data folder its ``MLmodel`` names."""
    folder = Path(folder)
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return folder
    import yaml

    meta = yaml.safe_load(mlmodel.read_text()) or {}
    data = ((meta.get("flavors") or {}).get("python_function") or {}).get("data")
    return folder / data if data else folder
