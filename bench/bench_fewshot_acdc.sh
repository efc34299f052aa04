#!/usr/bin/env bash
# Cross-cohort few-shot study (bench/fewshot_acdc.yaml): position pretraining on the synthetic
# cohort, fine-tuning and test on the real ACDC development cases (../shared/data/real/acdc-dev,
# ingested with `cardiossl ingest --layout acdc`), scratch vs position, N = 1, 2, 5, 5 seeds.
# Usage: bench/bench_fewshot_acdc.sh [--set ...]   (CARDIOSSL_HOME defaults to /tmp/cardiossl-acdc;
#        ACDC=/path/to/acdc bench/bench_fewshot_acdc.sh for another copy in the official layout)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-/tmp/cardiossl-acdc}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset RAY_ADDRESS
BIN="${CARDIOSSL_BIN:-.venv/bin}"
ACDC="${ACDC:-$(cd .. && pwd)/shared/data/real/acdc-dev}"
mkdir -p "$CARDIOSSL_HOME"
start=$(date +%s)
if [ ! -d "$CARDIOSSL_HOME/cohort64.zarr" ]; then
  "$BIN/cardiossl" synth --subjects 30 --seed 0 --frames 4 --grid-size 64 --spacing-mm 2.5 \
    --workers 2 --out "$CARDIOSSL_HOME/cohort64.zarr"
fi
if [ ! -d "$CARDIOSSL_HOME/acdc80.zarr" ]; then
  "$BIN/cardiossl" ingest "$ACDC" --layout acdc --out "$CARDIOSSL_HOME/acdc80.zarr" --grid-size 80 \
    --spacing-mm 2.5 --workers 2
fi
"$BIN/cardiossl" benchmark bench/fewshot_acdc.yaml "$@"
end=$(date +%s)
echo "wall time: $((end - start)) s"
echo "tables and figures: $CARDIOSSL_HOME/fewshot_report/"
