"""Fine-tuning step time: ``cardiossl``'s few-shot loop next to a plain PyTorch loop, same model.

Side by side in one run, on the same training slices (the N labelled subjects ``finetune`` draws):

* ``cardiossl``: the real ``finetune()`` (plane-exact spatial + intensity augmentation, MONAI
  ``DiceCELoss``, AdamW, cosine schedule, validation Dice every ``--val-every`` steps). Its step time
  comes from the wall clock between validation callbacks: one interval is ``val_every`` steps plus one
  validation; the validation alone is timed on the same stacks and subtracted for the per-step figure.
* ``plain``: the loop a user writes by hand: the same segmenter (``unet_bai`` by default), the same
  loss and optimiser, random flips and 90-degree rotations of in-memory tensors, no validation.
* ``plain-monai``: the same plain loop with MONAI's ``UNet`` (channels 16-256, strided convolutions,
  one convolution per scale), the network of the plain script the issue compared with: reported
  separately as the model difference (FLOPs per image and step time).

Target: cardiossl step <= 1.2x the plain step of the same model, batch and image size. Arms are
interleaved over ``--rounds`` so that load from other processes hits them alike; the ratio is taken
inside each round. The store: ``--store``, else the real ACDC development cases in
``../shared/data/real/acdc-dev`` ingested into a temporary store, else a synthetic cohort.

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

    from cardiossl.platform.augment import crop_or_pad
    from cardiossl.platform.finetune import fewshot_split, labelled_subjects, load_samples

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
    from cardiossl.platform.finetune import N_CLASSES, build_segmenter

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


def plain_loop(model, x, y, job, steps: int, seed: int) -> list[float]:
    """Seconds per step of the hand-written loop: random batch, flips and rot90, loss, AdamW step."""
    import numpy as np
    import torch

    from cardiossl.platform.finetune import seg_loss_fn
    from cardiossl.platform.train import build_optimizer

    loss_fn = seg_loss_fn(job.loss)
    opt = build_optimizer(job.optim, model.parameters())
    rng = np.random.default_rng(seed)
    model.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        idx = torch.from_numpy(rng.integers(0, len(x), job.batch_size))
        xb, yb = x[idx].clone(), y[idx].clone()
        for i in range(len(idx)):
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            xi, yi = torch.rot90(xb[i], k, (-2, -1)), torch.rot90(yb[i], k, (-2, -1))
            if flip:
                xi, yi = xi.flip(-1), yi.flip(-1)
            xb[i], yb[i] = xi, yi
        loss = loss_fn(model(xb), yb.unsqueeze(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
        times.append(time.perf_counter() - t)
    return times


def validation_seconds(job, val_samples: list[dict]) -> float:
    """One validation pass as ``finetune`` runs it (predicted stacks, Dice), median of three."""
    from cardiossl.platform.evaluate import collect_stacks, predict_labels, segmentation_dice

    model = segmenter(job.backbone.name, dict(job.backbone.params))
    stacks = collect_stacks(val_samples)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for st in stacks.values():
            segmentation_dice(predict_labels(model, st["images"]), st["labels"])
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def cardiossl_arm(job) -> dict:
    """Seconds per step of ``finetune()`` between validation callbacks (first interval dropped)."""
    from cardiossl.platform.finetune import finetune

    stamps: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    res = finetune(job, init=None, log=lambda step, rec: stamps.append((step, time.perf_counter())))
    total = time.perf_counter() - t0
    per = [(t1 - t0_) / (s1 - s0) for (s0, t0_), (s1, t1) in zip(stamps[1:], stamps[2:])]
    return {"interval_s_per_step": per, "total_s": total, "test_dice_mean": res.metrics["test_dice_mean"]}


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
    ap.add_argument("--val-every", type=int, default=25, help="cardiossl validation cadence (steps)")
    ap.add_argument("--intervals", type=int, default=3, help="timed validation intervals per cardiossl run")
    ap.add_argument("--plain-steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every arm (default: cores)")
    ap.add_argument("--no-monai", action="store_true", help="skip the MONAI UNet arm")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a seconds-long check of the code path")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.synthetic, a.subjects, a.grid, a.spacing, a.image_size, a.batch_size = True, 7, 48, 3.0, 48, 2
        a.n_train, a.test, a.val, a.backbone, a.backbone_params = 2, 2, 1, "unet", "{depth: 3, width: 4}"
        a.val_every, a.intervals, a.plain_steps, a.rounds = 2, 2, 4, 1
    import torch

    a.threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cardiossl-bench-ft-") as tmp:
        root = Path(tmp)
        store, what = make_store(a, root)
        steps = a.val_every * (a.intervals + 1)
        job = make_job(store, root, a, steps)
        x, y, split, val = training_tensors(job)
        log(f"{what}: {len(x)} training slices from {len(split['train'])} subjects at {a.image_size} px, "
            f"batch {a.batch_size}, {a.threads} torch threads, load average {load0[0]:.2f}")
        costs = {a.backbone: model_cost(segmenter(a.backbone, dict(job.backbone.params)), a.image_size)}
        if not a.no_monai:
            costs["monai_unet"] = model_cost(segmenter("monai_unet", {}), a.image_size)
        t_val = validation_seconds(job, val)
        rounds = []
        for r in range(a.rounds):
            row = {}
            c = cardiossl_arm(job)
            row["cardiossl_with_val"] = statistics.median(c["interval_s_per_step"])
            row["cardiossl"] = row["cardiossl_with_val"] - t_val / a.val_every
            row["plain"] = statistics.median(plain_loop(segmenter(a.backbone, dict(job.backbone.params), r), x, y,
                                                        job, a.plain_steps, r)[2:])
            if not a.no_monai:
                row["plain_monai"] = statistics.median(plain_loop(segmenter("monai_unet", {}, r), x, y, job,
                                                                  a.plain_steps, r)[2:])
            row["ratio"] = row["cardiossl"] / row["plain"]
            row["ratio_with_val"] = row["cardiossl_with_val"] / row["plain"]
            log(f"round {r + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
            rounds.append(row)
    load1 = os.getloadavg()
    med = {k: statistics.median(rw[k] for rw in rounds) for k in rounds[0]}
    res = {"data": what, "train_slices": len(x), "image_size": a.image_size, "batch_size": a.batch_size,
           "threads": a.threads, "cpus": os.cpu_count(), "load_average": [round(load0[0], 2), round(load1[0], 2)],
           "val_every": a.val_every, "validation_s": round(t_val, 3), "model": costs, "rounds": rounds,
           "median": med}
    print(f"{what}; {len(x)} slices, {a.image_size} px, batch {a.batch_size}, {a.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} -> {load1[0]:.2f}; median of {a.rounds} rounds")
    print(f"{'arm':<34}{'s/step':>9}{'x plain':>9}")
    print(f"{'plain loop, ' + a.backbone:<34}{med['plain']:>9.3f}{1.0:>9.2f}")
    print(f"{'cardiossl finetune, ' + a.backbone:<34}{med['cardiossl']:>9.3f}{med['ratio']:>9.2f}   (target <= 1.2)")
    print(f"{'  + validation every ' + str(a.val_every):<34}{med['cardiossl_with_val']:>9.3f}"
          f"{med['ratio_with_val']:>9.2f}   (one validation {t_val:.2f} s)")
    if "plain_monai" in med:
        print(f"{'plain loop, MONAI UNet 16-256':<34}{med['plain_monai']:>9.3f}{med['plain_monai'] / med['plain']:>9.2f}")
    for name, c in costs.items():
        print(f"model {name}: {c['params_m']} M parameters, {c['gflop_per_image']} GFLOP per image (fwd + bwd)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
