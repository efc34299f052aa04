"""The few-shot comparison study as one job: does self-supervised pretraining beat scratch?

Grid (every dimension configurable): initialisation {scratch, position, rotation, context} x
transfer mode {decoder, all, multitask} (scratch has one mode, ``all``) x N labelled training
subjects x seeds (>= 5 training runs per cell by default), as in Bai et al., MICCAI 2019 (their
Table 1: 0.811 -> 0.852 mean Dice at 5 subjects, scratch -> anatomical position).

* **One split, computed once.** The test and validation subjects come from ``cohort.split`` (hash
  rule, ``datasets.splits``) or ``cohort.split.file``; they are written as ``splits.json`` and
  logged. Every pretraining run the study starts or reuses excludes them (``pretrained``): an
  encoder that saw one is never used. Pretraining may read another store (``pretrain_store``):
  pretrain on a large unlabelled or synthetic cohort, fine-tune and test on a labelled one.
* **Converged trials.** Each trial trains until its validation Dice stops improving (patience,
  with ``finetune.steps`` as the cap); steps-to-best and the validation curves of every trial
  (``validation_curves.png``) are reported, so "converges faster" and "ends higher" stay apart.
* **Scored on the source pixels** with partial labels honoured (``reference``, ``scoring``), with
  clinical endpoints and Bland-Altman plots.
* **Statistics with training runs as the unit** (``stats``): hierarchical bootstrap over seeds then
  test subjects, Holm-corrected p, failed trials counted and their influence flagged.
* Trials run in parallel as Ray tasks and return plain data; the DRIVER writes every MLflow record
  (one nested run per trial under one parent), because sqlite tolerates one writer. Finished
  trials are cached on disk (``trial_cache``): a rerun resumes.
* The champion is chosen on VALIDATION Dice (never on the test set) and registered as
  ``cardiossl-seg@champion`` (safetensors + JSON spec; no pickles).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cardiossl.datasets.splits import (
    REST, SplitError, apply_split_file, excluded_ids, held_out_split, load_split_file, split_cuts, subjects_hash,
    write_split_file,
)

from .. import tracking
from ..config import SCRATCH, BenchmarkJob, ConfigError, FinetuneJob, StudyRay, config_hash, load_job
from ..tracking import (
    default_artifact_location, mlflow_client, model_version, register_segmenter, save_segmenter, segmenter_from_state,
)
from ..runtime import init_ray
from .evaluate import collect_stacks
from .finetune import finetune
from .checks import preflight_study
from .init import resolve_init
from .pretrained import StudyError, ensure_pretrained, find_matching_pretrained, pretrain_identity  # noqa: F401
from .reference import reference_stacks
from .report import aggregate, convergence_summary, paired_markdown, results_markdown, rows_csv, write_report
from .samples import cohort_kind, labelled_subjects, load_samples
from .stats import champion_key, compare_to_scratch, method_name
from .trial_cache import TrialCache, trial_key


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


def study_split(job: BenchmarkJob, labelled: list[str]) -> dict:
    """The study's subjects, computed once: {"test", "val", "pool", "cuts", "seed"} of the labelled
    pool after ``cohort.subjects`` / ``cohort.exclude``, from ``cohort.split.file`` or the hash rule."""
    sp = job.cohort.split
    pool = [s for s in labelled if not job.cohort.subjects or s in set(job.cohort.subjects)]
    drop = excluded_ids(job.cohort.exclude, fold=sp.fold)
    pool = sorted(s for s in pool if s not in drop)
    try:
        if sp.file:
            spec = load_split_file(sp.file, fold=sp.fold)
            g = apply_split_file(pool, spec)
            if not g["test"] or not g["train"]:
                raise SplitError(f"cohort.split.file {sp.file} leaves {len(g['test'])} test and {len(g['train'])} "
                                 f"training subjects among the {len(pool)} labelled ones")
            return {"test": g["test"], "val": g["val"], "pool": g["train"], "cuts": spec.get("cuts"),
                    "seed": spec.get("seed")}
        parts = held_out_split(pool, test=sp.test, val=sp.val, seed=sp.seed)
        cuts = split_cuts(pool, {"test": sp.test, "val": sp.val, "pool": REST}, sp.seed)
    except SplitError as exc:
        raise StudyError(f"cohort.split: {exc}") from None
    return {**parts, "cuts": {"test": cuts["test"], "val": cuts["val"]}, "seed": sp.seed}


def write_study_split(path: Path, job: BenchmarkJob, split: dict) -> Path:
    """The study's split as a split file (``pool`` as ``train``), with the seed and cuts that pin it."""
    return write_split_file(path, {"test": split["test"], "val": split["val"], "train": split["pool"]},
                            seed=split["seed"], cuts=split["cuts"],
                            note=f"few-shot study {job.name}: labelled subjects of {job.cohort.store}")


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------
def _trial_task(job_dict: dict, init_weights, labelled: list[str], threads: int, held_out: dict,
                reference: dict | None) -> dict:
    """Body of one Ray task: fine-tune, evaluate, return plain data (never touches MLflow)."""
    import torch

    torch.set_num_threads(max(1, threads))
    job = FinetuneJob.model_validate(job_dict)
    t0 = time.time()
    res = finetune(job, init=init_weights, labelled=labelled, held_out=held_out, reference=reference)
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
        tags={"mlflow.parentRunId": parent_id, "cached": str(bool(out and out.get("cached"))).lower(),
              **tracking.lineage_tags("finetune-trial", init=init, mode=mode, n_train=n, seed=seed)},
    )
    rid = run.info.run_id
    params = [Param("init", init), Param("mode", mode), Param("n_train", str(n)), Param("seed", str(seed)),
              Param("steps_cap", str(job_dict["steps"])), Param("lr", str(job_dict["optim"]["lr"])),
              Param("patience", str(job_dict["validation"]["patience"])), Param("model", str(job_dict["init"]))]
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
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i : i + 1000], params=params if i == 0 else [])
    client.log_text(rid, rows_csv(out["per_subject"]), "per_subject.csv")
    client.log_text(rid, rows_csv(out["per_phase"]), "per_phase.csv")
    client.log_dict(rid, out["split"], "split.json")
    client.set_terminated(rid, "FINISHED")
    return rid


def _say_split(console, split: dict, n_labelled: int) -> None:
    console.print(f"[bold]split[/] {len(split['test'])} test + {len(split['val'])} validation subjects held out of "
                  f"{n_labelled} labelled ({len(split['pool'])} to draw training subjects from); subjects hash "
                  f"{subjects_hash(split['test'] + split['val'])}")


def run_study(job: BenchmarkJob, *, job_dir: Path | None = None, console=None) -> dict:
    """Run the whole study; returns {"parent_run_id", "files", "rows", "paired", "champion", ...}."""
    from rich.console import Console

    console = console or Console()
    uri = job.mlflow.tracking_uri
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(job.mlflow.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        job.mlflow.experiment, artifact_location=default_artifact_location(uri))

    cells = grid_cells(job)
    labelled = labelled_subjects(job.cohort.store)
    split = study_split(job, labelled)
    held = sorted(set(split["test"]) | set(split["val"]))
    console.print(f"[bold]study[/] {len(cells)} trials, {len(labelled)} labelled subjects in {job.cohort.store}")
    _say_split(console, split, len(labelled))

    # pretrained inits: resolved (or pretrained without the held-out subjects) once, on the driver
    refs: dict[str, str] = {}
    records: dict[str, dict | None] = {}
    for init in job.grid.inits:
        if init != SCRATCH:
            refs[init], records[init] = ensure_pretrained(job, init, held, job_dir, console)
            # the version an alias points at now: what the trials load and what the record names
            refs[init] = tracking.resolve_version(refs[init], job.mlflow.tracking_uri)

    parent = client.create_run(exp_id, run_name=job.mlflow.run_name or f"{job.name}-study-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags=tracking.lineage_tags(job.kind, config_hash=config_hash(job),
                                                          held_out_hash=subjects_hash(held)))
    pid = parent.info.run_id
    status = "FAILED"
    work = Path(tempfile.mkdtemp(prefix="cardiossl-study-"))
    try:
        split_file = write_study_split(work / "splits.json", job, split)
        client.log_artifact(pid, str(split_file), "split")
        client.log_text(pid, job.to_yaml(), "benchmark.yaml")
        client.log_dict(pid, {k: {"model": v, "subjects_hash": (records[k] or {}).get("subjects_hash"),
                                  "n_subjects_seen": len((records[k] or {}).get("seen", [])),
                                  "subject_list_logged": records[k] is not None,
                                  "held_out_seen": sorted(set((records[k] or {}).get("seen", [])) & set(held))}
                              for k, v in refs.items()}, "pretrained_models.json")
        for k, rec in records.items():
            if rec is not None:
                client.log_dict(pid, rec, f"pretrain_subjects/{k}.json")
        client.log_batch(pid, params=[_param("cells", len(cells)), _param("inits", ",".join(job.grid.inits)),
                                      _param("modes", ",".join(job.grid.modes)),
                                      _param("n_train", ",".join(map(str, job.grid.n_train))),
                                      _param("seeds", ",".join(map(str, job.grid.seeds))),
                                      _param("labelled_subjects", len(labelled)),
                                      _param("test_subjects", len(split["test"])),
                                      _param("val_subjects", len(split["val"])),
                                      _param("pretrain_store", job.pretrain_store or job.cohort.store)])

        trials, failures, champion = _run_trials(job, cells, refs, labelled, split, client, exp_id, pid, console)
        local_files, rows, paired = _report(job, trials, client, pid, work)
        champion = _register_champion(client, job, pid, champion, str(work))
        if failures:
            client.log_dict(pid, [{"cell": list(map(str, f["cell"])), "error": f["error"], "run_id": f["run_id"]}
                                  for f in failures], "failures.json")
        status = "FINISHED"
        print(convergence_summary(rows, _cap(job), job.stats.failure_dice), flush=True)
        print(results_markdown(rows, job.stats.failure_dice), flush=True)  # plain print: never re-wrapped
        if paired:
            print(paired_markdown(paired, job.stats.confidence), flush=True)
        return {"parent_run_id": pid, "files": {k: str(v) for k, v in local_files.items()}, "rows": rows,
                "paired": paired, "champion": champion, "failures": failures, "trials": trials, "split": split,
                "pretrained": refs}
    finally:
        client.set_terminated(pid, status)
        shutil.rmtree(work, ignore_errors=True)


def _run_trials(job, cells, refs, labelled, split, client, exp_id, pid, console):
    """Every cell: from the cache, or as a Ray task; each logged as it finishes. Returns (trials,
    failures, best trial with its weights)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    held = {"test": split["test"], "val": split["val"]}
    cache_dir = job.cache_dir or (str(Path(job.output_dir) / "trials") if job.output_dir else None)
    cache = TrialCache(cache_dir) if cache_dir else None
    jobs, keys = {}, {}
    threads = max(1, int(job.ray.cpus_per_trial))
    idents = {init: _run_of(ref, job.mlflow.tracking_uri) for init, ref in refs.items()}
    for cell in cells:
        tj = job.trial_job(*cell).model_dump(mode="json")
        if cell[0] != SCRATCH:
            tj["init"] = refs[cell[0]]
        tj["threads"] = threads
        jobs[cell] = tj
        keys[cell] = trial_key(tj, held, split["test"] + split["val"] + split["pool"], idents.get(cell[0], ""))
    done_now = {c: cache.load(keys[c]) for c in cells} if cache else {}
    done_now = {c: o for c, o in done_now.items() if o is not None}
    todo = [c for c in cells if c not in done_now]
    if done_now:
        console.print(f"[green]resuming[/] {len(done_now)} of {len(cells)} trials from {cache_dir}")

    trials, failures = [], []
    best, best_key = None, None

    def finish(cell, out, err):
        nonlocal best, best_key
        rid = _log_trial(client, exp_id, pid, cell, jobs[cell], out, err)
        if out is None:
            failures.append({"cell": cell, "error": err, "run_id": rid})
            return f"[red]failed[/] {cell}"
        init, mode, n, seed = cell
        trial = {"init": init, "mode": mode, "n_train": n, "seed": seed, "run_id": rid,
                 "n_train_subjects": out["metrics"]["n_train_subjects"], "metrics": out["metrics"],
                 "per_subject": out["per_subject"], "history": out["history"]}
        trials.append(trial)
        if best_key is None or champion_key(trial) > best_key:
            best_key, best = champion_key(trial), {**trial, "spec": out["spec"], "state_dict": out["state_dict"]}
        m = out["metrics"]
        return (f"{method_name(init, mode)} N={n} s={seed}: Dice {m['test_dice_mean']:.3f} "
                f"(best step {int(m['best_step'])}{', cached' if out.get('cached') else ''})")

    with Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=False) as prog:
        task = prog.add_task("", total=len(cells))
        for cell, out in done_now.items():
            prog.update(task, advance=1, description=finish(cell, out, None))
        if todo:
            ray = _connect_ray(job.ray)
            inits = {SCRATCH: None}
            for init, ref in refs.items():
                inits[init] = ray.put(resolve_init(ref, job.mlflow.tracking_uri))
            test_samples = load_samples(job.cohort.store, split["test"], phases=("ed", "es"))
            ref_ref = ray.put(reference_stacks(job.cohort.store, collect_stacks(test_samples)))
            remote = ray.remote(_trial_task).options(
                num_cpus=job.ray.cpus_per_trial, num_gpus=job.ray.gpus_per_trial, max_retries=job.ray.max_retries)
            labelled_ref, held_ref = ray.put(labelled), ray.put(held)
            pending = {remote.remote(jobs[c], inits[c[0]], labelled_ref, threads, held_ref, ref_ref): c for c in todo}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready[0])
                try:
                    out, err = ray.get(ready[0]), None
                except Exception as exc:  # one failed trial is reported, the study goes on
                    out, err = None, f"{type(exc).__name__}: {exc}"
                if out is not None and cache is not None:
                    cache.save(keys[cell], out)
                prog.update(task, advance=1, description=finish(cell, out, err))
    if not trials:
        raise StudyError(f"every trial failed; first error: {failures[0]['error'] if failures else '?'}")
    return trials, failures, best


def _report(job: BenchmarkJob, trials: list[dict], client, pid: str, work: Path):
    """Tables and figures into the parent run's ``report/`` (and ``output_dir``)."""
    files = write_report(trials, work / "report", job.stats, title=f"{job.name}: few-shot Dice", cap=_cap(job))
    for f in files.values():
        client.log_artifact(pid, str(f), "report")
    rows = aggregate(trials, job.stats.failure_dice)
    paired = compare_to_scratch(trials, n_boot=job.stats.n_boot, confidence=job.stats.confidence, seed=job.stats.seed,
                                failure_dice=job.stats.failure_dice, tie_tolerance=job.stats.tie_tolerance)
    local = dict(files)
    if job.output_dir:
        out_dir = Path(job.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, f in files.items():
            shutil.copy2(f, out_dir / f.name)
            local[k] = out_dir / f.name
        shutil.copy2(work / "splits.json", out_dir / "splits.json")
        local["split"] = out_dir / "splits.json"
    for r in rows:
        tag = f"{r['method'].replace('/', '_')}_N{r['n_train']}"
        client.log_metric(pid, f"dice_mean.{tag}", r["dice_mean_mean"])
    return local, rows, paired


def _run_of(ref: str, tracking_uri: str) -> str:
    """The MLflow run behind a registered model reference (the reference itself otherwise)."""
    if ref.startswith("models:/"):
        try:
            return str(model_version(ref, tracking_uri).run_id)
        except Exception:
            return ref
    return ref


def _cap(job: BenchmarkJob) -> int:
    return int(job.finetune.get("steps", FinetuneJob.model_fields["steps"].default))


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
    ap.add_argument("--write-split", metavar="PATH", default=None,
                    help="only write the study's test / validation / pool split (splits.json) and exit: pretraining "
                    "submitted separately excludes it with --set cohort.exclude=PATH, the study reads it with "
                    "--set cohort.split.file=PATH")
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
        if a.write_split:  # only the held-out subjects: the grid's N need not fit yet
            split = study_split(job, labelled_subjects(job.cohort.store))
            path = write_study_split(Path(a.write_split).resolve(), job, split)
            print(f"split: {len(split['test'])} test, {len(split['val'])} validation, {len(split['pool'])} pool -> {path}")
            return 0
        preflight_study(job)  # before any run exists: a study that cannot run leaves none
        out = run_study(job, job_dir=Path(a.job).resolve().parent)
    except (StudyError, ConfigError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"parent run: {out['parent_run_id']}")
    for k, v in out["files"].items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
