#!/usr/bin/env bash
# The one device call: install the carried wheels into /tmp/site, record the card, run bench/gpu_check.py.
# Build the wheels first, here: `bash bench/device_bundle.sh` (writes .whl/). Then, with the device tool:
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=480)
# gpu_check.py keeps to its --budget-s (300 s by default; about 6 minutes with the install and the store).
# Results come back under $OUT: env.txt (card, versions), gpu_check.log, gpu_check.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-run-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# The local Ray instances of the checks use token authentication, with a token made for this run.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/gpu-run-ray-token
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$RAY_AUTH_TOKEN_PATH"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run bash bench/device_bundle.sh first" >&2; exit 3; }
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
{
  echo "wheels installed in $(( $(date +%s) - t0 )) s"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv
  python3 -c "import sys, torch, ray, zarr, pydantic, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__, 'zarr', zarr.__version__, 'pydantic', pydantic.VERSION, 'numpy', numpy.__version__)"
  nproc; free -g | head -2; df -h /dev/shm | tail -1
} 2>&1 | tee "$OUT/env.txt"
python3 bench/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
