"""The training data path: the job's subject split, datasets with augmentation and targets, shard-aware
samplers and one DataLoader iterator that runs across epochs."""

from __future__ import annotations

from typing import Any

import torch

from .augment import Augment, SampleTransform
from .augment_device import DeferredAugment, DeferredTransform, check_pretext, uses_device_augment
from .collate import collate
from .session import Session


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



# data
# --------------------------------------------------------------------------------------------
def split_cohort(job, snapshot=None) -> dict[str, list[str]]:
    """Subject-level split (train / val / test) of a job's cohort in ``snapshot`` (default: a snapshot
    of the store now) after ``cohort.exclude``: from ``cohort.split.file`` when given, else hash-based
    in ``cohort.split.seed`` (``datasets.splits``). A training run computes it once, on its driver, and
    hands it to every worker with the snapshot."""
    from cardiossl.datasets.splits import apply_split_file, excluded_ids, load_split_file, train_val_test_split
    from cardiossl.datasets.store import CohortStore, Snapshot

    if isinstance(snapshot, dict):
        snapshot = Snapshot.from_dict(snapshot)
    snapshot = snapshot or CohortStore(job.cohort.store).snapshot()
    ids = snapshot.subject_ids
    if job.cohort.subjects:
        missing = sorted(set(job.cohort.subjects) - set(ids))
        if missing:
            raise ValueError(f"cohort.subjects: not in {job.cohort.store} (snapshot {snapshot.content_hash[:12]}): "
                             f"{', '.join(missing[:10])}")
        ids = list(job.cohort.subjects)
    if not ids:
        raise ValueError(f"cohort store {job.cohort.store} has no subjects")
    drop = excluded_ids(job.cohort.exclude, fold=job.cohort.split.fold)
    ids = [s for s in ids if s not in drop]
    if not ids:
        raise ValueError(f"cohort.exclude removes every subject of {job.cohort.store}")
    split = job.cohort.split
    if split.file:
        groups = apply_split_file(ids, load_split_file(split.file, fold=split.fold))
        if not groups["train"]:
            raise ValueError(f"cohort.split.file {split.file} leaves no subject of {job.cohort.store} to train on")
        return {k: groups[k] for k in ("train", "val", "test")}
    return train_val_test_split(ids, val=split.val, test=split.test, seed=split.seed)


def make_dataset(job, subjects: list[str], pretext, train: bool, rank: int = 0, keep_labels: bool = False,
                 snapshot=None, **kwargs):
    """Training samples draw augmentation and targets from (seed, epoch, rank, index); validation
    uses rank 0 and its own seed, so its targets do not depend on how many workers ran. ``snapshot``:
    the run's cohort snapshot (the store's parts as the driver saw them)."""
    from cardiossl.datasets.torch_dataset import CohortDataset

    augment = Augment.from_config(job.augment, job.image_size, labels=keep_labels)
    transform = SampleTransform(augment, pretext, train=train)
    if train and uses_device_augment(job):  # the loader draws, the device resamples (augment_device)
        check_pretext(pretext)
        if keep_labels:
            raise ValueError("augment.on: device resamples images only; labels need augment.on: loader")
        transform = DeferredTransform(DeferredAugment(augment), pretext)
    select = dict(subjects=subjects, views=tuple(job.cohort.views),
                  phases=tuple(job.cohort.phases) if job.cohort.phases else None, snapshot=snapshot)
    ds = CohortDataset(
        job.cohort.store,
        **select,
        transform=transform,
        filter=pretext.accepts if pretext is not None else None,
        seed=job.seed if train else job.seed + 7919,  # validation targets: a fixed, separate stream
        rank=rank if train else 0,
        **kwargs,
    )
    if pretext is not None and len(ds) == 0 and ds.skipped:
        raise ValueError(f"pretext {pretext.name!r}: none of the {ds.skipped} slices of these {len(subjects)} subjects "
                         f"gets a target ({refusals(CohortDataset(job.cohort.store, **select), pretext)}); "
                         "`cardiossl cohort info STORE` counts them per pretext and reason")
    return ds


def refusals(dataset, pretext, limit: int = 2000) -> str:
    """The pretext's reasons for refusing the first ``limit`` slices of ``dataset``, most common first."""
    from collections import Counter

    why = Counter(pretext.reason(dataset.meta(i)) or "accepted" for i in range(min(len(dataset), limit)))
    return "; ".join(f"{k}: {v}" for k, v in why.most_common())


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
