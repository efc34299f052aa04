"""``kind: finetune``: one few-shot fine-tuning run (init, transfer mode, N labelled subjects, loss)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .augment import AugmentConfig
from .base import StrictModel
from .jobs import JobBase, register_job_kind
from .optim import OptimConfig, ScheduleConfig
from .plugins import BackboneSpec, PretextSpec
from .running import CheckpointSpec


class FinetuneError(ValueError):
    """A fine-tuning request that cannot run (too few subjects, bad init, bad mode)."""



class SegLossConfig(StrictModel):
    ce_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _some(self) -> SegLossConfig:
        if self.ce_weight == 0 and self.dice_weight == 0:
            raise PydanticCustomError("loss", "ce_weight and dice_weight cannot both be 0", {})
        return self


class MultitaskConfig(StrictModel):
    weight: float = Field(0.1, ge=0, description="weight of the pretext loss in multitask mode")
    batch_size: int = Field(8, ge=1, description="unlabelled slices per step")
    views: list[str] = Field(default_factory=lambda: ["sa"])
    max_slices: int = Field(2048, ge=1, description="unlabelled slices drawn (by seed) into memory")
    pretext: PretextSpec | None = Field(
        None, description="pretext for multitask when the init carries none (e.g. scratch)"
    )


class FinetuneValidation(StrictModel):
    """Validation Dice every ``every_steps`` selects the checkpoint and decides when to stop."""

    every_steps: int = Field(50, ge=1, description="validation Dice for model selection every K steps")
    patience: int | None = Field(
        6, ge=1, description="stop after this many validations without improvement (early stopping; "
        "`steps` is the cap); null: always train `steps`",
    )
    min_delta: float = Field(0.0, ge=0, description="an improvement smaller than this does not count")
    min_steps: int = Field(0, ge=0, description="never stop before this step (an early lucky validation score "
                           "must not end a run that is still learning)")


class InferenceConfig(StrictModel):
    """How the test subjects are segmented once the model is chosen (validation stays a plain argmax,
    so model selection is unchanged). Recorded in the segmenter's spec, so ``cardiossl predict`` and
    the MLflow pyfunc segment the same way."""

    tta: Literal["none", "rot90"] = Field(
        "none", description="test-time augmentation: rot90 averages the softmax over the four 90-degree "
        "in-plane rotations (the input turned, the output turned back), for a model trained with any "
        "in-plane orientation (augment.spatial.rotation_deg: 180); nnU-Net's mirroring, for rotations",
    )
    largest_component: bool = Field(
        True, description="keep, per frame and structure, the largest 3-D connected component of the "
        "predicted stack, as `cardiossl predict` does (nnU-Net's post-processing, Isensee et al. 2021)",
    )


class FinetuneJob(JobBase):
    """One few-shot fine-tuning run (``kind: finetune``)."""

    kind: Literal["finetune"] = "finetune"
    checkpoint: CheckpointSpec | None = None
    init: str = Field(
        "scratch", description="scratch | models:/NAME@ALIAS | models:/NAME/VERSION | an MLflow run id"
    )
    mode: Literal["decoder", "all", "multitask"] = "all"
    n_train: int | Literal["all"] = Field(5, description="labelled training subjects, or 'all'")
    backbone: BackboneSpec = Field(
        default_factory=lambda: BackboneSpec(name="unet_bai"),
        description="architecture for scratch; a pretrained init brings its own",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    steps: int = Field(500, ge=1, description="most optimiser steps (the cap; validation.patience stops earlier)")
    batch_size: int = Field(8, ge=1)
    image_size: int = Field(128, ge=16, description="network input side (store spacing)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: SegLossConfig = Field(default_factory=SegLossConfig)
    multitask: MultitaskConfig = Field(default_factory=MultitaskConfig)
    validation: FinetuneValidation = Field(default_factory=FinetuneValidation)
    inference: InferenceConfig | None = Field(
        None, description="test-time augmentation and post-processing of the test predictions; "
        "null: the plain argmax of one pass, `{}`: the largest connected component only",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    channels_last: bool = Field(
        True, description="channels-last memory format for the convolutions: the same function, about 20% "
        "less time per step on a CPU (oneDNN) and the layout tensor cores want"
    )

    @field_validator("n_train")
    @classmethod
    def _n(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'all'")
        return v

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("empty; use scratch, models:/NAME@ALIAS or a run id")
        return v

    @model_validator(mode="after")
    def _checks(self) -> FinetuneJob:
        if self.image_size % 8:
            raise PydanticCustomError(
                "image_size", "image_size must be a multiple of 8 (U-Net downsampling), got {v}",
                {"v": self.image_size, "field": "image_size"},
            )
        if self.cohort.split.test == 0 and self.cohort.split.file is None:
            raise PydanticCustomError(
                "split", "few-shot evaluation needs a test set: set cohort.split.test to a count or fraction "
                "(or cohort.split.file)",
                {"field": "test"},
            )
        if self.init == "scratch" and self.mode == "decoder":
            raise PydanticCustomError(
                "mode", "mode 'decoder' freezes a pretrained encoder; from scratch use mode 'all'",
                {"field": "mode"},
            )
        if self.init == "scratch" and self.mode == "multitask" and self.multitask.pretext is None:
            raise PydanticCustomError(
                "mode", "multitask from scratch needs multitask.pretext (the init carries no pretext)",
                {"field": "mode"},
            )
        rotation = self.augment.spatial.rotation_deg if self.augment.spatial is not None else 0.0
        if self.inference is not None and self.inference.tta == "rot90" and rotation < 180:
            raise PydanticCustomError(
                "inference", "inference.tta rot90 needs a model trained with any in-plane orientation: set "
                "augment.spatial.rotation_deg: 180 (now {v}) or inference.tta: none",
                {"v": rotation, "field": "inference"},
            )
        return self


register_job_kind("finetune")(FinetuneJob)


def job_copy(job: FinetuneJob, **changes) -> FinetuneJob:
    """A validated copy of ``job`` with top-level fields changed (used by the study grid)."""
    data = job.model_dump(mode="json")
    data.update(changes)
    return FinetuneJob.model_validate(data)
