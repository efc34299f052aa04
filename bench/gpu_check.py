"""One prepared GPU check for a single H100/H200: the training loop against the card, in one call.

The Bai-size U-Net (``unet_bai``: 5 scales, 16..256 filters) at 192 x 192 with the anatomical-
position pretext (boxes), bf16 autocast and channels_last, AdamW, measured side by side:

(a) ``bare``: the same model and loss on one batch already on the GPU (the training process's ceiling);
(b) ``platform``: ``run_pretraining`` reading the Zarr store through DataLoader workers;
(c) ``ray``: the same loop inside a one-worker Ray ``TorchTrainer`` with ``use_gpu`` (NCCL process group);

each eager and with ``torch.compile``, at batch 32 and at the largest batch that fits (probed by
doubling up to ``--max-batch``), and with the augmentation in the loader workers (CPU, per sample)
against ``augment.on: device`` (one batched ``grid_sample`` on the GPU). The bare loop is also run with
CUDA graphs (``torch.compile(mode="reduce-overhead")``). Printed per variant: images/s, step time, GPU
utilisation (NVML), achieved TFLOP/s (forward + backward FLOPs per image counted by
``torch.utils.flop_counter``) and its share of the card's bf16 matrix rate (measured here with an
8192^3 product, and the datasheet's); then the ratios loop / bare. Targets: ray >= 0.9x the best bare.

Variants run in priority order against a time budget (``--budget-s``); one that would not fit is
reported as skipped, so the call ends in time. Results: ``$OUT/gpu_check.json`` and the table.

``--focus ray`` answers only the Ray question at the largest batch, side by side: bare (eager and
compiled), the platform loop in this process (and with one torch thread), and through Ray with the
jobs' default reservation of one CPU and with one CPU per loader worker more (Ray gives the worker as
many OpenMP threads as CPUs reserved).

    bash bench/gpu_run.sh                   # on the GPU machine: install the carried wheels, run this
    bash bench/gpu_run.sh --focus ray       # the Ray question only (about 5 minutes)
    python bench/gpu_check.py --cpu-smoke   # the same code path, tiny, on CPU (tests run this)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import gpu_arms  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
def _synth(args):
    from cardiossl.datasets.synthetic import synth_subject

    i, frames = args
    return synth_subject(f"synth{i:05d}", 0, n_frames=frames, n_sub=1)


def build_store(path: Path, n_subjects: int, grid: int, spacing: float, frames: int, procs: int) -> Path:
    from multiprocessing import get_context

    from cardiossl.datasets.store import CohortStore

    with get_context("spawn").Pool(procs) as pool:
        records = pool.map(_synth, [(i, frames) for i in range(n_subjects)])
    store = CohortStore.create(path, grid_size=grid, spacing_mm=spacing)
    per_part = max(1, math.ceil(len(records) / max(1, procs)))
    for k in range(0, len(records), per_part):
        store.write_subjects(records[k:k + per_part])
    store.update_fingerprint()
    return path


def base_job(store: Path, root: Path, a):
    from cardiossl.platform.config import load_job

    sets = {
        "cohort.store": str(store), "cohort.split": "{val: 2, seed: 0}",
        "image_size": a.image_size, "steps": 100, "batch_size": a.batch_size,
        "backbone.name": a.backbone, "backbone.params": a.backbone_params,
        "loader.num_workers": a.loader_workers, "loader.prefetch_factor": 4,
        "train.precision": a.precision, "train.channels_last": "true",
        "checkpoint.storage_path": str(root / "ckpt"), "mlflow.tracking_uri": f"sqlite:///{root / 'unused.db'}",
        "mlflow.system_metrics": "false", "mlflow.figures": "false",
        "validation.every_steps": "null", "validation.max_batches": 1,
    }
    return load_job(REPO / "jobs" / "pretrain_position.yaml", [f"{k}={v}" for k, v in sets.items()], env={})


def variant(job, *, batch: int, compiled: bool, aug: str, expect_ips: float | None, seconds: float,
            min_steps: int):
    """A copy of the job for one loop variant; steps sized to ~``seconds`` at the expected rate."""
    steps = max(min_steps, math.ceil(seconds * (expect_ips or 0) / batch))
    d = job.to_dict()
    d.update(batch_size=batch, steps=steps)
    d["train"]["compile"] = compiled
    d["augment"]["on"] = aug
    d["mlflow"]["log_every_steps"] = max(1, steps // 8)
    d["checkpoint"]["every_steps"] = steps
    d["loader"]["prefetch_factor"] = 4 if batch <= 64 else 2
    from cardiossl.platform.config import load_job_dict

    return load_job_dict(d)


def sample_cost_ms(job, n: int = 64) -> float:
    """CPU milliseconds per sample of the loader's transform (read, augment or draw, target, collate)."""
    import numpy as np

    from cardiossl.platform.training import Collate, make_dataset, split_cohort

    pretext = job.pretext.build()
    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    idx = np.random.default_rng(0).integers(0, len(ds), n)
    keep = tuple(dict.fromkeys([*job.loader.batch_keys, *gpu_arms.device_keys(job)]))
    t = time.process_time()
    samples = [ds[int(i)] for i in idx]
    for k in range(0, n, job.batch_size):
        Collate(keep=keep)(samples[k:k + job.batch_size])
    return round((time.process_time() - t) / n * 1e3, 3)


# --------------------------------------------------------------------------------------------
class Runner:
    """Runs variants in order while the budget lasts; a failure is recorded, never fatal."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.rows: list[dict] = []

    def run(self, key: dict, cost_s: float, fn) -> dict:
        name = " ".join(f"{k}={v}" for k, v in key.items())
        row = dict(key)
        if time.time() + cost_s > self.deadline:
            row["skipped"] = "time budget"
        else:
            t = time.time()
            try:
                row.update(fn())
            except Exception as exc:  # report and go on: the other variants still answer
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            row["wall_s"] = round(time.time() - t, 1)
        log(f"{name}: {json.dumps({k: v for k, v in row.items() if k not in key})}")
        self.rows.append(row)
        return row

    def get(self, **key) -> dict | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in key.items()) and "images_per_s" in r:
                return r
        return None


def ratios(rows: list[dict]) -> list[dict]:
    """loop / bare for each loop variant, against the bare loop of the same batch, compile mode and
    augmentation place, and against the best bare loop of the run."""
    bare = [r for r in rows if r["arm"] == "bare" and "images_per_s" in r]
    best = max(bare, key=lambda r: r["images_per_s"], default=None)
    out = []
    for r in rows:
        if r["arm"] == "bare" or "images_per_s" not in r:
            continue
        same = [b for b in bare if b["batch"] == r["batch"] and b["compile"] == r["compile"]]
        same = next((b for b in same if b["augment"] == r["augment"]), None) or next(
            (b for b in same if b["augment"] == "none"), None)  # device augmentation: its own bare row if run
        out.append({k: r[k] for k in ("arm", "batch", "compile", "augment")} | {
            "over_same_bare": round(r["images_per_s"] / same["images_per_s"], 3) if same else None,
            "over_best_bare": round(r["images_per_s"] / best["images_per_s"], 3) if best else None})
    return out


def table(res: dict) -> str:
    peak = res.get("bf16_matmul_tflops")
    sheet = res.get("datasheet_bf16_tflops")
    lines = [f"{'arm':<9}{'batch':>6} {'compile':<16}{'augment':<8}{'img/s':>9}{'ms/step':>9}{'GPU %':>7}"
             f"{'TFLOP/s':>9}{'% mm':>6}{'% sheet':>8}"]
    for r in res["rows"]:
        head = f"{r['arm']:<9}{r['batch']:>6} {r['compile']:<16}{r['augment']:<8}"
        if "images_per_s" not in r:
            lines.append(head + "  " + (r.get("skipped") or r.get("error", ""))[:70])
            continue
        tf = r.get("tflops")
        lines.append(head + f"{r['images_per_s']:>9.0f}{r['step_ms']:>9.2f}{r.get('gpu_util_mean') or float('nan'):>7.0f}"
                     f"{tf if tf is not None else float('nan'):>9.1f}"
                     f"{100 * tf / peak if tf and peak else float('nan'):>6.1f}"
                     f"{100 * tf / sheet if tf and sheet else float('nan'):>8.1f}")
    lines.append("ratios (images/s of the loop over the bare loop):")
    for q in res["ratios"]:
        lines.append(f"  {q['arm']:<9}{q['batch']:>6} {q['compile']:<16}{q['augment']:<8}"
                     f"same bare {q['over_same_bare']}  best bare {q['over_best_bare']}")
    lines.append(f"target: best ray / best bare = {res.get('ray_best_over_bare_best')} (>= 0.9)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of the same code path")
    ap.add_argument("--subjects", type=int, default=48)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--grid", type=int, default=192)
    ap.add_argument("--spacing", type=float, default=1.4)
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--backbone", default="unet_bai")
    ap.add_argument("--backbone-params", default="{}")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=1024, help="the largest-batch probe stops here")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per variant")
    ap.add_argument("--budget-s", type=float, default=300.0, help="variants that would end later are skipped")
    ap.add_argument("--ray-reserve-s", type=float, default=110.0, help="budget kept for the Ray arm")
    ap.add_argument("--loader-workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 4)),
                    help="DataLoader processes (default: CPUs - 4, leaving cores for the training process)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "auto"])
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray TorchTrainer arm")
    ap.add_argument("--ray-cpus-per-worker", type=float, default=1.0,
                    help="CPUs the Ray worker reserves (scaling.cpus_per_worker; 1 is the jobs' default)")
    ap.add_argument("--focus", choices=["all", "ray"], default="all",
                    help="ray: only the Ray question, side by side at the largest batch: the loop bare, in this "
                         "process, in this process with one torch thread, and through Ray reserving one CPU "
                         "and one per loader worker more")
    ap.add_argument("--ray-address", default=None, help="an existing cluster (default: a local one)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        a.subjects, a.frames, a.grid, a.spacing, a.image_size = 4, 2, 64, 2.5, 32
        a.backbone, a.backbone_params, a.batch_size, a.max_batch = "unet", "{depth: 3, width: 4}", 4, 8
        a.seconds, a.loader_workers, a.budget_s, a.ray_reserve_s = 0.2, 1, 1e9, 0.0
        a.compile_backend = a.compile_backend or "eager"
    import torch

    t0 = time.time()
    deadline = t0 + a.budget_s
    use_gpu = torch.cuda.is_available() and not a.cpu_smoke
    if not use_gpu and not a.cpu_smoke:
        log("no CUDA device: run with --cpu-smoke for the CPU path")
        return 2
    dev = torch.device("cuda" if use_gpu else "cpu")
    if use_gpu:
        torch.backends.cudnn.benchmark = True
    gpu_arms.use_compile_backend(a.compile_backend)
    name = torch.cuda.get_device_name(0) if use_gpu else "cpu"
    res: dict = {"torch": torch.__version__, "device": name, "cpu_count": os.cpu_count(),
                 "args": {k: str(v) for k, v in vars(a).items()}}
    log(f"device {name}, torch {torch.__version__}, {os.cpu_count()} CPUs, budget {a.budget_s:.0f} s")

    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t = time.time()
    store = build_store(root / "cohort.zarr", a.subjects, a.grid, a.spacing, a.frames,
                        procs=max(1, min(16, os.cpu_count() or 2)))
    res["store_build_s"] = round(time.time() - t, 1)
    job = base_job(store, root, a)
    log(f"store: {a.subjects} synthetic subjects at {a.grid} px in {res['store_build_s']} s")

    flops = gpu_arms.train_flops_per_image(job, dev)
    res["gflop_per_image_fwd_bwd"] = round(flops / 1e9, 3)
    res["bf16_matmul_tflops"] = round(gpu_arms.matmul_tflops(dev, 8192 if use_gpu else 256), 1)
    res["datasheet_bf16_tflops"] = next((v for k, v in gpu_arms.DATASHEET_BF16_TFLOPS.items() if k in name), None)
    for aug in ("loader", "device"):
        res[f"loader_cpu_ms_per_sample_{aug}_augment"] = sample_cost_ms(variant(
            job, batch=a.batch_size, compiled=False, aug=aug, expect_ips=None, seconds=0, min_steps=1))
    log(f"{res['gflop_per_image_fwd_bwd']} GFLOP per training image; matmul {res['bf16_matmul_tflops']} TFLOP/s; "
        f"loader CPU ms/sample: augment in loader {res['loader_cpu_ms_per_sample_loader_augment']}, "
        f"on device {res['loader_cpu_ms_per_sample_device_augment']}")
    probe = gpu_arms.largest_batch(job, dev, a.batch_size * 2, a.max_batch)
    res["largest_batch"] = probe
    big = probe["batch"]
    log(f"largest batch probe: {probe}")

    run = Runner(deadline - a.ray_reserve_s)
    min_steps = 4 if a.cpu_smoke else 30
    compile_s = 5 if a.cpu_smoke else 90
    modes = {"eager": None, "compiled": "default"}

    def bare(batch, mode, aug="none", cost=None):
        j = variant(job, batch=batch, compiled=False, aug="device" if aug == "device" else "loader",
                    expect_ips=None, seconds=0, min_steps=1)
        return run.run({"arm": "bare", "batch": batch, "compile": mode, "augment": aug},
                       cost or a.seconds + 10, lambda: gpu_arms.bare_arm(
                           j, dev, batch_size=batch, compile_mode=modes.get(mode, mode), seconds=a.seconds,
                           flops_per_image=flops))

    def platform(batch, mode, aug, cost=None, threads=None):
        ref = run.get(arm="bare", batch=batch, compile=mode) or run.get(arm="bare", batch=batch)
        j = variant(job, batch=batch, compiled=mode == "compiled", aug=aug,
                    expect_ips=ref["images_per_s"] if ref else None, seconds=a.seconds * 1.5, min_steps=min_steps)

        def go():
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                return gpu_arms.platform_arm(j, dev, flops)
            finally:
                torch.set_num_threads(before)

        arm = "platform" if threads is None else f"plat-{threads}thr"
        return run.run({"arm": arm, "batch": batch, "compile": mode, "augment": aug}, cost or a.seconds * 1.5 + 15, go)

    b = a.batch_size
    trainers = [("ray", a.ray_cpus_per_worker)]
    if a.focus == "ray":  # the Ray path against the best bare loop, and the worker's CPU reservation
        bare(big, "eager")
        bare(big, "compiled", cost=a.seconds + compile_s)
        platform(big, "compiled", "loader", cost=a.seconds * 1.5 + 30)
        platform(big, "eager", "loader", threads=1)
        trainers.append((f"ray-{a.loader_workers + 1}cpu", float(a.loader_workers + 1)))
        best_mode = "compiled"
    elif a.cpu_smoke:  # the code path, not the figures: each arm, compile mode and augmentation place once
        bare(b, "eager")
        platform(b, "eager", "loader")
        bare(big, "compiled", cost=a.seconds + compile_s)
        platform(big, "compiled", "device", cost=a.seconds * 1.5 + 30)
        bare(big, "eager", "device")
        best_mode = "compiled"
    else:  # in priority order: eager answers first, compiled variants when time allows
        bare(b, "eager")
        platform(b, "eager", "loader")
        platform(b, "eager", "device")
        bare(big, "eager")
        platform(big, "eager", "loader")
        bare(big, "compiled", cost=a.seconds + compile_s)
        platform(big, "compiled", "loader", cost=a.seconds * 1.5 + 30)
        bare(b, "compiled", cost=a.seconds + compile_s)
        platform(b, "compiled", "loader", cost=a.seconds * 1.5 + 30)
        compiled_wins = (run.get(arm="platform", batch=big, compile="compiled") or {}).get("images_per_s", 0) > (
            run.get(arm="platform", batch=big, compile="eager") or {}).get("images_per_s", 0)
        best_mode = "compiled" if compiled_wins else "eager"
        platform(big, best_mode, "device")
        bare(b, "eager", "device")
        bare(big, "eager", "device")
        best_batch = max((r for r in run.rows if r["arm"] == "bare" and "images_per_s" in r),
                         key=lambda r: r["images_per_s"], default={"batch": b})["batch"]
        bare(best_batch, "reduce-overhead", cost=a.seconds + compile_s)  # CUDA graphs

    if not a.no_ray:
        plan = [(b, "eager", "loader"), (big, best_mode, "loader"), (big, best_mode, "device"),
                (b, "compiled", "loader"), (big, "eager", "loader")]
        if a.cpu_smoke:  # the code path, not the figures: two variants, one of each augmentation place
            plan = [(b, "eager", "loader"), (big, "compiled", "device")]
        if a.focus == "ray":
            plan = [(big, "compiled", "loader"), (big, "eager", "loader")]
        variants = []
        for batch, mode, aug in plan:
            ref = run.get(arm="bare", batch=batch, compile=mode) or run.get(arm="bare", batch=batch)
            j = variant(job, batch=batch, compiled=mode == "compiled", aug=aug,
                        expect_ips=ref["images_per_s"] if ref else None, seconds=a.seconds * 1.5, min_steps=min_steps)
            variants.append((f"{batch}|{mode}|{aug}", j.to_dict(), a.seconds * 1.5 + 15))
        t = time.time()
        try:
            ray_res = gpu_arms.ray_arm(variants, use_gpu=use_gpu, deadline=deadline, address=a.ray_address,
                                       compile_backend=a.compile_backend, flops_per_image=flops,
                                       num_cpus=os.cpu_count() or 2, trainers=trainers)
        except Exception as exc:
            ray_res = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        res["ray"] = {k: v for k, v in ray_res.items() if k != "variants"}
        log(f"ray: {json.dumps(res['ray'])} ({time.time() - t:.0f} s)")
        for key, row in ray_res.get("variants", {}).items():
            arm, batch, mode, aug = key.split("|")
            run.rows.append({"arm": arm, "batch": int(batch), "compile": mode, "augment": aug, **row})
            log(f"arm={arm} batch={batch} compile={mode} augment={aug}: {json.dumps(row)}")
    run.deadline = deadline + 60  # the drift check always runs
    bare(b, "eager", cost=0)

    import shutil

    shutil.rmtree(root, ignore_errors=True)
    res["rows"] = run.rows
    res["ratios"] = ratios(run.rows)
    best = {arm: max((r["images_per_s"] for r in run.rows if r["arm"] == arm and "images_per_s" in r), default=None)
            for arm in ("bare", "platform", "ray")}
    res["best_images_per_s"] = best
    if best["bare"] and best["ray"]:
        res["ray_best_over_bare_best"] = round(best["ray"] / best["bare"], 3)
    if best["bare"] and best["platform"]:
        res["platform_best_over_bare_best"] = round(best["platform"] / best["bare"], 3)
    res["total_s"] = round(time.time() - t0, 1)
    out = a.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        log(f"wrote {out}")
    print(table(res))
    print(f"total {res['total_s']} s on {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
