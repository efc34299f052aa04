#!/usr/bin/env bash
# The few-shot study on the embedded synthetic cohort (reduced grid, bench/fewshot_reduced.yaml):
#   synthetic cohort (30 subjects, 64 px at 2.5 mm) -> held-out split (10 test + 2 validation) ->
#   position and rotation pretraining WITHOUT the held-out subjects (Ray Train, once; reused from the
#   Model Registry on a re-run) -> scratch vs pretrained, N = 1, 2, 5, 5 seeds, each trial to
#   convergence (Ray tasks, cached: a re-run resumes) -> tables, figures, statistics, champion.
# Usage: bench/bench_fewshot.sh            (CARDIOSSL_HOME defaults to /tmp/cardiossl-bench)
#        bench/bench_fewshot.sh --set "grid.seeds=[0]"     (extra overrides go to the study)
#        VERSION=3 bench/bench_fewshot.sh                  (another synthetic version: cohort64-v3.zarr)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-/tmp/cardiossl-bench}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset RAY_ADDRESS  # a local Ray instance with 2 CPUs, stopped when the study ends
BIN="${CARDIOSSL_BIN:-.venv/bin}"
mkdir -p "$CARDIOSSL_HOME"
start=$(date +%s)
VERSION="${VERSION:-}"
export CARDIOSSL_COHORT="${CARDIOSSL_COHORT:-$CARDIOSSL_HOME/cohort64${VERSION:+-v$VERSION}.zarr}"
if [ ! -d "$CARDIOSSL_COHORT" ]; then
  "$BIN/cardiossl" synth --subjects 30 --seed 0 --frames 4 --grid-size 64 --spacing-mm 2.5 \
    ${VERSION:+--version "$VERSION"} --workers 2 --out "$CARDIOSSL_COHORT"
fi
"$BIN/cardiossl" benchmark bench/fewshot_reduced.yaml "$@"
end=$(date +%s)
echo "wall time: $((end - start)) s"
R="$CARDIOSSL_HOME/fewshot_report"
echo "tables: $R/{results,convergence,paired_vs_scratch,clinical,regions}.md"
echo "figures: $R/dice_vs_n.png $R/validation_curves.png $R/bland_altman_N*.png"
echo "MLflow: $BIN/mlflow ui --backend-store-uri sqlite:///$CARDIOSSL_HOME/mlflow.db --workers 1"
