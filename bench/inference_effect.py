"""What each inference step does to a logged segmenter's scores, on the subjects of a split.

Scores the same trained model four ways (``inference`` in docs/fewshot.md): the plain argmax, the
largest connected component alone, rotation test-time augmentation alone, and both; on the source
pixels, as the fine-tuning evaluation does (``fewshot.scoring``). Run it on the validation subjects
to see whether a step would have been chosen without looking at the test set (nnU-Net keeps a
post-processing step only when it helps on validation data):

    python bench/inference_effect.py STORE SPLIT_JSON RUN_ID [RUN_ID ...] [--subjects val] [--prefix patient]

``SPLIT_JSON``: the split file the runs trained with (``bench/synth_to_real.sh`` writes one);
``--subjects``: which of its lists to score (test or val, default test); ``--prefix``: only ids
starting with it (e.g. patient for ACDC); ``CARDIOSSL_HOME`` holds the runs' ``mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

WAYS = {"argmax": None, "largest component": {"tta": "none", "largest_component": True},
        "rotation TTA": {"tta": "rot90", "largest_component": False},
        "rotation TTA + largest component": {"tta": "rot90", "largest_component": True}}
KEYS = ("dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity", "dice_mean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("split")
    ap.add_argument("runs", nargs="+")
    home = os.environ.get("CARDIOSSL_HOME", "/tmp/cardiossl")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{home}/mlflow.db")
    ap.add_argument("--subjects", choices=("test", "val"), default="test")
    ap.add_argument("--prefix", default="")
    args = ap.parse_args()

    import mlflow

    from cardiossl.platform.fewshot.evaluate import collect_stacks
    from cardiossl.platform.fewshot.reference import label_classes, reference_stacks
    from cardiossl.platform.fewshot.samples import load_samples
    from cardiossl.platform.fewshot.scoring import score_stacks, summarise_subjects
    from cardiossl.platform.tracking.weights import load_segmenter_folder
    from cardiossl.platform.training import crop_or_pad

    with open(args.split) as f:
        ids = [s for s in json.load(f)[args.subjects] if s.startswith(args.prefix)]
    samples = load_samples(args.store, ids, phases=("ed", "es"))
    refs = reference_stacks(args.store, collect_stacks(samples))
    annotated = label_classes(args.store, ids)
    client = mlflow.MlflowClient(args.tracking_uri)
    print(f"{len(ids)} {args.subjects} subjects{f' ({args.prefix}*)' if args.prefix else ''}; mean over subjects")
    print("| run | inference | Dice LV | Dice Myo | Dice RV | Dice mean |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            model, spec = load_segmenter_folder(client.download_artifacts(run, "segmenter/data/weights", tmp))
        stacks = collect_stacks(crop_or_pad(s, int(spec["image_size"])) for s in samples)
        for name, inference in WAYS.items():
            rows = summarise_subjects(score_stacks(model, stacks, refs, annotated=annotated, inference=inference))
            cells = [np.nanmean([r[k] for r in rows]) for k in KEYS]
            print(f"| {run[:8]} | {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
