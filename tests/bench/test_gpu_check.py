"""bench/gpu_check.py runs end to end on CPU (--cpu-smoke): the same code path the GPU run takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_writes_its_report(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke", "--no-ray"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["nccl"]["ok"] and res["nccl"]["backend"] == "gloo"  # the CPU stand-in for nccl
    for arm in ("tensors_on_gpu", "zarr_loader", "tensors_on_gpu_again"):
        assert res[arm]["images_per_s"] > 0, arm
    assert res["ratio_loader_over_tensors"] > 0 and isinstance(res["target_met"], bool)
    assert res["loader_ms_per_sample_one_process"] > 0
