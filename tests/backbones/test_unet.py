"""U-Net family: encoder/decoder split, presets, params, odd sizes, norms."""

from __future__ import annotations

import pytest
import torch

from cardiossl.backbones import BACKBONES, build_backbone
from cardiossl.backbones.unet import UNet, UNetDecoder, UNetEncoder
from cardiossl.registry import RegistryError


def test_unet_bai_has_five_scales_16_to_256():
    net = build_backbone("unet_bai")
    assert net.encoder.channels == [16, 32, 64, 128, 256]
    assert net.decoder.out_channels == 16
    feats = net.encoder(torch.zeros(1, 1, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (1, 16, 64, 64), (1, 32, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)
    ]
    assert net.decoder(feats).shape == (1, 16, 64, 64)


def test_tiny_is_small_and_encoder_decoder_are_separate_modules():
    net = build_backbone("unet_tiny")
    assert isinstance(net.encoder, UNetEncoder) and isinstance(net.decoder, UNetDecoder)
    assert net.encoder.channels == [4, 8, 16]
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params < 20_000
    enc = {n for n, _ in net.named_parameters() if n.startswith("encoder.")}
    dec = {n for n, _ in net.named_parameters() if n.startswith("decoder.")}
    assert enc and dec and len(enc) + len(dec) == len(list(net.parameters()))


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("size", [(32, 32), (37, 50)])
def test_params_norms_and_odd_sizes(norm, size):
    net = build_backbone("unet", depth=3, width=6, norm=norm)
    assert net.encoder.channels == [6, 12, 24]
    x = torch.randn(2, 1, *size)
    y = net(x)
    assert y.shape == (2, 6, *size)
    kinds = {type(m).__name__ for m in net.modules()}
    expected = {"batch": "BatchNorm2d", "instance": "InstanceNorm2d", "group": "GroupNorm"}.get(norm)
    if expected:
        assert expected in kinds
    else:
        assert not kinds & {"BatchNorm2d", "InstanceNorm2d", "GroupNorm"}


def test_max_width_and_in_channels():
    net = build_backbone("unet", depth=4, width=32, max_width=64, in_channels=3)
    assert net.encoder.channels == [32, 64, 64, 64]
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 32, 16, 16)


def test_preset_overrides_apply():
    assert build_backbone("unet_bai", norm="instance").config.norm == "instance"


@pytest.mark.parametrize(
    "params, field",
    [({"depht": 3}, "depht"), ({"depth": 1}, "depth"), ({"width": 0}, "width"), ({"norm": "layer"}, "norm")],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        UNet(**params)


def test_unknown_backbone_lists_known():
    with pytest.raises(RegistryError, match="unet_bai"):
        build_backbone("resnet")
    assert {"unet", "unet_bai", "unet_tiny"} <= set(BACKBONES.names())


def test_skip_connections_carry_information():
    """The decoder must use the encoder's high-resolution features, not only the bottleneck."""
    torch.manual_seed(0)
    net = build_backbone("unet_tiny").eval()
    x = torch.randn(1, 1, 16, 16, requires_grad=True)
    feats = net.encoder(x)
    feats[0].retain_grad()
    net.decoder(feats).sum().backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_cuda_matches_cpu(norm):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    net = build_backbone("unet_bai", norm=norm).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        out = net.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    # bf16 autocast (what training on H100/H200 uses) runs and stays close.
    net.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = net(x.cuda())
    y.float().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.encoder.parameters())
