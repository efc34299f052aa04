"""Live progress: the console line's cadence and content, MLflow at every log step, Ray Train at checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cardiossl.platform.config import load_job
from cardiossl.platform.tracking.testing import MemoryTracker
from cardiossl.platform.training import LocalSession, ProgressLine, format_duration, run_pretraining

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_line_cadence_speed_eta_and_loss():
    clock, lines = Clock(), []
    p = ProgressLine("position", total=10, every_steps=4, write=lines.append, clock=clock)
    for step in range(1, 11):
        clock.t += 0.5  # two steps per second
        p.add_loss(torch.tensor(float(step)))
        p.update(step, {"val/loss": 0.25} if step > 4 else None)
    assert len(lines) == 3  # steps 4, 8 and the last
    assert lines[0] == "[position] step 4/10 (40%) | 2.00 step/s | ETA 3s | loss 2.5000"
    assert lines[1].startswith("[position] step 8/10 (80%) | 2.00 step/s | ETA 1s | loss 6.5000")
    assert lines[1].endswith("val/loss 0.2500") and lines[2].startswith("[position] step 10/10 (100%)")
    quiet = ProgressLine("q", total=10, every_steps=0, write=lines.append, clock=clock)
    assert not any(quiet.update(s) for s in range(1, 11)) and len(lines) == 3


def test_pause_keeps_validation_time_out_of_the_speed():
    clock, lines = Clock(), []
    p = ProgressLine("x", total=100, every_steps=2, write=lines.append, clock=clock)
    clock.t += 1.0
    p.update(2)
    clock.t += 60.0  # a long validation
    p.pause()
    clock.t += 1.0
    p.update(4)
    assert "2.00 step/s" in lines[1]


def test_durations():
    assert [format_duration(s) for s in (5, 93, 7322, float("nan"))] == ["5s", "1m33s", "2h02m", "?"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_the_loop_prints_every_k_steps_logs_every_log_step_reports_at_checkpoints(tiny_store, tmp_path):
    job = load_job(REPO / "jobs" / "pretrain_rotation.yaml", tiny_pretrain_overrides(tiny_store, tmp_path, "rotation", **{
        "steps": 9, "checkpoint.every_steps": 4, "mlflow.log_every_steps": 2, "progress.every_steps": 3}))
    lines: list[str] = []
    session, tracker = LocalSession(tmp_path / "run"), MemoryTracker()
    run_pretraining(job, session, tracker,
                    progress=ProgressLine(job.name, 9, job.progress.every_steps, write=lines.append))
    assert [ln.split(" | ")[0] for ln in lines] == [f"[rotation] step {s}/9 ({100 * s // 9}%)" for s in (3, 6, 9)]
    assert all("step/s" in ln and "ETA" in ln and "loss" in ln for ln in lines)
    # Ray Train hears at checkpoints and the end only (each report can wait for the controller's 2 s
    # poll); MLflow gets every log step, live, as they happen
    assert [r["step"] for r in session.reports] == [4, 8, 9]
    assert session.reports[0]["train/loss"] == dict(tracker.history("train/loss"))[4]
    assert [s for s, _ in tracker.history("train/loss")] == [2, 4, 6, 8, 9]
    # the progress cadence is not part of what the weights depend on
    other = load_job(REPO / "jobs" / "pretrain_rotation.yaml", tiny_pretrain_overrides(tiny_store, tmp_path, "rotation", **{
        "steps": 9, "checkpoint.every_steps": 4, "mlflow.log_every_steps": 2, "progress.every_steps": 0}))
    assert other.hash() == job.hash()
