"""CPU seconds per synthetic subject, versions side by side in one process (interleaved, same subjects).

    python bench/synth_speed.py --subjects 10 --frames 4

Prints each version's CPU-s per subject (process time: what a core spends, whatever else runs on the
machine) and the ratio to version 1; 10,000 subjects cost ``10,000 x CPU-s`` core-seconds, spread over
``cardiossl synth --workers N`` processes or ``--ray-address`` tasks.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> dict[int, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--versions", default="1,2,3,4")
    args = ap.parse_args(argv)
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject

    versions = [int(v) for v in args.versions.split(",")]
    cpu = {v: 0.0 for v in versions}
    slices = {v: 0 for v in versions}
    for i in range(args.subjects):
        for v in versions:
            t0 = time.process_time()
            rec = synth_subject(subject_id_for(i), args.seed, n_frames=args.frames, version=v)
            cpu[v] += time.process_time() - t0
            slices[v] += len(rec.slices)
    per = {v: cpu[v] / args.subjects for v in versions}
    for v in versions:
        print(f"version {v}: {per[v]:.2f} CPU-s/subject ({slices[v] / args.subjects:.0f} images/subject, "
              f"{args.frames} frames); 10,000 subjects: {per[v] * 10000 / 3600:.1f} core-hours"
              + (f"; x{per[v] / per[versions[0]]:.2f} version {versions[0]}" if v != versions[0] else ""))
    return per


if __name__ == "__main__":
    main()
