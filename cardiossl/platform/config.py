"""Job YAMLs as typed pydantic models: every field checked before any Ray work starts.

One loader for every job kind. A YAML names its kind (``kind: pretrain``); ``load_job`` picks the
model registered for that kind in ``JOB_KINDS``, applies ``--set a.b=c`` overrides to the raw
mapping, expands ``${VAR:-default}`` in strings, and validates. Errors name the YAML path of the
field (``pretext.params.box_mm: Input should be greater than 0``), including errors raised by a
plugin's own Config: a pretext's params are validated by ``PRETEXTS.get(name).Config`` at load
time, so a typo in a plugin parameter fails here, not an hour into a cluster run (MMPretrain's
untyped ``type=`` dicts fail late; we refuse that).

Other job kinds (fine-tuning, benchmarks) subclass ``JobBase`` and register with
``@register_job_kind("finetune")``; they reuse the section models defined here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cardiossl.registry import Registry, RegistryError

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
    "SpatialAugment",
    "AugmentConfig",
    "ScalingSpec",
    "CheckpointSpec",
    "MlflowSpec",
    "DebugConfig",
    "TrainOptions",
    "ValidationSpec",
    "JobBase",
    "PretrainJob",
    "JOB_KINDS",
    "register_job_kind",
    "load_job",
    "load_job_dict",
    "parse_overrides",
    "apply_overrides",
    "expand_env",
    "format_validation_error",
    "config_hash",
    "job_to_yaml",
    "is_uri",
]


class ConfigError(ValueError):
    """A job file that cannot run; one line per problem, each starting with the field's YAML path."""

    def __init__(self, message: str, source: str | None = None, problems: list[str] | None = None):
        self.source = source
        self.problems = problems or [message]
        super().__init__(f"{source}: {message}" if source else message)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def _absolute_or_uri(value: str, what: str) -> str:
    if is_uri(value):
        if value.startswith("file://"):
            path = value[len("file://"):]
            if not path.startswith("/"):
                raise ValueError(f"{what} must be absolute, got {value!r}")
        return value
    if not os.path.isabs(value):
        raise ValueError(
            f"{what} must be an absolute path or a URI (s3://, gs://, ...), got {value!r}: a Ray job "
            "runs in a temporary copy of the working directory, so relative paths land nowhere useful"
        )
    return os.path.normpath(value)


def _plugin_errors(exc: ValidationError) -> list[dict]:
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "input": _short(e.get("input"))}
        for e in exc.errors()
    ]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _params_error(kind: str, name: str, errors: list[dict]) -> PydanticCustomError:
    return PydanticCustomError(
        "plugin_params",
        "invalid params for {kind} {name!r}",
        {"kind": kind, "name": name, "errors": errors},
    )


# --------------------------------------------------------------------------------------------
# plugin sections
# --------------------------------------------------------------------------------------------
class PluginSpec(StrictModel):
    """A registered plugin by name plus its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _pretext_registry() -> Registry:
    from cardiossl.pretexts import PRETEXTS

    return PRETEXTS


def _backbone_registry() -> Registry:
    from cardiossl.backbones import BACKBONES

    return BACKBONES


class PretextSpec(PluginSpec):
    """``pretext: {name, params}``; params are validated (and completed with defaults) by the
    plugin's own ``Config`` model."""

    @model_validator(mode="after")
    def _validate_params(self) -> PretextSpec:
        try:
            cls = _pretext_registry().get(self.name)
        except RegistryError as exc:
            raise PydanticCustomError("unknown_plugin", "{msg}", {"msg": str(exc), "field": "name"})
        cfg_model = getattr(cls, "Config", None)
        if cfg_model is None:
            return self
        try:
            cfg = cfg_model.model_validate(self.params)
        except ValidationError as exc:
            raise _params_error("pretext", self.name, _plugin_errors(exc)) from None
        object.__setattr__(self, "params", cfg.model_dump(mode="json"))
        return self

    def build(self):
        """Instantiate the pretext plugin with its validated params."""
        cls = _pretext_registry().get(self.name)
        return cls(self.params)


class BackboneSpec(PluginSpec):
    """``backbone: {name, params}``; params are checked against the factory's Config model when
    it has one, else against its signature."""

    name: str = "unet"

    @model_validator(mode="after")
    def _validate_params(self) -> BackboneSpec:
        try:
            factory = _backbone_registry().get(self.name)
        except RegistryError as exc:
            raise PydanticCustomError("unknown_plugin", "{msg}", {"msg": str(exc), "field": "name"})
        cfg_model = getattr(factory, "Config", None)
        if isinstance(cfg_model, type) and issubclass(cfg_model, BaseModel):
            try:
                cfg = cfg_model.model_validate(self.params)
            except ValidationError as exc:
                raise _params_error("backbone", self.name, _plugin_errors(exc)) from None
            object.__setattr__(self, "params", cfg.model_dump(mode="json"))
            return self
        import inspect

        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            return self
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        if accepts_any:
            # No declared schema: building the module is the only complete check (milliseconds).
            try:
                factory(**self.params)
            except (TypeError, ValueError) as exc:
                raise _params_error("backbone", self.name, [{"loc": [], "msg": str(exc), "input": ""}]) from None
        else:
            known = [
                n
                for n, p in sig.parameters.items()
                if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            bad = [k for k in self.params if k not in known]
            if bad:
                raise _params_error(
                    "backbone",
                    self.name,
                    [
                        {"loc": [k], "msg": f"unknown parameter; accepted: {', '.join(known) or '(none)'}",
                         "input": ""}
                        for k in bad
                    ],
                )
        return self

    def build(self):
        from cardiossl.backbones import build_backbone

        return build_backbone(self.name, **self.params)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
class SplitConfig(StrictModel):
    """Subject-level split of the cohort: validation subjects never appear in training."""

    val: float | int = Field(0.2, description="fraction (0-1) or count of validation subjects")
    test: float | int = Field(0, description="fraction or count of subjects held out from both")
    seed: int = 0

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

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return _absolute_or_uri(v, "cohort.store")

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


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------
class OptimConfig(StrictModel):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)


class ScheduleConfig(StrictModel):
    name: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------
def _range(v, lo_bound: float | None = None, name: str = "value"):
    if v is None:
        return v
    lo, hi = v
    if lo > hi:
        raise ValueError(f"range [{lo}, {hi}] is empty: the first value must be <= the second")
    if lo_bound is not None and lo <= lo_bound:
        raise ValueError(f"{name} must be > {lo_bound}")
    return v


class IntensityAugment(StrictModel):
    p: float = Field(0.8, ge=0, le=1)
    gamma: tuple[float, float] | None = (0.7, 1.5)
    contrast: tuple[float, float] | None = (0.75, 1.25)
    noise_std: tuple[float, float] | None = (0.0, 0.1)

    @field_validator("gamma", "contrast")
    @classmethod
    def _pos(cls, v):
        return _range(v, 0.0, "factors")

    @field_validator("noise_std")
    @classmethod
    def _nonneg(cls, v):
        if v is not None and v[0] < 0:
            raise ValueError("noise std must be >= 0")
        return _range(v)


class SpatialAugment(StrictModel):
    p: float = Field(0.8, ge=0, le=1)
    rotation_deg: float = Field(15.0, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)
    translation_mm: float = Field(8.0, ge=0)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        return _range(v, 0.0, "scale factors")


class AugmentConfig(StrictModel):
    """Applied before the pretext's target, so geometric targets see the perturbed plane."""

    enabled: bool = True
    intensity: IntensityAugment | None = Field(default_factory=IntensityAugment)
    spatial: SpatialAugment | None = Field(default_factory=SpatialAugment)


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
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

    @field_validator("storage_path")
    @classmethod
    def _storage(cls, v: str) -> str:
        return _absolute_or_uri(v, "checkpoint.storage_path")

    @field_validator("run_name")
    @classmethod
    def _name(cls, v):
        if v is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it becomes a folder name)")
        return v


class MlflowSpec(StrictModel):
    tracking_uri: str = Field(description="sqlite:////abs/path/mlflow.db or http://host:port")
    experiment: str = "cardiossl-pretrain"
    artifact_location: str | None = Field(
        None, description="artifact root of a NEW experiment (absolute path or URI); None: beside a sqlite "
        "database (<db folder>/mlartifacts), or the server's choice",
    )
    run_name: str | None = None
    registered_model: str | None = Field(
        None, description="Model Registry name for the pretrained encoder; None: do not register"
    )
    alias: str | None = Field("current", description="registry alias set on the new version")
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(10.0, ge=0.5, description="CPU/GPU/memory sampling period")
    log_every_steps: int = Field(10, ge=1)
    figures: bool = True

    @field_validator("artifact_location")
    @classmethod
    def _artifacts(cls, v):
        return v if v is None else _absolute_or_uri(v, "mlflow.artifact_location")

    @field_validator("alias")
    @classmethod
    def _alias(cls, v):
        if v is None:
            return v
        if v.lower() == "latest":
            raise ValueError("'latest' is reserved by MLflow (models:/NAME/latest already means the newest "
                             "version); use another alias such as 'current' or 'champion'")
        if not re.match(r"^[A-Za-z0-9_-]{1,255}$", v) or re.match(r"^[vV]\d+$", v):
            raise ValueError("aliases are letters, digits, '_' and '-', and not of the form v<number>")
        return v

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if v.startswith("sqlite:"):
            if not v.startswith("sqlite:////"):
                raise ValueError(
                    f"a sqlite tracking URI must hold an absolute path (four slashes: "
                    f"sqlite:////abs/mlflow.db), got {v!r}"
                )
            return v
        if v.startswith(("http://", "https://", "databricks", "postgresql", "mysql", "mssql")):
            return v
        if v.startswith("file:") or v.startswith("/"):
            raise ValueError(
                "the plain file store is refused by MLflow 3; use sqlite:////abs/mlflow.db or a server URI"
            )
        raise ValueError(f"unsupported tracking URI {v!r}; use sqlite:////abs/mlflow.db or http://host:port")


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


class ValidationSpec(StrictModel):
    every_steps: int | None = Field(None, ge=1, description="None: validate only at the end")
    max_batches: int | None = Field(20, ge=1)
    batch_size: int | None = Field(None, ge=1)
    figure_slices: int = Field(4, ge=0)


# --------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------
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

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return job_to_yaml(self)

    def hash(self) -> str:
        return config_hash(self)


class PretrainJob(JobBase):
    """One self-supervised pretraining run (``kind: pretrain``)."""

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

# Job kinds defined in other modules; imported on first use so that loading a pretrain YAML never
# imports fine-tuning code (and vice versa).
_KIND_MODULES = {
    "finetune": ("cardiossl.platform.finetune",),
    "benchmark": ("cardiossl.platform.study", "cardiossl.platform.benchmark"),
}


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
    if kind not in JOB_KINDS:
        import importlib

        for module in _KIND_MODULES.get(kind, ()) + (f"cardiossl.platform.{kind}",):
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name and module.startswith(exc.name):
                    continue
                raise
            if kind in JOB_KINDS:
                break
    try:
        return JOB_KINDS.get(kind)
    except RegistryError as exc:
        raise ConfigError(f"kind: {exc}") from None


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def _loc_str(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds the validator's name for union/function branches ("function-after[...]")
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p and "]" in p)))


def format_validation_error(exc: ValidationError, prefix: tuple = ()) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + _clean_loc(tuple(err["loc"]))
        ctx = err.get("ctx") or {}
        if err["type"] == "plugin_params":
            for sub in ctx["errors"]:
                sub_loc = loc + ("params",) + tuple(sub["loc"])
                lines.append(f"{_loc_str(sub_loc)}: {sub['msg']}" + (f" (got {sub['input']})" if sub.get("input") and "Extra inputs" not in sub["msg"] and "unknown parameter" not in sub["msg"] else ""))
            continue
        if "field" in ctx:
            loc = loc + (ctx["field"],)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section; check the spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif err["type"] == "assertion_error" and msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, "):]
        if err["type"] not in ("extra_forbidden", "missing", "unknown_plugin", "plugin_params", "value_error") \
                and "input" in err:
            if not isinstance(err["input"], dict | list):
                msg += f" (got {_short(err['input'])})"
        lines.append(f"{_loc_str(loc)}: {msg}")
    return lines


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}")  # innermost first


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set and has no default (${{{name}:-...}})")

        out, prev = value, None
        while out != prev:  # nested defaults: ${A:-${B:-/tmp}/x}
            prev, out = out, _ENV.sub(sub, out)
        if out != value and value.startswith("${") and value.endswith("}") and "/" not in value:
            # a whole-value substitution may be a number or bool: parse it like YAML would
            try:
                parsed = yaml.safe_load(out)
            except yaml.YAMLError:
                return out
            return parsed if isinstance(parsed, int | float | bool) else out
        return out
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["optim.lr=3e-4", "cohort.views=[sa,4ch]"]`` -> [(path, value)]; values parsed as YAML."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key part in {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.problem})") from None
        out.append((key.split("."), value))
    return out


def apply_overrides(data: dict, overrides: list[tuple[list[str], Any]] | list[str] | None) -> dict:
    """Set each dotted path in a copy of the raw mapping; the result goes through full validation."""
    if overrides and isinstance(overrides[0], str):
        overrides = parse_overrides(overrides)  # type: ignore[arg-type]
    data = copy.deepcopy(data)
    for path, value in overrides or []:
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {'.'.join(path)}: {where} is not a valid list index") from None
                continue
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict | list):
                raise ConfigError(f"--set {'.'.join(path)}: {where} is a value ({nxt!r}), not a section")
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"--set {'.'.join(path)}: not a valid list index") from None
        else:
            node[last] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"job file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(p)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a job file must be a mapping of sections (kind, cohort, ...)", source=str(p))
    return data


def load_job_dict(data: dict, overrides=None, source: str | None = None, env: dict | None = None) -> JobBase:
    """Validate a raw mapping (after overrides and ``${VAR}`` expansion) into its job model."""
    data = apply_overrides(data, overrides)
    data = expand_env(data, env)
    cls = _job_class(data.get("kind"))
    try:
        job = cls.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc)
        raise ConfigError(
            f"{len(problems)} problem(s):\n  " + "\n  ".join(problems), source=source, problems=problems
        ) from None
    return job


def load_job(path: str | os.PathLike, overrides: list[str] | None = None, env: dict | None = None) -> JobBase:
    """Read ``path`` (yaml.safe_load), apply ``--set`` overrides, validate; raise ConfigError."""
    return load_job_dict(read_yaml(path), overrides, source=str(path), env=env)


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
def job_to_yaml(job: BaseModel) -> str:
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


def config_hash(job: BaseModel, exclude: tuple[str, ...] = ("mlflow", "checkpoint", "debug")) -> str:
    """Hash of what decides the learned weights (not where they are stored or how many workers)."""
    data = job.model_dump(mode="json", exclude=set(exclude))
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value} (lists kept as their JSON text), for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        key = prefix[:-1]
        out[key] = json.dumps(data) if isinstance(data, list | tuple) else data
    return out
