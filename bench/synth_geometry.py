"""Independent geometry check of `cardiossl synth --format nifti`: how far the planned planes are from the LV.

Reads only the NIfTI files (affines and the ED SA label volume; never ``info.json`` or the
generator's meta) and measures, per subject:

* the LV axis (a line fitted through the LV-cavity centroids of the SA slices, weighted by area)
  against the SA stack normal: the angle between them;
* the distance of each SA slice's LV-cavity centroid from the 2Ch and 4Ch planes (median per subject);
* the distance from the 2Ch x 4Ch crossing to the LV-cavity centroid in each SA slice (median per
  subject) and its drift along the stack (slope of the crossing-minus-centroid vector, mm per slice).

Real values for comparison: a real M&Ms-2 exam, LV axis 3.6 deg off the SA normal and
LV centroids 4.1 mm off the LA planes; the bivme exam in ../shared/data/real, the 4Ch plane 4.2 mm off
the axis and the crossing drifting ~2.5 mm per slice; two UK Biobank subjects, median
crossing-to-centroid 3.3 mm and 14.9 mm.

    python bench/synth_geometry.py --subjects 40 --workers 2 [--version 2] [--nifti FOLDER]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REAL = {
    "sa_axis_angle_deg": "3.6 (M&Ms-2 exam)",
    "centroid_to_la_mm": "4.1 (M&Ms-2 exam); 4Ch 4.2 (bivme)",
    "crossing_to_centroid_mm": "3.3 and 14.9 (two UK Biobank subjects)",
    "crossing_drift_mm_per_slice": "~2.5 (bivme)",
}
MIN_AREA_FRACTION = 0.3  # slices whose LV cavity is at least this share of the largest one


def _load(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    return img, np.asarray(img.affine, dtype=np.float64)


def _ed_labels(path: Path) -> np.ndarray:
    """The ED label volume (x, y, slice): frame 0 by the header's ``frames=`` note, else volume 0."""
    img, _ = _load(path)
    data = np.asarray(img.dataobj)
    descrip = bytes(img.header["descrip"]).split(b"\0", 1)[0].decode("ascii", "replace")
    m = re.search(r"frames=([0-9,]+)", descrip)
    frames = [int(x) for x in m.group(1).split(",")] if m else list(range(data.shape[3]))
    return data[..., frames.index(0) if 0 in frames else 0]


def measure_subject(folder: Path) -> dict:
    from cardiossl.datasets.geometry import Plane, plane_intersection

    _, sa_aff = _load(folder / "sa.nii.gz")
    lab = _ed_labels(folder / "label_sa.nii.gz")
    la = {v: Plane.from_nifti(_load(folder / f"la_{v}.nii.gz")[1], 0) for v in ("2ch", "4ch")}
    cross = plane_intersection(la["2ch"], la["4ch"])
    cents, areas, ks, planes = [], [], [], []
    for k in range(lab.shape[2]):
        plane = Plane.from_nifti(sa_aff, k)
        img = lab[:, :, k].T  # the 2-D image of slice k
        rr, cc = np.nonzero(img == 1)
        if rr.size == 0:
            continue
        cents.append(plane.pixel_to_world(rr.mean(), cc.mean()))
        areas.append(rr.size * plane.spacing[0] * plane.spacing[1])
        ks.append(k)
        planes.append(plane)
    areas = np.array(areas)
    keep = areas >= MIN_AREA_FRACTION * areas.max()
    cents, ks = np.array(cents)[keep], np.array(ks)[keep]
    planes = [p for p, k in zip(planes, keep) if k]
    w = areas[keep] / areas[keep].sum()
    mean = (w[:, None] * cents).sum(0)
    _, _, vt = np.linalg.svd((cents - mean) * np.sqrt(w)[:, None])
    axis = vt[0]
    n = planes[0].normal
    out = {
        "subject": folder.name,
        "slices": int(len(ks)),
        "sa_axis_angle_deg": float(np.degrees(np.arccos(min(1.0, abs(axis @ n))))),
    }
    for v, p in la.items():
        out[f"centroid_to_{v}_mm"] = float(np.median(np.abs((cents - p.origin) @ p.normal)))
    # crossing of the 2ch and 4ch planes in each SA slice, minus the LV centroid (in-plane vector)
    if cross is not None:
        point, d = cross
        vecs = []
        for c, plane in zip(cents, planes):
            t = ((plane.origin - point) @ plane.normal) / (d @ plane.normal)
            vecs.append(point + t * d - c)
        vecs = np.array(vecs)
        out["crossing_to_centroid_mm"] = float(np.median(np.linalg.norm(vecs, axis=1)))
        x = ks - ks.mean()
        slope = (x[:, None] * (vecs - vecs.mean(0))).sum(0) / max(float((x * x).sum()), 1e-9)
        out["crossing_drift_mm_per_slice"] = float(np.linalg.norm(slope))
    return out


def _stats(values) -> str:
    v = np.asarray(values, dtype=float)
    q = np.percentile(v, [0, 25, 50, 75, 100])
    return f"median {q[2]:5.1f}  IQR {q[1]:5.1f}-{q[3]:5.1f}  range {q[0]:5.1f}-{q[4]:5.1f}"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--version", type=int, default=None, help="synthetic version (default: the newest)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--nifti", default=None, help="measure this existing `synth --format nifti` folder instead")
    args = ap.parse_args(argv)
    if args.nifti:
        root = Path(args.nifti)
    else:
        root = Path(tempfile.mkdtemp(prefix="synth-geometry-")) / "nifti"
        cmd = [sys.executable, "-m", "cardiossl.platform.cli", "synth", "--subjects", str(args.subjects), "--seed",
               str(args.seed), "--frames", str(args.frames), "--format", "nifti", "--workers", str(args.workers),
               "--quiet", "--out", str(root)]
        if args.version is not None:
            cmd += ["--version", str(args.version)]
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
    rows = [measure_subject(d) for d in sorted(root.iterdir()) if (d / "sa.nii.gz").is_file()]
    print(f"{len(rows)} subjects from {root}")
    print(f"{'subject':<12} {'angle':>6} {'c->2ch':>7} {'c->4ch':>7} {'cross':>6} {'drift':>6}")
    for r in rows:
        print(f"{r['subject']:<12} {r['sa_axis_angle_deg']:6.1f} {r['centroid_to_2ch_mm']:7.1f} "
              f"{r['centroid_to_4ch_mm']:7.1f} {r.get('crossing_to_centroid_mm', np.nan):6.1f} "
              f"{r.get('crossing_drift_mm_per_slice', np.nan):6.2f}")
    print("\nsynthetic (per-subject values)                               | real")
    for key, name in (("sa_axis_angle_deg", "LV axis vs SA normal (deg)"),
                      ("centroid_to_la_mm", "LV centroid to LA plane (mm)"),
                      ("crossing_to_centroid_mm", "2Ch x 4Ch crossing to centroid (mm)"),
                      ("crossing_drift_mm_per_slice", "crossing drift (mm/slice)")):
        if key == "centroid_to_la_mm":
            vals = [r["centroid_to_2ch_mm"] for r in rows] + [r["centroid_to_4ch_mm"] for r in rows]
        else:
            vals = [r[key] for r in rows if key in r]
        print(f"{name:<36} {_stats(vals)} | {REAL[key]}")
    return rows


if __name__ == "__main__":
    main()
