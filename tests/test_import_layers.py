"""The import layers of pyproject.toml's import-linter contracts: kept by the package, and broken
(with the offending module and line named) the moment a low room imports a high one."""

from __future__ import annotations

import os
import shutil
import subprocess

from conftest import REPO, VENV_BIN


def lint_imports(root, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package and the contracts found in ``root`` (no cache: always a fresh graph)."""
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run([str(VENV_BIN / "lint-imports"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_every_import_contract():
    proc = lint_imports(REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Rooms import downwards only KEPT" in out and "0 broken" in out


def test_an_upward_import_breaks_the_contract_and_names_the_line(tmp_path):
    shutil.copytree(REPO / "cardiossl", tmp_path / "cardiossl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    low = tmp_path / "cardiossl" / "datasets" / "geometry.py"
    source = low.read_text()
    low.write_text(source + "\nfrom cardiossl.platform.training import collate  # noqa: E402,F401\n")
    line = len(source.splitlines()) + 2
    # the copy, not the installed package, is what the graph is built from
    proc = lint_imports(tmp_path, {"PYTHONPATH": str(tmp_path)})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Rooms import downwards only BROKEN" in out
    assert "cardiossl.datasets is not allowed to import cardiossl.platform.training" in out
    assert f"cardiossl.datasets.geometry -> cardiossl.platform.training.collate (l.{line})" in out
