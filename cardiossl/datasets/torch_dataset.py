"""Torch access to a cohort store: single 2-D slices with their geometry, and samplers.

A sample is a dict (MONAI style) so pretexts add their own keys. The store is opened lazily in the
process that reads it, so the dataset pickles small (a DataLoader worker or a Ray worker opens its
own file handles). Per-sample work is one chunk read, one fused dequantise + normalise, and a few
array copies; which backend reads the chunk is a constructor argument (``reader``), see
``slice_sources``. A dataset reads the parts of one store snapshot (``snapshot=``, the one a
training run's driver took; else the store as it is now), never anything committed later.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .records import LA_VIEWS, PHASES, VIEWS
from .slice_sources import READER_NAMES, ShardFileSource, SliceSource, open_source
from .store import CohortStore, DamagedDataError, Snapshot, StoreError, read_qc

log = logging.getLogger(__name__)

META_KEYS = (
    "has_label", "plane", "la_planes", "image_centre", "qc_correction", "qc_subject_shift_mm", "stack_position",
    "subject_id", "subject", "view", "frame", "phase", "slice_index", "index",
)


def _dist_info(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            num_replicas = 1 if num_replicas is None else num_replicas
            rank = 0 if rank is None else rank
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return int(num_replicas), int(rank)


class CohortDataset(Dataset):
    """Single 2-D slices of a cohort store as dict samples (the keys: docs/plugins.md).

    ``image`` is z-scored per (subject, view) with the robust statistics recorded at ingest:
    intensities clipped to [p0.5, p99.5] of that subject's view, minus the clipped mean, over the
    clipped std (percentile clipping as in Bai et al., JCMR 2018; z-score as nnU-Net does for MR).
    """

    def __init__(
        self,
        store_path,
        *,
        subjects: Sequence[str] | None = None,
        views: Sequence[str] | None = ("sa",),
        phases: Sequence[str] | None = None,
        labelled_only: bool = False,
        transform: Callable[[dict, np.random.Generator], dict] | None = None,
        filter: Callable[[dict], bool] | None = None,
        seed: int = 0,
        normalise: bool = True,
        reader: str | Callable[[str, list[str]], SliceSource] = "shard",
        rank: int | None = None,
        snapshot: Snapshot | dict | None = None,
    ) -> None:
        store = store_path if isinstance(store_path, CohortStore) else CohortStore(store_path)
        if isinstance(snapshot, dict):
            snapshot = Snapshot.from_dict(snapshot)
        self.snapshot_hash = snapshot.content_hash if snapshot is not None else None
        self.store_path = str(store.path)
        self.grid_size = store.grid_size
        self.spacing_mm = store.spacing_mm
        if isinstance(reader, str) and reader not in READER_NAMES:
            raise ValueError(f"unknown reader {reader!r}; choose one of {', '.join(READER_NAMES)}")
        self.reader = reader
        self.transform = transform
        self.seed = int(seed)
        self.normalise = bool(normalise)
        self.epoch = 0
        self._rank = rank

        t = store.slice_table(snapshot)
        self.part_ids = t.part_ids
        self.subject_ids = t.subject_ids
        mask = np.ones(len(t), dtype=bool)
        if subjects is not None:
            subjects = list(subjects)
            pos = {s: i for i, s in enumerate(t.subject_ids)}
            missing = [s for s in subjects if s not in pos]
            if missing:
                where = f"snapshot {snapshot.content_hash[:12]} of " if snapshot is not None else ""
                raise StoreError(
                    f"subjects not in {where}{self.store_path}: {', '.join(missing[:10])}"
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                )
            keep = np.zeros(len(t.subject_ids), dtype=bool)
            keep[[pos[s] for s in subjects]] = True
            mask &= keep[t.subject]
        if views is not None:
            bad = [v for v in views if v not in VIEWS]
            if bad:
                raise ValueError(f"unknown views {bad}; expected some of {VIEWS}")
            mask &= np.isin(t.view, [VIEWS.index(v) for v in views])
        if phases is not None:
            bad = [p for p in phases if p not in PHASES]
            if bad:
                raise ValueError(f"unknown phases {bad}; expected some of {PHASES} ('' = other cine frames)")
            mask &= np.isin(t.phase, [PHASES.index(p) for p in phases])
        if labelled_only:
            mask &= t.has_label

        # The 2ch/3ch/4ch planes of each subject (first stored frame), NaN where a view is absent.
        la = np.full((len(t.subject_ids), len(LA_VIEWS), 11), np.nan)
        for j, v in enumerate(LA_VIEWS):
            rows = np.flatnonzero(t.view == VIEWS.index(v))
            if rows.size:
                uniq, first = np.unique(t.subject[rows], return_index=True)
                la[uniq, j] = t.planes[t.plane_index[rows[first]]]
        self._la_planes = la

        # Per sample only compact columns; planes stay interned (cine frames share one row).
        sel = np.flatnonzero(mask)
        part, row = t.locate(sel)
        self._part = part.astype(np.int32)
        self._row = row.astype(np.int32)
        self._subject = t.subject[sel]
        self._view = t.view[sel]
        self._frame = t.frame[sel]
        self._phase = t.phase[sel]
        self._slice_index = t.slice_index[sel]
        self._has_label = t.has_label[sel]
        # Per slice position (a subject's plane, shared by its cine frames): the plane, its stack
        # position, the image centre and the geometry QC's correction.
        key = self._subject.astype(np.int64) * max(1, t.planes.shape[0]) + t.plane_index[sel]
        _, first, position = np.unique(key, return_index=True, return_inverse=True)
        self._plane_index = position.reshape(-1).astype(np.int32)
        rows = t.plane_index[sel][first]
        self._planes = t.planes[rows]
        self._plane_stack = t.plane_stack[rows]
        # World centre of each stored image (= its source image's centre): it stays with the anatomy
        # when an augmentation moves the sample's plane, so geometric targets may anchor on it.
        half = (self.grid_size - 1) / 2.0
        p = self._planes
        self._centres = p[:, 0:3] + half * (p[:, 10:11] * p[:, 3:6] + p[:, 9:10] * p[:, 6:9])
        self._qc_corr, self._qc_shift = _qc_columns(store, t.subject_ids, self._subject[first], self._view[first],
                                                    self._slice_index[first])
        # Fused dequantise + normalise: y = clip(q * a + b, lo, hi) (see _coefficients).
        self._coef = _coefficients(t.image_scale[sel], t.norms[t.norm_index[sel]], self.normalise)

        self.skipped = 0
        if filter is not None:
            keep = np.ones(sel.size, dtype=bool)
            first_error = None
            for i in range(sel.size):
                try:
                    keep[i] = bool(filter(self.meta(i)))
                except Exception as exc:  # a filter must not crash the index build
                    keep[i] = False
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
            self.skipped = int((~keep).sum())
            if self.skipped:
                log.info("CohortDataset: filter excluded %d of %d slices", self.skipped, sel.size)
            if first_error:
                log.warning("CohortDataset: filter raised on some slices (counted as skipped): %s", first_error)
            for name in ("_part", "_row", "_subject", "_view", "_frame", "_phase", "_slice_index",
                         "_has_label", "_plane_index", "_coef"):
                setattr(self, name, getattr(self, name)[keep])
        self._source: SliceSource | None = None
        self._pid: int | None = None

    # pickling: never ship open files --------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_source"] = None
        state["_pid"] = None
        return state

    def _open(self) -> SliceSource:
        if self._source is None or self._pid != os.getpid():  # first use, or a forked copy
            if self._source is not None and isinstance(self._source, ShardFileSource):
                self._source.close()  # (the process-wide open-file cache drops the parent's descriptors at fork)
            if isinstance(self.reader, str):
                self._source = open_source(self.reader, self.store_path, self.part_ids)
            else:
                self._source = self.reader(self.store_path, self.part_ids)
            self._pid = os.getpid()
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    # public ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._part.shape[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def rank(self) -> int:
        return _dist_info(None, self._rank)[1] if self._rank is None else self._rank

    @property
    def subjects(self) -> list[str]:
        """Ids of the subjects with at least one slice in this dataset."""
        return [self.subject_ids[i] for i in np.unique(self._subject)]

    @property
    def sample_subjects(self) -> np.ndarray:
        """Global subject index of every sample (for grouping / checks without reading images)."""
        return self._subject.copy()

    def meta(self, i: int) -> dict:
        """The metadata of sample ``i``: every sample key except ``image`` and ``label``."""
        s = int(self._subject[i])
        p = int(self._plane_index[i])
        return {
            "has_label": bool(self._has_label[i]),
            "plane": self._planes[p].copy(),
            "la_planes": self._la_planes[s].copy(),
            "image_centre": self._centres[p].copy(),
            "qc_correction": self._qc_corr[p].copy(),
            "qc_subject_shift_mm": float(self._qc_shift[p]),
            "stack_position": float(self._plane_stack[p]),
            "subject_id": self.subject_ids[s],
            "subject": s,
            "view": VIEWS[self._view[i]],
            "frame": int(self._frame[i]),
            "phase": PHASES[self._phase[i]],
            "slice_index": int(self._slice_index[i]),
            "index": int(i),
        }

    def __getitem__(self, i) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} slices")
        has_label = bool(self._has_label[i])
        try:
            q, lbl = self._open().read(int(self._part[i]), int(self._row[i]), has_label)
        except DamagedDataError as exc:
            raise DamagedDataError(
                f"{exc} [subject {self.subject_ids[int(self._subject[i])]}, part {self.part_ids[int(self._part[i])]}, "
                f"row {int(self._row[i])}]; run `cardiossl cohort verify {self.store_path}`", exc.path) from None
        a, b, lo, hi = self._coef[i]
        image = np.multiply(q, a, dtype=np.float32)
        image += b
        if self.normalise:
            np.clip(image, lo, hi, out=image)
        sample = self.meta(i)
        sample["image"] = image[None]
        sample["label"] = (
            lbl.astype(np.int64) if lbl is not None else np.zeros((self.grid_size, self.grid_size), np.int64)
        )
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, i])
            sample = self.transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"CohortDataset({self.store_path!r}, {len(self)} slices, reader={self.reader!r})"


def _qc_columns(store: CohortStore, subject_ids: list[str], subject: np.ndarray, view: np.ndarray,
                slice_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the geometry QC's plane correction (LPS mm; NaN where none: LA rows, subjects or slices
    the stored estimates do not cover) and its subject's median misregistration (NaN likewise)."""
    corr = np.full((subject.size, 3), np.nan)
    shift = np.full(subject.size, np.nan)
    qc = read_qc(store.path)
    if qc is None or not len(qc):
        return corr, shift
    pos = {sid: i for i, sid in enumerate(subject_ids)}
    c = qc.columns
    q_subj = np.array([pos.get(str(x), -1) for x in c["subject_id"]], dtype=np.int64)
    ok = (q_subj >= 0) & (c["status"] == "ok")
    width = int(max(int(slice_index.max(initial=0)), int(c["slice_index"].max(initial=0)))) + 1
    q_key = q_subj[ok] * width + c["slice_index"][ok]
    order = np.argsort(q_key)
    q_key, q_corr = q_key[order], c["correction_world"][ok][order]
    key = subject.astype(np.int64) * width + slice_index
    at = np.clip(np.searchsorted(q_key, key), 0, max(q_key.size - 1, 0))
    hit = (view == VIEWS.index("sa")) & (q_key.size > 0) & (q_key[at] == key if q_key.size else False)
    corr[hit] = q_corr[at[hit]]
    med = np.full(len(subject_ids), np.nan)
    for sid, summary in (qc.info.get("subjects") or {}).items():
        if sid in pos:
            med[pos[sid]] = summary.get("median_shift_mm", np.nan)
    shift[:] = med[subject]
    return corr, shift


def _coefficients(image_scale: np.ndarray, norm: np.ndarray, normalise: bool) -> np.ndarray:
    """(a, b, lo, hi) per slice so that y = clip(q * a + b, lo, hi) in one pass over the pixels."""
    scale, offset = image_scale[:, 0], image_scale[:, 1]
    if not normalise:
        return np.stack([scale, offset, np.full_like(scale, -np.inf), np.full_like(scale, np.inf)], 1).astype(np.float32)
    lo, hi, mean, std = (norm[:, k].astype(np.float64) for k in range(4))
    return np.stack([scale / std, (offset - mean) / std, (lo - mean) / std, (hi - mean) / std], 1).astype(np.float32)


class BlockShuffleSampler(Sampler[int]):
    """Shard-aware shuffling: shuffle blocks of ``block_size`` contiguous samples, then shuffle the
    samples inside windows of ``window`` blocks.

    Contiguous dataset indices are contiguous in the store (subject by subject, slice by slice), so
    a window touches at most ``window`` blocks: reads stay inside a few shards (page cache, readahead,
    decoded-block caches) while every batch still mixes several subjects. Every rank draws the same
    permutation from (seed, epoch) and takes a contiguous share of it, so each index is seen exactly
    once per epoch across ranks (padded by repeating the first indices when the length does not
    divide, or trimmed with ``drop_last``), like torch's DistributedSampler.

    With the default direct shard reader and a store in the page cache, plain random order is as
    fast (bench/bench_loader.py); the block order pays off when shards come from disk or network
    (read-ahead, one shard index per block) and for the tensorstore reader's block cache.
    """

    def __init__(
        self,
        dataset,
        block_size: int = 32,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        window: int = 8,
    ) -> None:
        if int(block_size) < 1 or int(window) < 1:
            raise ValueError(f"block_size and window must be >= 1, got {block_size}, {window}")
        self.n = len(dataset)
        self.block_size = int(block_size)
        self.window = int(window)
        self.num_replicas, self.rank = _dist_info(num_replicas, rank)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.n // self.num_replicas
        else:
            self.num_samples = math.ceil(self.n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """The full epoch order before it is split across ranks."""
        idx = np.arange(self.n, dtype=np.int64)
        if not self.shuffle or self.n == 0:
            return idx
        rng = np.random.default_rng([self.seed, self.epoch])
        n_blocks = math.ceil(self.n / self.block_size)
        blocks = rng.permutation(n_blocks)
        out = []
        for w in range(0, n_blocks, self.window):
            chunk = np.concatenate([idx[b * self.block_size : (b + 1) * self.block_size] for b in blocks[w : w + self.window]])
            out.append(rng.permutation(chunk))
        return np.concatenate(out)

    def __iter__(self):
        order = self.order()
        if self.total_size > order.size:
            reps = math.ceil((self.total_size - order.size) / max(order.size, 1))
            order = np.concatenate([order] + [order] * reps)[: self.total_size]
        else:
            order = order[: self.total_size]
        mine = order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return iter(mine.tolist())

    def __len__(self) -> int:
        return self.num_samples
