"""One short GPU check for a single H100/H200: NCCL backend, bf16 throughput, loader vs GPU.

1. NCCL: a 1-worker Ray TorchTrainer with use_gpu=True reports its process-group backend (nccl
   expected). Without Ray installed, torch.distributed initialises an NCCL group of one directly
   and all-reduces a CUDA tensor (what TorchConfig(backend="nccl") does inside the worker).
2. Throughput of the Bai-size U-Net (unet_bai: 5 scales, 16..256 filters) at 192x192, bf16 autocast,
   channels_last, AdamW, position pretext (boxes), side by side in one run:
   (a) the platform's training loop (``run_pretraining``) with the DataLoader reading a Zarr cohort
       store through CohortDataset, augmenting and making targets in worker processes;
   (b) the same model/loss/optimiser on tensors already on the GPU (the ceiling).
   GPU utilisation is sampled (NVML) during each. Target: (a) >= 0.9x (b).

    python bench/gpu_check.py              # on the GPU machine; < 6 minutes; writes $OUT/gpu_check.json
    python bench/gpu_check.py --cpu-smoke  # tiny CPU run of the same code path (tests use this)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
class GpuSampler:
    """Mean GPU utilisation (%) over a window, from NVML (nvidia-smi as a fallback)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = None
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception:
            import shutil
            import subprocess

            if shutil.which("nvidia-smi"):
                def read() -> float:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=5)
                    return float(out.stdout.strip().splitlines()[0])

                self._read = read

    def __enter__(self):
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception:
                pass
            self._stop.wait(self.period)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        s = self.samples[2:] if len(self.samples) > 4 else self.samples  # skip the ramp
        return round(statistics.mean(s), 1) if s else None


# --------------------------------------------------------------------------------------------
def nccl_check(use_gpu: bool) -> dict:
    """Backend of a 1-worker TorchTrainer (Ray), else of a torch.distributed group of one."""
    want = "nccl" if use_gpu else "gloo"
    try:
        import ray  # noqa: F401
    except ImportError:
        ray = None
    if ray is not None:
        import ray
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        def loop(_):
            import torch
            import torch.distributed as dist

            dev = ray.train.torch.get_device()
            t = torch.ones(1, device=dev)
            dist.all_reduce(t)
            ray.train.report({"backend": dist.get_backend(), "device": str(dev), "sum": float(t.item())})

        started = not ray.is_initialized()
        if started:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            storage = tempfile.mkdtemp(prefix="gpu-check-ray-")
            res = TorchTrainer(loop, torch_config=TorchConfig(backend=want),
                               scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
                               run_config=ray.train.RunConfig(name="gpu-check", storage_path=storage)).fit()
            m = dict(res.metrics or {})
            return {"via": "ray TorchTrainer", "backend": m.get("backend"), "device": m.get("device"),
                    "ok": m.get("backend") == want and m.get("sum") == 1.0}
        finally:
            if started:
                ray.shutdown()
    import torch
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(want, init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
    try:
        dev = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        t = torch.ones(1, device=dev)
        dist.all_reduce(t)
        return {"via": "torch.distributed (ray not installed here)", "backend": dist.get_backend(),
                "device": str(dev), "ok": dist.get_backend() == want and float(t.item()) == 1.0}
    finally:
        dist.destroy_process_group()


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
    per_part = max(1, len(records) // max(1, procs))
    for k in range(0, len(records), per_part):
        store.write_subjects(records[k:k + per_part])
    store.update_fingerprint()
    return path


def make_job(store: Path, root: Path, a) -> object:
    from cardiossl.platform.config import load_job

    sets = {
        "cohort.store": str(store), "cohort.split": "{val: 2, seed: 0}",
        "image_size": a.image_size, "steps": a.steps, "batch_size": a.batch_size,
        "backbone.name": a.backbone, "backbone.params": "{}" if a.backbone != "unet" else "{depth: 3, width: 4}",
        "loader.num_workers": a.loader_workers, "loader.prefetch_factor": 4,
        "train.precision": a.precision, "train.channels_last": str(a.channels_last).lower(),
        "augment.enabled": str(not a.no_augment).lower(),
        "checkpoint.every_steps": a.steps, "checkpoint.storage_path": str(root / "ckpt"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'unused.db'}", "mlflow.log_every_steps": a.log_every,
        "validation.every_steps": "null", "validation.max_batches": 1,
    }
    return load_job(REPO / "jobs" / "pretrain_position.yaml", [f"{k}={v}" for k, v in sets.items()], env={})


def sample_cost_ms(job, n: int = 128) -> float:
    """Per-sample CPU cost of the training transform in one process (what each loader worker pays)."""
    import numpy as np

    from cardiossl.platform.training import Collate, make_dataset, split_cohort

    pretext = job.pretext.build()
    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    idx = np.random.default_rng(0).integers(0, len(ds), n)
    t = time.perf_counter()
    samples = [ds[int(i)] for i in idx]
    for k in range(0, n, job.batch_size):
        Collate(keep=tuple(job.loader.batch_keys))(samples[k:k + job.batch_size])
    return round((time.perf_counter() - t) / n * 1e3, 3)


def loader_arm(job, device: str) -> dict:
    from cardiossl.platform.tracking.testing import MemoryTracker
    from cardiossl.platform.training import LocalSession, run_pretraining

    tracker = MemoryTracker()
    with tempfile.TemporaryDirectory() as tmp, GpuSampler() as gpu:
        run_pretraining(job, LocalSession(tmp, device=device), tracker)
    vals = [v for _, v in tracker.history("train/images_per_s")][1:]  # first interval: loader start-up
    return {"images_per_s": round(statistics.median(vals), 1), "intervals": [round(v, 1) for v in vals],
            "gpu_util_mean": gpu.mean}


def tensor_arm(job, device: str, steps: int) -> dict:
    import numpy as np
    import torch

    from cardiossl.platform.training import (
        PretextModel,
        autocast,
        build_optimizer,
        collate,
        make_dataset,
        split_cohort,
        to_device,
    )

    dev = torch.device(device)
    torch.manual_seed(0)
    pretext = job.pretext.build()
    backbone = job.backbone.build()
    model = PretextModel(backbone, pretext.build_head(backbone), pretext).to(dev)
    cl = dev.type == "cuda" if job.train.channels_last == "auto" else bool(job.train.channels_last)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(job.optim, model.parameters())
    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    idx = np.linspace(0, len(ds) - 1, job.batch_size).astype(int)
    batch = to_device(collate([ds[int(i)] for i in idx]), dev, cl)

    def step():
        with autocast(dev, job.train.precision):
            out = model(batch["input"])
        loss = pretext.loss(out.float(), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(10):
        step()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    with GpuSampler() as gpu:
        t = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss.detach())
        sync()
        dt = time.perf_counter() - t
    return {"images_per_s": round(steps * job.batch_size / dt, 1), "gpu_util_mean": gpu.mean}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of the same code path")
    ap.add_argument("--subjects", type=int, default=48)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--grid", type=int, default=192)
    ap.add_argument("--spacing", type=float, default=1.4)
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--backbone", default="unet_bai")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--loader-workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 4)),
                    help="DataLoader processes (default: CPUs - 4, leaving cores for the training process)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "auto"])
    ap.add_argument("--channels-last", default=True, action=argparse.BooleanOptionalAction)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--no-ray", action="store_true", help="check NCCL with torch.distributed only")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        a.subjects, a.frames, a.grid, a.spacing, a.image_size = 4, 2, 64, 2.5, 32
        a.backbone, a.batch_size, a.steps, a.log_every, a.loader_workers = "unet", 4, 6, 2, 1
        a.precision = "fp32"
        a.channels_last = False
    import torch

    t0 = time.time()
    use_gpu = torch.cuda.is_available() and not a.cpu_smoke
    device = "cuda" if use_gpu else "cpu"
    if not use_gpu and not a.cpu_smoke:
        log("no CUDA device: run with --cpu-smoke for the CPU path")
        return 2
    if use_gpu:
        torch.backends.cudnn.benchmark = True
    res: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if use_gpu else "cpu",
                 "cpu_count": os.cpu_count(), "args": {k: str(v) for k, v in vars(a).items()}}
    log(f"device {res['device']}, torch {torch.__version__}, {os.cpu_count()} CPUs")

    if a.no_ray:
        sys.modules["ray"] = None  # type: ignore[assignment]
    res["nccl"] = nccl_check(use_gpu)
    log(f"process group: {res['nccl']}")

    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t = time.time()
    store = build_store(root / "cohort.zarr", a.subjects, a.grid, a.spacing, a.frames,
                        procs=max(1, min(16, (os.cpu_count() or 2))))
    res["store_build_s"] = round(time.time() - t, 1)
    job = make_job(store, root, a)
    log(f"store with {a.subjects} subjects at {a.grid}x{a.grid} built in {res['store_build_s']} s")

    res["loader_ms_per_sample_one_process"] = sample_cost_ms(job)
    log(f"one loader process: {res['loader_ms_per_sample_one_process']} ms per sample "
        f"(read + augment + target + collate); {a.loader_workers} workers")
    res["tensors_on_gpu"] = tensor_arm(job, device, a.steps)
    log(f"tensors already on the device: {res['tensors_on_gpu']}")
    res["zarr_loader"] = loader_arm(job, device)
    log(f"platform loop, Zarr loader:     {res['zarr_loader']}")
    res["tensors_on_gpu_again"] = tensor_arm(job, device, a.steps)  # drift check
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    ceiling = (res["tensors_on_gpu"]["images_per_s"] + res["tensors_on_gpu_again"]["images_per_s"]) / 2
    res["ratio_loader_over_tensors"] = round(res["zarr_loader"]["images_per_s"] / ceiling, 3)
    res["target_met"] = res["ratio_loader_over_tensors"] >= 0.9
    res["total_s"] = round(time.time() - t0, 1)
    log(f"ratio loader / tensors = {res['ratio_loader_over_tensors']} (target >= 0.9); total {res['total_s']} s")

    out = a.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        log(f"wrote {out}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
