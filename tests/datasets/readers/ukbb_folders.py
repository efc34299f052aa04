"""Hand-built subject folders in the real UK Biobank layout (Bai et al.'s ``ukbb_cardiac`` conversion).

Every file is written with nibabel from a geometry we choose (``KnownGeometry``: oblique SA stack
perpendicular to a left-anterior-inferior LV axis, LA planes containing that axis), with the
pipeline's own label values: SA 1 LV cavity, 2 LV myocardium, 3 RV cavity; ``seg_la_2ch`` 1 LA;
``seg_la_4ch`` 1 LA, 2 RA; ``seg4_la_4ch`` 1 LV, 2 Myo, 3 RV, 4 LA, 5 RA. LA files are 4-D
``(x, y, 1, t)`` as the conversion writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nifti_cohorts import KnownGeometry, heart, long_axis_plane, save, short_axis

LA_ANGLES = {"4ch": -20.0, "3ch": 40.0, "2ch": 85.0}  # about the LV axis, from the SA row direction


@dataclass
class UkbbTruth:
    folder: Path
    sa: KnownGeometry
    la: dict[str, KnownGeometry]
    sa_frames: list[np.ndarray]  # (x, y, z) int16 per frame, file slice order
    sa_labels: list[np.ndarray]  # ours == ukbb SA convention
    la_frames: dict[str, list[np.ndarray]] = field(default_factory=dict)  # (x, y, 1) per frame
    la_seg4: list[np.ndarray] = field(default_factory=list)  # 4ch 0..5 per frame
    es: int = 2


def seg4_labels(shape, scale: float) -> np.ndarray:
    """A 4-chamber label slice in the seg4 convention: LV 1, Myo 2, RV 3, LA 4, RA 5."""
    nx, ny = shape
    lab = np.zeros((nx, ny, 1), np.uint8)
    lab[2 : nx // 2, 2 : ny // 2 - 1] = 2
    lab[4 : nx // 2 - 2, 4 : ny // 2 - 3] = 1
    lab[2 : nx // 2, ny // 2 + 1 : ny - 2] = 3
    lab[nx // 2 + 1 : nx - 2, 2 : int(ny // 2 * scale)] = 4
    lab[nx // 2 + 1 : nx - 2, ny // 2 + 1 : ny - 2] = 5
    return lab


def write_ukbb_subject(root: Path, eid: str = "1000001", *, shape=(24, 20, 6), la_shape=(28, 22),
                       n_frames: int = 5, es: int = 2, cine: bool = True, ed_es: bool = True,
                       sa_labels: str | None = "manual", label_4d: bool = False, la_views=("2ch", "3ch", "4ch"),
                       seg4: bool = True, atrial: bool = True, ao: bool = True, apex_first: bool = False,
                       sa: KnownGeometry | None = None, seed: int = 0) -> UkbbTruth:
    """One subject folder; ``sa_labels`` None, "manual" (label_sa_ED/ES, or label_sa 4-D with
    ``label_4d``) or "automatic" (seg_sa 4-D with ``label_4d``, else seg_sa_ED/ES)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / eid
    folder.mkdir(parents=True)
    sa = sa or short_axis(origin=(5.0, -20.0, 60.0), twist=30.0, row_spacing=1.8, col_spacing=1.6, step=10.0,
                          apex_first=apex_first)
    frames, labels = [], []
    for t in range(n_frames):
        scale = 1.0 - 0.35 * np.sin(np.pi * t / n_frames) ** 2
        img, lab = heart(shape, scale, rng, base_first=not apex_first)
        frames.append(img)
        labels.append(lab)
    truth = UkbbTruth(folder, sa, {}, frames, labels, es=es)
    aff = sa.affine()
    if cine:
        save(np.stack(frames, axis=-1), aff, folder / "sa.nii.gz")
    if ed_es:
        save(frames[0], aff, folder / "sa_ED.nii.gz")
        save(frames[es], aff, folder / "sa_ES.nii.gz")
    if sa_labels == "manual":
        if label_4d:
            sparse = np.zeros(labels[0].shape + (n_frames,), np.int16)  # as biobank_utils writes it
            sparse[..., 0], sparse[..., es] = labels[0], labels[es]
            save(sparse, aff, folder / "label_sa.nii.gz")
        else:
            save(labels[0], aff, folder / "label_sa_ED.nii.gz")
            save(labels[es], aff, folder / "label_sa_ES.nii.gz")
    elif sa_labels == "automatic":
        if label_4d:  # the network's float output over the whole cine
            save(np.stack(labels, axis=-1).astype(np.float64), aff, folder / "seg_sa.nii.gz")
        else:
            save(labels[0].astype(np.float64), aff, folder / "seg_sa_ED.nii.gz")
            save(labels[es].astype(np.float64), aff, folder / "seg_sa_ES.nii.gz")
    axis_point = sa.world((shape[1] - 1) / 2 + 1.5, (shape[0] - 1) / 2 - 2.0, 0)  # the LV axis meets slice 0 here
    for view in la_views:
        g = long_axis_plane(sa, LA_ANGLES[view])
        origin = (axis_point - (la_shape[0] - 1) / 2 * g.col_spacing * g.row_dir
                  - (la_shape[1] - 1) / 2 * g.row_spacing * g.col_dir)
        geom = KnownGeometry(origin, g.row_dir, g.col_dir, g.row_spacing, g.col_spacing, g.step)
        truth.la[view] = geom
        la_frames = []
        for t in range(n_frames):
            img, _ = heart((*la_shape, 3), 1.0 - 0.3 * t / n_frames, rng)
            la_frames.append(img[:, :, :1].copy())
        truth.la_frames[view] = la_frames
        la_aff = geom.affine()
        save(np.stack(la_frames, axis=-1), la_aff, folder / f"la_{view}.nii.gz")  # (x, y, 1, t)
        if view == "4ch" and seg4:
            truth.la_seg4 = [seg4_labels(la_shape, 1.0 + 0.3 * t / n_frames) for t in range(n_frames)]
            save(la_frames[0], la_aff, folder / "la_4ch_ED.nii.gz")
            save(la_frames[es], la_aff, folder / "la_4ch_ES.nii.gz")
            save(truth.la_seg4[0].astype(np.float64), la_aff, folder / "seg4_la_4ch_ED.nii.gz")
            save(truth.la_seg4[es].astype(np.float64), la_aff, folder / "seg4_la_4ch_ES.nii.gz")
        if atrial and view in ("2ch", "4ch"):
            atria = np.stack([(s >= 4).astype(np.uint8) * (s - 3) for s in
                              (truth.la_seg4 or [seg4_labels(la_shape, 1.0)] * n_frames)], axis=-1)
            if view == "2ch":
                atria = (atria > 0).astype(np.float64)  # 1 LA only
            save(atria.astype(np.float64), la_aff, folder / f"seg_la_{view}.nii.gz")
    if ao:
        ao_geom = KnownGeometry(np.array([0.0, 0.0, 40.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 1.5, 1.5, 8.0)
        save(rng.integers(0, 500, (16, 16, 1, n_frames)).astype(np.int16), ao_geom.affine(), folder / "ao.nii.gz")
    return truth
