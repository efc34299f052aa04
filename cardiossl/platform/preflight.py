"""Checks a job must pass before anything is created: no MLflow run, no Ray Train run, no retries.

``validate`` checks a YAML's syntax and types. A job can still be unable to run: the store is not
there, holds no slice of the views asked for, the split leaves no subject to train on, a worker's
share of the training slices is smaller than one batch, a plugin exists only in the driver's
process. Found inside the workers, each of these fails every restart Ray Train allows (the same
traceback three times) and leaves a FAILED run in MLflow. Found here, each is one ``ConfigError``
naming the field and the fix, before a run is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .config import ConfigError, is_uri


def open_store(store: str, field: str = "cohort.store"):
    """The ``CohortStore`` a job reads, or a ConfigError that says how to make or find one."""
    from cardiossl.datasets.store import CohortStore, StoreError

    if is_uri(store) and not store.startswith("file://"):
        raise ConfigError(
            f"{field}: {store!r}: CohortStore reads local or shared-filesystem paths; mount the "
            "store on every node (NFS, Lustre, a FUSE mount of the bucket) and give its absolute path"
        )
    path = Path(store[len("file://"):] if store.startswith("file://") else store)
    if not path.exists():
        raise ConfigError(
            f"{field}: {path} does not exist. Ingest a cohort there (`cardiossl ingest SOURCE --out {path}`), "
            f"or point {field} (or CARDIOSSL_COHORT / CARDIOSSL_HOME) at your store"
        )
    try:
        return CohortStore(path)
    except StoreError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def check_views(store, views: Iterable[str], subjects: list[str] | None = None, *,
                labelled: bool = False, phases: Iterable[str] | None = None,
                field: str = "cohort", snapshot=None) -> dict[str, int]:
    """Slices per requested view (labelled ones when ``labelled``); a view with none is an error."""
    import numpy as np

    from cardiossl.datasets.records import PHASES, VIEWS

    t = store.slice_table(snapshot)
    ids = np.asarray(t.subject_ids, dtype=object)
    keep = np.ones(len(t), dtype=bool)
    if subjects:
        missing = sorted(set(subjects) - set(t.subject_ids))
        if missing:
            raise ConfigError(f"{field}.subjects: {len(missing)} not in {store.path}: {', '.join(missing[:5])}")
        keep &= np.isin(ids[t.subject], list(subjects))
    if phases:
        keep &= np.isin(t.phase, [PHASES.index(p) for p in phases])
    if labelled:
        keep &= t.has_label
    held = {v: int((t.view[keep] == VIEWS.index(v)).sum()) for v in VIEWS}
    counts = {v: held[v] for v in views}
    empty = [v for v, n in counts.items() if n == 0]
    if empty:
        what = "labelled slices" if labelled else "slices"
        has = ", ".join(f"{v} {n}" for v, n in held.items() if n) or "nothing"
        raise ConfigError(
            f"{field}.views: {store.path} holds no {what} of view(s) {', '.join(empty)}"
            + (f" at phase(s) {', '.join(phases)}" if phases else "")
            + f" (it holds {what}: {has}); choose views it has, or ingest a cohort that has them"
        )
    return counts


def check_pretrain(job, world_size: int | None = None, *, snapshot=None, splits: dict | None = None) -> dict:
    """Store, views, split and batch size of a pretraining job on ``snapshot`` (default: the store now),
    with ``splits`` when the run already has them (a resume); returns what it found, the split included."""
    from cardiossl.datasets.splits import SplitError

    from .training import make_dataset, split_cohort

    store = open_store(job.cohort.store)
    snapshot = snapshot or store.snapshot()
    views = check_views(store, job.cohort.views, job.cohort.subjects, phases=job.cohort.phases, snapshot=snapshot)
    try:
        splits = splits or split_cohort(job, snapshot)
    except (SplitError, ValueError) as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith("cohort.") else f"cohort.split: {msg}") from None
    pretext = job.pretext.build()
    try:
        train = make_dataset(job, splits["train"], pretext, train=True, snapshot=snapshot)
    except ValueError as exc:  # the dataset says why the pretext refuses every slice
        raise ConfigError(f"pretext.name: {exc}") from None
    world = world_size or job.scaling.num_workers
    if len(train) == 0:
        raise ConfigError(
            f"pretext.name: {job.pretext.name!r} accepts none of the {sum(views.values())} slices of views "
            f"{', '.join(job.cohort.views)} in the {len(splits['train'])} training subjects (see its "
            "`accepts`: the position pretext needs long-axis planes crossing each short-axis slice)"
        )
    per_worker = len(train) // world
    if per_worker < job.batch_size:
        raise ConfigError(
            f"batch_size: {job.batch_size} is more than the {per_worker} training slices each of "
            f"{world} worker(s) gets ({len(train)} in all); use a smaller batch_size, fewer "
            "scaling.num_workers or a larger cohort"
        )
    return {"store": str(store.path), "subjects": {k: len(v) for k, v in splits.items()},
            "train_slices": len(train), "views": views, "splits": splits}


def check_workers_know(plugins: dict[str, list[str]], plugin_modules: list[str]) -> None:
    """Ask the cluster (a Ray task with the job's runtime env) whether it can find the job's plugins.

    ``plugins``: {registry module:attr -> names}; ``plugin_modules`` are imported first, as the
    training workers do. Call after ``ray.init``."""
    import ray

    missing = ray.get(ray.remote(num_cpus=0, max_retries=0)(_lookup).remote(plugins, plugin_modules))
    if missing:
        raise ConfigError(
            "plugins missing on the Ray workers: " + "; ".join(missing)
            + ". Workers import plugins from installed packages (entry points) or from modules the job "
            "ships in its runtime env; see docs/plugins.md"
        )


def _lookup(plugins: dict[str, list[str]], plugin_modules: list[str]) -> list[str]:
    """Runs on a worker: which of ``plugins`` cannot be found there, and why."""
    import importlib

    out = []
    for module in plugin_modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # reported, not raised: the driver turns it into one message
            out.append(f"module {module!r} does not import ({type(exc).__name__}: {exc})")
    for where, names in plugins.items():
        module, attr = where.split(":")
        try:
            registry = getattr(importlib.import_module(module), attr)
        except Exception as exc:
            out.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        for name in names:
            try:
                registry.get(name)
            except Exception as exc:
                out.append(f"{registry.kind} {name!r}: {str(exc).split('. Registered')[0]}")
    return out
