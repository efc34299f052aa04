"""Preflight of fine-tuning and the study: what must hold before an MLflow run is created.

The store exists and holds labelled short-axis slices at the phases asked for, the labelled
subjects fill the test, validation and training sets, and a pretrained ``init`` resolves (to the
version an alias points at) and loads. Each failure is one ``ConfigError`` naming the field.
"""

from __future__ import annotations

from cardiossl.datasets.splits import SplitError, apply_split_file, excluded_ids, fewshot_split, load_split_file

from ..config import ConfigError
from ..preflight import check_views, open_store
from ..tracking import ModelLoadError
from .init import InitWeights, resolve_init
from .samples import labelled_subjects


def cohort_fewshot_split(cohort, labelled: list[str], n_train, seed: int,
                         held_out: dict | None = None) -> dict[str, list[str]]:
    """A trial's subjects: the labelled pool after ``cohort.subjects`` / ``cohort.exclude``; test and
    validation from ``held_out`` (pinned by the study), ``cohort.split.file`` or the hash rule.
    Raises SplitError."""
    if cohort.subjects:
        allowed = set(cohort.subjects)
        labelled = [s for s in labelled if s in allowed]
    drop = excluded_ids(cohort.exclude, fold=cohort.split.fold)
    labelled = [s for s in labelled if s not in drop]
    if held_out is None and cohort.split.file:
        groups = apply_split_file(labelled, load_split_file(cohort.split.file, fold=cohort.split.fold))
        held_out = {"test": groups["test"], "val": groups["val"]}
    return fewshot_split(labelled, test=cohort.split.test, val=cohort.split.val, split_seed=cohort.split.seed,
                         n_train=n_train, seed=seed, held_out=held_out)


def check_labelled(cohort, n_train) -> list[str]:
    """The labelled pool of ``cohort`` (store, views, phases, split, subjects, exclusions), checked
    against a split with ``n_train`` training subjects; returns the pool."""
    store = open_store(cohort.store)
    check_views(store, cohort.views, cohort.subjects, labelled=True, phases=cohort.phases or ("ed", "es"))
    labelled = labelled_subjects(cohort.store)
    try:
        cohort_fewshot_split(cohort, labelled, n_train, seed=0)
    except (SplitError, ValueError) as exc:
        raise ConfigError(f"cohort.split / n_train: {exc}") from None
    if cohort.subjects:
        allowed = set(cohort.subjects)
        labelled = [s for s in labelled if s in allowed]
    return labelled


def resolve_or_refuse(init: str, tracking_uri: str | None, field: str = "init") -> InitWeights | None:
    """``resolve_init`` with a ConfigError naming the field when the model is not there."""
    try:
        return resolve_init(init, tracking_uri)
    except ModelLoadError as exc:
        raise ConfigError(
            f"{field}: {exc}. List what is registered with `mlflow models` / the MLflow UI, or pretrain one "
            "(`cardiossl pretrain jobs/pretrain_position.yaml`)"
        ) from None


def preflight_finetune(job) -> tuple[InitWeights | None, list[str]]:
    """(resolved init, labelled pool) of a fine-tuning job, or a ConfigError."""
    labelled = check_labelled(job.cohort, job.n_train)
    return resolve_or_refuse(job.init, job.mlflow.tracking_uri), labelled


def preflight_study(job) -> list[str]:
    """The labelled pool of a study, checked against its largest N and its given models."""
    numbers = [n for n in job.grid.n_train if n != "all"]
    labelled = check_labelled(job.cohort, max(numbers) if numbers else "all")
    for init, src in job.pretrain.items():
        if init in job.grid.inits and src.model is not None:
            from ..tracking import resolve_version

            try:
                resolve_version(src.model, job.mlflow.tracking_uri)
            except ModelLoadError as exc:
                raise ConfigError(f"pretrain.{init}.model: {exc}") from None
    return labelled
