"""scripts/env.sh in the user's own interactive shell: it must set up the environment and leave the
shell as it was (no strict mode that closes the terminal at the first failing command)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from conftest import REPO


def fake_venv(tmp_path):
    """A venv folder whose python is this one and whose install stamp is current: sourcing env.sh
    then installs nothing (the real .venv and its stamp are never touched)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes())
    (venv / ".cardiossl-installed").write_text(want.hexdigest() + "\n")
    return venv


def interactive(script: str, env: dict) -> subprocess.CompletedProcess:
    """``bash -i`` without the user's rc files, commands on stdin as a person would type them."""
    return subprocess.run(["bash", "--norc", "--noprofile", "-i"], input=script, capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_sourcing_env_sh_keeps_the_interactive_shell_alive_and_exports_the_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDIOSSL_", "RAY_"))}
    env.update(CARDIOSSL_VENV=str(fake_venv(tmp_path)), HOME=str(tmp_path))
    out = interactive(
        "source scripts/env.sh\n"
        "echo \"opts: $-\"\n"
        "set -o | grep -E '^(errexit|nounset|pipefail)'\n"
        "false\n"
        "echo \"$UNDEFINED_VARIABLE_X\" | grep -q nothing\n"
        "echo \"home=$CARDIOSSL_HOME\"\n"
        "command -v python | grep -q \"$CARDIOSSL_VENV/bin/python\" && echo on-path\n"
        "echo still-alive\n",
        env,
    )
    assert "still-alive" in out.stdout, out.stdout + out.stderr  # neither `false` nor the unset variable closed it
    for opt in ("errexit", "nounset", "pipefail"):
        assert f"{opt}        \toff" in out.stdout or f"{opt}\toff" in out.stdout.replace(" ", ""), out.stdout
    assert "home=/tmp/cardiossl" in out.stdout and "on-path" in out.stdout
    assert "outputs under CARDIOSSL_HOME=/tmp/cardiossl" in out.stderr


def test_a_failing_setup_returns_to_the_shell_and_a_relative_home_becomes_absolute(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDIOSSL_", "RAY_"))}
    env.update(CARDIOSSL_VENV=str(tmp_path / "nowhere" / "venv"), PYTHON="/nonexistent/python3", HOME=str(tmp_path))
    out = interactive("source scripts/env.sh; echo \"rc=$?\"\necho still-alive\n", env)
    assert "rc=1" in out.stdout and "still-alive" in out.stdout, out.stdout + out.stderr
    assert "setting up the environment failed" in out.stderr

    env.update(CARDIOSSL_VENV=str(fake_venv(tmp_path)), CARDIOSSL_HOME="rel/home")
    out = interactive("source scripts/env.sh\necho \"home=$CARDIOSSL_HOME\"\n", env)
    assert f"home={REPO / 'rel' / 'home'}" in out.stdout, out.stdout + out.stderr


def test_scripts_that_source_it_still_run_strict():
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        text = (REPO / script).read_text()
        assert text.index("set -euo pipefail") < text.index("source"), script
    assert "set -e" not in (REPO / "scripts" / "env.sh").read_text().replace("`set -e`", "")


def test_demo_headings_carry_no_colour_codes_in_a_log(tmp_path):
    """The demo's step() as written in scripts/demo.sh, run with stdout redirected to a file."""
    text = (REPO / "scripts" / "demo.sh").read_text()
    block = text[text.index("if [ -t 1 ]"):text.index("fi\n", text.index("if [ -t 1 ]")) + 3]
    log = tmp_path / "demo.log"
    subprocess.run(["bash", "-c", block + 'step "1/5 synthetic cohort" > ' + str(log)], check=True, timeout=30)
    assert log.read_text() == "\n== 1/5 synthetic cohort\n"


def test_the_demo_keeps_its_own_home_unless_one_is_set(tmp_path):
    """scripts/demo.sh decides CARDIOSSL_HOME before env.sh exports the platform default, so its outputs
    go to runs/demo in the checkout; a CARDIOSSL_HOME the user set wins."""
    text = (REPO / "scripts" / "demo.sh").read_text()
    head = text[:text.index("cd \"$ROOT\"")]  # strict mode, the home, env.sh
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDIOSSL_", "RAY_"))}
    env.update(CARDIOSSL_VENV=str(fake_venv(tmp_path)), HOME=str(tmp_path), RAY_AUTH_TOKEN_PATH=str(tmp_path / "t"))
    script = REPO / "scripts" / "demo-head.sh"
    probe = head + 'echo "home=$CARDIOSSL_HOME"\n'
    for given, expected in ((None, REPO / "runs" / "demo"), (str(tmp_path / "mine"), tmp_path / "mine")):
        run_env = dict(env, **({"CARDIOSSL_HOME": given} if given else {}))
        out = subprocess.run(["bash", "-c", probe.replace('"${BASH_SOURCE[0]}"', f'"{script}"')], env=run_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"home={expected}" in out.stdout, out.stdout + out.stderr
