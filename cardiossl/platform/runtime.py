"""How a driver talks to Ray: which cluster, what every worker's environment carries, how loud Ray is.

* **Where outputs go** travels with the job: ``CARDIOSSL_HOME`` (and ``CARDIOSSL_COHORT`` when set)
  go into the runtime env of the workers this driver starts, next to whatever ``ray job submit
  --runtime-env-json`` already put there (Ray refuses a driver env var that the job's runtime env
  also sets, so those are left to the job).
* **Plugins registered from Python** (not through an entry point) exist only in the process that
  imported them. Their modules are named to the workers, which import them before reading the job,
  and shipped with the runtime env (``py_modules``) unless they are installed packages; a plugin
  defined in a script (``__main__``) cannot be imported anywhere else and is refused up front.
* **Noise**: Ray's own INFO lines (local instance started, resource requests, checkpoint paths, the
  ``TrainingReport(...)`` of every report) are turned down to warnings unless ``verbose``; the
  preemption watcher of Ray Train (for spot instances) is off unless asked for, as its actor logs
  an ``E ... core_worker.cc`` line in every run; log prefixes carry no colour codes when stdout is
  not a terminal (``RAY_COLOR_PREFIX=0``). Ray's duplicate-line folding (``RAY_DEDUP_LOGS``) stays on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable

from cardiossl.home import carried_env

from .config import ConfigError

# Ray Train's spot-instance preemption watcher: its actor logs an error line in every run (its
# constructor arguments live in the object store with max_restarts > 0); fixed nodes need no drain watch.
QUIET_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class PluginShippingError(ConfigError):
    """A plugin that workers cannot import; the message says how to make it importable."""


def use_plain_log_prefixes() -> None:
    """No ANSI colour codes around Ray's ``(Worker pid=...)`` prefixes when stdout is not a terminal."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def job_env_vars() -> dict[str, str]:
    """Env vars the runtime env of the running ``ray job submit`` job already sets (empty outside a job)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return {}


def runtime_env(py_modules: Iterable = (), extra_env: dict[str, str] | None = None) -> dict:
    """The runtime env this driver adds for its workers (merged by Ray with a submitted job's own)."""
    wanted = {**carried_env(), **{k: os.environ.get(k, v) for k, v in QUIET_RAY_ENV.items()}, **(extra_env or {})}
    taken = job_env_vars()
    env: dict = {"env_vars": {k: str(v) for k, v in wanted.items() if k not in taken}}
    mods = list(py_modules)
    if mods:
        env["py_modules"] = mods
    return env


def running_local_cluster(pointer: str = "/tmp/ray/ray_current_cluster") -> str | None:
    """The GCS address of the local cluster that ``ray start`` recorded, if it still answers.

    ``ray.init(address="auto")`` trusts that file and waits forever when the cluster it names was
    stopped without ``ray stop`` (a killed head leaves it behind)."""
    try:
        address = open(pointer).read().strip()
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2):
            return address
    except (OSError, ValueError):
        return None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True,
             py_modules: Iterable = (), verbose: bool = False, say: Callable[..., None] = print,
             local_only: bool = False) -> None:
    """Join ``address`` / RAY_ADDRESS / a running local cluster (not with ``local_only``), else start a
    local instance (with its dashboard, so progress reported by ``ray.train.report`` can be watched);
    the runtime env carries ``CARDIOSSL_HOME`` and ships ``py_modules``."""
    import ray

    if ray.is_initialized():
        return
    use_plain_log_prefixes()
    kwargs = dict(log_to_driver=log_to_driver, logging_level=logging.INFO if verbose else logging.WARNING)
    # Ray Train's helper actors (the placement-group cleaner) look their cluster up through the
    # State API; with RAY_ADDRESS in their environment they find this one even when the machine
    # runs several clusters (without it: "Found multiple active Ray instances", a dead thread).
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env(py_modules, {"RAY_ADDRESS": address}), **kwargs)
        return
    running = None if local_only else running_local_cluster()
    if running:
        ray.init(address=running, runtime_env=runtime_env(py_modules, {"RAY_ADDRESS": running}), **kwargs)
        say(f"cardiossl: joined the running local Ray cluster at {running}")
        return
    port = _free_port()
    gcs = f"{ray.util.get_node_ip_address()}:{port}"
    saved = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # the local instance's GCS port, known in advance
    try:
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                       runtime_env=runtime_env(py_modules, {"RAY_ADDRESS": gcs}), **kwargs)
    finally:
        if saved is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = saved
    url = getattr(ctx, "dashboard_url", None)
    say("cardiossl: started a local Ray instance (stops when this command ends)"
        + (f"; dashboard http://{url}" if url else ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# plugins registered from Python
# ---------------------------------------------------------------------------------------------
def import_plugin_modules(names: Iterable[str]) -> None:
    """Import the modules of ``--plugin`` (they register their plugins on import), looking in the
    current directory first, as ``python -m`` would (a console script's sys.path does not hold it)."""
    import importlib

    names = list(names)
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"--plugin {name}: cannot import it ({type(exc).__name__}: {exc}); give a module name "
                f"importable from {os.getcwd()} or PYTHONPATH, such as my_pretexts for ./my_pretexts.py"
            ) from None


def _installed(path: str | None) -> bool:
    return bool(path) and any(part in ("site-packages", "dist-packages") for part in path.split(os.sep))


def plugin_modules(entries: Iterable) -> tuple[list[str], list]:
    """(modules the workers must import, what the runtime env must ship) for registry entries.

    Built-ins and entry-point plugins need nothing: workers import the package and find the entry
    points themselves. A plugin registered from Python needs its module imported on the workers,
    and shipped unless it is an installed package."""
    names, ship = [], []
    for entry in entries:
        module = getattr(entry.obj, "__module__", "") or ""
        if module.startswith("cardiossl.") or entry.source.startswith("entry point "):
            continue
        if module in ("__main__", "") or module.startswith("__"):
            raise PluginShippingError(
                f"{entry.name!r} ({entry.source}) was registered from a script: Ray workers cannot import "
                f"it, so every worker would fail with 'unknown {entry.name}'. Move the class into a module "
                "(say my_plugins.py, imported before the job is loaded), or publish it through an entry "
                "point (docs/plugins.md)"
            )
        if module not in names:
            names.append(module)
        top = sys.modules.get(module.split(".")[0])
        path = getattr(top, "__file__", None) or next(iter(getattr(top, "__path__", []) or []), None)
        if top is not None and not _installed(path) and top not in ship:
            ship.append(top)
    return names, ship
