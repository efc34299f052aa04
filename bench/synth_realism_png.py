"""Synthetic next to real: one PNG of short-axis and 4-chamber cine frames, for judging realism by eye.

Top rows: real exams read with the project's readers from ``../shared/data/real`` (bivme-patient1
DICOM: SA and 4Ch; ACDC patients: SA; Sunnybrook: SA), skipped when absent. Bottom rows: synthetic
subjects of the requested version(s). Every image is shown in its own field of view at 1 mm per
display pixel (so sizes compare), windowed at its 0.5-99.5th percentiles, as a viewer would.

    python bench/synth_realism_png.py [--versions 2] [--subjects 0,1,2,3] [--out /tmp/synth_vs_real.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def _mid_sa(slices):
    """The ED SA slice nearest the middle of the stack (by label area when labelled, else by index)."""
    sa = [s for s in slices if s.view == "sa" and s.frame == min(x.frame for x in slices if x.view == "sa")]
    sa.sort(key=lambda s: s.slice_index)
    if sa and sa[0].label is not None:
        areas = [int(np.isin(s.label, (1, 2)).sum()) for s in sa]
        lv = [k for k, a in enumerate(areas) if a > 0.3 * max(areas)]
        return sa[lv[len(lv) // 2]]
    return sa[len(sa) // 2]


def _first(slices, view):
    cand = [s for s in slices if s.view == view]
    return min(cand, key=lambda s: s.frame) if cand else None


def real_images(root: Path) -> list[tuple[str, object]]:
    from cardiossl.datasets.readers import READERS

    out = []
    cases = [("dicom", root / "bivme-patient1", "bivme (Siemens 3T)"),
             ("acdc", root / "acdc-dev", "ACDC"), ("sunnybrook", root / "sunnybrook-SCD0000101", "Sunnybrook (GE)")]
    for layout, folder, name in cases:
        if not folder.is_dir():
            continue
        reader = READERS.get(layout)()
        sources = reader.discover(folder)
        wanted = ("patient001", "patient061")
        picks = [s for s in sources if s.subject_id in wanted] if layout == "acdc" else sources[:1]
        for src in picks:
            rec = reader.read(src)
            out.append((f"real {name} {src.subject_id if layout == 'acdc' else ''} SA", _mid_sa(rec.slices)))
            four = _first(rec.slices, "4ch")
            if four is not None:
                out.append((f"real {name} 4Ch", four))
    return out


def synthetic_images(version: int, ids: list[int], seed: int) -> list[tuple[str, object]]:
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject

    out = []
    for i in ids:
        rec = synth_subject(subject_id_for(i), seed, n_frames=2, version=version)
        tag = f"v{version} #{i} {rec.meta.get('group', '')} {rec.meta.get('acquisition', {}).get('site', '')}"
        out.append((f"{tag} SA", _mid_sa(rec.slices)))
        out.append((f"v{version} #{i} 4Ch", _first(rec.slices, "4ch")))
    return out


def to_mm(s, fov_mm: float = 300.0) -> np.ndarray:
    """The slice resampled to 1 mm pixels over a ``fov_mm`` square around its image centre."""
    from scipy.ndimage import map_coordinates

    img = s.image.astype(np.float32)
    half = fov_mm / 2.0
    y, x = np.mgrid[-half:half, -half:half]
    rc, cc = (img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0
    r, c = rc + y / s.plane.spacing[0], cc + x / s.plane.spacing[1]
    return map_coordinates(img, [r, c], order=1, cval=0.0)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default="2", help="comma-separated synthetic versions (e.g. 1,2)")
    ap.add_argument("--subjects", default="0,1,2,3,4,5", help="synthetic subject indices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/synth_vs_real.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [int(x) for x in args.subjects.split(",") if x]
    rows = [real_images(REAL.resolve())]
    for v in (int(x) for x in args.versions.split(",")):
        rows.append(synthetic_images(v, ids, args.seed))
    rows = [r for r in rows if r]
    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.9 * len(rows)), squeeze=False)
    for ax_row, items in zip(axes, rows):
        for ax in ax_row:
            ax.axis("off")
        for ax, (title, s) in zip(ax_row, items):
            img = to_mm(s)
            lo, hi = np.percentile(img[img > 0], [0.5, 99.5]) if (img > 0).any() else (0, 1)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
