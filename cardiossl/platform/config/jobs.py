"""Job kinds: the fields every job shares (``JobBase``), pretraining (``PretrainJob``) and the kind registry.

Fine-tuning and the benchmark study register their kinds in ``finetune`` and ``benchmark`` beside
this module; third-party kinds through the entry-point group ``cardiossl.jobs``."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cardiossl.registry import Registry, RegistryError

from .augment import AugmentConfig
from .base import ConfigError, StrictModel
from .cohort import CohortConfig, LoaderConfig
from .mlflow import MlflowSpec
from .optim import OptimConfig, ScheduleConfig
from .plugins import BackboneSpec, PretextSpec
from .records import NOT_IN_HASH, config_hash, job_to_yaml
from .running import CheckpointSpec, DebugConfig, ProgressSpec, ScalingSpec, TrainOptions, ValidationSpec


class JobBase(StrictModel):
    """Fields every job kind shares. Subclasses set ``kind: Literal["..."]`` and register."""

    kind: str
    name: str = Field("job", description="human name; used in run names and file names")
    seed: int = 0
    cohort: CohortConfig
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    checkpoint: CheckpointSpec
    mlflow: MlflowSpec
    debug: DebugConfig = Field(default_factory=DebugConfig)

    @field_validator("name")
    @classmethod
    def _jobname(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it becomes part of folder names)")
        return v

    source_path: ClassVar[str | None] = None
    NOT_IN_HASH: ClassVar[tuple[str, ...]] = NOT_IN_HASH

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return job_to_yaml(self)

    def hash(self, snapshot_hash: str | None = None) -> str:
        """``config_hash``: what decides the weights (with the cohort snapshot's content hash when given)."""
        return config_hash(self, snapshot_hash)


class PretrainJob(JobBase):
    """One self-supervised pretraining run (``kind: pretrain``)."""

    NOT_IN_HASH: ClassVar[tuple[str, ...]] = NOT_IN_HASH + (
        "validation",  # when and how much to validate: read-only passes over held-out subjects
        "loader.num_workers", "loader.prefetch_factor", "loader.pin_memory", "loader.batch_keys",  # transport
        "train.channels_last", "train.compile", "train.find_unused_parameters", "train.deterministic",  # kernels
    )

    kind: Literal["pretrain"] = "pretrain"
    pretext: PretextSpec
    backbone: BackboneSpec = Field(default_factory=lambda: BackboneSpec(name="unet"))
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    steps: int | None = Field(None, ge=1, description="optimizer steps; exactly one of steps/epochs")
    epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1, description="per worker")
    image_size: int = Field(128, ge=16, description="network input side in pixels (store spacing)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    progress: ProgressSpec = Field(default_factory=ProgressSpec)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> PretrainJob:
        if (self.steps is None) == (self.epochs is None):
            raise PydanticCustomError(
                "steps_or_epochs", "give exactly one of steps or epochs (got {got})",
                {"got": "both" if self.steps else "neither"},
            )
        if self.image_size % 16:
            raise PydanticCustomError(
                "image_size", "image_size must be a multiple of 16 (U-Net downsampling), got {v}",
                {"v": self.image_size, "field": "image_size"},
            )
        return self


JOB_KINDS: Registry[type[JobBase]] = Registry("job kind", "cardiossl.jobs")
JOB_KINDS.add("pretrain", PretrainJob)


def register_job_kind(kind: str):
    """Decorator for a ``JobBase`` subclass: ``@register_job_kind("finetune")``."""

    def deco(cls: type[JobBase]) -> type[JobBase]:
        if not (isinstance(cls, type) and issubclass(cls, JobBase)):
            raise TypeError("job kinds must subclass cardiossl.platform.config.JobBase")
        JOB_KINDS.add(kind, cls)
        return cls

    return deco


def _job_class(kind: Any) -> type[JobBase]:
    if not isinstance(kind, str):
        raise ConfigError(
            f"kind: missing or not a string; one of {', '.join(JOB_KINDS.names())} "
            "(the first key of a job YAML says what it runs)"
        )
    try:
        return JOB_KINDS.get(kind)
    except RegistryError as exc:
        raise ConfigError(f"kind: {exc}") from None
