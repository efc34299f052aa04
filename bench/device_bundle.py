"""The wheels a lent GPU machine lacks, built here: cp312 manylinux x86_64, Ray trimmed to fit.

The GPU machine (KINDS.md of the device tool: Python 3.12, CUDA torch and many common packages,
no package index) receives the working tree plus carried paths, 64 MiB in all. What
``bench/gpu_check.py`` imports there is the project's runtime closure for pretraining:
``DEVICE_ROOTS`` below (no MLflow, dask, readers, MONAI or CLI: the check builds its cohort from the
synthetic generator and tracks in memory). This script resolves those roots' dependency closure
from the wheels' own metadata, stops at every package the image already holds (``IMAGE_PACKAGES``,
the list KINDS.md gives), downloads the rest with pip and trims Ray:

* Ray 2.60.0 is 76 MiB as a wheel; 31 MiB of it is ``ray/jars`` (the Java runtime), and RLlib,
  Serve, Ray LLM, the dashboard's web client, source maps and example folders are not loaded by a
  Ray Train job either. They are dropped, their console scripts removed from ``entry_points.txt``,
  and the wheel is repacked with a RECORD that lists every kept file's sha256 and size (pip checks
  neither on install, but a wheel with a wrong RECORD is not a wheel).

    python bench/device_bundle.py                      # cp312 wheels into .whl/, sizes printed
    python bench/device_bundle.py --python-version 3.11 --out /tmp/bundle311   # the same for here
    python bench/device_bundle.py prove --bundle /tmp/bundle311               # local proof (below)

``prove`` makes a throwaway venv with this machine's Python and CPU torch, installs into it only the
packages the GPU image has (the closure's stopping points), installs the bundle exactly as the
device call does (``pip install --no-index --no-deps --target``, then ``PYTHONPATH``), starts a
cluster with ``ray start --head`` on free ports in its own temp dir, runs a one-worker
``TorchTrainer`` against it, and runs ``bench/gpu_check.py --cpu-smoke`` end to end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import secrets
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20  # what one device call carries: working tree + carried paths

# Packages in the device image 'cuda', as KINDS.md listed them (read on a machine on 2026-11-17).
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()

# What bench/gpu_check.py imports on the device (cardiossl's pretraining path), with extras.
DEVICE_ROOTS = [
    "ray[train]", "torch", "numpy", "scipy", "pyyaml", "pydantic", "zarr", "tensorstore", "safetensors",
    "google-crc32c", "psutil",
]
# Carried although the image has them: pydantic 2.14 needs typing-extensions >= 4.14.1 and the
# image's version is not recorded; the newer one is backward compatible.
ALSO_CARRY = ["typing-extensions"]
# Project dependencies the device run does not import, and why (printed in the comparison).
NOT_ON_DEVICE = {
    "dask": "ingest only", "mlflow": "the check tracks in memory", "nibabel": "readers only",
    "pydicom": "readers only", "monai": "fine-tuning evaluation only", "typer": "CLI only",
    "rich": "CLI only", "matplotlib": "figures only",
}

RAY_DROP = [
    r"ray/jars/", r"ray/rllib/", r"ray/serve/", r"ray/llm/", r"ray/dashboard/client/",
    r"ray/(.+/)?examples/", r"ray/(.+/)?tests?/", r"ray/(.+/)?testing/", r".*\.js\.map$", r"ray/setup-dev\.py$",
]
RAY_DROP_SCRIPTS = ("serve", "tune", "rllib")

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# closure
# --------------------------------------------------------------------------------------------
def constraints_pins(path: Path = REPO / "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[canon(name)] = ver.strip()
    return pins


def marker_env(python_version: str) -> dict[str, str]:
    full = {"3.12": "3.12.3", "3.11": "3.11.7"}.get(python_version, python_version + ".0")
    return {"python_version": python_version, "python_full_version": full, "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def download(spec: str, dest: Path, python_version: str) -> Path:
    """One wheel, no dependencies, for the target interpreter and platform; returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest), spec]
    for p in PLATFORMS:
        cmd[6:6] = ["--platform", p]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"pip download {spec} failed:\n{out.stderr[-2000:]}")
    name = canon(re.split(r"[\[=<>!~ ]", spec, 1)[0])
    found = [w for w in dest.glob("*.whl") if canon(w.name.split("-")[0]) == name]
    new = [w for w in found if w not in before] or found
    if not new:
        raise SystemExit(f"pip download {spec}: no wheel for {name} in {dest}")
    return max(new, key=lambda w: w.stat().st_mtime)


def wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def resolve(roots: list[str], python_version: str, cache: Path, image: set[str],
            pins: dict[str, str]) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """(carried name -> wheel, in-image name -> who needs it): a breadth-first walk of Requires-Dist
    with markers evaluated for the target, stopping at packages the image holds."""
    from packaging.requirements import Requirement

    env = marker_env(python_version)
    carried: dict[str, Path] = {}
    in_image: dict[str, list[str]] = {}
    queue: list[tuple[Requirement, str]] = [(Requirement(r), "(root)") for r in roots]
    queue += [(Requirement(r), "(also carried)") for r in ALSO_CARRY]
    extras_seen: dict[str, set[str]] = {}
    while queue:
        req, parent = queue.pop(0)
        name = canon(req.name)
        forced = parent == "(also carried)"
        if name in image and not forced:
            in_image.setdefault(name, []).append(parent)
            continue
        new_extras = set(req.extras) - extras_seen.get(name, set())
        if name in carried and not new_extras:
            continue
        extras_seen.setdefault(name, set()).update(req.extras)
        if name not in carried:
            spec = f"{req.name}=={pins[name]}" if name in pins else f"{req.name}{req.specifier}"
            carried[name] = download(spec, cache, python_version)
        for dep in wheel_requires(carried[name]):
            d = Requirement(dep)
            if d.marker is not None:
                ok = any(d.marker.evaluate({**env, "extra": e}) for e in (extras_seen[name] or {""}))
                if not ok:
                    continue
            queue.append((d, name))
    return carried, in_image


# --------------------------------------------------------------------------------------------
# trimming
# --------------------------------------------------------------------------------------------
def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _drop_scripts(text: str, names) -> str:
    out, section = [], ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        elif section == "[console_scripts]" and "=" in s and s.split("=")[0].strip() in names:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _record_name(names: list[str]) -> str:
    """The wheel's own RECORD (top level; vendored packages inside it carry RECORDs of their own)."""
    return next(n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD"))


def trim_wheel(src: Path, dst: Path, drop: list[str], drop_scripts=()) -> dict:
    """Copy wheel ``src`` to ``dst`` without the members matching ``drop`` (regexes on the path),
    console scripts ``drop_scripts`` removed, and a RECORD that matches what is left. Members keep
    their modes (the Ray binaries stay executable)."""
    pats = [re.compile(p) for p in drop]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    dropped = kept = 0
    dropped_bytes = 0
    rows = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        names = zin.namelist()
        record = _record_name(names)
        for info in zin.infolist():
            n = info.filename
            if n == record or n.endswith("/"):
                continue
            if any(p.match(n) for p in pats):
                dropped += 1
                dropped_bytes += info.file_size
                continue
            data = zin.read(info)
            if n.endswith(".dist-info/entry_points.txt") and drop_scripts:
                data = _drop_scripts(data.decode(), set(drop_scripts)).encode()
            out = zipfile.ZipInfo(n, date_time=info.date_time)
            out.external_attr = info.external_attr
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, data)
            rows.append((n, record_hash(data), str(len(data))))
            kept += 1
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows(rows)
        w.writerow((record, "", ""))
        rinfo = zipfile.ZipInfo(record, date_time=(2026, 1, 1, 0, 0, 0))
        rinfo.external_attr = (stat.S_IFREG | 0o644) << 16
        zout.writestr(rinfo, buf.getvalue(), zipfile.ZIP_DEFLATED)
    os.replace(tmp, dst)
    return {"kept_files": kept, "dropped_files": dropped, "dropped_mib": round(dropped_bytes / 2**20, 1),
            "size_mib": round(dst.stat().st_size / 2**20, 2), "was_mib": round(src.stat().st_size / 2**20, 2)}


def check_record(wheel: Path) -> list[str]:
    """Problems with a wheel's RECORD (missing, extra or mismatching entries); empty when valid."""
    problems = []
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        record = _record_name(names)
        rows = {r[0]: r for r in csv.reader(io.StringIO(z.read(record).decode())) if r}
        for n in names:
            if n not in rows:
                problems.append(f"{n}: not in RECORD")
            elif n != record:
                data = z.read(n)
                if rows[n][1] != record_hash(data) or rows[n][2] != str(len(data)):
                    problems.append(f"{n}: hash or size differs from RECORD")
        problems += [f"{n}: in RECORD, not in the wheel" for n in rows if n not in names]
    return problems


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------
def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call sends: tracked plus untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sum((repo / p).stat().st_size for p in out.decode().split("\0") if p and (repo / p).is_file())


def build(out: Path, python_version: str, cache: Path | None = None) -> dict:
    from packaging.requirements import Requirement

    image = {canon(p) for p in IMAGE_PACKAGES}
    pins = constraints_pins()
    cache = cache or Path(tempfile.gettempdir()) / f"cardiossl-wheel-cache-cp{python_version.replace('.', '')}"
    carried, in_image = resolve(DEVICE_ROOTS, python_version, cache, image, pins)
    if out.exists():
        for w in out.glob("*.whl"):
            w.unlink()
    out.mkdir(parents=True, exist_ok=True)
    report = {"python_version": python_version, "wheels": {}, "in_image": sorted(in_image)}
    for name, wheel in sorted(carried.items()):
        if name == "ray":
            info = trim_wheel(wheel, out / wheel.name, RAY_DROP, RAY_DROP_SCRIPTS)
            bad = check_record(out / wheel.name)
            if bad:
                raise SystemExit(f"trimmed Ray wheel has a bad RECORD: {bad[:5]}")
            report["ray_trim"] = info
        else:
            shutil.copy2(wheel, out / wheel.name)
        report["wheels"][wheel.name] = (out / wheel.name).stat().st_size
    project = [canon(Requirement(d).name) for d in _project_dependencies()]
    report["project_dependencies"] = {
        d: ("carried" if d in carried else "in image" if d in image else f"not needed ({NOT_ON_DEVICE[d]})"
            if d in NOT_ON_DEVICE else "NOT CARRIED") for d in project}
    wheels = sum(report["wheels"].values())
    tree = tree_bytes()
    report.update(wheels_bytes=wheels, tree_bytes=tree, total_bytes=wheels + tree, limit_bytes=LIMIT_BYTES)
    return report


def _project_dependencies() -> list[str]:
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        return []
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def print_report(r: dict) -> None:
    mib = 2**20
    print(f"wheels for cp{r['python_version'].replace('.', '')} (manylinux x86_64):")
    for name, size in r["wheels"].items():
        print(f"  {size / mib:7.2f} MiB  {name}")
    if "ray_trim" in r:
        t = r["ray_trim"]
        print(f"  Ray trimmed from {t['was_mib']} MiB to {t['size_mib']} MiB ({t['dropped_files']} files, "
              f"{t['dropped_mib']} MiB unpacked dropped: {', '.join(p.rstrip('/') for p in RAY_DROP[:5])}, "
              "examples, tests, source maps)")
    print("project dependencies on the device: " + ", ".join(f"{k}: {v}" for k, v in r["project_dependencies"].items()))
    print(f"closure packages the image already has: {', '.join(r['in_image'])}")
    print(f"wheels {r['wheels_bytes'] / mib:.1f} MiB + working tree {r['tree_bytes'] / mib:.1f} MiB = "
          f"{r['total_bytes'] / mib:.1f} MiB of the {r['limit_bytes'] / mib:.0f} MiB a device call carries")
    if r["total_bytes"] > r["limit_bytes"]:
        print("OVER THE LIMIT: trim more before calling the device")


# --------------------------------------------------------------------------------------------
# local proof
# --------------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once, so the OS cannot hand one out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(1)
    return False


TRAINER_CHECK = r"""
import json, sys, tempfile, time
import ray, ray.train
from ray.train.torch import TorchTrainer

def loop(config):
    import tempfile, torch, torch.distributed as dist, ray.train, ray.train.torch
    model = ray.train.torch.prepare_model(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    t = torch.ones(1)
    dist.all_reduce(t)
    with tempfile.TemporaryDirectory() as d:  # Train V2 keeps only metrics that come with a checkpoint
        torch.save(model.state_dict(), f"{d}/model.pt")
        ray.train.report({"backend": dist.get_backend(), "world": dist.get_world_size(), "sum": float(t.item()),
                          "loss": float(loss)}, checkpoint=ray.train.Checkpoint.from_directory(d))

for attempt in range(4):  # a loaded machine can take minutes to register the raylet
    try:
        ray.init(address=sys.argv[1])
        break
    except Exception:
        ray.shutdown()
        if attempt == 3:
            raise
        time.sleep(15)
res = TorchTrainer(loop, scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False),
                   run_config=ray.train.RunConfig(name="bundle-proof", storage_path=tempfile.mkdtemp())).fit()
print(json.dumps({"ray": ray.__version__, "ray_file": ray.__file__, "metrics": res.metrics}))
assert res.metrics["backend"] == "gloo" and res.metrics["sum"] == 1.0, res.metrics
"""


def prove(bundle: Path, python: str, workdir: Path, torch_spec: str) -> int:
    """Install the bundle the device way into a venv that has only the image's share of the
    closure, start ``ray start --head``, run a TorchTrainer, run gpu_check --cpu-smoke."""
    workdir.mkdir(parents=True, exist_ok=True)
    venv = workdir / "venv"
    py = venv / "bin" / "python"
    report = json.loads((bundle / "bundle.json").read_text())
    image_part = report["in_image"]
    if not py.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        log(f"installing {torch_spec} and the image's share of the closure: {', '.join(image_part)}")
        pins = constraints_pins()
        reqs = [torch_spec] + [f"{n}=={pins[n]}" if n in pins else n for n in image_part if n != "torch"]
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *reqs], check=True)
    site = workdir / "site"
    shutil.rmtree(site, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, sorted(bundle.glob("*.whl")))],
                   check=True)
    log(f"bundle installed to {site} in {time.perf_counter() - t:.1f} s")
    token = site.parent / "ray-token"  # token authentication on, as on every cluster of the project
    token.write_text(secrets.token_hex(32))
    env = dict(os.environ, PYTHONPATH=f"{site}:{REPO}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1", PATH=f"{site / 'bin'}:{venv / 'bin'}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    chk = subprocess.run([str(py), "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
                          "ray.train.torch", "pydantic", "zarr", "numcodecs", "google_crc32c", "cardiossl.platform.training",
                          "cardiossl.datasets.store"], env=env, capture_output=True, text=True)
    if chk.returncode:
        log(chk.stderr[-3000:])
        return 1
    temp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths have a length limit
    gcs, nm, om, agent, agent_grpc, metrics, renv = free_ports(7)
    cmd = [str(site / "bin" / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={renv}"]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=open(workdir / "ray-head.log", "w"),
                            stderr=subprocess.STDOUT)
    rc = 1
    try:
        t = time.perf_counter()
        if not _wait_port(gcs, head, 120):
            log(f"`ray start --head` did not open its GCS port; see {workdir / 'ray-head.log'}")
            return 1
        log(f"ray start --head: GCS up in {time.perf_counter() - t:.1f} s")
        check = subprocess.Popen([str(py), "-c", TRAINER_CHECK, f"127.0.0.1:{gcs}"], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while check.poll() is None and head.poll() is None and time.time() < deadline:
            time.sleep(1)
        if check.poll() is None:  # the head died (see its log) or the check hung: stop waiting for it
            check.kill()
            log(f"the Ray head exited ({head.poll()}) or the check timed out; see {workdir / 'ray-head.log'}")
        text = check.communicate()[0] or ""
        print(text.strip().splitlines()[-1] if check.returncode == 0 and text.strip() else text[-3000:])
        log(f"ray start --head + TorchTrainer (1 worker): rc {check.returncode}, {time.perf_counter() - t:.1f} s")
        rc = check.returncode
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    if rc:
        return rc
    t = time.perf_counter()
    out = subprocess.run([str(py), str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke",
                          "--out", str(workdir / "gpu_check.json")], env=env, capture_output=True, text=True,
                         timeout=1200)
    (workdir / "gpu_check.log").write_text(out.stdout + out.stderr)
    log(f"gpu_check.py --cpu-smoke with the bundle: rc {out.returncode}, {time.perf_counter() - t:.1f} s "
        f"(log {workdir / 'gpu_check.log'})")
    if out.returncode == 0:
        print("\n".join(out.stdout.strip().splitlines()[-25:]))
    else:
        print(out.stdout[-3000:] + out.stderr[-3000:])
    return out.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    ap.add_argument("--out", type=Path, default=REPO / ".whl", help="wheel folder (default .whl, git-ignored)")
    ap.add_argument("--python-version", default="3.12", help="target interpreter (the device has 3.12)")
    ap.add_argument("--cache", type=Path, default=None, help="where downloaded wheels are kept")
    pp = sub.add_parser("prove", help="local proof of a bundle built for this machine's Python")
    pp.add_argument("--bundle", type=Path, required=True)
    pp.add_argument("--python", default=sys.executable)
    pp.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cardiossl-bundle-proof")
    pp.add_argument("--torch", default="torch==2.13.0", help="the torch to stand in for the image's")
    a = ap.parse_args(argv)
    if a.cmd == "prove":
        return prove(a.bundle, a.python, a.workdir, a.torch)
    r = build(a.out, a.python_version, a.cache)
    (a.out / "bundle.json").write_text(json.dumps(r, indent=1))
    print_report(r)
    return 0 if r["total_bytes"] <= r["limit_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())
