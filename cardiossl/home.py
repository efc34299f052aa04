"""Where outputs go: the one place that decides it.

Everything cardiossl writes by default lands under ``CARDIOSSL_HOME`` (default ``/tmp/cardiossl``):
the cohort store ``cohort.zarr`` (or ``CARDIOSSL_COHORT``), ``mlflow.db`` and ``mlartifacts/``,
``ray_results/``. Job YAMLs name these paths as ``${CARDIOSSL_HOME}/...``; the loader fills in the
default from here, ``scripts/env.sh`` exports it into the shell, and the pretraining driver carries
it into the runtime env of the Ray workers it starts, so every process of a job agrees.

Imports nothing from the package: every room may ask.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "/tmp/cardiossl"
HOME_VAR = "CARDIOSSL_HOME"
COHORT_VAR = "CARDIOSSL_COHORT"


def home(environ: dict | None = None) -> Path:
    """``CARDIOSSL_HOME`` made absolute, else the default."""
    env = os.environ if environ is None else environ
    value = env.get(HOME_VAR) or DEFAULT_HOME
    return Path(os.path.abspath(os.path.expanduser(value)))


def is_default(environ: dict | None = None) -> bool:
    env = os.environ if environ is None else environ
    return not env.get(HOME_VAR)


def cohort_store(environ: dict | None = None) -> Path:
    """``CARDIOSSL_COHORT``, else ``$CARDIOSSL_HOME/cohort.zarr``: the store the jobs read by default."""
    env = os.environ if environ is None else environ
    value = env.get(COHORT_VAR)
    if value:
        return Path(os.path.abspath(os.path.expanduser(value)))
    return home(env) / "cohort.zarr"


def tracking_uri(environ: dict | None = None) -> str:
    """The MLflow store of ``CARDIOSSL_HOME``: ``sqlite:////.../mlflow.db``."""
    return f"sqlite:///{home(environ) / 'mlflow.db'}"


def with_defaults(environ: dict | None = None) -> dict:
    """The environment with ``CARDIOSSL_HOME`` filled in (for ``${CARDIOSSL_HOME}`` in job YAMLs)."""
    env = dict(os.environ if environ is None else environ)
    env[HOME_VAR] = str(home(env))
    return env


def carried_env(environ: dict | None = None) -> dict[str, str]:
    """What a job carries into its Ray workers: the home, and the cohort when it was set."""
    env = os.environ if environ is None else environ
    out = {HOME_VAR: str(home(env))}
    if env.get(COHORT_VAR):
        out[COHORT_VAR] = str(cohort_store(env))
    return out


def describe(environ: dict | None = None) -> str:
    """One line for every command that writes: where outputs go and how to move them."""
    where = home(environ)
    how = (f"default; export {HOME_VAR}=/somewhere to move it" if is_default(environ)
           else f"from {HOME_VAR}")
    return f"outputs under {where} ({how})"


if __name__ == "__main__":  # ``python -m cardiossl.home``: what scripts/env.sh exports
    print(home())
