"""How long ``ray.train.report`` holds the training loop: reports back to back against reports spaced out.

Ray Train's controller collects one report at a time from each worker's result queue, on its health-check
cadence (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default). A report made before the previous one has been
collected waits, whatever the hardware. This is why ``run_pretraining`` reports to Ray Train at checkpoints
only, and why a GPU job's ``checkpoint.every_steps`` should span 2 s or more of training. One worker, no model,
so nothing else is timed; both cadences are measured in one run, side by side.

    python bench/ray_report_wait.py [--reports 8] [--gap-s 2.5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _loop(config: dict) -> None:
    import ray.train

    waits = []
    for i in range(config["reports"]):
        t = time.perf_counter()
        ray.train.report({"i": i})
        waits.append(time.perf_counter() - t)
        time.sleep(config["gap_s"])
    with open(config["out"], "w") as f:
        f.write(",".join(f"{w:.4f}" for w in waits))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=8)
    ap.add_argument("--gap-s", type=float, default=2.5, help="the spaced cadence: seconds between reports")
    a = ap.parse_args(argv)
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = {}
    try:
        with tempfile.TemporaryDirectory(prefix="cardiossl-report-wait-") as tmp:
            for gap in (0.0, a.gap_s):
                out = f"{tmp}/waits-{gap}.txt"
                TorchTrainer(_loop, train_loop_config={"reports": a.reports, "gap_s": gap, "out": out},
                             scaling_config=ray.train.ScalingConfig(num_workers=1),
                             run_config=ray.train.RunConfig(name=f"report-wait-{gap}", storage_path=tmp)).fit()
                with open(out) as f:
                    rows[gap] = [float(v) for v in f.read().split(",")]
    finally:
        ray.shutdown()
    for gap, waits in rows.items():
        print(f"reports {gap:.1f} s apart: median wait {statistics.median(waits[1:]):.3f} s "
              f"(first {waits[0]:.3f} s; all {', '.join(f'{w:.2f}' for w in waits)})")
    back, spaced = (statistics.median(rows[g][1:]) for g in (0.0, a.gap_s))
    print(f"back to back / spaced: {back / max(spaced, 1e-6):.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
