"""Few-shot data: the labelled pool, slices loaded into memory, endless seeded passes over them."""

from __future__ import annotations

import numpy as np

from ..training import collate


def labelled_subjects(store_path: str) -> list[str]:
    """Subjects with labelled short-axis slices at ED or ES (the few-shot pool), from the slice
    table alone (no image is read)."""
    from cardiossl.datasets.records import PHASES, VIEWS
    from cardiossl.datasets.store import CohortStore

    t = CohortStore(store_path).slice_table()
    ok = t.has_label & (t.view == VIEWS.index("sa")) & np.isin(t.phase, [PHASES.index("ed"), PHASES.index("es")])
    return sorted({t.subject_ids[int(i)] for i in np.unique(t.subject[ok])})


def cohort_kind(store_path: str, max_subjects: int = 50) -> str:
    """What a store holds, for a model's provenance: ``synthetic``, a layout (``acdc``, ``mnms2``,
    ``dicom``, ``ukbb``, ...) or several joined by ``+``; from the meta of up to ``max_subjects``."""
    from cardiossl.datasets.store import CohortStore

    try:
        store = CohortStore(store_path)
        ids = store.subject_ids()
        step = max(1, len(ids) // max_subjects)
        kinds = set()
        for sid in ids[::step][:max_subjects]:
            meta = store.subject_meta(sid) or {}
            kinds.add("synthetic" if meta.get("source") == "synthetic" else str(meta.get("layout") or meta.get("source")
                                                                                 or "unknown"))
    except Exception:  # provenance must not fail a finished training run
        return "unknown"
    return "+".join(sorted(kinds)) or "empty"


def load_samples(store_path: str, subjects: list[str], *, phases=("ed", "es"), labelled_only=True,
                 views=("sa",), filter=None) -> list[dict]:
    """Every matching slice of ``subjects`` into memory (few-shot sets are small)."""
    from cardiossl.datasets.torch_dataset import CohortDataset

    if not subjects:
        return []
    ds = CohortDataset(store_path, subjects=list(subjects), views=tuple(views),
                       phases=None if phases is None else tuple(phases), labelled_only=labelled_only,
                       filter=filter)
    return [ds[i] for i in range(len(ds))]


def _collate(samples: list[dict], keys: tuple[str, ...] | None = None) -> dict:
    if keys is not None:
        samples = [{k: s[k] for k in keys} for s in samples]
    return collate(samples)


class _Epochs:
    """Endless shuffled passes over in-memory samples; transform rng from (seed, epoch, 0, index)."""

    def __init__(self, samples: list[dict], batch_size: int, seed: int, transform) -> None:
        self.samples, self.batch_size, self.seed, self.transform = samples, batch_size, seed, transform
        self.epoch, self.order, self.pos = -1, np.zeros(0, dtype=np.int64), 0

    def next(self) -> list[dict]:
        out = []
        while len(out) < self.batch_size:
            if self.pos >= len(self.order):
                self.epoch += 1
                self.order = np.random.default_rng([self.seed, self.epoch, 0xBA7C]).permutation(len(self.samples))
                self.pos = 0
            i = int(self.order[self.pos])
            self.pos += 1
            rng = np.random.default_rng([self.seed, self.epoch, 0, i])
            out.append(self.transform(self.samples[i], rng))
        return out
