#!/usr/bin/env bash
# The embedded default, end to end (about 10 minutes on 2 cores, after a first-time install):
#   synthetic cohort written as NIfTI (the cardiossl export) -> `cardiossl ingest` into the Zarr store ->
#   cohort summary -> the few-shot study's held-out split (10 test + 2 validation subjects) -> a local
#   Ray cluster (`ray start`) -> anatomical-position pretraining WITHOUT the held-out subjects,
#   submitted with `ray job submit` -> encoder registered in MLflow -> few-shot fine-tuning with 5
#   labelled subjects, scratch vs position, each trained until its validation Dice stops improving ->
#   convergence, Dice table and plots.
# Everything lands under CARDIOSSL_HOME (runs/demo in this checkout unless CARDIOSSL_HOME is set);
# MLflow uses the sqlite file there. Re-running reuses the cohort and the registered encoder.
set -euo pipefail
# decided before env.sh, which would otherwise export the platform-wide default
export CARDIOSSL_HOME="${CARDIOSSL_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/runs/demo}"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

export CARDIOSSL_COHORT="$CARDIOSSL_HOME/cohort.zarr"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$CARDIOSSL_HOME"
SUBJECTS="${CARDIOSSL_DEMO_SUBJECTS:-30}"
# The same overrides as the study's pretrain entry (bench/fewshot_reduced.yaml) and the study's split
# file as the exclusion, so the study finds the encoder this job registers (same config, cohort and
# subjects, none of them held out) instead of retraining.
PRETRAIN_SET=(--set image_size=64 --set steps=800 --set batch_size=16 --set checkpoint.every_steps=200
              --set validation.every_steps=400 --set mlflow.system_metrics=false)

if [ -t 1 ]; then  # bold headings on a terminal; plain text in a log file
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi
t0=$(date +%s)

step "1/6 synthetic cohort: $SUBJECTS subjects, as NIfTI (the cardiossl export)"
cardiossl synth --subjects "$SUBJECTS" --seed 0 --frames 4 --format nifti --workers 2 \
    --out "$CARDIOSSL_HOME/nifti"

step "2/6 ingest into the Zarr cohort store (64 x 64 grid at 2.5 mm)"
cardiossl ingest "$CARDIOSSL_HOME/nifti" --out "$CARDIOSSL_COHORT" --grid-size 64 --spacing-mm 2.5 --workers 2
cardiossl cohort info "$CARDIOSSL_COHORT"

step "3/6 the study's test and validation subjects, computed once (hash rule)"
SPLIT="$CARDIOSSL_HOME/splits.json"
cardiossl benchmark bench/fewshot_reduced.yaml --write-split "$SPLIT"
PRETRAIN_SET+=(--set "cohort.exclude=$SPLIT")

step "4/6 local Ray cluster"
RAY_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DASH_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid ray start --head --block --port "$RAY_PORT" --dashboard-port "$DASH_PORT" --dashboard-host 127.0.0.1 \
    --num-cpus 2 --disable-usage-stats >"$CARDIOSSL_HOME/ray-head.log" 2>&1 &
RAY_PID=$!
# Stop our head by its process group (not `ray stop`, which stops every local cluster): SIGTERM,
# then SIGKILL whatever outlives 15 s (the GCS server can), and drop the pointer file it leaves so
# later commands do not try to join a cluster that is gone.
stop_head() {
    kill -TERM -- -"$RAY_PID" 2>/dev/null || return 0
    for _ in $(seq 15); do kill -0 -- -"$RAY_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- -"$RAY_PID" 2>/dev/null || true
    if grep -qs ":$RAY_PORT\$" /tmp/ray/ray_current_cluster; then rm -f /tmp/ray/ray_current_cluster; fi
}
trap stop_head EXIT
JOBS_ADDRESS="http://127.0.0.1:$DASH_PORT"  # the job API (dashboard)
for _ in $(seq 120); do
    ray job list --address "$JOBS_ADDRESS" >/dev/null 2>&1 && break
    kill -0 "$RAY_PID" 2>/dev/null || { cat "$CARDIOSSL_HOME/ray-head.log"; exit 1; }
    sleep 1
done

step "5/6 position pretraining without the held-out subjects, as a Ray job (ray job submit ... jobs/pretrain_position.yaml)"
ray job submit --address "$JOBS_ADDRESS" --working-dir . \
    --runtime-env-json "{\"env_vars\": {\"CARDIOSSL_HOME\": \"$CARDIOSSL_HOME\", \"OMP_NUM_THREADS\": \"1\"}}" \
    -- jobs/pretrain_position.yaml "${PRETRAIN_SET[@]}"

step "6/6 few-shot fine-tuning to convergence, 5 labelled subjects: scratch vs position"
cardiossl benchmark bench/fewshot_reduced.yaml --set "ray.address=127.0.0.1:$RAY_PORT" \
    --set "cohort.split.file=$SPLIT" --set "grid.inits=[scratch,position]" --set "grid.n_train=[5]" \
    --set "grid.seeds=[0]" --set "output_dir=$CARDIOSSL_HOME/fewshot_report"
R="$CARDIOSSL_HOME/fewshot_report"
echo
echo "One seed, one N: a demonstration, not a claim (bench/bench_fewshot.sh runs 5 seeds with statistics)."
cat "$R/summary.txt"
echo
cat "$R/results.md"
echo
cat "$R/convergence.md"
echo
echo "plots:  $R/dice_vs_n.png $R/validation_curves.png $R/bland_altman_N5.png"
echo "MLflow: mlflow ui --backend-store-uri sqlite:///$CARDIOSSL_HOME/mlflow.db --workers 1"
echo "demo finished in $(( $(date +%s) - t0 )) s"
