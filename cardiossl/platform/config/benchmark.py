"""``kind: benchmark``: the few-shot comparison study (grid, pretraining sources, Ray, statistics, champion)."""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .base import ConfigError, StrictModel
from .errors import format_validation_error
from .finetune import FinetuneJob
from .jobs import JobBase, register_job_kind
from .running import CheckpointSpec


SCRATCH = "scratch"
MODES = ("decoder", "all", "multitask")


class StudyGrid(StrictModel):
    inits: list[str] = Field(default_factory=lambda: [SCRATCH, "position", "rotation", "context"])
    modes: list[Literal["decoder", "all", "multitask"]] = Field(default_factory=lambda: list(MODES))
    n_train: list[int | Literal["all"]] = Field(default_factory=lambda: [1, 2, 5, 10, 20, "all"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4],
                             description="training runs per cell: the unit of the statistics (>= 5 for a claim)")

    @field_validator("inits", "modes", "n_train", "seeds")
    @classmethod
    def _nonempty_unique(cls, v):
        if not v:
            raise ValueError("must list at least one value")
        if len({json.dumps(x) for x in v}) != len(v):
            raise ValueError("values must be unique")
        return v

    @field_validator("n_train")
    @classmethod
    def _pos(cls, v):
        if any(isinstance(x, int) and x < 1 for x in v):
            raise ValueError("subject counts must be >= 1 (or 'all')")
        return v


class PretrainSource(StrictModel):
    """Where an init's weights come from: a pretrain job YAML (run unless a matching registered
    model exists) or a given registered model / run id."""

    job: str | None = Field(None, description="pretrain job YAML (relative: to the benchmark YAML's folder)")
    set: list[str] = Field(default_factory=list, description="--set overrides for that job")
    model: str | None = Field(None, description="models:/NAME@ALIAS, models:/NAME/VERSION or a run id")

    @model_validator(mode="after")
    def _one(self) -> PretrainSource:
        if (self.job is None) == (self.model is None):
            raise PydanticCustomError("source", "give exactly one of job or model", {})
        return self


class StudyRay(StrictModel):
    address: str | None = Field(None, description="cluster to join; None: RAY_ADDRESS, else a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster started by the job")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_retries: int = Field(1, ge=0, description="Ray task retries (node loss)")


class StatsConfig(StrictModel):
    n_boot: int = Field(10000, ge=100, description="hierarchical bootstrap resamples")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0
    failure_dice: float = Field(0.5, ge=0, le=1, description="a trial whose mean test Dice is below this failed")
    tie_tolerance: float = Field(0.005, ge=0, description="|difference| <= this is a tie, not a win or a loss")


class RegisterSpec(StrictModel):
    enabled: bool = True
    name: str = "cardiossl-seg"
    alias: str = "champion"


class BenchmarkJob(JobBase):
    """The comparison study (``kind: benchmark``)."""

    kind: Literal["benchmark"] = "benchmark"
    checkpoint: CheckpointSpec | None = Field(None, description="storage for pretraining runs the study starts")
    grid: StudyGrid = Field(default_factory=StudyGrid)
    finetune: dict[str, Any] = Field(
        default_factory=dict, description="FinetuneJob fields shared by every trial (not init/mode/n_train/seed)"
    )
    pretrain: dict[str, PretrainSource] = Field(default_factory=dict)
    pretrain_store: str | None = Field(
        None, description="cohort store the pretraining runs read (cross-cohort: e.g. a large unlabelled or "
        "synthetic store); null: cohort.store. The study's test and validation subjects are excluded either way",
    )
    ray: StudyRay = Field(default_factory=StudyRay)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    champion: RegisterSpec = Field(default_factory=RegisterSpec)
    output_dir: str | None = Field(None, description="absolute folder for a local copy of tables, figures, split")
    cache_dir: str | None = Field(
        None, description="absolute folder of finished trials (resumable study: a rerun skips them); "
        "null: <output_dir>/trials when output_dir is set, else no cache",
    )

    @field_validator("output_dir", "cache_dir")
    @classmethod
    def _abs(cls, v):
        if v is not None and not os.path.isabs(v):
            raise ValueError("must be an absolute path (a Ray job runs in a temporary copy of the working dir)")
        return v

    @field_validator("pretrain_store")
    @classmethod
    def _store(cls, v):
        from .base import absolute_or_uri

        return None if v is None else absolute_or_uri(v, "pretrain_store")

    @model_validator(mode="after")
    def _checks(self) -> BenchmarkJob:
        bad = sorted(set(self.finetune) & {"kind", "init", "mode", "n_train", "seed", "cohort", "mlflow", "name"})
        if bad:
            raise PydanticCustomError(
                "finetune", "finetune.{key}: set by the study (grid / top level), remove it here",
                {"key": bad[0], "field": "finetune"},
            )
        for init in self.grid.inits:
            if init != SCRATCH and init not in self.pretrain and not is_model_ref(init):
                raise PydanticCustomError(
                    "grid", "grid.inits: {init!r} has no pretrain.{init} source (a job YAML or a model)",
                    {"init": init, "field": "grid"},
                )
        if any(i != SCRATCH for i in self.grid.inits) and any(
            s.job for k, s in self.pretrain.items() if k in self.grid.inits
        ) and self.checkpoint is None:
            raise PydanticCustomError(
                "checkpoint", "pretraining may run: set checkpoint.storage_path (absolute)", {"field": "checkpoint"},
            )
        self.trial_job(SCRATCH, "all", self.grid.n_train[0], self.grid.seeds[0])  # validates `finetune`
        return self

    def trial_job(self, init: str, mode: str, n_train, seed: int):
        """The validated FinetuneJob of one grid cell (errors name ``finetune.<field>``)."""
        data = {
            **self.finetune, "kind": "finetune", "name": self.name, "cohort": self.cohort.model_dump(mode="json"),
            "mlflow": self.mlflow.model_dump(mode="json"), "init": init if init == SCRATCH else f"study:{init}",
            "mode": mode, "n_train": n_train, "seed": seed,
        }
        try:
            return FinetuneJob.model_validate(data)
        except ValidationError as exc:
            lines = format_validation_error(exc, prefix=("finetune",))
            raise PydanticCustomError("finetune", "{msg}", {"msg": "; ".join(lines), "field": "finetune"}) from None
        except ConfigError:
            raise


register_job_kind("benchmark")(BenchmarkJob)


def is_model_ref(s: str) -> bool:
    return s.startswith(("models:/", "runs:/"))
