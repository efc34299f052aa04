"""``cohort:`` and ``loader:`` sections: which store, views, phases and subjects, the subject-level split, the DataLoader."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import StrictModel, absolute_or_uri


class SplitConfig(StrictModel):
    """Subject-level split of the cohort: validation subjects never appear in training.

    Hash-based (``cardiossl.datasets.splits``): a fraction is a range of per-subject keys from
    (seed, subject id), so a grown cohort moves nobody; a count is a cut in that ranking (exact
    size; a split file pins it). ``file`` gives the groups explicitly instead."""

    val: float | int = Field(0.2, description="fraction (0-1) or count of validation subjects")
    test: float | int = Field(0, description="fraction or count of subjects held out from both")
    seed: int = 0
    file: str | None = Field(None, description="absolute path of a splits.json (test / val / train ids, "
                             "nnU-Net style); overrides val / test / seed")
    fold: int = Field(0, ge=0, description="fold of a split file that lists several (nnU-Net folds)")

    @field_validator("file")
    @classmethod
    def _file(cls, v):
        return None if v is None else absolute_or_uri(v, "cohort.split.file")

    @field_validator("val", "test")
    @classmethod
    def _nonneg(cls, v):
        if v < 0:
            raise ValueError("must be >= 0")
        if isinstance(v, float) and v >= 1:
            raise ValueError("a fraction must be < 1 (use an integer for a subject count)")
        return v


class CohortConfig(StrictModel):
    store: str = Field(description="absolute path or URI of the Zarr cohort store")
    views: list[str] = Field(default_factory=lambda: ["sa"])
    phases: list[str] | None = None
    split: SplitConfig = Field(default_factory=SplitConfig)
    subjects: list[str] | None = Field(None, description="restrict to these subject ids")
    exclude: list[str] | str | None = Field(
        None, description="subject ids never used by this job, or the absolute path of a split file whose "
        "test and val subjects are excluded (e.g. a few-shot study's held-out subjects)",
    )

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v):
        if isinstance(v, str):
            return absolute_or_uri(v, "cohort.exclude")
        return v

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return absolute_or_uri(v, "cohort.store")

    @field_validator("views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        from cardiossl.datasets.records import VIEWS

        bad = [x for x in v if x not in VIEWS]
        if bad:
            raise ValueError(f"unknown view(s) {bad}; known: {', '.join(VIEWS)}")
        if not v:
            raise ValueError("at least one view")
        return v

    @field_validator("phases")
    @classmethod
    def _phases(cls, v):
        from cardiossl.datasets.records import PHASES

        if v is not None:
            bad = [x for x in v if x not in PHASES]
            if bad:
                raise ValueError(f"unknown phase(s) {bad}; known: {PHASES}")
        return v


class LoaderConfig(StrictModel):
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per training worker")
    block_size: int = Field(16, ge=1, description="contiguous slices per shuffled block (shard-aware)")
    prefetch_factor: int = Field(2, ge=1)
    pin_memory: bool = True
    batch_keys: list[str] = Field(
        default_factory=lambda: ["input", "target", "target_mask"],
        description="sample keys the training batches carry (plus a pretext's own batch_keys); the rest "
        "(metadata, the un-augmented image) stays in the worker: every key costs the main process time",
    )
