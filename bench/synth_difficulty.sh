#!/usr/bin/env bash
# Difficulty of the synthetic cohort: few-shot segmentation from scratch at N = 5, 10 and all labelled
# subjects, seeds 0-2 (bench/synth_difficulty.yaml; Ray tasks, one CPU each). A trial (unet_bai, 160 px
# at 1.5 mm, 1,500 steps) takes about 24 minutes on one CPU: the full grid about 2 hours on 2 cores,
# N = 5 and all with two seeds 47 minutes; a GPU or more CPUs make it quicker.
# Usage: bench/synth_difficulty.sh                     full measurement, version 2, 60 subjects
#        VERSION=4 bench/synth_difficulty.sh           the same on version 4 (VERSION=1, 3: those versions)
#        GRID=96 SPACING=2.5 bench/synth_difficulty.sh --set finetune.backbone.name=unet \
#            --set "finetune.backbone.params={depth: 4, width: 8, norm: batch}" --set finetune.image_size=96 \
#            --set finetune.steps=600                  the cheap proxy (small U-Net, 96 px)
# Extra arguments are --set overrides of the study. CARDIOSSL_HOME defaults to /tmp/cardiossl-difficulty-v$VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${VERSION:-2}"
SUBJECTS="${SUBJECTS:-60}"
GRID="${GRID:-160}"
SPACING="${SPACING:-1.5}"
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-/tmp/cardiossl-difficulty-v$VERSION}"
export CARDIOSSL_COHORT="$CARDIOSSL_HOME/cohort-v$VERSION-$GRID.zarr"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset RAY_ADDRESS  # a local Ray instance, stopped when the study ends
BIN="${CARDIOSSL_BIN:-.venv/bin}"
mkdir -p "$CARDIOSSL_HOME"
start=$(date +%s)
"$BIN/cardiossl" synth --version "$VERSION" --subjects "$SUBJECTS" --seed 0 --frames 2 --grid-size "$GRID" \
    --spacing-mm "$SPACING" --workers "${WORKERS:-2}" --out "$CARDIOSSL_COHORT"
"$BIN/cardiossl" benchmark bench/synth_difficulty.yaml "$@"
echo "wall time: $(( $(date +%s) - start )) s"
echo "table: $CARDIOSSL_HOME/difficulty_report/results.md"
