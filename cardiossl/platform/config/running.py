"""``scaling:``, ``checkpoint:``, ``train:``, ``validation:``, ``progress:`` and ``debug:`` sections: how a job runs, not what it learns."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import StrictModel, absolute_or_uri


class ScalingSpec(StrictModel):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="extra custom resources per worker, e.g. {node_b: 1}"
    )
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    def ray_resources(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker, **self.resources_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return res

    def torch_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.use_gpu else "gloo"


class CheckpointSpec(StrictModel):
    every_steps: int = Field(100, ge=1)
    num_to_keep: int = Field(2, ge=1)
    storage_path: str = Field(description="absolute path or URI (s3://...) every node can reach")
    run_name: str | None = Field(
        None,
        description="Ray Train run name; an existing one under storage_path is resumed (same MLflow run)",
    )
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint; -1 = unlimited")
    allow_new_snapshot: bool = Field(
        False,
        description="resume run_name although the cohort store changed since it started (it then continues "
        "on the store as it is now, with a new split); by default such a resume is refused",
    )

    @field_validator("storage_path")
    @classmethod
    def _storage(cls, v: str) -> str:
        return absolute_or_uri(v, "checkpoint.storage_path")

    @field_validator("run_name")
    @classmethod
    def _name(cls, v):
        if v is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it becomes a folder name)")
        return v



class DebugConfig(StrictModel):
    """Test-only fault injection: ``fail_rank`` raises once at ``fail_at_step`` (once per run:
    a marker file in the run's storage keeps the restarted group from failing again)."""

    fail_at_step: int | None = Field(None, ge=1)
    fail_rank: int = Field(0, ge=0)
    fail_times: int = Field(1, ge=1)


class TrainOptions(StrictModel):
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    find_unused_parameters: bool | Literal["auto"] = "auto"
    deterministic: bool = False


class ProgressSpec(StrictModel):
    """The console line of rank 0 (step, step/s, ETA, loss); how a job shows itself, not what it learns."""

    every_steps: int = Field(10, ge=0, description="print a progress line every K steps (0: none)")


class ValidationSpec(StrictModel):
    every_steps: int | None = Field(None, ge=1, description="None: validate only at the end")
    max_batches: int | None = Field(20, ge=1)
    batch_size: int | None = Field(None, ge=1)
    figure_slices: int = Field(4, ge=0)
