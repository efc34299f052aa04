"""Rotation pretext (Gidaris et al. 2018): the rotation itself, class balance, loss vs a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cardiossl.backbones import build_backbone
from cardiossl.pretexts import PretextConfigError
from cardiossl.pretexts.rotation import RotationPretext


def test_input_is_the_image_turned_by_k_quarter_turns():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    pre = RotationPretext()
    seen = set()
    for seed in range(40):
        out = pre.make_target({"image": img}, np.random.default_rng(seed))
        k = int(out["target"])
        seen.add(k)
        ref = img[0]
        for _ in range(k):  # one quarter turn counter-clockwise, by hand: new[r, c] = old[c, W-1-r]
            ref = np.array([[ref[c, ref.shape[1] - 1 - r] for c in range(ref.shape[0])] for r in range(ref.shape[1])])
        np.testing.assert_array_equal(out["input"][0], ref)
        assert out["input"].flags["C_CONTIGUOUS"]
    assert seen == {0, 1, 2, 3}


def test_classes_are_balanced_and_follow_the_generator():
    pre = RotationPretext()
    img = np.zeros((1, 8, 8), np.float32)
    ks = [int(pre.make_target({"image": img}, np.random.default_rng([0, 0, 0, i]))["target"]) for i in range(2000)]
    counts = np.bincount(ks, minlength=4)
    assert counts.min() > 400
    again = [int(pre.make_target({"image": img}, np.random.default_rng([0, 0, 0, i]))["target"]) for i in range(50)]
    assert again == ks[:50]


def test_two_way_config():
    pre = RotationPretext({"n_rotations": 2})
    ks = {int(pre.make_target({"image": np.zeros((1, 4, 4), np.float32)}, np.random.default_rng(i))["target"]) for i in range(50)}
    assert ks == {0, 1}
    with pytest.raises(PretextConfigError, match="n_rotations"):
        RotationPretext({"n_rotations": 5})


def test_non_square_image_is_refused_clearly():
    with pytest.raises(ValueError, match="square"):
        RotationPretext().make_target({"image": np.zeros((1, 4, 6), np.float32)}, np.random.default_rng(0))


def test_head_on_pooled_encoder_and_loss_matches_reference():
    pre = RotationPretext()
    assert not pre.uses_decoder
    net = build_backbone("unet_tiny")
    head = pre.build_head(net)
    out = pre.forward(net, head, torch.randn(3, 1, 16, 16))
    assert out.shape == (3, 4)
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4], [-3.0, 1.0, 0.0, 0.0]])
    target = torch.tensor([0, 3, 2])
    ref = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        ref += -math.log(math.exp(row[t]) / sum(math.exp(v) for v in row))
    ref /= 3
    assert pre.loss(logits, {"target": target})["loss"].item() == pytest.approx(ref, rel=1e-6)
    assert pre.metrics(logits, {"target": target})["accuracy"] == pytest.approx(2 / 3)
    # The decoder gets no gradient: only the encoder is pretrained.
    pre.loss(out, {"target": torch.tensor([0, 1, 2])})["loss"].backward()
    assert all(p.grad is None for p in net.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
