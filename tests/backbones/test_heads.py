"""Heads: shapes, where they attach, and that they are registered."""

from __future__ import annotations

import pytest
import torch

from cardiossl.backbones import HEADS, build_backbone, build_head


def test_segmentation_head_on_decoder():
    net = build_backbone("unet_tiny")
    head = build_head("segmentation", in_ch=net.decoder.out_channels, n_classes=10)
    out = head(net(torch.randn(2, 1, 32, 32)))
    assert out.shape == (2, 10, 32, 32)


def test_classification_head_on_pooled_bottleneck():
    net = build_backbone("unet_tiny")
    head = build_head("classification", in_ch=net.encoder.channels[-1], n_classes=4)
    bottleneck = net.encoder(torch.randn(3, 1, 32, 32))[-1]
    assert head(bottleneck).shape == (3, 4)
    # Pooled: the output does not depend on the spatial size.
    assert head(net.encoder(torch.randn(3, 1, 48, 40))[-1]).shape == (3, 4)
    # Global average: a spatially constant map gives the same logits at any size.
    x = torch.ones(1, net.encoder.channels[-1], 4, 4)
    assert torch.allclose(head(x), head(torch.ones(1, net.encoder.channels[-1], 7, 3)))


def test_classification_head_hidden_layer():
    head = build_head("classification", in_ch=16, n_classes=1, hidden=8)
    assert head(torch.randn(2, 16, 4, 4)).shape == (2, 1)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 2


def test_reconstruction_head_is_linear_on_decoder():
    head = build_head("reconstruction", in_ch=4, out_ch=1)
    x = torch.randn(2, 4, 16, 16)
    out = head(x)
    assert out.shape == (2, 1, 16, 16)
    assert torch.allclose(head(2 * x) - head.conv.bias.view(1, -1, 1, 1),
                          2 * (out - head.conv.bias.view(1, -1, 1, 1)), atol=1e-5)


@pytest.mark.parametrize("name", ["segmentation", "classification", "reconstruction"])
def test_heads_refuse_bad_sizes(name):
    with pytest.raises(ValueError, match=name):
        HEADS.get(name)(0, 3)
