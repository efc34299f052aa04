# Sourced by scripts/demo.sh and scripts/test.sh: create .venv when missing and install cardiossl
# with the pinned versions in constraints.txt (CPU torch 2.13.0; a GPU machine gets the CUDA build
# of the same pin from PyPI). Re-running is cheap: the install is skipped when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CARDIOSSL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[cardiossl] creating virtual environment $VENV"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv separately (python3-venv); virtualenv from PyPI needs only pip.
        rm -rf "$VENV"
        "$PY" -m pip install --quiet --user virtualenv
        "$PY" -m virtualenv --quiet "$VENV"
    fi
fi

stamp="$VENV/.cardiossl-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[cardiossl] installing cardiossl and its dependencies into $VENV (a few minutes the first time)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    echo "$want" >"$stamp"
fi
export PATH="$VENV/bin:$PATH"
# Ray token authentication, on: the clusters started from this environment and the clients that talk
# to them (ray job submit, cardiossl pretrain) share the token Ray keeps in ~/.ray/auth_token (or
# RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), generated here once. Opting out, on an isolated machine
# only: `export RAY_AUTH_MODE=disabled` before sourcing this file (docs/training.md).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] \
        && [ ! -s "$HOME/.ray/auth_token" ]; then
    echo "[cardiossl] generating a Ray authentication token in ~/.ray/auth_token"
    "$VENV/bin/ray" get-auth-token --generate >/dev/null
fi
export RAY_USAGE_STATS_ENABLED=0
