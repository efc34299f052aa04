"""Job YAMLs as typed pydantic models: every field checked before any Ray work starts.

This room holds the job schemas by section, the job kinds (pretrain, finetune, benchmark), YAML
loading with ``--set`` overrides and ``${VAR}`` expansion, and the error formatting; it imports only
``pretexts``, ``backbones``, ``datasets`` and ``registry`` (plugin params are validated by the plugins).

One loader for every job kind. A YAML names its kind (``kind: pretrain``); ``load_job`` picks the
model registered for that kind in ``JOB_KINDS``, applies ``--set a.b=c`` overrides to the raw
mapping, expands ``${VAR:-default}`` in strings, and validates. Errors name the YAML path of the
field (``pretext.params.box_mm: Input should be greater than 0``), including errors raised by a
plugin's own Config: a pretext's params are validated by ``PRETEXTS.get(name).Config`` at load
time, so a typo in a plugin parameter fails here, not an hour into a cluster run (MMPretrain's
untyped ``type=`` dicts fail late; we refuse that).

Other job kinds subclass ``JobBase`` and register with ``@register_job_kind("name")``, reusing the
section models; a third-party package registers its kinds through the entry-point group
``cardiossl.jobs``.
"""

from .augment import AppearanceAugment, AugmentConfig, IntensityAugment, SpatialAugment
from .base import ConfigError, StrictModel, is_uri
from .benchmark import (
    MODES,
    SCRATCH,
    BenchmarkJob,
    PretrainSource,
    RegisterSpec,
    StatsConfig,
    StudyGrid,
    StudyRay,
    is_model_ref,
)
from .cohort import CohortConfig, LoaderConfig, SplitConfig
from .errors import format_validation_error
from .finetune import (
    FinetuneError, FinetuneJob, FinetuneValidation, InferenceConfig, MultitaskConfig, SegLossConfig, job_copy,
)
from .jobs import JOB_KINDS, JobBase, PretrainJob, register_job_kind
from .loading import apply_overrides, expand_env, load_job, load_job_dict, parse_overrides, read_yaml
from .mlflow import MlflowSpec
from .optim import OptimConfig, ScheduleConfig
from .plugins import BackboneSpec, PluginSpec, PretextSpec
from .records import config_hash, drop_unset_options, flatten, job_to_yaml
from .running import CheckpointSpec, DebugConfig, ProgressSpec, ScalingSpec, TrainOptions, ValidationSpec

__all__ = [
    "ConfigError",
    "StrictModel",
    "PluginSpec",
    "PretextSpec",
    "BackboneSpec",
    "SplitConfig",
    "CohortConfig",
    "LoaderConfig",
    "OptimConfig",
    "ScheduleConfig",
    "IntensityAugment",
    "AppearanceAugment",
    "SpatialAugment",
    "AugmentConfig",
    "ScalingSpec",
    "CheckpointSpec",
    "MlflowSpec",
    "DebugConfig",
    "TrainOptions",
    "ValidationSpec",
    "ProgressSpec",
    "JobBase",
    "PretrainJob",
    "FinetuneJob",
    "FinetuneError",
    "FinetuneValidation",
    "InferenceConfig",
    "MultitaskConfig",
    "SegLossConfig",
    "BenchmarkJob",
    "StudyGrid",
    "PretrainSource",
    "StudyRay",
    "StatsConfig",
    "RegisterSpec",
    "SCRATCH",
    "MODES",
    "JOB_KINDS",
    "register_job_kind",
    "load_job",
    "load_job_dict",
    "read_yaml",
    "parse_overrides",
    "apply_overrides",
    "expand_env",
    "format_validation_error",
    "config_hash",
    "drop_unset_options",
    "flatten",
    "job_to_yaml",
    "job_copy",
    "is_uri",
    "is_model_ref",
]
