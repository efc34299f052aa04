"""A hand-built heart and a contract check, for pretext tests and third-party plugin authors.

``example_subject`` makes sample dicts shaped exactly like ``CohortDataset``'s (docs/plugins.md)
from an analytic LV (an ellipsoid of revolution around a known long axis) and planes built by
hand, so every geometric quantity is known exactly. ``check_contract`` runs a pretext through the
whole contract: declared target shapes and ranges, identical targets under the same seed, a
forward/backward step with a finite loss and non-zero encoder gradients.
"""

from __future__ import annotations

import math

import numpy as np

from ..datasets.records import LA_VIEWS
from .base import Pretext, sample_meta

# LPS directions: the LV long axis runs from base to apex towards patient left, anterior, inferior.
LONG_AXIS = np.array([0.55, -0.45, -0.70]) / np.linalg.norm([0.55, -0.45, -0.70])
BASE_CENTER = np.array([10.0, -5.0, 20.0])  # mm, LV centre at the base
CAVITY_RADIUS_MM = 25.0
WALL_MM = 10.0
LV_LENGTH_MM = 80.0


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _rotate_in_plane(v, w, deg):
    """Rotate ``v`` towards ``w`` (both unit, orthogonal) by ``deg`` degrees."""
    t = math.radians(deg)
    return math.cos(t) * v + math.sin(t) * w


def heart_frame():
    """(long axis, lateral, anterior): unit vectors, lateral/anterior spanning the SA plane."""
    a = LONG_AXIS
    lat = _unit(np.array([1.0, 1.0, 0.0]) - (np.array([1.0, 1.0, 0.0]) @ a) * a)
    ant = np.cross(a, lat)
    if ant @ np.array([0.0, -1.0, 1.0]) < 0:
        ant = -ant
    return a, lat, ant


def trace_directions() -> dict[str, np.ndarray]:
    """World directions of the LA traces in every SA slice (lying in the SA plane)."""
    _, lat, ant = heart_frame()
    return {
        "4ch": _rotate_in_plane(lat, ant, 12.0),  # septum -> lateral wall
        "2ch": _rotate_in_plane(ant, lat, -8.0),  # inferior -> anterior wall
        "3ch": _unit(lat - 0.8 * ant),  # anteroseptum -> inferolateral wall
    }


def plane_vector(origin_center, row_dir, col_dir, shape, spacing) -> np.ndarray:
    """11-float plane whose image of ``shape`` is centred at ``origin_center``."""
    h, w = shape
    row_dir, col_dir = _unit(row_dir), _unit(col_dir)
    origin = origin_center - (w - 1) / 2.0 * spacing[1] * row_dir - (h - 1) / 2.0 * spacing[0] * col_dir
    return np.concatenate([origin, row_dir, col_dir, np.asarray(spacing, dtype=np.float64)])


def render(plane_vec, shape) -> tuple[np.ndarray, np.ndarray]:
    """(z-scored image [1, H, W] float32, label [H, W] int64) of the analytic LV in a plane."""
    v = np.asarray(plane_vec, dtype=np.float64)
    o, r, c, sp = v[:3], v[3:6], v[6:9], v[9:11]
    h, w = shape
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts = o + cc[..., None] * sp[1] * r + rr[..., None] * sp[0] * c
    rel = pts - BASE_CENTER
    t = rel @ LONG_AXIS  # along the axis from the base
    rho = np.linalg.norm(rel - t[..., None] * LONG_AXIS, axis=-1)
    s = np.clip(t / LV_LENGTH_MM, -1.0, 1.0)
    radius = CAVITY_RADIUS_MM * np.sqrt(np.clip(1.0 - s**2, 0.0, 1.0))
    cavity = (t >= -5.0) & (t <= LV_LENGTH_MM) & (rho < radius)
    outer = CAVITY_RADIUS_MM + WALL_MM
    myo = ~cavity & (t >= -5.0) & (t <= LV_LENGTH_MM + WALL_MM) & (
        rho < outer * np.sqrt(np.clip(1.0 - (t / (LV_LENGTH_MM + WALL_MM)).clip(-1, 1) ** 2, 0, 1))
    )
    label = np.where(cavity, 1, np.where(myo, 2, 0)).astype(np.int64)
    img = np.where(cavity, 2.0, np.where(myo, -0.5, 0.0)) + 0.1 * np.sin(0.3 * rr) * np.cos(0.2 * cc)
    return img[None].astype(np.float32), label


def example_subject(
    *,
    n_slices: int = 6,
    shape: tuple[int, int] = (64, 64),
    spacing: tuple[float, float] = (1.5, 1.5),
    slice_gap_mm: float = 10.0,
    image_rotation_deg: float = 30.0,
    center_offset_mm: tuple[float, float] = (6.0, -4.0),
    la_views: tuple[str, ...] = LA_VIEWS,
    subject_id: str = "example-1",
) -> list[dict]:
    """Sample dicts (SA slices base->apex, then the LA views) like ``CohortDataset`` yields."""
    a, lat, ant = heart_frame()
    dirs = trace_directions()
    row_sa = _rotate_in_plane(lat, ant, image_rotation_deg)
    col_sa = np.cross(a, row_sa)  # row x col = long axis
    la_planes = np.full((len(LA_VIEWS), 11), np.nan)
    for k, view in enumerate(LA_VIEWS):
        if view in la_views:
            la_planes[k] = plane_vector(BASE_CENTER + 35.0 * a, dirs[view], a, shape, spacing)
    samples = []
    for i in range(n_slices):
        centre = BASE_CENTER + (5.0 + i * slice_gap_mm) * a
        centre = centre + center_offset_mm[0] * row_sa + center_offset_mm[1] * col_sa
        plane = plane_vector(centre, row_sa, col_sa, shape, spacing)
        image, label = render(plane, shape)
        samples.append(
            dict(
                image=image, label=label, has_label=True, plane=plane, la_planes=la_planes.copy(),
                image_centre=centre.copy(), stack_position=float(i / max(1, n_slices - 1)),
                subject_id=subject_id, subject=0,
                view="sa", frame=0, phase="ed", slice_index=i, index=i,
            )
        )
    for k, view in enumerate(LA_VIEWS):
        if view in la_views:
            image, label = render(la_planes[k], shape)
            samples.append(
                dict(
                    image=image, label=label, has_label=True, plane=la_planes[k].copy(),
                    la_planes=la_planes.copy(), image_centre=BASE_CENTER + 35.0 * a,
                    stack_position=float("nan"), subject_id=subject_id,
                    subject=0, view=view, frame=0, phase="ed", slice_index=0, index=n_slices + k,
                )
            )
    return samples


def check_contract(
    pretext: Pretext,
    *,
    backbone: str = "unet_tiny",
    shape: tuple[int, int] = (32, 32),
    batch_size: int = 2,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Run ``pretext`` through the contract; raise AssertionError naming what broke. Returns the
    losses and metrics of the step (floats). ``device`` runs the step there (e.g. "cuda")."""
    import torch
    from torch.utils.data import default_collate

    from ..backbones import build_backbone

    samples = [s for s in example_subject(shape=shape, n_slices=max(4, batch_size)) if pretext.accepts(sample_meta(s))]
    assert len(samples) >= batch_size, f"{pretext.name}: accepts() refused the example SA slices"
    samples = samples[:batch_size]
    spec = pretext.target_spec(shape)
    assert "input" in spec and "target" in spec, f"{pretext.name}: target_spec must declare input and target"
    made = []
    for i, s in enumerate(samples):
        t1 = pretext.make_target(dict(s), np.random.default_rng([seed, 0, 0, i]))
        t2 = pretext.make_target(dict(s), np.random.default_rng([seed, 0, 0, i]))
        for key, sp in spec.items():
            assert key in t1, f"{pretext.name}: make_target did not add {key!r}"
            sp.check(f"{pretext.name}.{key}", t1[key])
            assert np.array_equal(np.asarray(t1[key]), np.asarray(t2[key]), equal_nan=True), (
                f"{pretext.name}: {key} differs under the same seed"
            )
        assert "image" in t1, f"{pretext.name}: make_target must keep the sample's keys"
        made.append({k: t1[k] for k in spec} | {
            k: t1[k] for k in ("plane", "la_planes", "stack_position", "slice_index")
        })
    batch = default_collate(made)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_backbone(backbone).to(device)
        head = pretext.build_head(net).to(device)
    net.train()
    head.train()
    out = pretext.forward(net, head, batch["input"])
    losses = pretext.loss(out, batch)
    assert "loss" in losses, f"{pretext.name}: loss() must return a 'loss' entry"
    for k, v in losses.items():
        assert torch.isfinite(v).all(), f"{pretext.name}: loss term {k!r} is not finite ({v})"
    losses["loss"].backward()
    grad = sum(float(p.grad.abs().sum()) for p in net.encoder.parameters() if p.grad is not None)
    assert grad > 0, f"{pretext.name}: no gradient reaches the encoder"
    if pretext.uses_decoder:
        dgrad = sum(float(p.grad.abs().sum()) for p in net.decoder.parameters() if p.grad is not None)
        assert dgrad > 0, f"{pretext.name}: uses_decoder is True but no gradient reaches the decoder"
    metrics = pretext.metrics(out.detach(), batch)
    for k, v in metrics.items():
        assert isinstance(v, float), f"{pretext.name}: metric {k!r} is {type(v).__name__}, expected float"
    return {**{k: float(v.detach()) for k, v in losses.items()}, **metrics, "encoder_grad": grad}
