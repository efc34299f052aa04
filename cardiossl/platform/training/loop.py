"""The per-worker pretraining loop in plain torch: the same code under Ray Train and in a test.

Everything Ray-specific sits behind a small ``Session`` (rank, world size, device, report,
latest checkpoint). ``LocalSession`` runs the loop in one process (tests, debugging);
``RaySession`` wraps ``ray.train``. As in torchtitan, trainer and data-loader state are explicit:
a checkpoint holds the weights, optimiser, scheduler, step, the sampler position (epoch and batch
within it) and RNG state, so a resumed run produces the same weights as an uninterrupted one.

Rank 0 logs metrics to the tracker as they happen (every ``mlflow.log_every_steps``) and prints a
progress line every ``progress.every_steps``; every rank reports to Ray Train at the same steps, so
the Ray dashboard follows the run. After a worker failure the group resumes from the last
checkpoint and recomputes the steps after it; ``LiveMetrics`` skips the steps MLflow already holds,
so the history has no gap and no step logged twice.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import PretrainJob, load_job_dict
from ..tracking import NullTracker, make_tracker
from .augment_device import DEVICE_KEYS, DeviceAugment, step_generator, uses_device_augment
from .checkpoint import load_checkpoint, save_checkpoint
from .collate import Collate, to_device
from .data import EpochDataset, EpochSampler, make_dataset, make_loader, make_sampler, split_cohort
from .metrics import LiveMetrics, all_reduce_mean, evaluate
from .optim import autocast, build_optimizer, build_scheduler
from .outputs import log_training_outputs
from .progress import ProgressLine
from .session import RaySession, Session


class InjectedFault(RuntimeError):
    """Raised by ``debug.fail_at_step`` to prove that a worker failure resumes from a checkpoint."""



class PretextModel(nn.Module):
    """Backbone + head, run through the pretext's forward (the one module DDP wraps)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pretext) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._pretext = [pretext]  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pretext[0].forward(self.backbone, self.head, x)


@dataclass
class TrainResult:
    step: int
    train_metrics: dict[str, float]
    val_metrics: dict[str, float]
    model: PretextModel
    pretext: Any
    resumed_from: int | None = None
    snapshot: Any = None  # the cohort snapshot trained on
    splits: dict | None = None  # its subject split


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


def run_pretraining(
    job: PretrainJob,
    session: Session,
    tracker=None,
    *,
    on_step: Callable[[int, dict], None] | None = None,
    progress: ProgressLine | None = None,
    snapshot=None,
    splits: dict | None = None,
) -> TrainResult:
    """Train ``job`` on this worker. ``tracker`` (rank 0 only) receives metrics as they happen;
    other ranks pass None. ``progress``: the console line (rank 0; default from ``job.progress``).
    ``snapshot`` and ``splits``: the cohort snapshot and split the driver took (every rank gets the
    same); without them, a snapshot of the store now."""
    from cardiossl.datasets.store import CohortStore, Snapshot

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

    if isinstance(snapshot, dict):
        snapshot = Snapshot.from_dict(snapshot)
    snapshot = snapshot or CohortStore(job.cohort.store).snapshot()
    splits = splits or split_cohort(job, snapshot)
    data_hash = job.hash(snapshot.content_hash)
    train_ds = make_dataset(job, splits["train"], pretext, train=True, rank=rank, snapshot=snapshot)
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
        val_ds = make_dataset(job, splits["val"], pretext, train=False, snapshot=snapshot)
        val_sampler = make_sampler(val_ds, job, session, shuffle=False, drop_last=False)
        val_loader = make_loader(val_ds, val_sampler, job.validation.batch_size or job.batch_size, job,
                                 device, drop_last=False)

    optimizer = build_optimizer(job.optim, model.parameters())
    scheduler = build_scheduler(optimizer, job.schedule, total)

    step, epoch, batch_in_epoch = 0, 0, 0
    live = LiveMetrics(tracker)
    resumed_from = None
    with session.latest_checkpoint() as ckpt_dir:
        if ckpt_dir is not None:
            state = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
            if state.get("job_hash") != job.hash():
                raise ValueError(
                    f"checkpoint in {ckpt_dir} was written by a different config "
                    f"({state.get('job_hash')} != {job.hash()}); use a new checkpoint.run_name"
                )
            pinned = (state.get("snapshot") or {}).get("content_hash")
            if pinned != snapshot.content_hash and not job.checkpoint.allow_new_snapshot:
                raise ValueError(
                    f"checkpoint in {ckpt_dir} was trained on cohort snapshot {str(pinned)[:16]}, this run reads "
                    f"{snapshot.content_hash[:16]}: the store changed. Use a new checkpoint.run_name, or "
                    "checkpoint.allow_new_snapshot=true to continue on the new data"
                )
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            resumed_from = step
            if rank == 0:  # checkpoints of earlier versions carried metrics not yet logged
                for s_, m_ in state.get("pending_metrics") or []:
                    live.log(s_, m_)
    if progress is None:
        progress = ProgressLine(job.name, total, job.progress.every_steps if rank == 0 else 0, start_step=step)

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
        """Every rank reports at the same steps (Ray Train requires it); rank 0 attaches the checkpoint."""
        metrics = {"step": step, "epoch": epoch, **last_train, **{f"val/{k}": v for k, v in last_val.items()}}
        with tempfile.TemporaryDirectory(prefix="cardiossl-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(tmp, model, optimizer, scheduler, {
                    "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                    "config_hash": data_hash, "job_hash": job.hash(),
                    "world_size": world, "total_steps": total,
                    "snapshot": snapshot.to_dict(), "splits": splits,
                })
                ckpt = tmp
            session.report(metrics, checkpoint_dir=ckpt)

    def validate_now() -> dict[str, float]:
        if val_loader is None:
            return {}
        val_ds.set_epoch(0)
        val_sampler.set_epoch(0)
        return evaluate(model, pretext, val_loader, device, job.train.precision, channels_last,
                        job.validation.max_batches, world)

    stream = EpochSampler(train_sampler, job.batch_size, epoch, batch_in_epoch * job.batch_size)
    on_device = DeviceAugment.from_config(job.augment, job.image_size) if uses_device_augment(job) else None
    keep = tuple(dict.fromkeys([*job.loader.batch_keys, *getattr(pretext, "batch_keys", ()),
                                *(DEVICE_KEYS if on_device else ())]))
    loader = make_loader(EpochDataset(train_ds), stream, job.batch_size, job, device, drop_last=True,
                         collate_fn=Collate(keep=keep))
    model.train()
    if step < total:
        for batch in loader:
            _maybe_fail(job, session, step + 1)
            batch = to_device(batch, device, channels_last)
            if on_device is not None:  # the loader drew the augmentation; resample the batch here
                x = on_device(batch, step_generator(device, job.seed, rank, step))
                batch["input"] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
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
            progress.add_loss(losses["loss"].detach())
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
                    live.log(step, last_train)
                if on_step is not None:
                    on_step(step, last_train)
            progress.update(step, {f"val/{k}": v for k, v in last_val.items() if k == "loss"})
            paused = False
            if val_every and step % val_every == 0 and step != total:
                last_val = validate_now()
                if rank == 0 and last_val:
                    live.log(step, {f"val/{k}": v for k, v in last_val.items()})
                paused = True
            # Ray Train hears from the loop at checkpoints only: a report waits until the controller has
            # taken the previous one, which it polls every 2 s, so reporting at every log step held a GPU
            # job to one log step per 2 s (0.40x the bare loop on an H200). MLflow gets every log step above.
            if step != total and step % ckpt_every == 0:
                checkpoint_now()
                paused = True
            if paused:  # images/s and step/s measure training, not validation or checkpoint writes
                t_last = time.perf_counter()
                progress.pause()
            if step >= total:
                break

    last_val = validate_now()
    if rank == 0 and last_val:
        live.log(step, {f"val/{k}": v for k, v in last_val.items()})
    checkpoint_now()
    return TrainResult(step, last_train, last_val, model, pretext, resumed_from, snapshot, splits)


# --------------------------------------------------------------------------------------------
# Ray entry point
# --------------------------------------------------------------------------------------------
def ray_train_loop(config: dict) -> None:
    """``TorchTrainer(train_loop_per_worker=ray_train_loop, train_loop_config={...})``.

    config: job (resolved dict), run_id, tracking_uri, run_dir, the cohort snapshot and split the
    driver took (every rank reads the same parts and subjects, whatever is committed meanwhile),
    plugin_modules (modules that register plugins from Python: imported here first, so the job's
    plugin names resolve on this worker)."""
    import importlib

    if not config.get("verbose"):
        _quiet_report_log()
    for module in config.get("plugin_modules") or ():
        importlib.import_module(module)
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
        result = run_pretraining(job, session, tracker, snapshot=config.get("snapshot"), splits=config.get("splits"))
        if session.world_rank == 0:
            log_training_outputs(tracker, job, result)
    finally:
        tracker.close()


def _quiet_report_log() -> None:
    """Ray Train logs ``Reporting training result N: TrainingReport(...)`` at INFO for every checkpoint
    through a logger named after its file (so RunConfig's log level does not reach it): a screenful
    of paths per checkpoint. The progress line says what matters; ``--verbose`` keeps Ray's line."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


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
