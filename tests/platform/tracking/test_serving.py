"""Test-time augmentation of a segmenter's predictions (``serving.predict_batches``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiossl.platform.tracking.serving import inference_tta, predict_batches


@pytest.fixture(scope="module")
def model():
    """A small convolutional segmenter with random weights, whose labels vary over the slice (an
    untrained U-Net's bias paints one class everywhere, which every rotation leaves alone)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 5, padding=2)).eval()


def test_rotation_tta_makes_the_prediction_turn_with_the_input(model):
    """Averaged over the four 90-degree turns (each turned back), the labels of a turned slice are
    the turned labels; one pass of an untrained network is not equivariant. A turn not undone, or
    undone the wrong way, breaks the first assertion."""
    x = np.random.default_rng(1).normal(size=(3, 1, 32, 32)).astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
    tta, tta_turned = predict_batches(model, x, tta="rot90"), predict_batches(model, turned, tta="rot90")
    assert np.array_equal(np.rot90(tta, 1, axes=(1, 2)), tta_turned)
    one, one_turned = predict_batches(model, x), predict_batches(model, turned)
    assert not np.array_equal(np.rot90(one, 1, axes=(1, 2)), one_turned)
    assert not np.array_equal(tta, one)  # the average is not one pass's argmax
    assert len(np.unique(tta)) > 1
    assert predict_batches(model, x, batch_size=2, tta="rot90").tolist() == tta.tolist()  # batching changes nothing


def test_tta_names_are_checked_and_read_from_the_spec(model):
    with pytest.raises(ValueError, match="tta 'flip': use none or rot90"):
        predict_batches(model, np.zeros((1, 1, 8, 8), np.float32), tta="flip")
    assert inference_tta({}) == "none" and inference_tta({"inference": None}) == "none"
    assert inference_tta({"inference": {"tta": "rot90", "largest_component": True}}) == "rot90"
