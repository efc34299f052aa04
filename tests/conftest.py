"""Shared fixtures: a tiny synthetic cohort store, a real local Ray cluster, a real MLflow server.

Ray and MLflow processes are started in their own process groups and stopped by group id in the
teardown, so a test session never touches Ray or MLflow processes it did not start (``ray stop``
would stop every Ray process of the user on the machine).

Every Ray cluster of the session uses token authentication (``RAY_AUTH_MODE=token``) with a token
generated for the session in a private temporary file (``RAY_AUTH_TOKEN_PATH``), set for this
process and every process it starts: the user's own ``~/.ray/auth_token`` is neither read nor written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
_TOKEN_DIR: str | None = None


def pytest_configure(config) -> None:
    """A Ray token for this test session, as Ray generates one (256 random bits, hex), readable by us only."""
    global _TOKEN_DIR
    import secrets

    _TOKEN_DIR = tempfile.mkdtemp(prefix="cardiossl-ray-auth-")
    token = Path(_TOKEN_DIR) / "auth_token"
    fd = os.open(token, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ.pop("RAY_AUTH_TOKEN", None)


def pytest_unconfigure(config) -> None:
    if _TOKEN_DIR:
        shutil.rmtree(_TOKEN_DIR, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def build_tiny_store(path: Path, n_subjects: int = 6, grid_size: int = 64, spacing_mm: float = 2.5,
                     seed: int = 0) -> Path:
    """A few synthetic subjects (2 cine frames) on a small grid: seconds to build."""
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject

    records = [synth_subject(f"synth{i:05d}", seed, n_frames=2, n_sub=1) for i in range(n_subjects)]
    store = CohortStore.create(path, grid_size=grid_size, spacing_mm=spacing_mm)
    store.write_subjects(records)
    store.update_fingerprint()
    return Path(path)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """Six synthetic subjects, 64x64 grid at 2.5 mm (about 140 SA slices)."""
    return build_tiny_store(tmp_path_factory.mktemp("cohort") / "tiny.zarr")


def tiny_pretrain_overrides(store: Path, root: Path, pretext: str = "position", **extra) -> list[str]:
    """``--set`` overrides that shrink a jobs/*.yaml to a seconds-long run on ``store``."""
    sets = {
        "cohort.store": str(store),
        "image_size": 32,
        "steps": 8,
        "batch_size": 4,
        "backbone.name": "unet",
        "backbone.params": "{depth: 3, width: 4}",
        "schedule.warmup_steps": 1,
        "checkpoint.every_steps": 4,
        "checkpoint.storage_path": str(root / "ray_results"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow.log_every_steps": 1,
        "mlflow.system_metrics": "false",
        "validation.every_steps": "null",
        "validation.max_batches": 2,
        "validation.figure_slices": 2,
    }
    sets.update(extra)
    return [f"{k}={v}" for k, v in sets.items()]


def plugin_guide_example(folder: Path) -> Path:
    """The complete example of docs/plugins.md written to ``folder/my_pretexts.py``, as a reader would."""
    text = (REPO / "docs" / "plugins.md").read_text()
    start = text.index('```python\n"""my_pretexts.py') + len("```python\n")
    code = text[start:text.index("```", start)]
    path = Path(folder) / "my_pretexts.py"
    path.write_text(code)
    return path


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in job entrypoints
    env["RAY_AUTH_MODE"] = "token"  # the session's token (pytest_configure): clusters refuse anyone without it
    env.pop("RAY_ADDRESS", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def ray_token() -> str:
    """The session's Ray token (what a client sends as ``Authorization: Bearer <token>``)."""
    return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class RayCluster:
    """A running local cluster started by this test session."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    env: dict
    procs: list = field(default_factory=list)
    workdir: Path = REPO

    def add_node(self, num_cpus: int = 2, resources: dict | None = None) -> None:
        """A second raylet on this machine joining the head (a two-node cluster)."""
        cmd = [str(VENV_BIN / "ray"), "start", f"--address={self.gcs_address}", f"--num-cpus={num_cpus}",
               "--block", "--disable-usage-stats",
               f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.workdir, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        self.wait_nodes(len(self.procs))

    def nodes(self) -> list[dict]:
        out = subprocess.run([str(VENV_BIN / "ray"), "list", "nodes", "--format=json",
                              f"--address={self.dashboard_url}"], env=self.env, capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            return []
        try:
            return [n for n in json.loads(out.stdout) if n.get("state") == "ALIVE"]
        except json.JSONDecodeError:
            return []

    def wait_nodes(self, n: int, timeout: float = 180.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.nodes()) >= n:
                return
            time.sleep(2)
        raise RuntimeError(f"Ray cluster did not reach {n} alive nodes in {timeout} s")

    def submit(self, entrypoint: list[str], submission_id: str, timeout: float = 900.0,
               runtime_env: dict | None = None) -> tuple[str, str]:
        """Real ``ray job submit --working-dir .``; returns (final status, logs)."""
        renv = {"excludes": [".venv", ".git", "*.zarr", "mlruns", "*.db", "tests/**/__pycache__"]}
        renv.update(runtime_env or {})
        cmd = [str(VENV_BIN / "ray"), "job", "submit", f"--address={self.dashboard_url}",
               f"--submission-id={submission_id}", "--working-dir", ".",
               f"--runtime-env-json={json.dumps(renv)}", "--", *entrypoint]
        out = subprocess.run(cmd, env=self.env, cwd=self.workdir, capture_output=True, text=True,
                             timeout=timeout)
        status = subprocess.run([str(VENV_BIN / "ray"), "job", "status", f"--address={self.dashboard_url}",
                                 submission_id], env=self.env, capture_output=True, text=True, timeout=60)
        logs = out.stdout + out.stderr
        text = (status.stdout + status.stderr).lower()
        for word in ("succeeded", "failed", "stopped", "running", "pending"):
            if f"job '{submission_id}' {word}" in text or f"status: {word}" in text:
                return word.upper(), logs
        return "UNKNOWN: " + status.stdout + status.stderr, logs


def start_ray_head(num_cpus: int = 4) -> RayCluster:
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: socket paths have a length limit
    gcs_port, dash_port = free_port(), free_port()
    # Ray processes that look for "the" cluster (address="auto") must find this one, not another
    # cluster someone else runs on the same machine.
    env = _env(RAY_ADDRESS=f"127.0.0.1:{gcs_port}")
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
           f"--dashboard-port={dash_port}", "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}",
           "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
           f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", "--include-dashboard=true"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = RayCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", temp_dir, env, [proc])
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with {proc.returncode}")
        try:
            request = urllib.request.Request(f"{cluster.dashboard_url}/api/version",
                                             headers={"Authorization": f"Bearer {ray_token()}"})
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(2)
    else:
        stop_ray(cluster)
        raise RuntimeError("the Ray head's dashboard did not come up in 180 s")
    return cluster


def stop_ray(cluster: RayCluster) -> None:
    for proc in reversed(cluster.procs):
        stop_group(proc)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real head per test session (``ray start --head --block`` on free ports, 4 logical CPUs,
    token authentication with the session's token, usage stats off); stopped by process group at the end."""
    cluster = start_ray_head(num_cpus=4)
    try:
        yield cluster
    finally:
        stop_ray(cluster)


@dataclass
class MlflowServer:
    uri: str
    backend: str
    artifacts: str
    proc: subprocess.Popen


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) in its own process group."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    backend = f"sqlite:///{root / 'mlflow.db'}"
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts"),
           "--workers", "1"]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, env=_env(), cwd=root, start_new_session=True, stdout=log, stderr=log)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("mlflow server did not answer /health in 120 s")
        yield MlflowServer(uri, backend, str(root / "artifacts"), proc)
    finally:
        stop_group(proc)
        log.close()
