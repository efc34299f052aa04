"""Fine-tuning step time: ``cardiossl``'s few-shot loop next to a plain PyTorch loop, same model.

Side by side in one run, on the same training slices (the N labelled subjects ``finetune`` draws):

* ``cardiossl``: the real ``finetune()`` (plane-exact spatial + intensity augmentation, MONAI
  ``DiceCELoss``, AdamW, cosine schedule, validation Dice every ``--val-every`` steps), with its
  default channels-last convolutions, and again with ``channels_last: false`` (the layout before).
  Its step time comes from the clocks read at the validation callbacks: one interval is
  ``val_every`` steps plus one validation; the validation alone is timed on the same stacks and
  subtracted for the per-step figure.
* ``plain``: the loop a user writes by hand: the same segmenter (``unet_bai`` by default), the same
  loss and optimiser, random flips and 90-degree rotations of in-memory tensors, no validation;
  as written (NCHW) and with the same channels-last layout as cardiossl.
* ``plain-monai``: the same plain loop with MONAI's ``UNet`` (channels 16-256, strided convolutions,
  one convolution per scale), the network of a typical hand-written script: reported
  separately as the model difference (FLOPs per image and step time).

Target: cardiossl step <= 1.2x the plain step of the same model, batch and image size. Every figure
is CPU seconds per step of this process (``time.process_time``), which other processes on a shared
machine do not inflate as they do the wall clock (printed too); one torch thread by default, because
OpenMP threads that wait for each other on a loaded machine spin and make timings meaningless. Arms
are interleaved over ``--rounds`` and the ratio is taken inside each round. The store: ``--store``,
else the real ACDC development cases in ``../shared/data/real/acdc-dev`` ingested into a temporary
store, else a synthetic cohort.

    python bench/bench_finetune_speed.py                      # N = 5, 160 x 160, batch 8
    python bench/bench_finetune_speed.py --quick              # seconds, tiny model (tests use this)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ACDC = REPO.parent / "shared" / "data" / "real" / "acdc-dev"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_store(args, root: Path) -> tuple[Path, str]:
    if args.store:
        return args.store, f"given store {args.store}"
    if ACDC.is_dir() and not args.synthetic:
        from cardiossl.datasets.ingest import ingest

        out = root / "acdc.zarr"
        ingest(ACDC, out, layout="acdc", grid_size=args.grid, spacing_mm=args.spacing, progress=False)
        return out, f"real ACDC development cases ({ACDC}), grid {args.grid} at {args.spacing} mm"
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject

    out = root / "synth.zarr"
    store = CohortStore.create(out, grid_size=args.grid, spacing_mm=args.spacing)
    n = args.subjects
    store.write_subjects([synth_subject(subject_id_for(i, n), 0, n_frames=2, index=i) for i in range(n)])
    store.update_fingerprint()
    return out, f"synthetic cohort, {n} subjects, grid {args.grid} at {args.spacing} mm"


def make_job(store: Path, root: Path, args, steps: int):
    from cardiossl.platform.config import load_job

    sets = {
        "cohort.store": str(store), "cohort.split": f"{{test: {args.test}, val: {args.val}, seed: 0}}",
        "n_train": args.n_train, "image_size": args.image_size, "batch_size": args.batch_size, "steps": steps,
        "backbone.name": args.backbone, "backbone.params": args.backbone_params,
        "validation.every_steps": args.val_every, "threads": args.threads, "device": "cpu",
        "mlflow.tracking_uri": f"sqlite:///{root / 'unused.db'}",
    }
    return load_job(REPO / "jobs" / "finetune_fewshot.yaml", [f"{k}={v}" for k, v in sets.items()], env={})


def training_tensors(job):
    """The N training subjects' labelled slices as tensors at image_size (what the plain loop reads)."""
    import numpy as np
    import torch

    from cardiossl.datasets.splits import fewshot_split
    from cardiossl.platform.fewshot.samples import labelled_subjects, load_samples
    from cardiossl.platform.training import crop_or_pad

    split = fewshot_split(labelled_subjects(job.cohort.store), test=job.cohort.split.test,
                          val=job.cohort.split.val, split_seed=job.cohort.split.seed, n_train=job.n_train,
                          seed=job.seed)
    samples = [crop_or_pad(s, job.image_size) for s in load_samples(job.cohort.store, split["train"])]
    x = torch.from_numpy(np.stack([s["image"] for s in samples]).astype(np.float32))
    y = torch.from_numpy(np.stack([np.asarray(s["label"], dtype=np.int64) for s in samples]))
    val = [crop_or_pad(s, job.image_size) for s in load_samples(job.cohort.store, split["val"])]
    return x, y, split, val


def segmenter(name: str, params: dict, seed: int = 0):
    import torch

    from cardiossl.backbones import build_backbone
    from cardiossl.platform.tracking import N_CLASSES, build_segmenter

    torch.manual_seed(seed)
    if name == "monai_unet":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=1, out_channels=N_CLASSES, channels=(16, 32, 64, 128, 256),
                    strides=(2, 2, 2, 2))
    return build_segmenter(build_backbone(name, **params))


def model_cost(model, image_size: int) -> dict:
    """Parameters and training FLOPs (forward + backward) per image, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 1, image_size, image_size)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "gflop_per_image": round(fc.get_total_flops() / 2 / 1e9, 3)}


def plain_loop(model, x, y, job, steps: int, seed: int, channels_last: bool = False) -> dict:
    """Seconds per step (CPU, wall) of the hand-written loop: random batch, flips and rot90, loss,
    AdamW step; first two steps dropped."""
    import numpy as np
    import torch

    from cardiossl.platform.fewshot.finetune import seg_loss_fn
    from cardiossl.platform.training import build_optimizer

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = seg_loss_fn(job.loss)
    opt = build_optimizer(job.optim, model.parameters())
    rng = np.random.default_rng(seed)
    model.train()
    cpu, wall = [], []
    for _ in range(steps):
        c, t = time.process_time(), time.perf_counter()
        idx = torch.from_numpy(rng.integers(0, len(x), job.batch_size))
        xb, yb = x[idx].clone(), y[idx].clone()
        for i in range(len(idx)):
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            xi, yi = torch.rot90(xb[i], k, (-2, -1)), torch.rot90(yb[i], k, (-2, -1))
            if flip:
                xi, yi = xi.flip(-1), yi.flip(-1)
            xb[i], yb[i] = xi, yi
        loss = loss_fn(model(xb.contiguous(memory_format=fmt)), yb.unsqueeze(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return {"cpu": statistics.median(cpu[2:]), "wall": statistics.median(wall[2:])}


def transform_seconds(job, n_batches: int = 20) -> float:
    """CPU seconds per batch of finetune's in-process augmentation and collation."""
    from cardiossl.platform.fewshot.samples import _collate, _Epochs, load_samples
    from cardiossl.platform.training import Augment, SampleTransform
    from cardiossl.datasets.splits import fewshot_split
    from cardiossl.platform.fewshot.samples import labelled_subjects

    split = fewshot_split(labelled_subjects(job.cohort.store), test=job.cohort.split.test,
                          val=job.cohort.split.val, split_seed=job.cohort.split.seed, n_train=job.n_train,
                          seed=job.seed)
    stream = _Epochs(load_samples(job.cohort.store, split["train"]), job.batch_size, job.seed,
                     SampleTransform(Augment.from_config(job.augment, job.image_size), None, train=True))
    c = time.process_time()
    for _ in range(n_batches):
        _collate(stream.next(), ("image", "label"))
    return (time.process_time() - c) / n_batches


def validation_seconds(job, val_samples: list[dict]) -> float:
    """CPU seconds of one validation pass as ``finetune`` runs it (predicted stacks, Dice), median of three."""
    import torch

    from cardiossl.platform.fewshot.evaluate import collect_stacks, predict_labels, segmentation_dice

    model = segmenter(job.backbone.name, dict(job.backbone.params))
    if job.channels_last:
        model = model.to(memory_format=torch.channels_last)
    stacks = collect_stacks(val_samples)
    runs = []
    for _ in range(3):
        c = time.process_time()
        for st in stacks.values():
            segmentation_dice(predict_labels(model, st["images"]), st["labels"])
        runs.append(time.process_time() - c)
    return statistics.median(runs)


def cardiossl_arm(job) -> dict:
    """Seconds per step (CPU, wall) of ``finetune()`` between validation callbacks, validation
    included (first interval dropped)."""
    from cardiossl.platform.fewshot.finetune import finetune

    stamps: list[tuple[int, float, float]] = []
    res = finetune(job, init=None,
                   log=lambda step, rec: stamps.append((step, time.process_time(), time.perf_counter())))
    per = [((c1 - c0) / (s1 - s0), (w1 - w0) / (s1 - s0))
           for (s0, c0, w0), (s1, c1, w1) in zip(stamps[1:], stamps[2:])]
    return {"cpu": statistics.median(p[0] for p in per), "wall": statistics.median(p[1] for p in per),
            "test_dice_mean": res.metrics["test_dice_mean"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="an existing cohort store")
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic cohort even when ACDC is present")
    ap.add_argument("--subjects", type=int, default=14, help="synthetic subjects")
    ap.add_argument("--grid", type=int, default=160)
    ap.add_argument("--spacing", type=float, default=1.5)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=5)
    ap.add_argument("--test", type=int, default=2)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--backbone", default="unet_bai")
    ap.add_argument("--backbone-params", default="{}")
    ap.add_argument("--val-every", type=int, default=20, help="cardiossl validation cadence (steps)")
    ap.add_argument("--intervals", type=int, default=2, help="timed validation intervals per cardiossl run")
    ap.add_argument("--plain-steps", type=int, default=22)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every arm")
    ap.add_argument("--no-monai", action="store_true", help="skip the MONAI UNet arm")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a seconds-long check of the code path")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.synthetic, a.subjects, a.grid, a.spacing, a.image_size, a.batch_size = True, 7, 48, 3.0, 48, 2
        a.n_train, a.test, a.val, a.backbone, a.backbone_params = 2, 2, 1, "unet", "{depth: 3, width: 4}"
        a.val_every, a.intervals, a.plain_steps, a.rounds = 2, 2, 5, 1
    import torch

    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cardiossl-bench-ft-") as tmp:
        root = Path(tmp)
        store, what = make_store(a, root)
        job = make_job(store, root, a, a.val_every * (a.intervals + 1))
        job_nchw = job.model_copy(update={"channels_last": False})
        x, y, split, val = training_tensors(job)
        log(f"{what}: {len(x)} training slices from {len(split['train'])} subjects at {a.image_size} px, "
            f"batch {a.batch_size}, {a.threads} torch thread(s), load average {load0[0]:.2f}")
        costs = {a.backbone: model_cost(segmenter(a.backbone, dict(job.backbone.params)), a.image_size)}
        if not a.no_monai:
            costs["monai_unet"] = model_cost(segmenter("monai_unet", {}), a.image_size)
        t_val = {"channels_last": validation_seconds(job, val), "nchw": validation_seconds(job_nchw, val)}
        t_aug = transform_seconds(job)
        rounds = []
        for r in range(a.rounds):
            arms = {"cardiossl": cardiossl_arm(job), "cardiossl_nchw": cardiossl_arm(job_nchw)}
            for k, cl in (("plain", False), ("plain_channels_last", True)):
                arms[k] = plain_loop(segmenter(a.backbone, dict(job.backbone.params), r), x, y, job,
                                     a.plain_steps, r, cl)
            if not a.no_monai:
                arms["plain_monai"] = plain_loop(segmenter("monai_unet", {}, r), x, y, job, a.plain_steps, r)
            for k, tv in (("cardiossl", t_val["channels_last"]), ("cardiossl_nchw", t_val["nchw"])):
                arms[k]["cpu_train"] = arms[k]["cpu"] - tv / a.val_every  # validation taken out
            row = {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in arms.items()}
            row["ratio"] = {
                "cardiossl_over_plain_same_layout": arms["cardiossl"]["cpu_train"] / arms["plain_channels_last"]["cpu"],
                "cardiossl_over_plain_as_written": arms["cardiossl"]["cpu_train"] / arms["plain"]["cpu"],
                "cardiossl_nchw_over_plain": arms["cardiossl_nchw"]["cpu_train"] / arms["plain"]["cpu"],
                "cardiossl_with_validation_over_plain_as_written": arms["cardiossl"]["cpu"] / arms["plain"]["cpu"],
                "channels_last_speedup": arms["cardiossl_nchw"]["cpu_train"] / arms["cardiossl"]["cpu_train"],
            }
            if "plain_monai" in arms:
                row["ratio"]["model_over_monai_unet_plain"] = arms["plain"]["cpu"] / arms["plain_monai"]["cpu"]
            log(f"round {r + 1}: {json.dumps(row)}")
            rounds.append(row)
    load1 = os.getloadavg()

    def med(arm, key):
        return statistics.median(rw[arm][key] for rw in rounds)

    res = {"data": what, "train_slices": len(x), "image_size": a.image_size, "batch_size": a.batch_size,
           "threads": a.threads, "cpus": os.cpu_count(), "load_average": [round(load0[0], 2), round(load1[0], 2)],
           "val_every": a.val_every, "validation_cpu_s": t_val, "augment_collate_cpu_s_per_batch": round(t_aug, 4),
           "model": costs, "rounds": rounds,
           "median_ratio": {k: round(statistics.median(rw["ratio"][k] for rw in rounds), 3) for k in rounds[0]["ratio"]}}
    print(f"{what}; {len(x)} slices, {a.image_size} px, batch {a.batch_size}, {a.threads} torch thread(s), "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} -> {load1[0]:.2f}; median of {a.rounds} round(s)")
    print(f"{'arm: s per step (wall includes validation)':<52}{'cpu':>8}{'wall':>8}")
    rows = [("plain loop, " + a.backbone + ", NCHW (as written)", "plain", "cpu"),
            ("plain loop, " + a.backbone + ", channels-last", "plain_channels_last", "cpu"),
            ("cardiossl finetune (channels-last), training step", "cardiossl", "cpu_train"),
            (f"  + validation every {a.val_every} steps", "cardiossl", "cpu"),
            ("cardiossl finetune, channels_last: false", "cardiossl_nchw", "cpu_train")]
    if not a.no_monai:
        rows.append(("plain loop, MONAI UNet 16-256 (the model difference)", "plain_monai", "cpu"))
    for label, arm, key in rows:
        print(f"{label:<52}{med(arm, key):>8.3f}{med(arm, 'wall'):>8.3f}")
    for k, v in res["median_ratio"].items():
        print(f"ratio {k}: {v}" + ("   (target <= 1.2)" if k == "cardiossl_over_plain_same_layout" else ""))
    print(f"validation (CPU s): {t_val}; augmentation + collation per batch: {t_aug * 1e3:.1f} ms CPU")
    for name, c in costs.items():
        print(f"model {name}: {c['params_m']} M parameters, {c['gflop_per_image']} GFLOP per image (fwd + bwd)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
