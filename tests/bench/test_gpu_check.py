"""bench/gpu_check.py runs end to end on CPU (--cpu-smoke): every arm the GPU run takes, Ray included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_check_cpu_smoke_runs_every_arm(ray_cluster, tmp_path):
    env = dict(ray_cluster.env, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke",
                          "--ray-address", ray_cluster.gcs_address],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = res["rows"]
    assert not [r for r in rows if "error" in r or "skipped" in r], [r for r in rows if "images_per_s" not in r]
    seen = {(r["arm"], r["compile"], r["augment"]) for r in rows}
    for arm in ("platform", "ray"):
        assert {(arm, "eager", "loader")} <= seen and any(k[0] == arm and k[2] == "device" for k in seen), arm
    assert {("bare", "compiled", "none"), ("platform", "compiled", "device"), ("ray", "compiled", "device"),
            ("bare", "eager", "device")} <= seen
    assert {r["batch"] for r in rows if r["arm"] == "bare"} == {4, res["largest_batch"]["batch"]} == {4, 8}
    for r in rows:
        assert r["images_per_s"] > 0 and r["step_ms"] > 0 and r["tflops"] >= 0, r
    assert res["ray"]["process_group"] == {"backend": "gloo", "world_size": 1, "device": "cpu",
                                           "all_reduce_ok": True, "device_name": "cpu"}
    assert res["gflop_per_image_fwd_bwd"] > 0 and res["ray_best_over_bare_best"] > 0
    assert {(q["arm"], q["augment"]) for q in res["ratios"]} >= {("ray", "loader"), ("ray", "device")}
    assert all(q["over_same_bare"] and q["over_best_bare"] for q in res["ratios"]), res["ratios"]
    assert "target: best ray / best bare" in out.stdout  # the table is printed last


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_check_focus_ray_compares_the_cpu_reservation(ray_cluster, tmp_path):
    """`--focus ray`: the Ray path with the jobs' one CPU and with one per loader worker more, side by side."""
    env = dict(ray_cluster.env, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke", "--focus", "ray",
                          "--ray-address", ray_cluster.gcs_address],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = res["rows"]
    assert not [r for r in rows if "error" in r or "skipped" in r], rows
    assert {r["arm"] for r in rows} == {"bare", "platform", "plat-1thr", "ray", "ray-2cpu"}
    trainers = res["ray"]["trainers"]
    assert {k: v["cpus_per_worker"] for k, v in trainers.items()} == {"ray": 1.0, "ray-2cpu": 2.0}
    assert all(v["worker"]["torch_threads"] >= 1 for v in trainers.values())
    for arm in ("ray", "ray-2cpu"):  # both trainers ran the same variants
        assert {(r["batch"], r["compile"]) for r in rows if r["arm"] == arm} == {(8, "compiled"), (8, "eager")}
    assert res["ray_best_over_bare_best"] == round(
        max(r["images_per_s"] for r in rows if r["arm"] == "ray")
        / max(r["images_per_s"] for r in rows if r["arm"] == "bare"), 3)
