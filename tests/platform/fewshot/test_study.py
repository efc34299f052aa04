"""The comparison study: aggregation, tables, figures and statistics with training runs as the unit
(no Ray), and a tiny grid end to end on a real Ray cluster with MLflow on sqlite (marked ``ray``):
its pretraining never sees a test or validation subject, its trials resume from the cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cardiossl.platform.config import ConfigError, load_job_dict
from cardiossl.platform.config import BenchmarkJob
from cardiossl.platform.fewshot.evaluate import metric_names
from cardiossl.platform.fewshot.figures import plot_dice_vs_n
from cardiossl.platform.fewshot.report import aggregate, paired_markdown, results_markdown, write_report
from cardiossl.platform.fewshot.stats import (
    champion_key, compare_to_scratch, flat_bootstrap, hierarchical_bootstrap, holm,
)
from cardiossl.platform.fewshot.study import grid_cells

REPO = Path(__file__).resolve().parents[3]


def _trial(init, mode, n, seed, dice_by_subject: dict[str, float], val=0.5, n_subjects=None, best_step=100) -> dict:
    m = {f"test_{k}": 0.0 for k in metric_names()}
    m["test_dice_mean"] = float(np.mean(list(dice_by_subject.values())))
    m["test_dice_lv_cavity"] = m["test_dice_mean"]
    m["test_hd95_mean"] = 10.0 - 5 * m["test_dice_mean"]
    m["test_lv_edv_ml_mae"], m["test_lv_edv_ml_bias"] = 5.0, -2.0
    m["val_dice_best"], m["best_step"], m["converged"] = val, float(best_step), 1.0
    history = [{"step": s, "val_dice": min(val, s / best_step * val)} for s in range(50, best_step + 150, 50)]
    return {"init": init, "mode": mode, "n_train": n, "seed": seed,
            "n_train_subjects": n if n != "all" else (n_subjects or 9), "metrics": m, "history": history,
            "per_subject": [{"subject_id": s, "dice_mean": d, "hd95_mean": 1.0, "lv_edv_ml_pred": 100 + 10 * d,
                             "lv_edv_ml_ref": 100.0} for s, d in dice_by_subject.items()]}


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
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(lines) == 2 + 6 and head[:4] == ["method", "N", "seeds", "failed (Dice < 0.5)"]
    assert all(len(line.strip("|").split("|")) == len(head) for line in lines)  # every row fills every column
    assert any(line.startswith("| position/all | 5 | 3 | 0 |") for line in lines)
    assert "±" in lines[2] and "Dice median" in lines[0]
    files = write_report(_trials(), tmp_path / "rep")
    csv_lines = files["results_csv"].read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 6 and "dice_mean_mean" in csv_lines[0] and "dice_mean_median" in csv_lines[0]
    assert len(files["per_subject_csv"].read_text().strip().splitlines()) == 1 + 18 * 4
    for k in ("plot", "validation_curves", "bland_altman_N1", "bland_altman_N5"):
        assert files[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files[k].stat().st_size > 5000
    assert "position/all" in files["paired_vs_scratch_md"].read_text()
    for name in ("convergence_md", "clinical_md", "regions_md"):
        text = files[name].read_text().strip().splitlines()
        width = len(text[0].strip("|").split("|"))
        assert len(text) == 2 + 6 and all(len(x.strip("|").split("|")) == width for x in text)
    assert "5.0 (-2.0)" in files["clinical_md"].read_text()


def test_plot_is_a_png(tmp_path):
    p = plot_dice_vs_n(aggregate(_trials()), tmp_path / "p.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_differences_are_paired_by_seed_and_subject_with_seeds_as_the_unit():
    rows = compare_to_scratch(_trials(), n_boot=2000, seed=0)
    by = {(r["method"], r["n_train"]): r for r in rows}
    assert set(by) == {("position/all", 1), ("position/all", 5), ("position/decoder", 1), ("position/decoder", 5)}
    r = by[("position/all", 5)]
    # every pair improves by exactly 0.04: the CI collapses onto it, every seed wins
    assert r["n_pairs"] == 12 and r["n_seeds"] == 3
    assert r["mean_diff"] == pytest.approx(0.04)
    assert r["ci_low"] == pytest.approx(0.04) and r["ci_high"] == pytest.approx(0.04)
    assert (r["seed_wins"], r["seed_ties"], r["seed_losses"]) == (3, 0, 0) and r["p_boot"] < 0.01
    d = by[("position/decoder", 1)]
    assert d["mean_diff"] == pytest.approx(-0.005)
    assert d["ci_low"] <= -0.005 <= d["ci_high"] and d["ci_high"] <= 0.0
    # -0.01 on half the subjects, 0 on the others: ties are ties, not losses
    assert (d["pair_wins"], d["pair_ties"], d["pair_losses"]) == (0, 6, 6)


def test_hierarchical_ci_is_wider_than_the_flat_one_when_one_seed_fails():
    """Two seeds x 10 subjects: with seed 0 scratch failed (every subject 0.6 worse), with seed 1
    the methods are level. The flat bootstrap treats the 20 pairs as independent and reports a
    tight interval that excludes 0; resampling the two training runs first shows the uncertainty."""
    subs = [f"s{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    trials = []
    for seed, gap in ((0, 0.6), (1, 0.0)):
        good = {s: float(0.9 + rng.normal(0, 0.01)) for s in subs}
        trials.append(_trial("position", "all", 5, seed, good))
        trials.append(_trial("scratch", "all", 5, seed, {s: v - gap + float(rng.normal(0, 0.01)) for s, v in good.items()}))
    (r,) = compare_to_scratch(trials, n_boot=4000, seed=1, failure_dice=0.5)
    assert r["mean_diff"] == pytest.approx(0.3, abs=0.01)
    flat_width, hier_width = r["flat_ci_high"] - r["flat_ci_low"], r["ci_high"] - r["ci_low"]
    assert r["flat_ci_low"] > 0.1  # the flat bootstrap "excludes 0"
    assert hier_width > 2 * flat_width and r["ci_low"] < 0.05
    assert r["failed_scratch"] == 1 and r["failed_method"] == 0
    assert r["clean_seeds"] == 1 and abs(r["clean_mean_diff"]) < 0.02
    groups = [np.full(10, 0.6), np.zeros(10)]
    g = np.random.default_rng(2)
    assert np.std(hierarchical_bootstrap(groups, 3000, g)) > 2 * np.std(flat_bootstrap(np.concatenate(groups), 3000, g))


def test_a_win_carried_by_failed_scratch_seeds_is_flagged():
    subs = [f"s{i}" for i in range(6)]
    trials = []
    for seed in range(5):
        good = {s: 0.9 + 0.001 * i for i, s in enumerate(subs)}
        scratch = {s: (0.1 if seed < 4 else v - 0.001) for s, v in good.items()}  # four failed scratch seeds
        trials += [_trial("position", "all", 2, seed, good), _trial("scratch", "all", 2, seed, scratch)]
        level = {s: v + 0.0005 for s, v in good.items()}
        trials += [_trial("position", "all", 5, seed, good), _trial("scratch", "all", 5, seed, level)]
    rows = {r["n_train"]: r for r in compare_to_scratch(trials, n_boot=3000)}
    assert rows[2]["p_holm"] < 0.05 and rows[2]["failed_scratch"] == 4
    assert rows[2]["note"] == "only through 4 failed scratch seed(s)"
    assert rows[5]["note"] == "level (within the tie tolerance)" and rows[5]["seed_ties"] == 5
    assert "only through 4 failed scratch seed(s)" in paired_markdown(list(rows.values()))
    assert "| scratch | 2 | 5 | 4 |" in results_markdown(aggregate(trials))


def test_holm_adjusts_step_down_and_keeps_nan():
    """Holm 1979 on a constructed family: sorted p 0.01, 0.02, 0.03, 0.2 with m = 4 -> 0.04,
    0.06, 0.06 (monotone), 0.2; a NaN (no comparison possible) is not part of the family."""
    adj = holm([0.03, 0.2, 0.01, float("nan"), 0.02])
    assert adj[2] == pytest.approx(0.04) and adj[4] == pytest.approx(0.06) and adj[0] == pytest.approx(0.06)
    assert adj[1] == pytest.approx(0.2) and math.isnan(adj[3])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


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
    assert job.grid.n_train == [1, 2, 5, 10, 20, "all"] and len(job.grid.seeds) >= 5
    fin = load_job(REPO / "jobs" / "finetune_fewshot.yaml")
    assert fin.kind == "finetune"


# ---------------------------------------------------------------------------------------------
# end to end on a real cluster
# ---------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_tiny_study_end_to_end_on_ray(ray_cluster, tiny_store, tmp_path):
    """Real pretraining (jobs/pretrain_position.yaml shrunk) WITHOUT the study's held-out subjects,
    fine-tuning trials as Ray tasks, nested MLflow runs written by the driver, report, champion
    registered and loadable; a rerun reuses the encoder and resumes every trial from the cache."""
    import json

    import ray
    from conftest import tiny_pretrain_overrides
    from mlflow import MlflowClient

    from cardiossl.platform.fewshot.predict import load_segmenter
    from cardiossl.platform.fewshot.pretrained import find_matching_pretrained, pretrain_job
    from cardiossl.platform.fewshot.study import run_study

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
        again = run_study(job, job_dir=REPO / "jobs")
    finally:
        ray.shutdown()
    assert not out["failures"]
    held = set(out["split"]["test"]) | set(out["split"]["val"])
    assert len(out["split"]["test"]) == 2 and len(out["split"]["val"]) == 1
    client = MlflowClient(uri, registry_uri=uri)

    # the pretraining run's logged subject lists hold no test or validation subject
    (pre_run,) = client.search_runs([client.get_experiment_by_name("cardiossl-pretrain").experiment_id])
    local = client.download_artifacts(pre_run.info.run_id, "cohort/subjects.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    assert logged["train"] and not (set(logged["train"]) | set(logged["val"]) | set(logged["seen"])) & held
    assert set(logged["seen"]) == set(logged["train"]) | set(logged["val"])
    mv = client.get_model_version("cardiossl-position-encoder", "1")
    assert mv.tags["subjects_hash"] == logged["subjects_hash"] == pre_run.data.tags["subjects_hash"]
    parent = out["parent_run_id"]
    split = json.loads(Path(client.download_artifacts(parent, "split/splits.json", str(tmp_path / "p"))).read_text())
    assert set(split["test"]) | set(split["val"]) == held and set(split["train"]) == set(out["split"]["pool"])
    models = json.loads(Path(client.download_artifacts(parent, "pretrained_models.json", str(tmp_path / "p"))).read_text())
    assert models["position"]["model"] == "models:/cardiossl-position-encoder/1"
    assert models["position"]["held_out_seen"] == [] and models["position"]["subject_list_logged"]

    exp = client.get_experiment_by_name("fewshot-test")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert all("test_dice_mean" in r.data.metrics and "best_step" in r.data.metrics for r in children)
    arts = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/results.csv", "report/results.md", "report/dice_vs_n.png", "report/paired_vs_scratch.csv",
            "report/validation_curves.png", "report/bland_altman_N1.png", "report/clinical.md",
            "report/convergence.md", "report/regions.md"} <= arts
    assert (tmp_path / "report" / "results.md").read_text().count("\n") == 2 + 4
    assert {(r["method"], r["n_train"]) for r in out["paired"]} == {("position/decoder", 1), ("position/decoder", 2)}
    assert all(t["metrics"]["test_on_source"] == 1.0 for t in out["trials"])  # scored on the source pixels
    # the champion is registered and loads back without pickles
    model, spec = load_segmenter("models:/cardiossl-seg@champion", tracking_uri=uri)
    assert spec["image_size"] == 32 and out["champion"]["version"] == "1"

    # the rerun pretrained nothing and ran no trial: encoder reused, every trial from the cache
    assert again["pretrained"] == out["pretrained"]
    assert len(client.search_model_versions("name = 'cardiossl-position-encoder'")) == 1
    again_children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{again['parent_run_id']}'")
    assert len(again_children) == 8 and all(r.data.tags["cached"] == "true" for r in again_children)
    by = {(t["init"], t["n_train"], t["seed"]): t["metrics"]["test_dice_mean"] for t in out["trials"]}
    assert {(t["init"], t["n_train"], t["seed"]): t["metrics"]["test_dice_mean"] for t in again["trials"]} == by
    pjob = pretrain_job(job, "position", held, REPO / "jobs")
    assert find_matching_pretrained(pjob, held) == "models:/cardiossl-position-encoder/1"
    # the same encoder is never reused for a study that tests on a subject it saw
    assert find_matching_pretrained(pjob, held | {logged["train"][0]}) is None


def test_write_split_pins_the_studys_held_out_subjects(tiny_store, tmp_path, capsys):
    """``cardiossl benchmark STUDY --write-split PATH`` writes the split the study computes (so a
    pretraining submitted beforehand can exclude it), and the study reads it back unchanged."""
    import json

    from cardiossl.platform.fewshot.samples import labelled_subjects
    from cardiossl.platform.fewshot.study import main, study_split

    out = tmp_path / "splits.json"
    sets = ["--set", f"cohort.store={tiny_store}", "--set", "cohort.split={test: 2, val: 1, seed: 0}",
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db", "--set", f"checkpoint.storage_path={tmp_path}"]
    assert main([str(REPO / "bench" / "fewshot_reduced.yaml"), *sets, "--write-split", str(out)]) == 0
    written = json.loads(out.read_text())
    job = load_job_dict({**_bench(tmp_path).model_dump(mode="json"),
                         "cohort": {"store": str(tiny_store), "split": {"test": 2, "val": 1, "seed": 0}}})
    computed = study_split(job, labelled_subjects(str(tiny_store)))
    assert written["test"] == computed["test"] and written["val"] == computed["val"]
    assert written["train"] == computed["pool"] and written["seed"] == 0 and set(written["cuts"]) == {"test", "val"}
    pinned = load_job_dict({**job.model_dump(mode="json"),
                            "cohort": {"store": str(tiny_store), "split": {"file": str(out)}}})
    again = study_split(pinned, labelled_subjects(str(tiny_store)))
    assert (again["test"], again["val"], again["pool"]) == (computed["test"], computed["val"], computed["pool"])
    assert "2 test, 1 validation" in capsys.readouterr().out


def test_a_named_encoder_that_saw_a_test_subject_is_refused(tmp_path):
    """``pretrain.position.model`` pointing at an encoder whose logged subjects include one of the
    study's test subjects stops the study before any trial, naming the subject."""
    from cardiossl.platform.fewshot.pretrained import StudyError, ensure_pretrained
    from cardiossl.platform.tracking import create_run, register_pretrained

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    rid = create_run(uri, "pre", "leaky")
    from cardiossl.platform.tracking import mlflow_client

    mlflow_client(uri).log_dict(rid, {"seen": ["a", "b", "t1"], "subjects_hash": "x"}, "cohort/subjects.json")
    register_pretrained(uri, rid, "enc", alias="current")
    job = _bench(tmp_path, mlflow={"tracking_uri": uri}, pretrain={"position": {"model": "models:/enc@current"}})
    with pytest.raises(StudyError, match="pretrained on 1 of the study's test/validation subjects \\(t1\\)"):
        ensure_pretrained(job, "position", ["t1", "t2"])
    ref, record = ensure_pretrained(job, "position", ["t2"])
    assert ref == "models:/enc/1" and record["seen"] == ["a", "b", "t1"]  # the alias pinned to its version
