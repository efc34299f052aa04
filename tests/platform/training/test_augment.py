"""Augmentation resamples onto a perturbed plane and reports that plane, so geometry stays exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.platform.training.augment import (
    AppearanceDraw,
    Augment,
    _log_bias,
    SampleTransform,
    apply_appearance,
    crop_or_pad,
    draw_appearance,
    perturbed_plane,
)
from cardiossl.platform.config import AppearanceAugment, AugmentConfig, IntensityAugment, SpatialAugment


def oblique_plane() -> Plane:
    row = np.array([0.8, 0.6, 0.0])
    col = np.array([0.0, 0.0, -1.0])
    return Plane(np.array([10.0, -20.0, 30.0]), row, col, (1.5, 1.25))  # non-square pixels


def linear_sample(plane: Plane, shape=(48, 48)) -> tuple[dict, np.ndarray]:
    """An image whose value is a linear function of the world position (bilinear sampling is exact)."""
    w = np.array([0.03, -0.02, 0.05])
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    world = plane.pixel_to_world(rr, cc)
    img = (world @ w).astype(np.float32)
    label = (rr // 12 + cc // 12).astype(np.int64) % 4
    return {"image": img[None], "label": label, "plane": plane.to_vector()}, w


def test_identity_when_disabled_and_same_size():
    plane = oblique_plane()
    s, _ = linear_sample(plane)
    out = Augment(48)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], s["image"])
    np.testing.assert_array_equal(out["plane"], s["plane"])


def test_crop_keeps_spacing_and_moves_the_origin_by_whole_pixels():
    plane = oblique_plane()
    s, _ = linear_sample(plane, (64, 64))
    out = crop_or_pad(s, 32)
    p2 = Plane.from_vector(out["plane"])
    assert p2.spacing == plane.spacing
    np.testing.assert_allclose(p2.origin, plane.pixel_to_world(16, 16), atol=1e-9)
    np.testing.assert_allclose(out["image"][0], s["image"][0, 16:48, 16:48], atol=1e-4)
    np.testing.assert_array_equal(out["label"], s["label"][16:48, 16:48])


@pytest.mark.parametrize("seed", range(5))
def test_spatial_augmentation_image_agrees_with_the_reported_plane(seed):
    plane = oblique_plane()
    s, w = linear_sample(plane)
    aug = Augment(32, spatial=SpatialAugment(p=1.0, rotation_deg=40, scale=(0.8, 1.25), translation_mm=6))
    out = aug(s, np.random.default_rng(seed))
    p2 = Plane.from_vector(out["plane"])
    # the new plane is the same 3-D plane (in-plane perturbation only), orthonormal
    assert abs(abs(p2.normal @ plane.normal) - 1) < 1e-9
    _, _, dist = plane.world_to_pixel(p2.origin)
    assert abs(dist) < 1e-9
    assert p2.row_dir @ p2.col_dir == pytest.approx(0, abs=1e-12)
    assert p2.spacing != plane.spacing or not np.allclose(p2.row_dir, plane.row_dir)
    # every pixel's value is the linear function at that pixel's world position (inside the source)
    rr, cc = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    world = p2.pixel_to_world(rr, cc)
    r0, c0, _ = plane.world_to_pixel(world)
    inside = (r0 >= 0) & (r0 <= 47) & (c0 >= 0) & (c0 <= 47)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out["image"][0][inside], (world @ w)[inside], atol=1e-4)
    # labels: nearest neighbour, never invented classes
    assert set(np.unique(out["label"])) <= set(np.unique(s["label"])) | {0}
    assert out["label"].dtype == s["label"].dtype


def test_rotation_by_90_degrees_permutes_pixels_exactly():
    plane = Plane(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (1.0, 1.0))
    img = np.random.default_rng(0).standard_normal((1, 33, 33)).astype(np.float32)
    dst = perturbed_plane(plane, (33, 33), (33, 33), angle_rad=math.pi / 2)
    from cardiossl.platform.training.augment import _apply_plane

    out = _apply_plane({"image": img, "plane": plane.to_vector()}, plane, dst, (33, 33))
    # new row_dir = old col_dir, new col_dir = -old row_dir: pixel (r, c) is old (c, 32 - r) = np.rot90
    np.testing.assert_allclose(out["image"][0], np.rot90(img[0], k=1), atol=1e-4)


def test_position_targets_follow_the_perturbed_plane(tiny_store):
    """The box centre of the position pretext is the same anatomical point before and after."""
    from cardiossl.datasets.torch_dataset import CohortDataset
    from cardiossl.pretexts import PRETEXTS

    pretext = PRETEXTS.get("position")({})
    ds = CohortDataset(tiny_store, filter=pretext.accepts)
    aug = Augment(48, spatial=SpatialAugment(p=1.0, rotation_deg=30, scale=(0.8, 1.2), translation_mm=5))
    checked = 0
    for i in range(0, len(ds), max(1, len(ds) // 8)):
        s = ds[i]
        a0 = pretext.annotations(s)
        out = aug(s, np.random.default_rng(i))
        a1 = pretext.annotations(out)
        if not (np.isfinite(a0["cross_point"]).all() and np.isfinite(a1["cross_point"]).all()):
            continue
        w0 = Plane.from_vector(s["plane"]).pixel_to_world(*a0["cross_point"])
        w1 = Plane.from_vector(out["plane"]).pixel_to_world(*a1["cross_point"])
        np.testing.assert_allclose(w1, w0, atol=1e-6)
        # and the target image moves with it: the box-5 (centre) label sits on the crossing point
        t = pretext.make_target(out, np.random.default_rng(0))["target"]
        r, c = np.rint(a1["cross_point"]).astype(int)
        if 0 <= r < 48 and 0 <= c < 48:
            assert t[r, c] == 5
        checked += 1
    assert checked >= 3


def test_intensity_is_seeded_and_shape_preserving():
    plane = oblique_plane()
    s, _ = linear_sample(plane)
    aug = Augment(48, intensity=IntensityAugment(p=1.0))
    a = aug(s, np.random.default_rng(3))
    b = aug(s, np.random.default_rng(3))
    c = aug(s, np.random.default_rng(4))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == s["image"].shape and a["image"].dtype == np.float32
    assert np.all(np.isfinite(a["image"]))
    np.testing.assert_array_equal(a["plane"], s["plane"])
    off = Augment(48, intensity=IntensityAugment(p=0.0))(s, np.random.default_rng(3))
    np.testing.assert_array_equal(off["image"], s["image"])


def test_sample_transform_validation_mode_skips_augmentation_and_from_config():
    plane = oblique_plane()
    s, _ = linear_sample(plane, (64, 64))
    aug = Augment.from_config(AugmentConfig(), 32)
    assert aug.spatial is not None and aug.intensity is not None
    assert Augment.from_config(AugmentConfig(enabled=False), 32).spatial is None
    t = SampleTransform(aug, pretext=None, train=False)
    out = t(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], crop_or_pad(s, 32)["image"])
    import pickle

    assert pickle.loads(pickle.dumps(t)).augment == aug


def _blob_sample(size: int = 48) -> dict:
    """A bright disc on a dim ramp: intensity order matters, as blood over myocardium does."""
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float32)
    img = 0.2 + 0.005 * cc + 0.8 * (((rr - 24) ** 2 + (cc - 20) ** 2) < 100)
    img = (img - img.mean()) / img.std()
    label = (((rr - 24) ** 2 + (cc - 20) ** 2) < 100).astype(np.uint8)
    return {"image": img[None].astype(np.float32), "label": label, "plane": oblique_plane().to_vector()}


def test_appearance_off_draws_nothing_so_old_jobs_see_the_same_samples():
    """``appearance: None`` and ``p = 0`` consume no random numbers: the image equals the one a job
    without the option gets, draw for draw (spatial, intensity and noise all on)."""
    s, _ = linear_sample(oblique_plane(), (64, 64))
    base = Augment(32, SpatialAugment(p=1.0), IntensityAugment(p=1.0))
    want = base(s, np.random.default_rng(7))
    for look in (None, AppearanceAugment(p=0.0)):
        got = Augment(32, SpatialAugment(p=1.0), IntensityAugment(p=1.0), appearance=look)(s, np.random.default_rng(7))
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    assert draw_appearance(None, np.random.default_rng(0)) is None


@pytest.mark.parametrize("seed", range(6))
def test_appearance_changes_contrast_not_geometry_and_keeps_the_scale(seed):
    s = _blob_sample()
    cfg = AppearanceAugment(p=1.0, brightness=None, offset=None)
    draw = draw_appearance(cfg, np.random.default_rng(seed))
    assert draw is not None and draw.remap is not None and draw.bias is not None and draw.blur is not None
    assert draw.brightness is None and draw.offset is None
    # the remap is monotone from 0 to 1, so bright blood stays brighter than what surrounds it
    assert draw.remap[0] == 0.0 and draw.remap[-1] == 1.0 and np.all(np.diff(draw.remap) >= 0)
    assert 0.25 * cfg.bias_field <= draw.bias_gain <= cfg.bias_field
    assert cfg.blur_sigma_px[0] <= draw.blur <= cfg.blur_sigma_px[1]
    out = apply_appearance(s, draw)
    img, ref = out["image"], s["image"]
    assert img.shape == ref.shape and img.dtype == np.float32 and np.all(np.isfinite(img))
    assert not np.allclose(img, ref)
    np.testing.assert_allclose([img.mean(), img.std()], [ref.mean(), ref.std()], atol=1e-4)
    np.testing.assert_array_equal(out["label"], s["label"])
    np.testing.assert_array_equal(out["plane"], s["plane"])
    inside, outside = img[0][s["label"] == 1], img[0][s["label"] == 0]
    assert np.median(inside) > np.median(outside)
    again = apply_appearance(s, draw_appearance(cfg, np.random.default_rng(seed)))
    np.testing.assert_array_equal(again["image"], img)


def test_brightness_and_offset_scale_and_shift_the_normalised_image():
    """Another cohort's field of view normalises to another mean and scale: the last two steps make
    exactly ``x * brightness + offset * std`` of the contrast-randomised image."""
    s = _blob_sample()
    cfg = AppearanceAugment(p=1.0)
    draws = [draw_appearance(cfg, np.random.default_rng(k)) for k in range(40)]
    b = np.array([d.brightness for d in draws])
    o = np.array([d.offset for d in draws])
    assert b.min() >= 0.75 and b.max() <= 1.33 and (b < 1).any() and (b > 1).any()
    assert np.abs(o).max() <= 0.5 and (o < 0).any() and (o > 0).any()
    d = draws[0]
    plain = apply_appearance(s, AppearanceDraw(d.remap, d.bias, d.bias_gain, d.blur))["image"]
    full = apply_appearance(s, d)["image"]
    np.testing.assert_allclose(full, plain * d.brightness + d.offset * s["image"].std(), atol=1e-5)


def test_bias_field_alone_shades_smoothly_within_its_gain():
    """A constant-plus-offset image shaded by the field alone: the gain of every pixel (after the
    mean/std restoration is undone) stays within exp(+-gain) and varies smoothly."""
    size = 40
    img = np.full((1, size, size), 1.0, dtype=np.float32)
    img[0, 0, 0] = 0.0  # a range to normalise within: x = 1 everywhere else
    draw = AppearanceDraw(bias=np.random.default_rng(1).uniform(-1, 1, 10), bias_gain=0.4)
    out = apply_appearance({"image": img}, draw)["image"][0]
    # undo the affine restoration using two pixels whose x is known: 0 at [0, 0] and 1*gain elsewhere
    field = np.exp(0.4 * _log_bias(draw.bias, (size, size)))
    ratio = (out[1:, 1:] - out[0, 0]) / field[1:, 1:]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)  # out = a * field + b: shading is the field
    assert field.max() <= np.exp(0.4) + 1e-6 and field.min() >= np.exp(-0.4) - 1e-6
    assert np.isclose(max(field.max(), 1 / field.min()), np.exp(0.4), rtol=1e-6)
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.1  # smooth: no pixel-scale structure


def test_appearance_from_config_reaches_the_sample_transform():
    cfg = AugmentConfig(appearance={"p": 1.0, "bias_field": None, "blur_sigma_px": None})
    aug = Augment.from_config(cfg, 48)
    assert aug.appearance == cfg.appearance
    s = _blob_sample()
    plain = Augment(48)(s, np.random.default_rng(0))
    looked = Augment(48, appearance=cfg.appearance)(s, np.random.default_rng(0))
    assert not np.allclose(looked["image"], plain["image"])
    with pytest.raises(ValueError, match="empty"):
        AppearanceAugment(blur_sigma_px=(1.0, 0.5))
