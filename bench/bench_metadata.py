"""Store metadata at cohort scale: opening, snapshotting and indexing a 100,000-subject store.

The store has ``--subjects`` synthetic subjects of 13 slice positions (10 short-axis, 3 long-axis)
at ``--frames`` cine frames (52 slices each at 4 frames), written as real committed parts by
``cardiossl.datasets.store.testing`` (tiny ramp images on an 8 x 8 grid: the metadata is what is
measured). Each figure is taken in a fresh process (``python -c``) with the page cache warm:

* open: ``CohortStore(path)``; snapshot: ``store.snapshot()`` (target: open + snapshot <= 5 s);
* slice table: ``store.slice_table(snapshot)``, its time and bytes per slice (target: <= 64 B);
* first batch: a ``CohortDataset`` on the snapshot, then the time from ``iter(DataLoader(...,
  num_workers=1))`` to its first batch of 32 random samples: a fresh loader worker (target: <= 2 s);
* the store summary ``cohort info`` starts from (subjects, slices, fingerprint: the stored one when current), in a
  fresh process and in-process, and ``cardiossl cohort info --json`` end to end (interpreter start included; it
  also lists subjects, counts pretext targets per slice and summarises the geometry QC).

Side by side, the same process reads every part's metadata arrays the way a version 1 store was
read (``index.summary_from_part``, 13 files a part): what opening cost before the index; and the
per-slice bytes of the version 1 slice table (its dtypes, 247 B), for the ratio.

    python bench/bench_metadata.py --subjects 100000 --workdir /tmp/bench-metadata

The store is built once and reused from ``--workdir`` (``--rebuild`` to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

V1_BYTES_PER_SLICE = (4 + 8 + 4 + 1 + 4 + 1 + 4 + 4 + 1 + 88 + 88 + 8 + 16 + 16)  # part, row, ... as v1 held them


def _build_chunk(path: str, first_part: int, n_parts: int, per_part: int, frames: int) -> int:
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.store.testing import write_synthetic_parts

    store = CohortStore(path)
    write_synthetic_parts(store, n_parts, per_part, frames=frames, start=first_part * per_part)
    return n_parts


def build(path: Path, subjects: int, per_part: int, frames: int, workers: int) -> float:
    from cardiossl.datasets.store import CohortStore

    CohortStore.create(path, grid_size=8, spacing_mm=8.0)
    n_parts = subjects // per_part
    t0 = time.perf_counter()
    step = max(1, n_parts // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        futures = [pool.submit(_build_chunk, str(path), p, min(step, n_parts - p), per_part, frames)
                   for p in range(0, n_parts, step)]
        for f in futures:
            done += f.result()
            print(f"  built {done}/{n_parts} parts ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    store = CohortStore(path)
    store.update_fingerprint()
    return time.perf_counter() - t0


MEASURE = r"""
import json, time, sys
t0 = time.perf_counter()
from cardiossl.datasets.store import CohortStore
t_import = time.perf_counter() - t0
t0 = time.perf_counter(); store = CohortStore(sys.argv[1]); t_open = time.perf_counter() - t0
t0 = time.perf_counter(); snap = store.snapshot(); t_snap = time.perf_counter() - t0
t0 = time.perf_counter(); table = store.slice_table(snap); t_table = time.perf_counter() - t0
out = {"open_s": t_open, "snapshot_s": t_snap, "table_s": t_table, "slices": len(table),
       "subjects": len(snap.subject_ids), "parts": len(snap.parts), "table_bytes": table.nbytes,
       "index_files": 2 + len(json.load(open(store.path / "index" / "manifest.json"))["entries"])}
del table
import numpy as np, torch
from cardiossl.datasets.torch_dataset import CohortDataset
t0 = time.perf_counter(); ds = CohortDataset(store, snapshot=snap, views=None); out["dataset_s"] = time.perf_counter() - t0
sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(ds, batch_size=32, sampler=sampler, num_workers=1,
                                     collate_fn=lambda b: np.stack([s["image"] for s in b]))
t0 = time.perf_counter(); batch = next(iter(loader)); out["first_batch_s"] = time.perf_counter() - t0
assert batch.shape[0] == 32
t0 = time.perf_counter(); summary = store.summary(); out["summary_s"] = time.perf_counter() - t0
out["fingerprint_stored"] = summary["stored_fingerprint_current"]
print(json.dumps(out))
"""

PER_PART = r"""
import json, sys, time
from pathlib import Path
from cardiossl.datasets.store import CohortStore, index
store = CohortStore(sys.argv[1])
parts = store.part_ids()
t0 = time.perf_counter()
n = sum(int(index.summary_from_part(store.path / "parts" / p, p)["part_n_slices"][0]) for p in parts)
print(json.dumps({"per_part_read_s": time.perf_counter() - t0, "slices": n, "files": 13 * len(parts)}))
"""


SUMMARY = r"""
import sys
from cardiossl.datasets.store import CohortStore
assert CohortStore(sys.argv[1]).summary()["stored_fingerprint_current"]
"""


def _timed(cmd: list[str], timeout: float = 600) -> float | None:
    """Seconds for a command from process start to exit; None when it ran past ``timeout``."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t0


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--subjects-per-part", type=int, default=100)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="processes building the store")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cardiossl-bench-metadata"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--info-timeout", type=float, default=900, help="stop `cohort info` after this many seconds")
    args = ap.parse_args(argv)

    path = args.workdir / f"store-{args.subjects}-{args.frames}.zarr"
    built_s = None
    if args.rebuild or not (path / "zarr.json").exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        built_s = build(path, args.subjects, args.subjects_per_part, args.frames, args.workers)
    _run(MEASURE, str(path))  # warm the page cache
    m = _run(MEASURE, str(path))
    m["summary_cli_s"] = _timed([sys.executable, "-c", SUMMARY, str(path)])
    m["cohort_info_cli_s"] = _timed([sys.executable, "-m", "cardiossl.platform.cli", "cohort", "info", str(path),
                                     "--json"], args.info_timeout)
    old = _run(PER_PART, str(path))
    load = os.getloadavg()
    per_slice = m["table_bytes"] / m["slices"]
    rows = [
        ("store", f"{m['subjects']:,} subjects, {m['slices']:,} slices, {m['parts']:,} parts; "
                  f"index: {m['index_files']} files" + (f"; built in {built_s:.0f} s" if built_s else "")),
        ("open (CohortStore)", f"{m['open_s'] * 1000:.1f} ms"),
        ("snapshot", f"{m['snapshot_s']:.2f} s"),
        ("open + snapshot (target <= 5 s)", f"{m['open_s'] + m['snapshot_s']:.2f} s"),
        ("before: every part's metadata, as version 1 read it", f"{old['per_part_read_s']:.1f} s "
         f"({old['files']:,} files; {old['per_part_read_s'] / (m['open_s'] + m['snapshot_s']):.0f}x open + snapshot)"),
        ("slice table build", f"{m['table_s']:.2f} s"),
        ("slice table bytes per slice (target <= 64)", f"{per_slice:.1f} B (version 1: {V1_BYTES_PER_SLICE} B, "
         f"{V1_BYTES_PER_SLICE / per_slice:.1f}x)"),
        ("CohortDataset on the snapshot (all views)", f"{m['dataset_s']:.2f} s"),
        ("first batch, fresh loader worker (target <= 2 s)", f"{m['first_batch_s']:.2f} s"),
        ("store summary (what cohort info prints first), fresh process", f"{m['summary_cli_s']:.2f} s"),
        ("summary() in-process (stored fingerprint used)", f"{m['summary_s']:.2f} s ({m['fingerprint_stored']})"),
        ("cohort info --json, process start to end (with listing, target availability, QC)",
         f"{m['cohort_info_cli_s']:.1f} s" if m["cohort_info_cli_s"] is not None
         else f"> {args.info_timeout:.0f} s (stopped)"),
        ("load average (1, 5, 15 min)", ", ".join(f"{x:.1f}" for x in load)),
    ]
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    ok = m["open_s"] + m["snapshot_s"] <= 5 and per_slice <= 64 and m["first_batch_s"] <= 2
    print("targets met" if ok else "targets NOT met")
    if args.json:
        args.json.write_text(json.dumps({**m, **old, "bytes_per_slice": per_slice, "loadavg": load,
                                         "built_s": built_s}, indent=1))


if __name__ == "__main__":
    main()
