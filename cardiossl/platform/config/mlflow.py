"""``mlflow:`` section: tracking URI, experiment, artifact location, Model Registry name and alias."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .base import StrictModel, absolute_or_uri


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
        return v if v is None else absolute_or_uri(v, "mlflow.artifact_location")

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
