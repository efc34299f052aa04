"""Random single-slice throughput of CohortDataset, side by side with its ceiling and a NIfTI loader.

    python bench/bench_loader.py [--subjects 24] [--frames 8] [--samples 20000] [--workdir DIR]

Generates its own cohort (cine SA stacks and 2ch/3ch/4ch slices with noise, UK-Biobank-like sizes),
writes it once to a cohort store and once as per-subject NIfTI files (sa.nii.gz, 4-D int16), then
times, in ONE process on ONE core (torch and Blosc single-threaded; CPU seconds of the process):

* store, random order     CohortDataset, default reader (direct shard reads), uniformly random indices
* store, block shuffle    the same with BlockShuffleSampler's order
* store, tensorstore      CohortDataset(reader="tensorstore") in BlockShuffleSampler's order
* ceiling (in memory)     the same CohortDataset code with every array in RAM (reader="memory")
* NIfTI per sample        open the subject's sa.nii.gz with nibabel for every sample, take the slice,
                          z-score it, centre crop/pad to the grid (what many research scripts do)

and prints slices/s per core and the ratios against the two targets (>= 0.3x the ceiling, >= 10x the
NIfTI loader). Every path reads the same SA slices; data sit in the page cache for all of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BLOSC_NTHREADS", "1")


def make_subject(sid: str, seed: int, frames: int, n_sa: int = 10, size: int = 192):
    """A cine exam with SA stack + 3 LA views: smooth anatomy-like blobs, bias field, Rician noise."""
    from cardiossl.datasets.geometry import Plane
    from cardiossl.datasets.records import SliceRecord, SubjectRecord

    rng = np.random.default_rng(seed)
    sp = float(rng.uniform(1.2, 1.9))
    # An oblique SA orientation: rotate the axial frame about two axes.
    a, b = rng.uniform(-0.6, 0.6, 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rz @ rx
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    centre = rng.uniform(-20, 20, 3)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    bias = 1 + 0.3 * (xx + yy) + 0.2 * rng.standard_normal() * xx * yy
    slices, sa_volume = [], np.zeros((size, size, n_sa, frames), np.int16)

    def image(phase_t, k):
        r_cav = 0.10 + 0.03 * np.cos(2 * np.pi * phase_t) - 0.004 * k
        d = np.sqrt(xx**2 + (yy * 1.1) ** 2)
        img = 200 + 500 * (d < r_cav) + 120 * ((d >= r_cav) & (d < r_cav + 0.05)) + 80 * (d > 0.35)
        img = img * bias
        noise = rng.normal(0, 25, (2, size, size))
        return np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)

    for t in range(frames):
        phase = "ed" if t == 0 else ("es" if t == frames // 3 else "")
        for k in range(n_sa):
            origin = centre + (k - n_sa / 2) * 8.0 * normal - (size - 1) / 2 * sp * (row + col)
            img = image(t / frames, k)
            sa_volume[:, :, k, t] = np.clip(np.rint(img), 0, 32767).astype(np.int16).T
            slices.append(
                SliceRecord("sa", k, t, sa_volume[:, :, k, t].T.astype(np.float32), Plane(origin, row, col, (sp, sp)),
                            phase=phase, stack_position=k / (n_sa - 1))
            )
        for j, view in enumerate(("2ch", "3ch", "4ch")):
            ang = j * np.pi / 3
            r2 = np.cos(ang) * row + np.sin(ang) * col
            origin = centre - (size - 1) / 2 * sp * (r2 + normal)
            slices.append(SliceRecord(view, 0, t, image(t / frames, 0), Plane(origin, r2, normal, (sp, sp)), phase=phase))
    affine = np.eye(4)
    flip = np.diag([-1.0, -1.0, 1.0])
    origin0 = centre + (0 - n_sa / 2) * 8.0 * normal - (size - 1) / 2 * sp * (row + col)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = flip @ (row * sp), flip @ (col * sp), flip @ (normal * 8.0)
    affine[:3, 3] = flip @ origin0
    return SubjectRecord(sid, slices, {"ed_frame": 0, "es_frame": frames // 3}), sa_volume, affine


class NiftiSliceLoader:
    """The baseline: one nibabel open per sample, the slice, a z-score, centre crop/pad to the grid."""

    def __init__(self, folder: Path, index: list[tuple[str, int, int]], grid: int) -> None:
        self.folder, self.index, self.grid = folder, index, grid

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        import nibabel as nib

        from cardiossl.datasets.geometry import Plane

        sid, z, t = self.index[i]
        img = nib.load(self.folder / sid / "sa.nii.gz")
        x = np.asarray(img.dataobj[:, :, z, t], dtype=np.float32).T
        x = (x - x.mean()) / (x.std() + 1e-6)
        out = np.zeros((self.grid, self.grid), np.float32)
        r0, c0 = (x.shape[0] - self.grid) // 2, (x.shape[1] - self.grid) // 2
        src = x[max(r0, 0) : max(r0, 0) + self.grid, max(c0, 0) : max(c0, 0) + self.grid]
        out[max(-r0, 0) : max(-r0, 0) + src.shape[0], max(-c0, 0) : max(-c0, 0) + src.shape[1]] = src
        return {"image": out[None], "plane": Plane.from_nifti(img.affine, z).to_vector(), "subject_id": sid}


def timed(fn, indices) -> tuple[float, float]:
    """(slices/s per CPU second, slices/s wall) over ``indices``."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in indices:
        fn(i)
    c, w = time.process_time() - c0, time.perf_counter() - w0
    return len(indices) / max(c, 1e-9), len(indices) / max(w, 1e-9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--samples", type=int, default=20000, help="samples timed per store/memory reader")
    ap.add_argument("--nifti-samples", type=int, default=300)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import nibabel as nib
    import torch
    from numcodecs import blosc
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.torch_dataset import BlockShuffleSampler, CohortDataset

    torch.set_num_threads(1)
    blosc.set_nthreads(1)
    console = Console(width=110)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cardiossl-bench-"))
    cleanup = args.workdir is None
    store_path, nifti_dir = work / "cohort.zarr", work / "nifti"
    try:
        shutil.rmtree(store_path, ignore_errors=True)
        store = CohortStore.create(store_path, grid_size=128, spacing_mm=1.5)
        t0 = time.perf_counter()
        batch = []
        for s in track(range(args.subjects), description="generating cohort", console=console):
            sid = f"bench{s:04d}"
            rec, vol, affine = make_subject(sid, args.seed * 100003 + s, args.frames)
            (nifti_dir / sid).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), nifti_dir / sid / "sa.nii.gz")
            batch.append(rec)
            if len(batch) == 6 or s == args.subjects - 1:
                store.write_subjects(batch)
                batch = []
        gen_s = time.perf_counter() - t0

        rng = np.random.default_rng(args.seed)
        ds = CohortDataset(store_path, views=("sa",))
        n = len(ds)
        rand = rng.integers(0, n, args.samples)
        sampler = BlockShuffleSampler(ds, args.block_size, num_replicas=1, rank=0, seed=args.seed)
        block = (list(sampler) * (args.samples // n + 1))[: args.samples]
        mem = CohortDataset(store_path, views=("sa",), reader="memory")
        tsd = CohortDataset(store_path, views=("sa",), reader="tensorstore")
        for d in (ds, mem, tsd):
            d[0]  # open the backend (the memory one loads everything) outside the timing
        nifti = NiftiSliceLoader(
            nifti_dir, [(ds.subject_ids[ds._subject[i]], int(ds._slice_index[i]), int(ds._frame[i])) for i in range(n)], 128
        )
        nifti_idx = rng.integers(0, n, args.nifti_samples)
        nifti[0]

        rows = [
            ("ceiling: in-memory arrays, random order", *timed(mem.__getitem__, rand)),
            ("store: direct shard reads, random order", *timed(ds.__getitem__, rand)),
            ("store: direct shard reads, block shuffle", *timed(ds.__getitem__, block)),
            ("store: tensorstore blocks, block shuffle", *timed(tsd.__getitem__, block)),
            ("NIfTI: nibabel open per sample", *timed(nifti.__getitem__, nifti_idx)),
        ]
        ceiling, nii = rows[0][1], rows[-1][1]
        table = Table(title=f"random single-slice samples, 1 core ({n} SA slices of 128x128, {args.subjects} subjects)")
        for c in ("path", "slices/s per core (CPU)", "slices/s (wall)", "x ceiling", "x NIfTI"):
            table.add_column(c, justify="right" if c != "path" else "left")
        for name, cpu, wall in rows:
            table.add_row(name, f"{cpu:,.0f}", f"{wall:,.0f}", f"{cpu / ceiling:.2f}", f"{cpu / nii:.1f}")
        console.print(table)
        store_gb = sum(f.stat().st_size for f in store_path.rglob("*") if f.is_file()) / 1e6
        nii_mb = sum(f.stat().st_size for f in nifti_dir.rglob("*.nii.gz")) / 1e6
        console.print(
            f"data generated and written in {gen_s:.0f} s; store {store_gb:.1f} MB (all views), "
            f"NIfTI SA files {nii_mb:.1f} MB; cpu count {os.cpu_count()}, python {sys.version.split()[0]}"
        )
        r_ceiling, r_nifti = rows[1][1] / ceiling, rows[1][1] / nii
        ok = r_ceiling >= 0.3 and r_nifti >= 10
        console.print(
            f"store (random order): {r_ceiling:.2f}x ceiling (target >= 0.3), {r_nifti:.1f}x NIfTI (target >= 10): "
            + ("[green]targets met[/green]" if ok else "[red]targets missed[/red]")
        )
        return 0
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
