"""The comparison study: aggregation, tables, plot and paired statistics (no Ray), and a tiny grid
end to end on a real Ray cluster with MLflow on sqlite (marked ``ray``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cardiossl.platform.config import ConfigError, load_job_dict
from cardiossl.platform.config import BenchmarkJob
from cardiossl.platform.fewshot.evaluate import metric_names
from cardiossl.platform.fewshot.report import aggregate, plot_dice_vs_n, results_markdown, write_report
from cardiossl.platform.fewshot.stats import champion_key, paired_vs_scratch
from cardiossl.platform.fewshot.study import grid_cells

REPO = Path(__file__).resolve().parents[3]


def _trial(init, mode, n, seed, dice_by_subject: dict[str, float], val=0.5, n_subjects=None) -> dict:
    m = {f"test_{k}": 0.0 for k in metric_names()}
    m["test_dice_mean"] = float(np.mean(list(dice_by_subject.values())))
    m["test_dice_lv_cavity"] = m["test_dice_mean"]
    m["test_hd95_mean"] = 10.0 - 5 * m["test_dice_mean"]
    m["val_dice_best"] = val
    return {"init": init, "mode": mode, "n_train": n, "seed": seed,
            "n_train_subjects": n if n != "all" else (n_subjects or 9), "metrics": m,
            "per_subject": [{"subject_id": s, "dice_mean": d, "hd95_mean": 1.0} for s, d in dice_by_subject.items()]}


def _trials() -> list[dict]:
    subs = ["a", "b", "c", "d"]
    out = []
    for seed in (0, 1, 2):
        for n in (1, 5):
            base = {s: 0.6 + 0.05 * i + 0.01 * seed + 0.02 * n for i, s in enumerate(subs)}
            out.append(_trial("scratch", "all", n, seed, base))
            out.append(_trial("position", "all", n, seed, {s: v + 0.04 for s, v in base.items()}, val=0.7 + 0.01 * n))
            out.append(_trial("position", "decoder", n, seed, {s: v - 0.01 * (i % 2) for i, (s, v) in enumerate(base.items())}))
    return out


def test_aggregate_means_and_stds_over_seeds():
    rows = aggregate(_trials())
    methods = [(r["method"], r["n_train"]) for r in rows]
    assert methods[:2] == [("scratch", 1), ("scratch", 5)]  # scratch first, N ascending
    r = next(r for r in rows if r["method"] == "position/all" and r["n_train"] == 5)
    per_seed = [np.mean([0.6 + 0.05 * i + 0.01 * s + 0.1 + 0.04 for i in range(4)]) for s in range(3)]
    assert r["dice_mean_mean"] == pytest.approx(np.mean(per_seed))
    assert r["dice_mean_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert r["n_seeds"] == 3 and r["n_subjects"] == 5


def test_markdown_and_csv_tables_hold_every_cell(tmp_path):
    md = results_markdown(aggregate(_trials()))
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 6 and "Dice mean" in lines[0]
    assert any(line.startswith("| position/all | 5 | 3 |") for line in lines)
    assert "±" in lines[2]
    files = write_report(_trials(), tmp_path / "rep")
    csv_lines = files["results_csv"].read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 6 and "dice_mean_mean" in csv_lines[0]
    assert len(files["per_subject_csv"].read_text().strip().splitlines()) == 1 + 18 * 4
    assert files["plot"].stat().st_size > 5000
    assert "position/all" in files["paired_md"].read_text()


def test_plot_is_a_png(tmp_path):
    p = plot_dice_vs_n(aggregate(_trials()), tmp_path / "p.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_differences_are_paired_by_seed_and_subject():
    rows = paired_vs_scratch(_trials(), n_boot=2000, seed=0)
    by = {(r["method"], r["n_train"]): r for r in rows}
    assert set(by) == {("position/all", 1), ("position/all", 5), ("position/decoder", 1), ("position/decoder", 5)}
    r = by[("position/all", 5)]
    # every pair improves by exactly 0.04: the CI collapses onto it, the method always wins
    assert r["n_pairs"] == 12 and r["n_seeds"] == 3
    assert r["mean_diff"] == pytest.approx(0.04)
    assert r["ci_low"] == pytest.approx(0.04) and r["ci_high"] == pytest.approx(0.04)
    assert r["win_rate"] == 1.0 and r["wilcoxon_p"] < 0.01
    d = by[("position/decoder", 1)]
    assert d["mean_diff"] == pytest.approx(-0.005)
    assert d["ci_low"] <= -0.005 <= d["ci_high"] and d["ci_high"] <= 0.0
    assert d["win_rate"] == 0.0


def test_paired_statistics_against_a_slow_reference():
    rng = np.random.default_rng(3)
    subs = [f"s{i}" for i in range(8)]
    trials = []
    truth = []
    for seed in range(3):
        base = {s: float(rng.uniform(0.5, 0.9)) for s in subs}
        delta = {s: float(rng.normal(0.02, 0.03)) for s in subs}
        truth += list(delta.values())
        trials.append(_trial("scratch", "all", 2, seed, base))
        trials.append(_trial("rotation", "all", 2, seed, {s: base[s] + delta[s] for s in subs}))
    (r,) = paired_vs_scratch(trials, n_boot=4000, seed=1)
    from scipy.stats import wilcoxon

    assert r["mean_diff"] == pytest.approx(np.mean(truth))
    assert r["wilcoxon_p"] == pytest.approx(wilcoxon(truth).pvalue, rel=1e-6)
    se = np.std(truth, ddof=1) / math.sqrt(len(truth))
    assert r["ci_low"] == pytest.approx(np.mean(truth) - 1.96 * se, abs=0.6 * se)
    assert r["ci_high"] == pytest.approx(np.mean(truth) + 1.96 * se, abs=0.6 * se)


def test_champion_is_chosen_on_validation_not_test():
    trials = _trials()
    trials.append(_trial("scratch", "all", 5, 9, {"a": 0.99}, val=0.1))  # best test, worst validation
    best = max(trials, key=champion_key)
    assert best["metrics"]["val_dice_best"] == pytest.approx(0.75) and best["init"] == "position"


def _bench(tmp_path, **over) -> BenchmarkJob:
    data = {
        "kind": "benchmark", "name": "b",
        "cohort": {"store": str(tmp_path / "c.zarr"), "split": {"test": 2, "val": 1}},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"},
        "grid": {"inits": ["scratch", "position"], "modes": ["decoder", "all"], "n_train": [1, 2, "all"],
                 "seeds": [0, 1]},
        "pretrain": {"position": {"model": "models:/enc@latest"}},
        "finetune": {"steps": 3, "image_size": 64},
    }
    data.update(over)
    return load_job_dict(data)


def test_grid_runs_scratch_once_per_cell(tmp_path):
    cells = grid_cells(_bench(tmp_path))
    assert len(cells) == 3 * 2 + 2 * 3 * 2
    assert {c[1] for c in cells if c[0] == "scratch"} == {"all"}


def test_benchmark_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="finetune.steps"):
        _bench(tmp_path, finetune={"steps": 0})
    with pytest.raises(ConfigError, match="finetune.mode: set by the study"):
        _bench(tmp_path, finetune={"mode": "all"})
    with pytest.raises(ConfigError, match="pretrain.rotation"):
        _bench(tmp_path, grid={"inits": ["scratch", "rotation"]})
    with pytest.raises(ConfigError, match="grid.n_train"):
        _bench(tmp_path, grid={"n_train": [0]})


def test_shipped_benchmark_yaml_validates(monkeypatch, tmp_path):
    from cardiossl.platform.config import load_job

    monkeypatch.setenv("CARDIOSSL_HOME", str(tmp_path))
    job = load_job(REPO / "jobs" / "benchmark_fewshot.yaml")
    assert isinstance(job, BenchmarkJob)
    assert set(job.grid.inits) == {"scratch", "position", "rotation", "context"}
    assert job.grid.n_train == [1, 2, 5, 10, 20, "all"] and job.grid.seeds == [0, 1, 2]
    fin = load_job(REPO / "jobs" / "finetune_fewshot.yaml")
    assert fin.kind == "finetune"


# ---------------------------------------------------------------------------------------------
# end to end on a real cluster
# ---------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_tiny_study_end_to_end_on_ray(ray_cluster, tiny_store, tmp_path):
    """Real pretraining (jobs/pretrain_position.yaml shrunk), fine-tuning trials as Ray tasks on the
    cluster, nested MLflow runs written by the driver, report, champion registered and loadable."""
    import ray
    from conftest import tiny_pretrain_overrides
    from mlflow import MlflowClient

    from cardiossl.platform.config import load_job
    from cardiossl.platform.fewshot.predict import load_segmenter
    from cardiossl.platform.fewshot.study import find_matching_pretrained, run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = tiny_pretrain_overrides(tiny_store, tmp_path)
    job = load_job_dict({
        "kind": "benchmark", "name": "tiny",
        "cohort": {"store": str(tiny_store), "split": {"test": 2, "val": 1, "seed": 0}},
        "mlflow": {"tracking_uri": uri, "experiment": "fewshot-test"},
        "checkpoint": {"storage_path": str(tmp_path / "ray_results")},
        "grid": {"inits": ["scratch", "position"], "modes": ["decoder"], "n_train": [1, 2], "seeds": [0, 1]},
        "pretrain": {"position": {"job": str(REPO / "jobs" / "pretrain_position.yaml"), "set": sets}},
        "finetune": {"steps": 2, "batch_size": 4, "image_size": 32, "validation": {"every_steps": 1},
                     "augment": {"enabled": False}},
        "ray": {"address": ray_cluster.gcs_address, "cpus_per_trial": 1},
        "stats": {"n_boot": 200},
        "output_dir": str(tmp_path / "report"),
    })
    try:
        out = run_study(job, job_dir=REPO / "jobs")
    finally:
        ray.shutdown()
    assert not out["failures"]
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("fewshot-test")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{out['parent_run_id']}'")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert all("test_dice_mean" in r.data.metrics for r in children)
    arts = {a.path for a in client.list_artifacts(out["parent_run_id"], "report")}
    assert {"report/results.csv", "report/results.md", "report/dice_vs_n.png", "report/paired_vs_scratch.csv"} <= arts
    assert (tmp_path / "report" / "results.md").read_text().count("\n") == 2 + 4
    assert {(r["method"], r["n_train"]) for r in out["paired"]} == {("position/decoder", 1), ("position/decoder", 2)}
    # the champion is registered and loads back without pickles
    model, spec = load_segmenter("models:/cardiossl-seg@champion", tracking_uri=uri)
    assert spec["image_size"] == 32 and out["champion"]["version"] == "1"
    # pretraining ran once; the same config on the same cohort now resolves to that model
    pjob = load_job(REPO / "jobs" / "pretrain_position.yaml", sets + [f"checkpoint.storage_path={tmp_path}/ray_results"])
    ref = find_matching_pretrained(pjob)
    assert ref == "models:/cardiossl-position-encoder/1"
    assert load_job(REPO / "jobs" / "pretrain_position.yaml", sets + ["steps=9"]).hash() != pjob.hash()
