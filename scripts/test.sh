#!/usr/bin/env bash
# Run the test suite: sets up .venv on first use, then pytest. The Ray head, the `ray job submit`
# target and the `mlflow server` that some tests use are started (and stopped) by the test
# fixtures themselves with the real CLIs. Extra arguments go to pytest, e.g. `-m "not ray"`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(-m "not gpu")
fi
set +e
python -m pytest "${args[@]}"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "no tests were collected" >&2
fi
exit $rc
