"""The per-worker pretraining loop in plain torch: the same code under Ray Train and in a test.

Everything Ray-specific sits behind a small ``Session`` (rank, world size, device, report,
latest checkpoint). ``LocalSession`` runs the loop in one process (tests, debugging);
``RaySession`` wraps ``ray.train``. As in torchtitan, trainer and data-loader state are explicit:
a checkpoint holds the weights, optimiser, scheduler, step, the sampler position (epoch and batch
within it) and RNG state, so a resumed run produces the same weights as an uninterrupted one.

Metrics go to the tracker only after the checkpoint that covers them is committed (they travel
inside the checkpoint until then), so a worker failure and restart leaves an MLflow history with
no gap and no step logged twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .augment import Augment, SampleTransform
from .config import OptimConfig, PretrainJob, ScheduleConfig, load_job_dict

CKPT_MODEL = "model.safetensors"
CKPT_OPTIM = "optim.pt"
CKPT_STATE = "state.json"


class InjectedFault(RuntimeError):
    """Raised by ``debug.fail_at_step`` to prove that a worker failure resumes from a checkpoint."""


# --------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------
class Session:
    """What the loop needs from its runner."""

    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_dir: str | None = None  # the run's folder on shared storage (fault-injection markers)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield None


class LocalSession(Session):
    """One process; checkpoints are folders ``run_dir/checkpoint_<step>`` (newest wins)."""

    def __init__(self, run_dir: str | os.PathLike, num_to_keep: int = 2, device: str = "cpu") -> None:
        self.run_dir = str(run_dir)
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        self.num_to_keep = num_to_keep
        self._device = torch.device(device)
        self.reports: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self._device

    def _checkpoints(self) -> list[Path]:
        return sorted(Path(self.run_dir).glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            return
        step = int(metrics["step"])
        dst = Path(self.run_dir) / f"checkpoint_{step:08d}"
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)  # atomic: a half-copied checkpoint is never "latest"
        for old in self._checkpoints()[: -self.num_to_keep]:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        found = self._checkpoints()
        yield str(found[-1]) if found else None


class RaySession(Session):
    """``ray.train`` behind the Session interface (call inside a TorchTrainer worker)."""

    def __init__(self, run_dir: str | None = None) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self._train = ray.train
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.run_dir = run_dir

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        ckpt = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d


# --------------------------------------------------------------------------------------------
# reusable pieces (fine-tuning builds on these)
# --------------------------------------------------------------------------------------------
def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


@dataclass
class LRSchedule:
    """Linear warm-up then cosine / linear decay / constant (Loshchilov & Hutter, SGDR 2017).

    A callable object, not a lambda, so ``LambdaLR.state_dict`` records it and resuming is exact."""

    total_steps: int
    warmup_steps: int = 0
    name: str = "cosine"
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        if self.name == "linear":
            f = 1.0 - t
        else:
            f = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * f


def build_scheduler(optimizer, cfg: ScheduleConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    sched = LRSchedule(total_steps, cfg.warmup_steps, cfg.name, cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, sched)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA (``auto`` or ``bf16``); a no-op elsewhere unless ``bf16`` is forced."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Collate:
    """``collate`` restricted to ``keep`` keys (when given) and without ``drop`` keys.

    The training loader keeps only what the loss reads: each extra key is another tensor to
    unpickle, pin and copy in the main process, which on a GPU is time the GPU waits."""

    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] | None = None

    def __call__(self, samples: list[dict]) -> dict:
        if self.keep is not None:
            samples = [{k: s[k] for k in self.keep if k in s} for s in samples]
        return collate(samples, self.drop)


def collate(samples: list[dict], drop: tuple[str, ...] = ()) -> dict:
    """Stack arrays and numbers; keep strings as lists; drop keys that are None in any sample."""
    keys = [k for k in samples[0] if k not in drop and all(s.get(k) is not None for s in samples)]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in samples]
        v0 = vals[0]
        if isinstance(v0, np.ndarray):
            out[k] = torch.from_numpy(np.stack(vals))
        elif isinstance(v0, torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(v0, bool | np.bool_):
            out[k] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(v0, int | np.integer):
            out[k] = torch.tensor(vals, dtype=torch.int64)
        elif isinstance(v0, float | np.floating):
            out[k] = torch.tensor(vals, dtype=torch.float64)
        else:
            out[k] = vals
    return out


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class EpochSampler(torch.utils.data.Sampler):
    """Endless ``(epoch, index)`` stream over a distributed sampler, epoch after epoch, starting at
    ``(epoch, start)``; each epoch is cut to whole batches so no batch straddles two epochs.

    One DataLoader iterator then serves the whole run: its workers keep prefetching across epoch
    boundaries (a new iterator per epoch drains and refills the pipeline), and the epoch
    travels with each index to the worker's copy of the dataset (``EpochDataset``), so per-sample
    RNG streams stay (seed, epoch, rank, index)."""

    def __init__(self, sampler, batch_size: int, epoch: int = 0, start: int = 0) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.per_epoch = len(sampler) // self.batch_size * self.batch_size
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            self.sampler.set_epoch(epoch)
            for i, idx in enumerate(iter(self.sampler)):
                if i >= self.per_epoch:
                    break
                if i >= start:
                    yield (epoch, idx)
            epoch, start = epoch + 1, 0


class EpochDataset(torch.utils.data.Dataset):
    """Indexing with ``(epoch, i)`` sets the wrapped dataset's epoch, then returns item ``i``."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


class SkipSampler(torch.utils.data.Sampler):
    """Yield a sampler's indices from position ``start`` on: resume mid-epoch without replaying."""

    def __init__(self, sampler, start: int = 0) -> None:
        self.sampler = sampler
        self.start = start

    def __iter__(self):
        for i, idx in enumerate(iter(self.sampler)):
            if i >= self.start:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


class PretextModel(nn.Module):
    """Backbone + head, run through the pretext's forward (the one module DDP wraps)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pretext) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._pretext = [pretext]  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pretext[0].forward(self.backbone, self.head, x)


def all_reduce_mean(values: dict[str, float], weight: float, world_size: int) -> dict[str, float]:
    """Mean of scalar metrics over ranks, weighted (by samples); a non-finite value (say a mean IoU
    over a batch without boxes) carries no weight. Identity without a process group."""
    keys = sorted(values)
    vals = [float(values[k]) for k in keys]
    ws = [float(weight) if math.isfinite(v) else 0.0 for v in vals]
    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return {k: v for k, v in zip(keys, vals)}
    t = torch.tensor([v * w if w else 0.0 for v, w in zip(vals, ws)] + ws, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = t.cpu().tolist()
    n = len(keys)
    return {k: (t[i] / t[n + i]) if t[n + i] > 0 else float("nan") for i, k in enumerate(keys)}


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer, scheduler, state: dict) -> None:
    """Weights as safetensors, optimiser/scheduler/RNG via torch.save of tensors and plain
    containers only (loadable with ``weights_only=True``), the rest as JSON."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(d / CKPT_MODEL))
    extra = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        extra["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(extra, d / CKPT_OPTIM)
    (d / CKPT_STATE).write_text(json.dumps(state, indent=1))


def load_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer=None, scheduler=None) -> dict:
    from safetensors.torch import load_file

    d = Path(directory)
    model.load_state_dict(load_file(str(d / CKPT_MODEL)))
    extra = torch.load(d / CKPT_OPTIM, weights_only=True, map_location="cpu")
    if optimizer is not None:
        optimizer.load_state_dict(extra["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    if "cuda_rng" in extra and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(extra["cuda_rng"])
    return json.loads((d / CKPT_STATE).read_text())


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def split_cohort(job) -> dict[str, list[str]]:
    """Subject-level split (train / val / test) of a job's cohort, deterministic in ``cohort.split.seed``."""
    from cardiossl.datasets.splits import train_val_test_split
    from cardiossl.datasets.store import CohortStore

    ids = list(job.cohort.subjects) if job.cohort.subjects else CohortStore(job.cohort.store).subject_ids()
    if not ids:
        raise ValueError(f"cohort store {job.cohort.store} has no subjects")
    split = job.cohort.split
    return train_val_test_split(ids, val=split.val, test=split.test, seed=split.seed)


def make_dataset(job, subjects: list[str], pretext, train: bool, rank: int = 0, keep_labels: bool = False,
                 **kwargs):
    """Training samples draw augmentation and targets from (seed, epoch, rank, index); validation
    uses rank 0 and its own seed, so its targets do not depend on how many workers ran."""
    from cardiossl.datasets.torch_dataset import CohortDataset

    transform = SampleTransform(Augment.from_config(job.augment, job.image_size, labels=keep_labels),
                                pretext, train=train)
    return CohortDataset(
        job.cohort.store,
        subjects=subjects,
        views=tuple(job.cohort.views),
        phases=tuple(job.cohort.phases) if job.cohort.phases else None,
        transform=transform,
        filter=pretext.accepts if pretext is not None else None,
        seed=job.seed if train else job.seed + 7919,  # validation targets: a fixed, separate stream
        rank=rank if train else 0,
        **kwargs,
    )


def make_sampler(dataset, job, session: Session, shuffle: bool, drop_last: bool):
    from cardiossl.datasets.torch_dataset import BlockShuffleSampler

    return BlockShuffleSampler(
        dataset,
        block_size=job.loader.block_size,
        num_replicas=session.world_size,
        rank=session.world_rank,
        seed=job.seed,
        shuffle=shuffle,
        drop_last=drop_last,
    )


def make_loader(dataset, sampler, batch_size: int, job, device: torch.device, drop_last: bool,
                persistent: bool = False, collate_fn=collate):
    kw: dict[str, Any] = {}
    if job.loader.num_workers > 0:
        kw.update(prefetch_factor=job.loader.prefetch_factor, persistent_workers=persistent)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=job.loader.num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=job.loader.pin_memory and device.type == "cuda",
        **kw,
    )


# --------------------------------------------------------------------------------------------
# metric buffer
# --------------------------------------------------------------------------------------------
@dataclass
class MetricBuffer:
    """Metrics waiting for the checkpoint that covers them: ``[(step, {key: value})]``."""

    rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append((int(step), {k: float(v) for k, v in metrics.items()}))

    def flush(self, tracker, floor: int = -1) -> int:
        """Log rows with step > floor; return the highest step logged (or floor)."""
        top = floor
        for step, metrics in self.rows:
            if step > floor:
                tracker.log_metrics(metrics, step=step)
                top = max(top, step)
        self.rows.clear()
        return top

    def to_json(self) -> list:
        return [[s, m] for s, m in self.rows]

    @classmethod
    def from_json(cls, data) -> MetricBuffer:
        return cls([(int(s), dict(m)) for s, m in data or []])


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    step: int
    train_metrics: dict[str, float]
    val_metrics: dict[str, float]
    model: PretextModel
    pretext: Any
    resumed_from: int | None = None


def _maybe_fail(job, session: Session, step: int) -> None:
    dbg = job.debug
    if dbg.fail_at_step is None or step != dbg.fail_at_step or session.world_rank != dbg.fail_rank:
        return
    marker_dir = Path(session.run_dir or tempfile.gettempdir())
    for k in range(dbg.fail_times):
        marker = marker_dir / f".fault_injected_rank{dbg.fail_rank}_step{step}_{k}"
        if not marker.exists():
            marker_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text("1")
            raise InjectedFault(
                f"debug.fail_at_step={step}: rank {session.world_rank} raising on purpose ({k + 1}/{dbg.fail_times})"
            )


def evaluate(model: nn.Module, pretext, loader, device: torch.device, precision: str = "auto",
             channels_last: bool = False, max_batches: int | None = None,
             world_size: int = 1) -> dict[str, float]:
    """Mean loss and pretext metrics over a loader (weighted by samples, reduced over ranks)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = to_device(batch, device, channels_last)
            with autocast(device, precision):
                out = model(batch["input"])
            out = out.float()
            losses = pretext.loss(out, batch)
            vals = {f"{k}": float(v.detach()) for k, v in losses.items()}
            vals.update({k: float(v) for k, v in pretext.metrics(out, batch).items()})
            b = int(batch["input"].shape[0])
            for k, v in vals.items():
                if math.isfinite(v):
                    sums[k] = sums.get(k, 0.0) + v * b
                    counts[k] = counts.get(k, 0.0) + b
                else:
                    sums.setdefault(k, 0.0)
                    counts.setdefault(k, 0.0)
            n += b
    model.train(was_training)
    keys = sorted(sums)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        t = torch.tensor([sums[k] for k in keys] + [counts[k] for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t = t.cpu().tolist()
        sums = {k: t[i] for i, k in enumerate(keys)}
        counts = {k: t[len(keys) + i] for i, k in enumerate(keys)}
    return {k: sums[k] / counts[k] if counts[k] > 0 else float("nan") for k in keys}


def run_pretraining(
    job: PretrainJob,
    session: Session,
    tracker=None,
    *,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``job`` on this worker. ``tracker`` (rank 0 only) receives metrics after each
    checkpoint commit; other ranks pass None."""
    from .tracking import NullTracker

    tracker = tracker if tracker is not None else NullTracker()
    rank, world = session.world_rank, session.world_size
    device = session.device
    use_cuda = device.type == "cuda"
    channels_last = use_cuda if job.train.channels_last == "auto" else bool(job.train.channels_last)
    if job.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(job.seed)  # identical initial weights on every rank (DDP also broadcasts)

    pretext = job.pretext.build()
    backbone = job.backbone.build()
    head = pretext.build_head(backbone)
    model = PretextModel(backbone, head, pretext).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    splits = split_cohort(job)
    train_ds = make_dataset(job, splits["train"], pretext, train=True, rank=rank)
    train_sampler = make_sampler(train_ds, job, session, shuffle=True, drop_last=True)
    batches_per_epoch = len(train_sampler) // job.batch_size
    if batches_per_epoch == 0:
        raise ValueError(
            f"{len(train_sampler)} training slices per worker are fewer than batch_size={job.batch_size}: "
            "use a smaller batch_size, fewer workers or a larger cohort"
        )
    total = job.steps if job.steps is not None else job.epochs * batches_per_epoch
    val_loader = None
    if splits["val"]:
        val_ds = make_dataset(job, splits["val"], pretext, train=False)
        val_sampler = make_sampler(val_ds, job, session, shuffle=False, drop_last=False)
        val_loader = make_loader(val_ds, val_sampler, job.validation.batch_size or job.batch_size, job,
                                 device, drop_last=False)

    optimizer = build_optimizer(job.optim, model.parameters())
    scheduler = build_scheduler(optimizer, job.schedule, total)

    step, epoch, batch_in_epoch = 0, 0, 0
    pending = MetricBuffer()
    resumed_from = None
    with session.latest_checkpoint() as ckpt_dir:
        if ckpt_dir is not None:
            state = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
            if state.get("config_hash") not in (None, job.hash()):
                raise ValueError(
                    f"checkpoint in {ckpt_dir} was written by a different config "
                    f"({state.get('config_hash')} != {job.hash()}); use a new checkpoint.run_name"
                )
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            pending = MetricBuffer.from_json(state.get("pending_metrics"))
            resumed_from = step
    logged_top = -1
    if rank == 0:
        logged_top = tracker.last_step("train/loss")
        logged_top = pending.flush(tracker, floor=logged_top)  # metrics a crash kept from MLflow

    train_model: nn.Module = model
    if world > 1 and dist.is_available() and dist.is_initialized():
        fu = job.train.find_unused_parameters
        find_unused = (not pretext.uses_decoder) if fu == "auto" else bool(fu)
        ids = [device.index] if use_cuda else None
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused
        )
    fwd = torch.compile(train_model) if job.train.compile else train_model

    log_every = job.mlflow.log_every_steps
    ckpt_every = job.checkpoint.every_steps
    val_every = job.validation.every_steps
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    t_last, n_last = time.perf_counter(), 0

    def checkpoint_now() -> None:
        nonlocal logged_top
        with tempfile.TemporaryDirectory(prefix="cardiossl-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(tmp, model, optimizer, scheduler, {
                    "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                    "pending_metrics": pending.to_json(), "config_hash": job.hash(),
                    "world_size": world, "total_steps": total,
                })
                ckpt = tmp
            session.report({"step": step, "epoch": epoch, **last_train,
                            **{f"val/{k}": v for k, v in last_val.items()}}, checkpoint_dir=ckpt)
        if rank == 0:
            logged_top = pending.flush(tracker, floor=logged_top)

    def validate_now() -> dict[str, float]:
        if val_loader is None:
            return {}
        val_ds.set_epoch(0)
        val_sampler.set_epoch(0)
        return evaluate(model, pretext, val_loader, device, job.train.precision, channels_last,
                        job.validation.max_batches, world)

    stream = EpochSampler(train_sampler, job.batch_size, epoch, batch_in_epoch * job.batch_size)
    keep = tuple(dict.fromkeys([*job.loader.batch_keys, *getattr(pretext, "batch_keys", ())]))
    loader = make_loader(EpochDataset(train_ds), stream, job.batch_size, job, device, drop_last=True,
                         collate_fn=Collate(keep=keep))
    model.train()
    if step < total:
        for batch in loader:
            _maybe_fail(job, session, step + 1)
            batch = to_device(batch, device, channels_last)
            with autocast(device, job.train.precision):
                out = fwd(batch["input"])
            out = out.float()
            losses = pretext.loss(out, batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if job.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), job.optim.grad_clip)
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            if batch_in_epoch == batches_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            n_last += int(batch["input"].shape[0])
            if step % log_every == 0 or step == total:
                vals = {k: float(v.detach()) for k, v in losses.items()}
                with torch.no_grad():
                    vals.update({k: float(v) for k, v in pretext.metrics(out.detach(), batch).items()})
                vals = all_reduce_mean(vals, float(batch["input"].shape[0]), world)
                now = time.perf_counter()
                ips = n_last * world / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                last_train = {f"train/{k}": v for k, v in vals.items()}
                last_train.update({"train/lr": lr, "train/images_per_s": ips, "train/epoch": epoch + batch_in_epoch / batches_per_epoch})
                if rank == 0:
                    pending.add(step, last_train)
                if on_step is not None:
                    on_step(step, last_train)
            if val_every and step % val_every == 0 and step != total:
                last_val = validate_now()
                if rank == 0 and last_val:
                    pending.add(step, {f"val/{k}": v for k, v in last_val.items()})
                t_last = time.perf_counter()
            if step % ckpt_every == 0 and step != total:
                checkpoint_now()
                t_last = time.perf_counter()
            if step >= total:
                break

    last_val = validate_now()
    if rank == 0 and last_val:
        pending.add(step, {f"val/{k}": v for k, v in last_val.items()})
    checkpoint_now()
    return TrainResult(step, last_train, last_val, model, pretext, resumed_from)


# --------------------------------------------------------------------------------------------
# Ray entry point
# --------------------------------------------------------------------------------------------
def ray_train_loop(config: dict) -> None:
    """``TorchTrainer(train_loop_per_worker=ray_train_loop, train_loop_config={...})``.

    config: job (resolved dict), run_id, tracking_uri, run_dir."""
    from .tracking import make_tracker

    job = load_job_dict(config["job"])
    session = RaySession(run_dir=config.get("run_dir"))
    tracker = make_tracker(
        rank=session.world_rank,
        run_id=config.get("run_id"),
        tracking_uri=config.get("tracking_uri"),
        system_metrics=job.mlflow.system_metrics,
        sampling_interval=job.mlflow.system_metrics_interval_s,
    )
    try:
        nodes = _gather_nodes(session)  # a collective: every rank calls it
        if session.world_rank == 0:
            tracker.set_tags({"worker_nodes": json.dumps(nodes), "num_nodes": str(len(set(nodes)))})
        result = run_pretraining(job, session, tracker)
        if session.world_rank == 0:
            from .tracking import log_training_outputs

            log_training_outputs(tracker, job, result)
    finally:
        tracker.close()


def _gather_nodes(session: Session) -> list[str]:
    """Node id of every rank (proves placement across machines); collective over all ranks."""
    try:
        import ray

        me = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        me = "local"
    if session.world_size <= 1 or not dist.is_initialized():
        return [me]
    out: list = [None] * session.world_size
    dist.all_gather_object(out, me)
    return out
