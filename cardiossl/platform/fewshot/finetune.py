"""Few-shot fine-tuning of short-axis segmentation (LV cavity, LV myocardium, RV cavity).

The evaluation protocol of Bai et al., "Self-supervised learning for cardiac MR image segmentation
by anatomical position prediction" (MICCAI 2019): a fixed test set of subjects, a fixed validation
set for model selection taken from the training side, and N labelled training subjects drawn by
seed from what is left. For one seed the draws are nested (the N=2 set contains the N=1 set), so a
curve over N shows the effect of N, not of which subjects happened to be drawn.

Initialisation is random (``scratch``) or a pretrained backbone from the Model Registry
(``models:/NAME@ALIAS``) or an MLflow run id, loaded by ``cardiossl.platform.tracking.load_pretrained``.
Transfer modes, as in the paper:

* ``decoder``: the pretrained encoder is frozen (weights AND batch-norm statistics: it runs in
  eval mode), the decoder and a new segmentation head are trained;
* ``all``: every weight is fine-tuned;
* ``multitask``: as ``all``, plus the pretext's own loss on unlabelled slices of the training-side
  subjects, weighted by ``multitask.weight`` (the pretext keeps shaping the features while the
  few labels pull them towards segmentation).

Loss: cross-entropy + soft Dice (MONAI ``DiceCELoss``, Dice over the batch, background excluded).
Cross-entropy gives dense, well-scaled gradients from the first step; Dice counters the class
imbalance (the myocardium is a thin ring in a mostly-background image) and optimises the overlap
that is reported. This is the default of nnU-Net (Isensee et al., Nat Methods 2021), which found it
robust across segmentation tasks.

Training length is in optimiser steps, not epochs, so that N=1 and N=all get the same cap; each
trial stops once its validation Dice has stopped improving (``convergence.EarlyStopping``), so every
method is compared converged. Subjects that annotate only some classes (Sunnybrook: no RV) train
with the marginal loss (``losses``) and are scored on their annotated classes only. Test subjects
are scored on their source pixels (``reference``, ``scoring``). The loop is plain torch and runs in-process (the study runs it inside Ray tasks); it returns the
metrics and the best model instead of writing to MLflow, so only the driver talks to the tracking
database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiossl.datasets.splits import SplitError

from .. import tracking
from ..config import ConfigError, FinetuneError, FinetuneJob, PretextSpec, SegLossConfig, flatten, load_job
from ..tracking import N_CLASSES, build_segmenter, register_segmenter, save_segmenter, segmenter_from_state
from ..training import Augment, SampleTransform, build_optimizer, build_scheduler, crop_or_pad
from .checks import cohort_fewshot_split, preflight_finetune
from .convergence import EarlyStopping, late_gain, steps_to_reach
from .evaluate import collect_stacks, nanmean, predict_labels, segmentation_dice
from .init import InitWeights, resolve_init
from .losses import marginal_dice_ce
from .reference import ALL_CLASSES, label_classes, reference_stacks
from .scoring import score_stacks, summarise_subjects, trial_metrics
from .report import rows_csv
from .samples import _collate, _Epochs, cohort_kind, labelled_subjects, load_samples


def _torch():
    import torch

    return torch


# training
# ---------------------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """What one fine-tuning trial returns (picklable: tensors, numbers and strings only)."""

    metrics: dict[str, float]
    per_phase: list[dict]
    per_subject: list[dict]
    split: dict[str, list[str]]
    history: list[dict]
    spec: dict
    state_dict: dict
    params: dict = field(default_factory=dict)

    def model(self):
        return segmenter_from_state(self.spec, self.state_dict)


def _device(name: str):
    torch = _torch()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FinetuneError("device: cuda requested but no CUDA device is visible; use device: auto or cpu")
    return torch.device(name)


def seg_loss_fn(cfg: SegLossConfig):
    from monai.losses import DiceCELoss

    return DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True,
        lambda_ce=cfg.ce_weight, lambda_dice=cfg.dice_weight,
    )


def apply_mode(model, mode: str) -> list:
    """Freeze what the transfer mode freezes; return the parameters to optimise."""
    if mode == "decoder":
        for p in model.backbone.encoder.parameters():
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _train_mode(model, mode: str) -> None:
    model.train()
    if mode == "decoder":
        model.backbone.encoder.eval()  # frozen means frozen: batch-norm statistics too


def _eval_stacks(samples: list[dict], image_size: int) -> dict:
    return collect_stacks(crop_or_pad(s, image_size) for s in samples)


def _val_dice(model, stacks: dict, device, annotated: dict | None = None) -> float:
    if not stacks:
        return float("nan")
    annotated = annotated or {}
    scores = [segmentation_dice(predict_labels(model, st["images"], device=device), st["labels"],
                                annotated=annotated.get(sid))["dice_mean"]
              for (sid, _), st in stacks.items()]
    return nanmean(scores)


def trial_split(job: FinetuneJob, labelled: list[str], held_out: dict | None = None) -> dict[str, list[str]]:
    """The trial's subjects (``checks.cohort_fewshot_split``)."""
    try:
        return cohort_fewshot_split(job.cohort, labelled, job.n_train, job.seed, held_out)
    except SplitError as exc:
        raise FinetuneError(str(exc)) from None


def _annotated_mask(classes) -> np.ndarray:
    m = np.zeros(N_CLASSES, dtype=bool)
    m[0] = True
    m[list(classes)] = True
    return m


def make_seg_loss(cfg: SegLossConfig, partial: bool):
    """``loss(logits, y, batch)``: MONAI DiceCELoss, or the marginal loss when some training subject
    annotates only some classes (the batch then carries each sample's ``annotated`` mask)."""
    if not partial:
        full = seg_loss_fn(cfg)
        return lambda logits, y, batch: full(logits, y)
    return lambda logits, y, batch: marginal_dice_ce(logits, y, batch["annotated"], ce_weight=cfg.ce_weight,
                                                     dice_weight=cfg.dice_weight)


def _build_model(job: FinetuneJob, init: InitWeights | None):
    """(segmenter, backbone spec): a fresh backbone, or the pretrained one (decoder only when the
    pretext trained it), plus a new segmentation head."""
    from cardiossl.backbones import build_backbone

    if init is None:
        bb_spec = {"name": job.backbone.name, "params": dict(job.backbone.params)}
        backbone = build_backbone(bb_spec["name"], **bb_spec["params"])
    else:
        bb_spec = init.backbone
        backbone = build_backbone(bb_spec["name"], **bb_spec.get("params", {}))
        state = dict(init.backbone_state)
        if not init.decoder_pretrained:  # a pretext that never trained the decoder: start it fresh
            state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        bad_missing = [k for k in missing if k.startswith("encoder.")]
        if bad_missing or unexpected:
            raise FinetuneError(
                f"pretrained weights from {init.source} do not fit backbone {bb_spec}: missing "
                f"{bad_missing[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
    return build_segmenter(backbone), bb_spec


def _validate(model, val_stacks, device, annotated, step, loss, terms, opt, history, log, stopper) -> bool:
    """One validation: record the curve point, report it, tell the stopper; True on a new best."""
    vd = _val_dice(model, val_stacks, device, annotated)
    rec = {"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in terms.items()}, "val_dice": vd, "lr": opt.param_groups[0]["lr"]}
    history.append(rec)
    if log is not None:
        log(step, rec)
    return stopper.update(step, vd)


def finetune(job: FinetuneJob, *, init: InitWeights | None | str = "resolve", progress: bool = False,
             labelled: list[str] | None = None, log=None, held_out: dict | None = None,
             reference: dict | None = None) -> FinetuneResult:
    """Run one fine-tuning trial in-process and return its metrics and best model.

    ``init``: "resolve" loads ``job.init`` (MLflow registry / run); pass an ``InitWeights`` (or
    None for scratch) to skip that, as the study's Ray tasks do. ``labelled``: the labelled pool
    (computed from the store when None). ``held_out``: {"test", "val"} pinned by the caller.
    ``reference``: the test subjects' reference stacks (``reference.reference_stacks``; read here
    when None). ``log(step, metrics)``: optional callback.
    """
    torch = _torch()

    t0 = time.perf_counter()
    if job.threads:
        torch.set_num_threads(job.threads)
    device = _device(job.device)
    store = job.cohort.store
    if init == "resolve":
        init = resolve_init(job.init, job.mlflow.tracking_uri) if job.init != "scratch" else None
    if job.init != "scratch" and init is None:
        raise FinetuneError(f"init {job.init!r} needs pretrained weights, none were given")
    if job.mode == "decoder" and init is None:
        raise FinetuneError("mode 'decoder' needs a pretrained encoder; use mode 'all' from scratch")

    if labelled is None:
        labelled = labelled_subjects(store)
    split = trial_split(job, labelled, held_out)
    phases = tuple(job.cohort.phases or ("ed", "es"))
    annotated = label_classes(store, sorted(set(split["train"]) | set(split["val"]) | set(split["test"])))
    partial = any(set(annotated[s]) != set(ALL_CLASSES) for s in split["train"])
    train_samples = load_samples(store, split["train"], phases=phases, views=tuple(job.cohort.views))
    if not train_samples:
        raise FinetuneError(f"no labelled SA slices for training subjects {split['train']}")
    if partial:
        for smp in train_samples:
            smp["annotated"] = _annotated_mask(annotated[smp["subject_id"]])
    val_stacks = _eval_stacks(load_samples(store, split["val"], phases=("ed", "es")), job.image_size)

    # model ---------------------------------------------------------------------------------
    with torch.random.fork_rng(devices=[]):  # weight init seeded by the trial, global state untouched
        torch.manual_seed(int(np.random.default_rng([job.seed, 0x1A17]).integers(2**31)))
        model, bb_spec = _build_model(job, init)
    fmt = torch.channels_last if job.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    trainable = apply_mode(model, job.mode)

    # multitask --------------------------------------------------------------------------------
    pretext = pretext_head = unl = None
    if job.mode == "multitask":
        pt_spec = job.multitask.pretext.model_dump() if job.multitask.pretext is not None else (init.pretext if init else None)
        if pt_spec is None:
            raise FinetuneError("multitask mode needs a pretext: the init carries none; set multitask.pretext")
        pretext = PretextSpec(name=pt_spec["name"], params=pt_spec.get("params", {})).build()
        pretext_head = pretext.build_head(model.backbone)
        if init is not None and init.head_state is not None and init.pretext and init.pretext["name"] == pretext.name:
            try:
                pretext_head.load_state_dict(init.head_state)
            except RuntimeError:
                pass  # a different head shape: start it fresh
        pretext_head.to(device, memory_format=fmt)
        trainable += list(pretext_head.parameters())
        unl = _unlabelled_stream(job, split, pretext)

    opt = build_optimizer(job.optim, trainable)
    sched = build_scheduler(opt, job.schedule, job.steps)
    loss_fn = make_seg_loss(job.loss, partial)
    keys = ("image", "label", "annotated") if partial else ("image", "label")
    augment = Augment.from_config(job.augment, job.image_size)
    stream = _Epochs(train_samples, job.batch_size, job.seed, SampleTransform(augment, None, train=True))

    stopper = EarlyStopping(job.validation.patience, job.validation.min_delta, job.validation.min_steps)
    best_state = None
    history: list[dict] = []
    bar = _progress(progress, job.steps, f"finetune {job.init} {job.mode} N={job.n_train} seed={job.seed}")
    running = 0.0
    last_step = 0
    for step in range(job.steps):
        _train_mode(model, job.mode)
        batch = _collate(stream.next(), keys)
        x = batch["image"].to(device).contiguous(memory_format=fmt)
        y = batch["label"].to(device).long().unsqueeze(1)
        loss = loss_fn(model(x), y, batch)
        terms = {"seg_loss": loss.detach()}  # tensors: read only when logged (no device sync per step)
        if pretext is not None:
            pretext_head.train()
            ub = _to_device(_collate(unl.next()), device)
            out = pretext.forward(model.backbone, pretext_head, ub["input"].contiguous(memory_format=fmt))
            ploss = pretext.loss(out, ub)["loss"]
            loss = loss + job.multitask.weight * ploss
            terms["pretext_loss"] = ploss.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if job.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, job.optim.grad_clip)
        opt.step()
        sched.step()
        last_step = step + 1
        if bar is not None:
            seg = float(terms["seg_loss"])
            running = seg if step == 0 else 0.9 * running + 0.1 * seg
            bar[0].update(bar[1], advance=1, description=f"loss {running:.3f}")
        if (step + 1) % job.validation.every_steps == 0 or step + 1 == job.steps:
            if _validate(model, val_stacks, device, annotated, step + 1, loss, terms, opt, history, log, stopper):
                best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
            if stopper.stop():
                break
    if bar is not None:
        bar[0].stop()

    model.load_state_dict(best_state)
    model.eval()
    test_samples = load_samples(store, split["test"], phases=("ed", "es"))
    refs = reference if reference is not None else reference_stacks(store, collect_stacks(test_samples))
    test_stacks = _eval_stacks(test_samples, job.image_size)
    inference = job.inference.model_dump(mode="json") if job.inference is not None else None
    per_phase = score_stacks(model, test_stacks, refs, annotated=annotated, device=device, inference=inference)
    per_subject = summarise_subjects(per_phase)
    metrics = trial_metrics(per_subject)
    metrics.update({
        "val_dice_best": float(stopper.best) if val_stacks else float("nan"),
        **stopper.summary(last_step),
        "steps_to_95pct": steps_to_reach(history, 0.95),
        "val_gain_last_window": late_gain(history, (job.validation.patience or np.nan) * job.validation.every_steps),
        "n_train_subjects": float(len(split["train"])),
        "n_train_slices": float(len(train_samples)),
        "n_test_subjects": float(len(split["test"])),
        "partial_labels": float(partial),
        "seconds": time.perf_counter() - t0,
    })
    spec = {
        "backbone": bb_spec,
        "n_classes": N_CLASSES,
        "labels": {"0": "background", "1": "lv_cavity", "2": "lv_myocardium", "3": "rv_cavity"},
        "image_size": job.image_size,
        "spacing_mm": _store_spacing(store),
        "normalisation": "zscore-robust per (subject, view)",
        "init": job.init,
        "mode": job.mode,
        "n_train": job.n_train,
        "seed": job.seed,
    }
    if inference is not None:
        spec["inference"] = inference
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return FinetuneResult(metrics, per_phase, per_subject, split, history, spec, state,
                          params={"init": job.init, "mode": job.mode, "n_train": job.n_train, "seed": job.seed})


def _store_spacing(store: str) -> float:
    try:
        from cardiossl.datasets.store import CohortStore

        return float(CohortStore(store).spacing_mm)
    except Exception:  # a URI the local store class cannot open: the spec says what it can
        return float("nan")


def _to_device(batch: dict, device) -> dict:
    torch = _torch()
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _unlabelled_stream(job: FinetuneJob, split: dict, pretext) -> _Epochs:
    """Pretext samples from training-side subjects (never test or validation subjects)."""
    from cardiossl.datasets.store import CohortStore

    held_out = set(split["test"]) | set(split["val"])
    subjects = [s for s in CohortStore(job.cohort.store).subject_ids() if s not in held_out]
    from cardiossl.datasets.torch_dataset import CohortDataset

    ds = CohortDataset(job.cohort.store, subjects=subjects, views=tuple(job.multitask.views), phases=None,
                       labelled_only=False, filter=pretext.accepts)
    if len(ds) == 0:
        raise FinetuneError(f"multitask: pretext {pretext.name!r} accepts no slice of the training-side subjects")
    k = min(len(ds), job.multitask.max_slices)
    idx = np.sort(np.random.default_rng([job.seed, 0x0DD]).choice(len(ds), size=k, replace=False))
    samples = [ds[int(i)] for i in idx]
    tf = SampleTransform(Augment.from_config(job.augment, job.image_size), pretext, train=True)
    return _Epochs(samples, job.multitask.batch_size, job.seed + 7919, tf)


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeRemainingColumn(), transient=True)
    prog.start()
    return prog, prog.add_task("", total=total)


# ---------------------------------------------------------------------------------------------
# the job: one run, tracked by the driver
# ---------------------------------------------------------------------------------------------
def finetune_run_name(job: FinetuneJob, init: InitWeights | None = None) -> str:
    """``<name>-<init>-<mode>-N<n>-seed<s>-<time>``: the run list says which trial is which."""
    source = "scratch" if job.init == "scratch" else (
        (init.pretext or {}).get("name") if init is not None and init.pretext else None) or "pretrained"
    return f"{job.name}-{source}-{job.mode}-N{job.n_train}-seed{job.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_finetune_job(job: FinetuneJob, *, progress: bool = True, register: bool = True, say=print) -> dict:
    """Fine-tune in this process and record it as one MLflow run: params, validation curve, test
    metrics, per-subject table (CSV), split, the segmenter (safetensors + spec); register it when
    ``mlflow.registered_model`` is set."""
    import tempfile


    uri = job.mlflow.tracking_uri
    init, labelled = preflight_finetune(job)  # before the run exists: a job that cannot run leaves none
    init_ref = init.resolved if init is not None and init.resolved else job.init
    run_id = tracking.create_run(uri, job.mlflow.experiment, job.mlflow.run_name or finetune_run_name(job, init),
                                 tracking.lineage_tags(job.kind, init=job.init, init_resolved=init_ref, mode=job.mode,
                                                       n_train=job.n_train, seed=job.seed, config_hash=job.hash()))
    tracker = tracking.MlflowTracker(run_id, uri)
    status = "FAILED"
    try:
        tracker.log_params(flatten(job.to_dict()))
        tracker.log_text(job.to_yaml(), "job/resolved.yaml")
        say(f"cardiossl: MLflow run {run_id} in experiment {job.mlflow.experiment!r} at {uri}")
        tracker.log_params({"init_resolved": init_ref})
        res = finetune(job, init=init, labelled=labelled, progress=progress,
                       log=lambda step, rec: tracker.log_metrics(
                           {k: v for k, v in rec.items() if k != "step" and np.isfinite(v)}, step))
        tracker.log_metrics({k: v for k, v in res.metrics.items() if np.isfinite(v)}, job.steps)
        tracker.log_text(rows_csv(res.per_subject), "evaluation/per_subject.csv")
        tracker.log_text(rows_csv(res.per_phase), "evaluation/per_phase.csv")
        tracker.log_dict(res.split, "evaluation/split.json")
        if job.cohort.split.file:
            tracker.log_artifact(job.cohort.split.file, "evaluation")
        with tempfile.TemporaryDirectory() as tmp:
            training = {"cohort_store": job.cohort.store, "cohort_kind": cohort_kind(job.cohort.store),
                        "init": job.init, "init_resolved": init_ref, "mode": job.mode, "n_train": job.n_train,
                        "seed": job.seed, "val_dice": res.metrics["val_dice_best"],
                        "test_dice_mean": res.metrics["test_dice_mean"], "run_id": run_id}
            folder = save_segmenter(res.model(), {**res.spec, "cohort_store": job.cohort.store, "training": training},
                                    Path(tmp) / "segmenter")
            tracker.log_artifacts(str(folder), "segmenter")
        version = None
        if register and job.mlflow.registered_model:
            version = register_segmenter(uri, run_id, "segmenter", job.mlflow.registered_model, job.mlflow.alias,
                                         tags=tracking.lineage_tags(
                                             job.kind, init=job.init, init_resolved=init_ref, mode=job.mode,
                                             n_train=job.n_train, seed=job.seed, config_hash=job.hash(),
                                             val_dice=res.metrics["val_dice_best"],
                                             test_dice_mean=res.metrics["test_dice_mean"]))
            say(f"cardiossl: registered models:/{job.mlflow.registered_model}/{version}"
                + (f" (alias @{job.mlflow.alias})" if job.mlflow.alias else ""))
        status = "FINISHED"
    finally:
        tracker.close() if hasattr(tracker, "close") else None
        tracking.finish_run(uri, run_id, status)
    m = res.metrics
    say(f"cardiossl: test Dice LV {m['test_dice_lv_cavity']:.3f}  Myo {m['test_dice_lv_myocardium']:.3f}  "
        f"RV {m['test_dice_rv_cavity']:.3f}  mean {m['test_dice_mean']:.3f}  HD95 {m['test_hd95_mean']:.1f} mm "
        f"({len(res.split['test'])} test subjects, N={len(res.split['train'])}, best step {int(m['best_step'])})")
    return {"run_id": run_id, "metrics": m, "model_version": version, "split": res.split}


def main(argv: list[str] | None = None) -> int:
    """``python -m cardiossl.platform.fewshot.finetune JOB.yaml [--set k=v ...]`` (executable-YAML entry)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="cardiossl-finetune",
                                 description="Few-shot fine-tuning of SA segmentation (kind: finetune).")
    ap.add_argument("job", help="job YAML (kind: finetune)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-register", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        job = load_job(a.job, a.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(job, FinetuneJob):
        print(f"error: {a.job}: kind {job.kind!r} is not a fine-tuning job", file=sys.stderr)
        return 2
    try:
        out = run_finetune_job(job, progress=not a.no_progress, register=not a.no_register)
    except (FinetuneError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": out["run_id"], "model_version": out["model_version"],
                      "test_dice_mean": out["metrics"]["test_dice_mean"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
