#!/usr/bin/env bash
# Realism of the synthetic cohort, measured on real labels: a segmenter trained on synthetic subjects
# only (no real label seen), tested on the real cases in ../shared/data/real: the 20 ACDC development
# patients (LV cavity, myocardium, RV) and the Sunnybrook exam (LV cavity and myocardium; partial
# labels, so RV leaves its scores).
#
# One store holds both: the synthetic cohort on the store grid, then the real cases ingested into it
# (same grid, same normalisation); a split file puts every real subject in `test`, 4 synthetic subjects
# in `val` (early stopping) and the other synthetic subjects in `train`. No real label is used for
# training or for choosing the model. Test scores are on the real cases' own pixels (the evaluation
# re-reads them from where they were ingested).
#
# Training randomises what a real cohort may do differently (domain randomisation): any in-plane
# orientation (ACDC's files carry no scanner orientation), and the label-free appearance steps
# (`augment.appearance`: contrast remap, bias field, blur, z-score scale and shift); with
# RANDOM_CONTRAST > 0 that share of the synthetic subjects is drawn with SynthSeg-style random tissue
# intensities. DR=0 trains with the job's own augmentation instead (the figures without it).
#
# The test subjects are segmented as the model would be used (`inference`): with DR=1 the softmax is
# averaged over the four 90-degree turns of each slice (INFERENCE=tta), then per frame and structure
# the largest connected component is kept (INFERENCE=lcc alone, the default with DR=0, as `cardiossl
# predict` does); INFERENCE=none scores the plain argmax. None of this touches training or the choice
# of the model (validation is the plain argmax).
#
# Usage: bench/synth_to_real.sh [--set KEY=VALUE ...]      (extra arguments: finetune overrides)
#        VERSION=1 bench/synth_to_real.sh                  the same with the version-1 cohort
# Environment: VERSION (2), SUBJECTS (80), RANDOM_CONTRAST (0.5; 0 for version 1), DR (1), INFERENCE (tta with
# DR=1, else lcc), GRID (128), SPACING (1.5), REAL (../shared/data/real),
# CARDIOSSL_HOME (/tmp/cardiossl-synth2real-v$VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${VERSION:-2}"
SUBJECTS="${SUBJECTS:-80}"
RANDOM_CONTRAST="${RANDOM_CONTRAST:-$([ "$VERSION" = 1 ] && echo 0 || echo 0.5)}"  # version 1 has one appearance
DR="${DR:-1}"
INFERENCE="${INFERENCE:-$([ "$DR" = 0 ] && echo lcc || echo tta)}"
GRID="${GRID:-128}"
SPACING="${SPACING:-1.5}"
REAL="${REAL:-../shared/data/real}"
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-/tmp/cardiossl-synth2real-v$VERSION}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
BIN="${CARDIOSSL_BIN:-.venv/bin}"
TAG="synth-v$VERSION-n$SUBJECTS-rc$RANDOM_CONTRAST"
STORE="$CARDIOSSL_HOME/$TAG-plus-real-$GRID.zarr"
SPLIT="$CARDIOSSL_HOME/split-$TAG-train-real-test.json"
RANDOMISE=()
[ "$DR" = 0 ] || RANDOMISE=(--set augment.spatial.rotation_deg=180 --set "augment.appearance={}")
case "$INFERENCE" in
    none) ;;
    lcc) RANDOMISE+=(--set "inference={}") ;;
    tta) RANDOMISE+=(--set "inference={tta: rot90}") ;;
    *) echo "INFERENCE=$INFERENCE: use none, lcc or tta" >&2; exit 2 ;;
esac
[ -d "$REAL/acdc-dev" ] || { echo "no real cases at $REAL (set REAL=...)" >&2; exit 2; }
mkdir -p "$CARDIOSSL_HOME"
start=$(date +%s)

"$BIN/cardiossl" synth --version "$VERSION" --subjects "$SUBJECTS" --seed 0 --frames 2 --grid-size "$GRID" \
    --spacing-mm "$SPACING" --random-contrast "$RANDOM_CONTRAST" --workers "${WORKERS:-2}" --out "$STORE" -q
"$BIN/cardiossl" ingest "$REAL/acdc-dev" --out "$STORE" --layout acdc -q
if [ -d "$REAL/sunnybrook-SCD0000101" ]; then
    "$BIN/cardiossl" ingest "$REAL/sunnybrook-SCD0000101" --out "$STORE" --layout sunnybrook -q
fi

"$BIN/python" - "$STORE" "$SPLIT" <<'EOF'
import sys

from cardiossl.datasets.splits import write_split_file
from cardiossl.datasets.store import CohortStore

store, out = sys.argv[1], sys.argv[2]
ids = CohortStore(store).subject_ids()
synth = sorted(s for s in ids if s.startswith("synth"))
real = sorted(s for s in ids if not s.startswith("synth"))
write_split_file(out, {"test": real, "val": synth[:4], "train": synth[4:]},
                 note="synthetic subjects train (and validate); every real subject is a test subject")
print(f"split: {len(synth) - 4} synthetic train, 4 synthetic val, {len(real)} real test -> {out}")
EOF

"$BIN/cardiossl" finetune jobs/finetune_fewshot.yaml --no-progress --no-register \
    --set "cohort.store=$STORE" --set "cohort.split.file=$SPLIT" --set n_train=all \
    --set "image_size=$GRID" --set mlflow.experiment=synth-to-real \
    --set "name=synth-to-real-$TAG-dr$DR-$INFERENCE" "${RANDOMISE[@]}" "$@"

"$BIN/python" - "$CARDIOSSL_HOME" <<'EOF'
"""Per-cohort test Dice of the newest synth-to-real run (per subject, from its evaluation CSV)."""
import csv
import io
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np

home = sys.argv[1]
client = mlflow.MlflowClient(f"sqlite:///{home}/mlflow.db")
exp = client.get_experiment_by_name("synth-to-real")
run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
with tempfile.TemporaryDirectory() as tmp:
    path = client.download_artifacts(run.info.run_id, "evaluation/per_subject.csv", tmp)
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
keys = ["dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity", "dice_mean"]
print(f"run {run.info.run_id}: best validation step {run.data.metrics.get('best_step')}")
print("| test cohort | subjects | Dice LV | Dice Myo | Dice RV | Dice mean |")
print("|---|---|" + "---|" * len(keys))
for name, pick in (("ACDC dev", lambda s: s.startswith("patient")), ("Sunnybrook", lambda s: s.startswith("sunnybrook")),
                   ("all real", lambda s: True)):
    sel = [r for r in rows if pick(r["subject_id"])]
    if not sel:
        continue
    cells = []
    for k in keys:
        v = np.array([float(r[k]) for r in sel if r[k] not in ("", "nan")])
        cells.append(f"{v.mean():.3f} (n={len(v)})" if len(v) else "-")
    print(f"| {name} | {len({r['subject_id'] for r in sel})} | " + " | ".join(cells) + " |")
EOF
echo "wall time: $(( $(date +%s) - start )) s"
