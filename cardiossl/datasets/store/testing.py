"""Synthetic parts written fast, for tests and benchmarks of the store's metadata paths.

``write_synthetic_parts`` commits real parts (the store's own array layout, checksums, summaries,
commit markers and index) whose pixels are small ramp images and whose geometry is made up rather
than resampled from a source: a cohort of 100,000 subjects in minutes, to measure what opening,
snapshotting and indexing cost at that scale without spending hours on resampling. Subject i has
10 short-axis positions and three long-axis views, each at ``frames`` cine frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import PHASES, VIEWS
from . import parts
from .layout import SLICE_ARRAYS, crc32c

SA_POSITIONS = 10
LA_VIEWS = ("2ch", "3ch", "4ch")


def _subject_slices(i: int, frames: int, grid_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The per-slice metadata of synthetic subject ``i`` (SLICE_ARRAYS columns, subject column 0)."""
    positions = [("sa", k) for k in range(SA_POSITIONS)] + [(v, 0) for v in LA_VIEWS]
    n = len(positions) * frames
    m = {k: np.zeros((n,) + shape, dtype=dtype) for k, (dtype, shape) in SLICE_ARRAYS.items()}
    centre = rng.normal(0, 20, 3)
    row = 0
    for view, k in positions:
        normal = np.eye(3)[VIEWS.index(view) % 3]
        rdir, cdir = np.roll(normal, 1), np.roll(normal, 2)
        origin = centre + normal * (10.0 * k) - 0.5 * grid_size * 1.5 * (rdir + cdir)
        plane = np.concatenate([origin, rdir, cdir, [1.5, 1.5]])
        source = np.concatenate([origin, rdir, cdir, [1.8, 1.8]])
        norm = (0.0, 800.0 + i % 7, 300.0, 120.0)
        for f in range(frames):
            m["view"][row] = VIEWS.index(view)
            m["frame"][row] = f
            m["phase"][row] = PHASES.index("ed") if f == 0 else PHASES.index("es") if f == frames // 2 else 0
            m["slice_index"][row] = k
            m["stack_position"][row] = k / (SA_POSITIONS - 1) if view == "sa" else np.nan
            m["has_label"][row] = view == "sa" and f in (0, frames // 2)
            m["plane"][row] = plane
            m["source_plane"][row] = source
            m["source_shape"][row] = (208, 170)
            m["image_scale"][row] = (0.02 + 1e-4 * (row % 13), 400.0 + f)
            m["norm"][row] = norm
            row += 1
    return m


def synthetic_writer(subjects: list[str], first_index: int, *, frames: int, grid_size: int, spacing_mm: float,
                     seed: int = 0):
    """The ``write(part_dir)`` of one part holding ``subjects`` (for ``parts.write_and_commit``)."""

    def write(part_dir: Path) -> dict:
        import zarr

        G = grid_size
        rng = np.random.default_rng([seed, first_index])
        metas = [_subject_slices(first_index + j, frames, G, rng) for j in range(len(subjects))]
        for j, m in enumerate(metas):
            m["subject"][:] = j
        meta = {k: np.concatenate([m[k] for m in metas]) for k in SLICE_ARRAYS}
        n = int(meta["subject"].shape[0])
        shard = min(parts.SHARD_SLICES, n)
        group = zarr.open_group(str(part_dir), mode="a", zarr_format=3)
        (_, image), (_, label) = parts.pixel_arrays(group, part_dir, n, G, shard)
        pixel_crc = np.zeros((n, 2), np.uint32)
        ramp = (np.arange(G * G) % 97 - 48).reshape(G, G).astype(np.int16) * 300  # small on disk, never all zero
        for s in range(0, n, shard):
            rows = np.arange(s, min(s + shard, n))
            img = ramp[None] + (rows % 13).astype(np.int16)[:, None, None]
            lbl = np.zeros((rows.size, G, G), np.uint8)
            lbl[meta["has_label"][rows], G // 4: G // 2, G // 4: G // 2] = 1
            for k, r in enumerate(rows):
                pixel_crc[r] = (crc32c(img[k].data), crc32c(np.ascontiguousarray(lbl[k]).data))
            image.write_chunk(s // shard, img)
            label.write_chunk(s // shard, lbl)
        stats = {sid: {VIEWS[v]: {"n_pixels": 35360, "min": 0.0, "max": 1000.0, "p0_5": 0.0, "p50": 300.0,
                                   "p99_5": 800.0, "mean": 300.0, "std": 120.0}
                       for v in (0, 1, 2, 3)} for sid in subjects}
        return parts.finish_part(group, part_dir, part_dir.name, meta, pixel_crc, list(subjects),
                                 {sid: {"synthetic": True} for sid in subjects}, stats, grid_size=G,
                                 spacing_mm=spacing_mm, shard=shard)

    return write


def write_synthetic_parts(store, n_parts: int, subjects_per_part: int, *, frames: int = 4, prefix: str = "syn",
                          start: int = 0, seed: int = 0) -> list[str]:
    """Commit ``n_parts`` synthetic parts of ``subjects_per_part`` subjects each; returns the part ids."""
    out = []
    for p in range(n_parts):
        first = start + p * subjects_per_part
        subjects = [f"{prefix}{first + j:07d}" for j in range(subjects_per_part)]
        part_id = parts.new_part_id()
        write = synthetic_writer(subjects, first, frames=frames, grid_size=store.grid_size,
                                 spacing_mm=store.spacing_mm, seed=seed)
        parts.write_and_commit(store.path, part_id, subjects, write, lease_s=store.lease_s)
        out.append(part_id)
    return out
