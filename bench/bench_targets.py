"""Target generation cost per sample for each pretext, next to the time to read that sample.

Targets are made on the CPU inside the data loader, so they must not be the loader's bottleneck:
the goal is target time <= 0.5 x read time. Both are measured here in one run on the same samples:
a small synthetic cohort is written to a real cohort store (CohortStore, Zarr v3 on disk) and read
back through CohortDataset in random order (warm page cache, one process).

    .venv/bin/python bench/bench_targets.py [--subjects 4] [--grid 128] [--reads 400] [--repeat 3]

``position ... (cold)`` rebuilds the slice geometry (and heatmaps) every call; in training the
geometry of one slice is shared by all its cine frames and cached per worker, which is the warm row
(this cohort has 6 frames per slice; UK Biobank has 50). Times are CPU time per sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, items, repeat: int) -> float:
    """Best-of-``repeat`` mean CPU seconds (this process, user + system) per item.

    CPU time, not wall time: the loader's cost is CPU work in its workers, and on a shared machine
    wall time mostly measures the neighbours. Reads are pread + decompress, all counted here.
    """
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for x in items:
            fn(x)
        best = min(best, (time.process_time() - t0) / len(items))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--reads", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", type=Path, default=None, help="use this existing store instead of a fresh one")
    args = ap.parse_args()

    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject
    from cardiossl.datasets.torch_dataset import CohortDataset
    from cardiossl.pretexts import PRETEXTS
    from cardiossl.pretexts.base import sample_meta

    with tempfile.TemporaryDirectory() as tmp:
        store_path = args.store
        if store_path is None:
            store_path = Path(tmp) / "store"
            store = CohortStore.create(store_path, grid_size=args.grid, spacing_mm=1.5)
            records = [synth_subject(f"synth{i:05d}", 0, n_frames=args.frames, n_sub=1) for i in range(args.subjects)]
            store.write_subjects(records)
        ds = CohortDataset(store_path, views=("sa",))
        rng = np.random.default_rng(0)
        order = rng.permutation(len(ds))[: args.reads]
        ds[int(order[0])]  # open the store
        read_s = timed(lambda i: ds[int(i)], order, args.repeat)
        samples = [ds[int(i)] for i in order]
        h, w = samples[0]["image"].shape[-2:]
        print(f"store: {store_path if args.store else 'fresh synthetic'}; {len(ds)} SA slices of {h}x{w}; "
              f"{len(order)} random reads, best of {args.repeat}")
        print(f"{'pretext':50s} {'ms/sample':>10s} {'read ms':>8s} {'ratio':>6s}")
        print(f"{'read (CohortDataset[i], random order)':50s} {1e3 * read_s:10.3f} {1e3 * read_s:8.3f} {1.0:6.2f}")
        rows = []
        for name in PRETEXTS.names():
            cls = PRETEXTS.get(name)
            for cfg in cls.variants():
                pretext = cls(cfg)
                ok = [s for s in samples if pretext.accepts(sample_meta(s))]
                gens = [np.random.default_rng([0, 0, 0, k]) for k in range(len(ok))]
                items = list(zip(ok, gens))
                label = name + ("" if not cfg else " " + ",".join(f"{k}={v}" for k, v in cfg.items()))
                t = timed(lambda sg: pretext.make_target(sg[0], sg[1]), items, args.repeat)
                rows.append((label, t))
                if name == "position" and cfg.get("target") != "slice_location":
                    def cold(sg, pretext=pretext):
                        pretext.__dict__.update(pretext.__getstate__())  # empty every cache
                        return pretext.make_target(sg[0], sg[1])

                    rows.append((label + " (cold)", timed(cold, items, args.repeat)))
        for label, t in rows:
            print(f"{label:50s} {1e3 * t:10.3f} {1e3 * read_s:8.3f} {t / read_s:6.2f}")
        ds.close()


if __name__ == "__main__":
    main()
