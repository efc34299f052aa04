#!/usr/bin/env bash
# The measured few-shot claim on the embedded synthetic cohort (reduced grid, ~15-20 min on 2 cores):
#   synthetic cohort (30 subjects, 64 px at 2.5 mm) -> position pretraining (Ray Train, once; reused
#   from the Model Registry on a re-run) -> scratch vs position, N = 1, 2, 5, 10, seeds 0-1 (Ray tasks)
#   -> Dice table (Markdown), paired differences vs scratch, plot, champion cardiossl-seg@champion.
# Usage: bench/bench_fewshot.sh            (CARDIOSSL_HOME defaults to /tmp/cardiossl-bench)
#        bench/bench_fewshot.sh --set finetune.steps=600     (extra overrides go to the study)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-/tmp/cardiossl-bench}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset RAY_ADDRESS  # a local Ray instance with 2 CPUs, stopped when the study ends
BIN="${CARDIOSSL_BIN:-.venv/bin}"
mkdir -p "$CARDIOSSL_HOME"
start=$(date +%s)
if [ ! -d "$CARDIOSSL_HOME/cohort64.zarr" ]; then
  "$BIN/cardiossl" synth --subjects 30 --seed 0 --frames 4 --grid-size 64 --spacing-mm 2.5 \
    --workers 2 --out "$CARDIOSSL_HOME/cohort64.zarr"
fi
"$BIN/cardiossl" benchmark bench/fewshot_reduced.yaml "$@"
end=$(date +%s)
echo "wall time: $((end - start)) s"
echo "table: $CARDIOSSL_HOME/fewshot_report/results.md"
echo "paired: $CARDIOSSL_HOME/fewshot_report/paired_vs_scratch.md"
echo "plot: $CARDIOSSL_HOME/fewshot_report/dice_vs_n.png"
echo "MLflow: $BIN/mlflow ui --backend-store-uri sqlite:///$CARDIOSSL_HOME/mlflow.db --workers 1"
