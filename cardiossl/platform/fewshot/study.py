"""The few-shot comparison study as one job: does self-supervised pretraining beat scratch?

Grid (every dimension configurable): initialisation {scratch, position, rotation, context} x
transfer mode {decoder, all, multitask} (scratch has one mode, ``all``) x N labelled training
subjects {1, 2, 5, 10, 20, all} x seeds {0, 1, 2}, as in Bai et al., MICCAI 2019 (their Table 1:
0.811 -> 0.852 mean Dice at 5 subjects, scratch -> anatomical position).

* Pretraining runs once per pretext, and not at all when the Model Registry already holds a model
  pretrained with the same resolved config on the same cohort (matched by the config hash and the
  cohort fingerprint hash the pretraining run tags its model version with).
* Fine-tuning trials run in parallel as Ray tasks across the cluster. A task returns its metrics,
  per-subject rows and (only while it is the best so far) its weights; the DRIVER writes every
  MLflow record, one nested run per trial under one parent run, because sqlite tolerates one writer.
* Paired comparison: for one seed every method sees the same training and test subjects, so the
  difference to scratch is paired per (seed, test subject): a paired bootstrap CI of the mean
  difference (Efron & Tibshirani 1993) and a Wilcoxon signed-rank test.
* The champion is chosen on VALIDATION Dice (never on the test set) and registered as
  ``cardiossl-seg@champion`` (safetensors + JSON spec; no pickles).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import tracking
from ..config import SCRATCH, BenchmarkJob, ConfigError, FinetuneJob, StudyRay, config_hash, is_model_ref, load_job
from ..launch import launch
from ..launch import pretrain_identity as launch_identity
from ..runtime import init_ray
from ..tracking import default_artifact_location, mlflow_client, register_segmenter, save_segmenter, segmenter_from_state
from .finetune import finetune
from .checks import preflight_study
from .init import resolve_init
from .report import aggregate, paired_markdown, results_markdown, rows_csv, write_report
from .samples import cohort_kind, labelled_subjects
from .stats import champion_key, method_name, paired_vs_scratch


class StudyError(RuntimeError):
    """The study cannot continue (every trial failed, no pretrained model, ...)."""



def grid_cells(job: BenchmarkJob) -> list[tuple[str, str, Any, int]]:
    """(init, mode, n_train, seed) of every trial; scratch runs once per (N, seed), mode ``all``."""
    cells = []
    for init in job.grid.inits:
        modes = ["all"] if init == SCRATCH else job.grid.modes
        for mode in modes:
            for n in job.grid.n_train:
                for seed in job.grid.seeds:
                    cells.append((init, mode, n, seed))
    return cells





# ---------------------------------------------------------------------------------------------
# pretraining: reuse or run
# ---------------------------------------------------------------------------------------------
def ensure_pretrained(job: BenchmarkJob, init: str, job_dir: Path | None = None, console=None) -> str:
    """A model reference for ``init``: the given model, a registered version whose tags match the
    pretrain job's config hash and the cohort fingerprint, or a fresh pretraining run."""
    if is_model_ref(init):
        return init
    src = job.pretrain[init]
    if src.model is not None:
        return src.model
    path = Path(src.job)
    if not path.is_absolute() and job_dir is not None and (job_dir / path).exists():
        path = job_dir / path
    overrides = list(src.set) + [
        f"cohort.store={job.cohort.store}",
        f"mlflow.tracking_uri={job.mlflow.tracking_uri}",
    ]
    if job.checkpoint is not None:
        overrides.append(f"checkpoint.storage_path={job.checkpoint.storage_path}")
    pjob = load_job(path, overrides)
    if not pjob.mlflow.registered_model:
        raise StudyError(f"pretrain.{init}.job: {path} sets no mlflow.registered_model; the study loads by registry")
    found = find_matching_pretrained(pjob)
    if found:
        if console:
            console.print(f"[green]reusing[/] {found} for {init} (same config hash and cohort fingerprint)")
        return found
    if console:
        console.print(f"[yellow]pretraining[/] {init} from {path} (no registered model matches)")
    res = launch(pjob, address=job.ray.address)
    if not res.model_version:
        raise StudyError(f"pretraining {init} finished without registering a model")
    return f"models:/{pjob.mlflow.registered_model}/{res.model_version}"


def pretrain_identity(pjob) -> dict[str, str]:
    """The tags that make a registered pretrained model reusable: config hash (with the cohort's
    content) + cohort fingerprint, as ``launch`` writes them."""
    return launch_identity(pjob)


def find_matching_pretrained(pjob) -> str | None:
    """``models:/NAME/VERSION`` of the newest registered version pretrained with this exact config
    on this exact cohort (tags written by ``launch``), or None."""
    from mlflow.exceptions import MlflowException

    ident = pretrain_identity(pjob)
    name = pjob.mlflow.registered_model
    client = mlflow_client(pjob.mlflow.tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    ok = [v for v in versions if all((v.tags or {}).get(k) == val for k, val in ident.items())]
    if not ok:
        return None
    best = max(ok, key=lambda v: int(v.version))
    return f"models:/{name}/{best.version}"


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------
def _trial_task(job_dict: dict, init_weights, labelled: list[str], threads: int) -> dict:
    """Body of one Ray task: fine-tune, evaluate, return plain data (never touches MLflow)."""
    import torch

    torch.set_num_threads(max(1, threads))
    job = FinetuneJob.model_validate(job_dict)
    t0 = time.time()
    res = finetune(job, init=init_weights, labelled=labelled)
    return {
        "metrics": res.metrics, "per_subject": res.per_subject, "per_phase": res.per_phase,
        "split": res.split, "history": res.history, "spec": res.spec, "state_dict": res.state_dict,
        "started": t0, "finished": time.time(),
    }


def _connect_ray(cfg: StudyRay):
    import ray

    # the trials' runtime env carries CARDIOSSL_HOME as the pretraining workers' does
    init_ray(cfg.address, num_cpus=cfg.num_cpus, log_to_driver=False, say=lambda *a: None, local_only=True)
    return ray


def _log_trial(client, experiment_id: str, parent_id: str, cell: tuple, job_dict: dict, out: dict | None,
               error: str | None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    init, mode, n, seed = cell
    run = client.create_run(
        experiment_id, run_name=f"{method_name(init, mode).replace('/', '-')}-N{n}-seed{seed}",
        tags={"mlflow.parentRunId": parent_id,
              **tracking.lineage_tags("finetune-trial", init=init, mode=mode, n_train=n, seed=seed)},
    )
    rid = run.info.run_id
    params = [Param("init", init), Param("mode", mode), Param("n_train", str(n)), Param("seed", str(seed)),
              Param("steps", str(job_dict["steps"])), Param("lr", str(job_dict["optim"]["lr"]))]
    ts = int(time.time() * 1000)
    if out is None:
        client.log_batch(rid, params=params, tags=[RunTag("error", (error or "")[:4000])])
        client.set_terminated(rid, "FAILED")
        return rid
    metrics = [Metric(k, float(v), ts, 0) for k, v in out["metrics"].items() if np.isfinite(v)]
    for h in out["history"]:
        for k in ("val_dice", "seg_loss", "pretext_loss", "lr"):
            if k in h and np.isfinite(h[k]):
                metrics.append(Metric(k, float(h[k]), ts, int(h["step"])))
    client.log_batch(rid, metrics=metrics[:1000], params=params)
    if len(metrics) > 1000:
        for i in range(1000, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[i : i + 1000])
    client.log_text(rid, rows_csv(out["per_subject"]), "per_subject.csv")
    client.log_text(rid, rows_csv(out["per_phase"]), "per_phase.csv")
    client.log_dict(rid, out["split"], "split.json")
    client.set_terminated(rid, "FINISHED")
    return rid


def run_study(job: BenchmarkJob, *, job_dir: Path | None = None, console=None) -> dict:
    """Run the whole study; returns {"parent_run_id", "files", "rows", "paired", "champion"}."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console()
    client = mlflow_client(job.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(job.mlflow.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        job.mlflow.experiment, artifact_location=default_artifact_location(job.mlflow.tracking_uri))

    cells = grid_cells(job)
    labelled = labelled_subjects(job.cohort.store)
    console.print(f"[bold]study[/] {len(cells)} trials, {len(labelled)} labelled subjects in {job.cohort.store}")

    # pretrained inits, resolved once on the driver ------------------------------------------------
    refs: dict[str, str] = {}
    for init in job.grid.inits:
        if init != SCRATCH:
            # the version an alias points at now: what the trials load and what the record names
            refs[init] = tracking.resolve_version(ensure_pretrained(job, init, job_dir, console),
                                                  job.mlflow.tracking_uri)

    parent = client.create_run(exp_id, run_name=job.mlflow.run_name or f"{job.name}-study-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags=tracking.lineage_tags(job.kind, config_hash=config_hash(job)))
    pid = parent.info.run_id
    client.log_text(pid, job.to_yaml(), "benchmark.yaml")
    client.log_dict(pid, {k: v for k, v in refs.items()}, "pretrained_models.json")
    client.log_batch(pid, params=[_param("cells", len(cells)), _param("inits", ",".join(job.grid.inits)),
                                  _param("modes", ",".join(job.grid.modes)),
                                  _param("n_train", ",".join(map(str, job.grid.n_train))),
                                  _param("seeds", ",".join(map(str, job.grid.seeds))),
                                  _param("labelled_subjects", len(labelled))])
    status = "FAILED"
    try:
        ray = _connect_ray(job.ray)
        inits = {SCRATCH: None}
        for init, ref in refs.items():
            inits[init] = ray.put(resolve_init(ref, job.mlflow.tracking_uri))
        remote = ray.remote(_trial_task).options(
            num_cpus=job.ray.cpus_per_trial, num_gpus=job.ray.gpus_per_trial, max_retries=job.ray.max_retries)
        threads = max(1, int(job.ray.cpus_per_trial))
        labelled_ref = ray.put(labelled)
        pending = {}
        jobs = {}
        for cell in cells:
            tj = job.trial_job(*cell).model_dump(mode="json")
            if cell[0] != SCRATCH:
                tj["init"] = refs[cell[0]]
            tj["threads"] = threads
            jobs[cell] = tj
            pending[remote.remote(tj, inits[cell[0]], labelled_ref, threads)] = cell

        trials, failures = [], []
        best, best_key = None, None
        with Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=console, transient=False) as prog:
            task = prog.add_task("", total=len(cells))
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                try:
                    out = ray.get(done[0])
                    err = None
                except Exception as exc:  # one failed trial is reported, the study goes on
                    out, err = None, f"{type(exc).__name__}: {exc}"
                rid = _log_trial(client, exp_id, pid, cell, jobs[cell], out, err)
                if out is None:
                    failures.append({"cell": cell, "error": err, "run_id": rid})
                    prog.update(task, advance=1, description=f"[red]failed[/] {cell}")
                    continue
                init, mode, n, seed = cell
                trial = {"init": init, "mode": mode, "n_train": n, "seed": seed, "run_id": rid,
                         "n_train_subjects": out["metrics"]["n_train_subjects"], "metrics": out["metrics"],
                         "per_subject": out["per_subject"]}
                trials.append(trial)
                if best_key is None or champion_key(trial) > best_key:
                    best_key, best = champion_key(trial), {**trial, "spec": out["spec"], "state_dict": out["state_dict"]}
                prog.update(task, advance=1,
                            description=f"{method_name(init, mode)} N={n} s={seed}: Dice {out['metrics']['test_dice_mean']:.3f}")
        if not trials:
            raise StudyError(f"every trial failed; first error: {failures[0]['error'] if failures else '?'}")

        with tempfile.TemporaryDirectory() as tmp:
            files = write_report(trials, Path(tmp) / "report", job.stats, title=f"{job.name}: few-shot Dice")
            for f in files.values():
                client.log_artifact(pid, str(f), "report")
            rows = aggregate(trials)
            paired = paired_vs_scratch(trials, n_boot=job.stats.n_boot, confidence=job.stats.confidence,
                                       seed=job.stats.seed)
            local_files = files
            if job.output_dir:
                import shutil

                out_dir = Path(job.output_dir)
                out_dir.mkdir(parents=True, exist_ok=True)
                local_files = {}
                for k, f in files.items():
                    shutil.copy2(f, out_dir / f.name)
                    local_files[k] = out_dir / f.name
            for r in rows:
                tag = f"{r['method'].replace('/', '_')}_N{r['n_train']}"
                client.log_metric(pid, f"dice_mean.{tag}", r["dice_mean_mean"])
            champion = _register_champion(client, job, pid, best, tmp)
            if failures:
                client.log_dict(pid, [{"cell": list(map(str, f["cell"])), "error": f["error"], "run_id": f["run_id"]}
                                      for f in failures], "failures.json")
            status = "FINISHED"
        print(results_markdown(rows), flush=True)  # plain print: tables must not be re-wrapped
        if paired:
            print(paired_markdown(paired, job.stats.confidence), flush=True)
        return {"parent_run_id": pid, "files": {k: str(v) for k, v in local_files.items()}, "rows": rows,
                "paired": paired, "champion": champion, "failures": failures, "trials": trials}
    finally:
        client.set_terminated(pid, status)


def _param(k: str, v) -> Any:
    from mlflow.entities import Param

    return Param(k, str(v)[:6000])


def _register_champion(client, job: BenchmarkJob, parent_id: str, best: dict, tmp: str) -> dict:
    """Log the champion's weights + spec under the parent run and register them with the alias."""
    model = segmenter_from_state(best["spec"], best["state_dict"])
    training = {"cohort_store": job.cohort.store, "cohort_kind": cohort_kind(job.cohort.store),
                "init": best["init"], "mode": best["mode"], "n_train": best["n_train"], "seed": best["seed"],
                "val_dice": best["metrics"].get("val_dice_best"), "test_dice_mean": best["metrics"]["test_dice_mean"],
                "run_id": best["run_id"], "study_run_id": parent_id}
    spec = {**best["spec"], "val_dice": best["metrics"].get("val_dice_best"),
            "test_dice_mean": best["metrics"]["test_dice_mean"], "cohort_store": job.cohort.store,
            "training": training}
    folder = save_segmenter(model, spec, Path(tmp) / "segmenter")
    client.log_artifacts(parent_id, str(folder), "segmenter")
    info = {"run_id": best["run_id"], "method": method_name(best["init"], best["mode"]),
            "n_train": best["n_train"], "seed": best["seed"], "val_dice": best["metrics"].get("val_dice_best"),
            "test_dice_mean": best["metrics"]["test_dice_mean"]}
    client.log_dict(parent_id, info, "champion.json")
    if not job.champion.enabled:
        return info
    version = register_segmenter(job.mlflow.tracking_uri, parent_id, "segmenter", job.champion.name, job.champion.alias,
                                 tags=tracking.lineage_tags(job.kind, config_hash=config_hash(job), **info))
    info["model_uri"] = f"models:/{job.champion.name}@{job.champion.alias}"
    info["version"] = version
    return info


def main(argv: list[str] | None = None) -> int:
    """``python -m cardiossl.platform.fewshot.study JOB.yaml [--set k=v ...]`` (executable-YAML entry)."""
    import argparse

    ap = argparse.ArgumentParser(prog="cardiossl-benchmark")
    ap.add_argument("job")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)
    try:
        job = load_job(a.job, a.overrides)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    if not isinstance(job, BenchmarkJob):
        print(f"error: {a.job} is a {job.kind!r} job; `benchmark` runs kind: benchmark")
        return 2
    try:
        preflight_study(job)  # before any run exists: a study that cannot run leaves none
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    out = run_study(job, job_dir=Path(a.job).resolve().parent)
    print(f"parent run: {out['parent_run_id']}")
    for k, v in out["files"].items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
