"""Training throughput: what the platform costs, and what a second CPU worker buys.

(a) Platform overhead: images/s of ONE Ray Train worker running the real job (CohortDataset reads,
    augmentation, position targets, DDP-ready loop, checkpoints, MLflow) side by side in one run
    with a bare PyTorch loop on in-memory tensors of the same shapes, same model, same batch, same
    thread count. Target: >= 0.9x.
(b) 2 CPU workers vs 1 (global images/s).

    python bench/bench_train.py [--store /abs/cohort.zarr] [--steps 60] [--out bench/results/train.json]

Without --store a small synthetic cohort is built in a temporary folder. Everything runs on a local
Ray instance started here (1 CPU per worker, OMP_NUM_THREADS=1, torch threads 1 in both arms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_store(path: Path, n_subjects: int, grid: int) -> Path:
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject

    store = CohortStore.create(path, grid_size=grid, spacing_mm=1.8)
    store.write_subjects([synth_subject(f"synth{i:05d}", 0, n_frames=4, n_sub=1) for i in range(n_subjects)])
    store.update_fingerprint()
    return path


def make_job(store: Path, root: Path, args, workers: int, name: str):
    from cardiossl.platform.config import load_job

    sets = {
        "name": name,
        "cohort.store": str(store),
        "image_size": args.image_size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "backbone.name": "unet",
        "backbone.params": f"{{depth: {args.depth}, width: {args.width}}}",
        "scaling.num_workers": workers,
        "scaling.cpus_per_worker": 1,
        "loader.num_workers": args.loader_workers,
        "checkpoint.every_steps": args.steps,  # one checkpoint, at the end (outside the timed window)
        "checkpoint.storage_path": str(root / "ray_results"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow.experiment": "bench-train",
        "mlflow.registered_model": "null",
        "mlflow.log_every_steps": args.log_every,
        "mlflow.system_metrics": "false",
        "mlflow.figures": "false",
        "validation.every_steps": "null",
        "validation.max_batches": 1,
    }
    return load_job(REPO / "jobs" / "pretrain_position.yaml", [f"{k}={v}" for k, v in sets.items()])


def platform_images_per_s(job, root: Path, warmup_logs: int = 1) -> float:
    """Median of the loop's own images/s readings (data loading included), first interval dropped."""
    from mlflow import MlflowClient

    from cardiossl.platform.launch import launch

    res = launch(job, register=False, quiet=True)
    hist = MlflowClient(job.mlflow.tracking_uri).get_metric_history(res.run_id, "train/images_per_s")
    vals = [m.value for m in sorted(hist, key=lambda m: m.step)][warmup_logs:]
    return statistics.median(vals)


def bare_images_per_s(job, steps: int) -> float:
    """Same model, loss, optimiser and batch shapes; inputs and targets are tensors made once."""
    import numpy as np
    import torch

    from cardiossl.platform.training import PretextModel, build_optimizer, collate, make_dataset, split_cohort

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pretext = job.pretext.build()
    backbone = job.backbone.build()
    model = PretextModel(backbone, pretext.build_head(backbone), pretext)
    opt = build_optimizer(job.optim, model.parameters())
    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    idx = np.linspace(0, len(ds) - 1, job.batch_size).astype(int)
    batch = collate([ds[int(i)] for i in idx])  # real shapes and a real target, held in memory
    x = batch["input"]
    model.train()

    def step():
        out = model(x)
        loss = pretext.loss(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * job.batch_size / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--skip-scaling", action="store_true", help="skip (b), 2 workers vs 1")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = "1"
    import ray

    root = Path(tempfile.mkdtemp(prefix="cardiossl-bench-train-"))
    store = args.store or build_store(root / "cohort.zarr", args.subjects, args.grid)
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        job1 = make_job(store, root, args, 1, "bench1")
        # interleave the arms so that load from other processes hits both alike
        bare_a = bare_images_per_s(job1, args.steps)
        plat = platform_images_per_s(job1, root)
        bare_b = bare_images_per_s(job1, args.steps)
        bare = (bare_a + bare_b) / 2
        result = {
            "cpu_count": os.cpu_count(),
            "model": f"unet depth {args.depth} width {args.width}",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "loader_workers": args.loader_workers,
            "bare_images_per_s": [round(bare_a, 1), round(bare_b, 1)],
            "platform_1_worker_images_per_s": round(plat, 1),
            "platform_over_bare": round(plat / bare, 3),
        }
        print(f"(a) bare loop, in-memory tensors : {bare:8.1f} images/s  (runs: {bare_a:.1f}, {bare_b:.1f})")
        print(f"    Ray Train, 1 worker, CohortDataset + targets: {plat:8.1f} images/s")
        print(f"    ratio platform / bare         : {plat / bare:8.3f}  (target >= 0.9)")
        if not args.skip_scaling:
            job2 = make_job(store, root, args, 2, "bench2")
            plat2 = platform_images_per_s(job2, root)
            result["platform_2_workers_images_per_s"] = round(plat2, 1)
            result["two_over_one"] = round(plat2 / plat, 3)
            print(f"(b) Ray Train, 2 workers          : {plat2:8.1f} images/s  ({plat2 / plat:.2f}x one worker)")
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
