"""augment.on: device: the loader's draws applied to the batch equal the loader path's augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from cardiossl.datasets.geometry import Plane
from cardiossl.platform.config import AugmentConfig, IntensityAugment, SpatialAugment, load_job
from cardiossl.platform.tracking.testing import MemoryTracker
from cardiossl.platform.training import LocalSession, collate, make_dataset, run_pretraining, split_cohort
from cardiossl.platform.training.augment import Augment, SampleTransform
from cardiossl.platform.training.augment_device import (
    DEVICE_KEYS,
    DeferredAugment,
    DeferredTransform,
    DeviceAugment,
    step_generator,
)

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[3]
SIZE = 40


def samples(n: int, seed: int = 0) -> list[dict]:
    """Random smooth images on oblique planes of several shapes and spacings (two channels)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
        a = rng.normal(size=3)
        row = np.array([np.cos(a[0]), np.sin(a[0]), 0.0])
        col = np.cross(row, [0.0, 0.0, 1.0])
        plane = Plane(rng.normal(size=3) * 20, row, col, (float(rng.uniform(1, 2)), float(rng.uniform(1, 2))))
        rr, cc = np.meshgrid(np.linspace(0, 3, h), np.linspace(0, 3, w), indexing="ij")
        img = np.stack([np.sin(rr + a[1]) * np.cos(cc * a[2]), rr * cc]).astype(np.float32) * 100 + 7
        out.append({"image": img, "plane": plane.to_vector(), "index": i})
    return out


def both_paths(cfg: AugmentConfig, batch: list[dict], seed: int = 1):
    """(loader-path images, device-path images, loader planes, device planes) for the same draws."""
    aug = Augment.from_config(cfg, SIZE, labels=False)
    loader = [aug(dict(s), np.random.default_rng([seed, s["index"]])) for s in batch]
    deferred = [DeferredAugment(aug)(dict(s), np.random.default_rng([seed, s["index"]])) for s in batch]
    dev = []
    for d in deferred:  # mixed source shapes: the device half runs per stored shape
        b = {k: torch.as_tensor(np.asarray(v))[None] for k, v in d.items() if k in ("image", *DEVICE_KEYS)}
        b["input"] = b.pop("image")
        gen = torch.Generator().manual_seed(seed * 1000 + int(d["index"]))
        dev.append(DeviceAugment.from_config(cfg, SIZE)(b, gen)[0].numpy())
    return (np.stack([s["image"] for s in loader]), np.stack(dev),
            np.stack([s["plane"] for s in loader]), np.stack([d["plane"] for d in deferred]))


def test_spatial_resampling_on_the_device_equals_the_loader_path():
    cfg = AugmentConfig(spatial=SpatialAugment(p=1.0, rotation_deg=40, scale=(0.8, 1.25), translation_mm=10),
                        intensity=None)
    cpu, dev, p_cpu, p_dev = both_paths(cfg, samples(12))
    np.testing.assert_array_equal(p_cpu, p_dev)  # the same draws give the same plane (and target)
    scale = np.abs(cpu).max()
    assert np.abs(cpu - dev).max() <= 1e-4 * scale


def test_plain_crop_and_identity_on_the_device_equal_the_loader_path():
    cfg = AugmentConfig(spatial=SpatialAugment(p=0.0), intensity=None)
    batch = samples(6) + [dict(samples(1, seed=5)[0], image=np.ones((2, SIZE, SIZE), np.float32) * 3, index=6)]
    cpu, dev, p_cpu, p_dev = both_paths(cfg, batch)
    np.testing.assert_allclose(p_cpu, p_dev, atol=1e-9)
    assert np.abs(cpu - dev).max() <= 1e-4 * np.abs(cpu).max()


def test_gamma_and_contrast_on_the_device_equal_the_loader_path():
    cfg = AugmentConfig(spatial=SpatialAugment(p=0.7),
                        intensity=IntensityAugment(p=0.7, gamma=(0.5, 2.0), contrast=(0.5, 1.5), noise_std=None))
    cpu, dev, _, _ = both_paths(cfg, samples(16))
    assert not np.allclose(cpu[0], cpu[1])
    np.testing.assert_allclose(dev, cpu, rtol=1e-4, atol=1e-3)


def test_noise_on_the_device_has_the_loader_paths_distribution():
    """The only draw made on the device: same std per sample, zero mean, Gaussian (two-sample KS)."""
    noisy = AugmentConfig(spatial=SpatialAugment(p=0.0),
                          intensity=IntensityAugment(p=1.0, gamma=None, contrast=None, noise_std=(0.5, 2.0)))
    clean = AugmentConfig(spatial=SpatialAugment(p=0.0),
                          intensity=IntensityAugment(p=1.0, gamma=None, contrast=None, noise_std=(0.0, 0.0)))
    batch = samples(12)
    cpu, dev, _, _ = both_paths(noisy, batch)
    base, _, _, _ = both_paths(clean, batch)
    aug = Augment.from_config(noisy, SIZE, labels=False)
    sds = np.array([aug.draw_intensity(_draws_after_plane(aug, s)).noise_std for s in batch])
    r_cpu = ((cpu - base) / sds[:, None, None, None]).ravel()
    r_dev = ((dev - base) / sds[:, None, None, None]).ravel()
    for r in (r_cpu, r_dev):
        assert abs(r.mean()) < 0.02 and abs(r.std() - 1.0) < 0.02
    assert stats.ks_2samp(r_cpu, r_dev).pvalue > 1e-3
    assert not np.allclose(r_cpu, r_dev)  # equal in distribution, not in value


def _draws_after_plane(aug: Augment, s: dict) -> np.random.Generator:
    rng = np.random.default_rng([1, s["index"]])
    aug.draw_plane(s, rng)
    return rng


def test_position_target_is_the_loader_paths(tiny_store, tmp_path):
    """The same (seed, epoch, rank, index) stream draws the same plane, so the same boxes target."""
    job = load_job(REPO / "jobs" / "pretrain_position.yaml",
                   tiny_pretrain_overrides(tiny_store, tmp_path, **{"augment.on": "device", "image_size": 48}))
    pretext = job.pretext.build()
    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    assert isinstance(ds.transform, DeferredTransform)
    loader_tf = SampleTransform(Augment.from_config(job.augment, 48, labels=False), pretext, train=True)
    deferred_tf, checked = ds.transform, 0
    for i in range(0, len(ds), max(1, len(ds) // 8)):
        a = ds[i]
        ds.transform = None
        stored = ds[i]
        ds.transform = deferred_tf
        b = loader_tf(stored, np.random.default_rng([ds.seed, ds.epoch, ds.rank, i]))
        np.testing.assert_array_equal(a["target"], b["target"])
        np.testing.assert_array_equal(a["plane"], b["plane"])
        assert a["input"].shape[-1] == 64 and b["input"].shape[-1] == 48  # the stored grid travels
        assert all(k in a for k in DEVICE_KEYS) and "label" not in a
        checked += 1
    assert checked >= 4


def test_a_pretext_that_reads_the_image_is_refused(tiny_store, tmp_path):
    job = load_job(REPO / "jobs" / "pretrain_rotation.yaml",
                   tiny_pretrain_overrides(tiny_store, tmp_path, "rotation", **{"augment.on": "device"}))
    with pytest.raises(ValueError, match="pretext 'rotation' reads the augmented image.*augment.on: loader"):
        make_dataset(job, split_cohort(job)["train"], job.pretext.build(), train=True)


def test_loop_trains_with_device_augmentation(tiny_store, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = load_job(REPO / "jobs" / "pretrain_position.yaml",
                       tiny_pretrain_overrides(tiny_store, tmp_path, **{"augment.on": "device", "steps": 6,
                                                                       "loader.num_workers": 1}))
        tracker = MemoryTracker()
        res = run_pretraining(job, LocalSession(tmp_path / "run"), tracker)
    finally:
        torch.set_num_threads(n)
    losses = [v for _, v in tracker.history("train/loss")]
    assert res.step == 6 and len(losses) == 6 and all(np.isfinite(losses))


def test_noise_generator_is_explicit_per_step():
    a = torch.randn(5, generator=step_generator(torch.device("cpu"), 3, 0, 7))
    b = torch.randn(5, generator=step_generator(torch.device("cpu"), 3, 0, 7))
    c = torch.randn(5, generator=step_generator(torch.device("cpu"), 3, 1, 7))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_collated_draws_have_fixed_shapes():
    aug = Augment.from_config(AugmentConfig(), SIZE, labels=False)
    items = [DeferredAugment(aug)(dict(s), np.random.default_rng(s["index"])) for s in samples(3)]
    items = [{k: v for k, v in it.items() if k in DEVICE_KEYS} for it in items]
    b = collate(items)
    assert b["warp"].shape == (3, 2, 3) and b["cval"].shape == (3, 2) and b["intensity"].shape == (3, 4)
