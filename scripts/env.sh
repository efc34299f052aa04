# The cardiossl environment: create .venv when missing, install cardiossl with the pinned versions in
# constraints.txt (CPU torch 2.13.0; a GPU machine gets the CUDA build of the same pin from PyPI),
# put it on PATH and export CARDIOSSL_HOME, the folder every command writes under by default.
# Re-running is cheap: the install is skipped when nothing changed.
#
# Safe to source from an interactive shell (`source scripts/env.sh`): it changes no shell option
# (no `set -e`, `-u` or pipefail: scripts/demo.sh and scripts/test.sh turn strict mode on for
# themselves), and a failure returns an error instead of closing the terminal.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CARDIOSSL_VENV:-$ROOT/.venv}"

_cardiossl_env() {
    local py="${PYTHON:-python3}" stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[cardiossl] creating virtual environment $VENV"
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            # Debian ships venv separately (python3-venv); virtualenv from PyPI needs only pip.
            rm -rf "$VENV"
            "$py" -m pip install --quiet --user virtualenv || return 1
            "$py" -m virtualenv --quiet "$VENV" || return 1
        fi
    fi
    stamp="$VENV/.cardiossl-installed"
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "[cardiossl] installing cardiossl and its dependencies into $VENV (a few minutes the first time)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip || return 1
        "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]" || return 1
        echo "$want" >"$stamp"
    fi
    case ":$PATH:" in
        *":$VENV/bin:"*) ;;
        *) export PATH="$VENV/bin:$PATH" ;;
    esac
    # One place decides where outputs go (cardiossl/home.py); the shell gets the same answer.
    CARDIOSSL_HOME="$("$VENV/bin/python" -m cardiossl.home)" || return 1
    export CARDIOSSL_HOME
}

if _cardiossl_env; then
    unset -f _cardiossl_env
    echo "[cardiossl] $VENV on PATH; outputs under CARDIOSSL_HOME=$CARDIOSSL_HOME" >&2
else
    unset -f _cardiossl_env
    echo "[cardiossl] setting up the environment failed (see above)" >&2
    # sourced: return to the shell; executed: exit
    return 1 2>/dev/null || exit 1
fi
# Ray token authentication, on: the clusters started from this environment and the clients that talk
# to them (ray job submit, cardiossl pretrain) share the token Ray keeps in ~/.ray/auth_token (or
# RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), generated here once. Opting out, on an isolated machine
# only: `export RAY_AUTH_MODE=disabled` before sourcing this file (docs/training.md).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] \
        && [ ! -s "$HOME/.ray/auth_token" ]; then
    echo "[cardiossl] generating a Ray authentication token in ~/.ray/auth_token" >&2
    "$VENV/bin/ray" get-auth-token --generate >/dev/null \
        || echo "[cardiossl] could not generate a Ray token: run \`ray get-auth-token --generate\`" >&2
fi
export RAY_USAGE_STATS_ENABLED=0
# .rayignore keeps .git and .venv out of `ray job submit --working-dir .`; Ray's own default
# excludes would do the same but warn about each folder on every submit.
export RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES="${RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES-}"
