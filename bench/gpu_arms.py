"""The measured arms of ``bench/gpu_check.py``: bare loop, platform loop, the same through Ray.

Every arm trains the same model (``PretextModel`` of the job's backbone and pretext) with the same
loss and optimiser, bf16 autocast and channels_last as the job says; what differs is where the batch
comes from and what runs around the step:

* ``bare``: one real batch made once and kept on the device (the ceiling of the training process);
* ``platform``: ``run_pretraining`` in this process (DataLoader workers reading the Zarr store,
  augmentation, targets, the loop's own bookkeeping), images/s from the loop's own log intervals;
* ``ray``: ``run_pretraining`` inside a one-worker Ray ``TorchTrainer`` (``use_gpu``: NCCL process
  group, the device Ray assigns), one trainer running every variant in turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16, SXM parts (NVIDIA datasheets)


class GpuSampler:
    """Mean GPU utilisation (%) over a window, from NVML (nvidia-smi as a fallback); None without."""

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
            with contextlib.suppress(Exception):
                self.samples.append(self._read())
            self._stop.wait(self.period)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        s = self.samples[2:] if len(self.samples) > 4 else self.samples  # skip the ramp
        return round(statistics.mean(s), 1) if s else None


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def use_compile_backend(backend: str | None) -> None:
    """``--compile-backend``: every ``torch.compile`` in this process (the loop's too) uses it."""
    if not backend:
        return
    import functools

    import torch

    if not getattr(torch.compile, "_cardiossl_backend", None):
        compile_ = functools.partial(torch.compile, backend=backend)
        compile_._cardiossl_backend = backend
        torch.compile = compile_


def matmul_tflops(dev, n: int = 8192, reps: int = 10) -> float:
    """Achieved bf16 TFLOP/s of an n x n x n product (the card's practical ceiling; METHOD.md)."""
    import torch

    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


# --------------------------------------------------------------------------------------------
# the model and one real batch
# --------------------------------------------------------------------------------------------
def channels_last(job, dev) -> bool:
    return dev.type == "cuda" if job.train.channels_last == "auto" else bool(job.train.channels_last)


def build(job, dev):
    """(model, pretext, optimiser) exactly as ``run_pretraining`` builds them."""
    import torch

    from cardiossl.platform.training import PretextModel, build_optimizer

    torch.manual_seed(job.seed)
    pretext = job.pretext.build()
    backbone = job.backbone.build()
    model = PretextModel(backbone, pretext.build_head(backbone), pretext).to(dev)
    if channels_last(job, dev):
        model = model.to(memory_format=torch.channels_last)
    return model, pretext, build_optimizer(job.optim, model.parameters())


def real_batch(job, pretext, batch_size: int, dev) -> dict:
    """``batch_size`` samples of the training set through the job's transform, on the device."""
    import numpy as np

    from cardiossl.platform.training import Collate, make_dataset, split_cohort, to_device

    ds = make_dataset(job, split_cohort(job)["train"], pretext, train=True)
    idx = np.resize(np.arange(len(ds)), batch_size)
    samples = [ds[int(i)] for i in idx]
    keep = tuple(dict.fromkeys([*job.loader.batch_keys, *getattr(pretext, "batch_keys", ()), *device_keys(job)]))
    return to_device(Collate(keep=keep)(samples), dev, channels_last(job, dev))


def device_keys(job) -> tuple[str, ...]:
    from cardiossl.platform.training.augment_device import DEVICE_KEYS, uses_device_augment

    return DEVICE_KEYS if uses_device_augment(job) else ()


def train_flops_per_image(job, dev) -> float:
    """Forward + backward FLOPs of one training image, counted by torch (convolutions, matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cardiossl.platform.training import autocast

    model, pretext, _ = build(job, dev)
    batch = real_batch(job, pretext, 2, dev)
    x = batch["input"]
    if device_keys(job):
        x = torch.zeros(2, x.shape[1], job.image_size, job.image_size, device=dev)
    with FlopCounterMode(display=False) as fc:
        with autocast(dev, job.train.precision):
            out = model(x)
        pretext.loss(out.float(), batch)["loss"].backward()
    return fc.get_total_flops() / 2


# --------------------------------------------------------------------------------------------
# bare loop
# --------------------------------------------------------------------------------------------
def bare_arm(job, dev, *, batch_size: int, compile_mode: str | None, seconds: float,
             flops_per_image: float | None = None) -> dict:
    """Images/s of the training step on one batch kept on the device (device augmentation included
    when the job asks for it). ``compile_mode``: None (eager), "default" or "reduce-overhead"."""
    import torch

    from cardiossl.platform.training import autocast

    model, pretext, opt = build(job, dev)
    batch = real_batch(job, pretext, batch_size, dev)
    fwd = model if compile_mode is None else torch.compile(model, mode=compile_mode)
    cl = channels_last(job, dev)
    dev_aug = bool(device_keys(job))
    graphs = compile_mode == "reduce-overhead"
    step_no = [0]

    if dev_aug:
        from cardiossl.platform.training.augment_device import DeviceAugment, step_generator

        on_device = DeviceAugment.from_config(job.augment, job.image_size)

    def step():
        b = batch
        if dev_aug:
            x = on_device(batch, step_generator(dev, job.seed, 0, step_no[0]))
            b = dict(batch, input=x.contiguous(memory_format=torch.channels_last) if cl else x)
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(dev, job.train.precision):
            out = fwd(b["input"])
        loss = pretext.loss(out.float(), b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_no[0] += 1
        return loss

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(dev)
    warm_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    for _ in range(3):
        step()
    sync(dev)
    n = max(5, int(seconds / max((time.perf_counter() - t) / 3, 1e-6)))
    with GpuSampler() as gpu:
        t = time.perf_counter()
        for _ in range(n):
            loss = step()
        float(loss.detach())
        sync(dev)
        dt = time.perf_counter() - t
    ips = n * batch_size / dt
    out = {"images_per_s": round(ips, 1), "step_ms": round(dt / n * 1e3, 2), "steps": n,
           "gpu_util_mean": gpu.mean, "warmup_s": round(warm_s, 1)}
    if dev.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    if flops_per_image:
        out["tflops"] = round(ips * flops_per_image / 1e12, 3)
    del model, opt, batch, fwd
    free_memory(dev)
    return out


def free_memory(dev) -> None:
    import gc

    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def largest_batch(job, dev, start: int, cap: int) -> dict:
    """The largest batch (start x 2^k, at most ``cap``) whose eager training step fits in memory."""
    import torch

    from cardiossl.platform.training import autocast

    model, pretext, opt = build(job, dev)
    best, tried = None, []
    b = start
    while b <= cap:
        try:
            batch = real_batch(job, pretext, b, dev)
            with autocast(dev, job.train.precision):
                out = model(batch["input"] if not device_keys(job) else
                            torch.zeros(b, batch["input"].shape[1], job.image_size, job.image_size, device=dev))
            pretext.loss(out.float(), batch)["loss"].backward()
            opt.zero_grad(set_to_none=True)
            sync(dev)
            best = b
            tried.append(b)
            del batch, out
            free_memory(dev)
        except torch.cuda.OutOfMemoryError:
            tried.append(f"{b}: out of memory")
            break
        b *= 2
    del model, opt
    free_memory(dev)
    return {"batch": best or start, "tried": tried, "cap": cap, "capped": best == cap}


# --------------------------------------------------------------------------------------------
# platform loop (this process) and the same through Ray
# --------------------------------------------------------------------------------------------
def loop_result(tracker, job, flops_per_image: float | None, gpu_mean=None) -> dict:
    vals = [v for _, v in tracker.history("train/images_per_s")][1:]  # first interval: start-up, compile
    if not vals:
        return {"error": "no logged interval"}
    ips = statistics.median(vals)
    out = {"images_per_s": round(ips, 1), "step_ms": round(job.batch_size / ips * 1e3, 2),
           "intervals": [round(v, 1) for v in vals], "gpu_util_mean": gpu_mean}
    if flops_per_image:
        out["tflops"] = round(ips * flops_per_image / 1e12, 3)
    return out


def platform_arm(job, dev, flops_per_image: float | None = None) -> dict:
    from cardiossl.platform.tracking.testing import MemoryTracker
    from cardiossl.platform.training import LocalSession, run_pretraining

    tracker = MemoryTracker()
    with tempfile.TemporaryDirectory(prefix="gpu-check-run-") as tmp, GpuSampler() as gpu:
        run_pretraining(job, LocalSession(tmp, device=str(dev)), tracker)
    free_memory(dev)
    return loop_result(tracker, job, flops_per_image, gpu.mean)


def _ray_worker(config: dict) -> None:
    """Inside the TorchTrainer worker: check the process group, then run each variant's loop."""
    import torch
    import torch.distributed as dist

    import ray.train
    import ray.train.torch
    from cardiossl.platform.config import load_job_dict
    from cardiossl.platform.tracking.testing import MemoryTracker
    from cardiossl.platform.training import RaySession, run_pretraining

    class FreshSession(RaySession):
        """Each variant starts from scratch: never resume from the previous variant's checkpoint."""

        @contextlib.contextmanager
        def latest_checkpoint(self):
            yield None

    use_compile_backend(config.get("compile_backend"))
    dev = ray.train.torch.get_device()
    t = torch.ones(1, device=dev)
    dist.all_reduce(t)
    out = {"process_group": {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                             "device": str(dev), "all_reduce_ok": float(t.item()) == 1.0,
                             "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
           # Ray sets OMP_NUM_THREADS to the worker's CPU reservation: one thread unless more are reserved
           "worker": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
                      "cpu_affinity": len(os.sched_getaffinity(0))},
           "variants": {}}
    for name, jd, cost in config["variants"]:
        if time.time() + cost > config["deadline"]:
            out["variants"][name] = {"skipped": "time budget"}
            continue
        job = load_job_dict(jd)
        tracker = MemoryTracker()
        try:
            with GpuSampler() as gpu:
                run_pretraining(job, FreshSession(), tracker)
            out["variants"][name] = loop_result(tracker, job, config.get("flops_per_image"), gpu.mean)
        except Exception as exc:  # one failing variant must not hide the others
            out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        free_memory(dev)
        Path(config["out"]).write_text(json.dumps(out))


def ray_arm(variants: list[tuple[str, dict, float]], *, use_gpu: bool, deadline: float, address: str | None,
            compile_backend: str | None, flops_per_image: float | None, num_cpus: int,
            trainers: list[tuple[str, float]] = (("ray", 1.0),)) -> dict:
    """One one-worker ``TorchTrainer`` (``use_gpu``) per ``(arm, CPUs reserved)`` in ``trainers``, each
    running every variant; results via a file. The reservation is what a job's ``scaling.cpus_per_worker``
    sets: Ray gives the worker that many OpenMP threads (on an H200, 1 and 13 gave the same rate)."""
    import sys

    import ray
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tmp = Path(tempfile.mkdtemp(prefix="gck", dir="/tmp"))  # short: Ray's socket paths have a length limit
    t0 = time.time()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=1 if use_gpu else 0, include_dashboard=False,
                 log_to_driver=False, _temp_dir=str(tmp / "ray"))
    try:
        res: dict = {"ray_init_s": round(time.time() - t0, 1), "trainers": {}, "variants": {}}
        for arm, cpus in trainers:
            out = tmp / f"ray_result_{arm}.json"
            resources = {"CPU": cpus, **({"GPU": 1.0} if use_gpu else {})}
            trainer = TorchTrainer(
                _ray_worker,
                train_loop_config={"variants": variants, "deadline": deadline, "out": str(out),
                                   "compile_backend": compile_backend, "flops_per_image": flops_per_image},
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                                       resources_per_worker=resources),
                run_config=ray.train.RunConfig(name=f"gpu-check-{arm}-{os.getpid()}",
                                               storage_path=str(tmp / "storage")),
            )
            t1 = time.time()
            trainer.fit()
            got = json.loads(out.read_text()) if out.exists() else {"error": "the Ray worker wrote no result"}
            res.setdefault("process_group", got.get("process_group"))
            res["trainers"][arm] = {"cpus_per_worker": cpus, "worker": got.get("worker"),
                                    "trainer_s": round(time.time() - t1, 1)}
            if "error" in got:
                res["trainers"][arm]["error"] = got["error"]
            res["variants"].update({f"{arm}|{k}": v for k, v in got.get("variants", {}).items()})
        return res
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
