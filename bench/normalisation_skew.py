"""How much a segmenter depends on where its input's z-score comes from.

Training normalises each (subject, view) with statistics of the source images; the pyfunc model
(``tracking.serving``) normalises over the request, i.e. over slices already on the model grid, whose
crop or padding moves the mean and spread. This scores the same ED short-axis slices both ways
against their labels (mean Dice of LV cavity, myocardium, RV, per subject, then averaged):

    python bench/normalisation_skew.py STORE RUN_ID [RUN_ID ...] [--tracking-uri URI] [--prefix patient]

``RUN_ID``: a fine-tuning run that logged ``segmenter/`` (e.g. from ``bench/synth_to_real.sh``);
``--prefix``: which subjects of the store to score (default: ids starting with "patient", ACDC).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np


def _dice(pred: np.ndarray, lab: np.ndarray) -> float:
    return float(np.mean([2 * ((pred == k) & (lab == k)).sum() / max((pred == k).sum() + (lab == k).sum(), 1)
                          for k in (1, 2, 3)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("runs", nargs="+")
    home = os.environ.get("CARDIOSSL_HOME", "/tmp/cardiossl")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{home}/mlflow.db")
    ap.add_argument("--prefix", default="patient")
    args = ap.parse_args()

    import mlflow

    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.torch_dataset import CohortDataset
    from cardiossl.platform.tracking.serving import SegmenterPyfunc, predict_batches
    from cardiossl.platform.tracking.weights import load_segmenter_folder

    client = mlflow.MlflowClient(args.tracking_uri)
    ids = [s for s in CohortStore(args.store).subject_ids() if s.startswith(args.prefix)]
    print(f"{len(ids)} subjects ({args.prefix}*), ED short-axis slices")
    print("| run | training normalisation (source statistics) | request normalisation (grid statistics) |")
    print("|---|---|---|")
    for run in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            folder = client.download_artifacts(run, "segmenter/data/weights", tmp)
            model = SegmenterPyfunc(*load_segmenter_folder(folder))
        trained, request = [], []
        for sid in ids:
            kw = {"subjects": [sid], "phases": ["ed"], "labelled_only": True}
            norm = CohortDataset(args.store, **kw)
            raw = CohortDataset(args.store, normalise=False, **kw)
            samples = [norm[i] for i in range(len(norm))]
            lab = np.stack([s["label"] for s in samples])
            x = np.stack([s["image"] for s in samples]).astype(np.float32)
            trained.append(_dice(predict_batches(model.model, x), lab))
            request.append(_dice(model.predict(np.stack([raw[i]["image"][0] for i in range(len(raw))])), lab))
        print(f"| {run} | {np.mean(trained):.3f} | {np.mean(request):.3f} |")


if __name__ == "__main__":
    main()
