"""Old import paths and ``python -m`` entry points keep working for one release, with a DeprecationWarning.

Users' code imports ``cardiossl.platform.models`` / ``.registry`` / ``.finetune`` / ``.study`` and
their executable YAMLs name ``python -m cardiossl.platform.finetune|study|launch``; each old path
must give the very objects of the new home and forward to the new ``main``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _fresh_import(name: str):
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=name.replace(".", r"\.") + " moved to"):
        return importlib.import_module(name)


def test_old_import_paths_are_the_new_objects():
    import cardiossl.platform.tracking as tracking
    from cardiossl import registry
    from cardiossl.datasets import splits
    from cardiossl.platform import config
    from cardiossl.platform.fewshot import finetune, report, study

    models = _fresh_import("cardiossl.platform.models")
    assert models.load_pretrained is tracking.load_pretrained
    assert models.save_pretrained is tracking.save_pretrained
    assert models.register_pretrained is tracking.register_pretrained
    assert models.ModelLoadError is tracking.ModelLoadError

    old_registry = _fresh_import("cardiossl.platform.registry")
    assert old_registry.Registry is registry.Registry and old_registry.RegistryError is registry.RegistryError

    old_finetune = _fresh_import("cardiossl.platform.finetune")
    assert old_finetune.FinetuneJob is config.FinetuneJob and old_finetune.finetune is finetune.finetune
    assert old_finetune.main is finetune.main and old_finetune.fewshot_split is splits.fewshot_split
    assert old_finetune.save_segmenter is tracking.save_segmenter

    old_study = _fresh_import("cardiossl.platform.study")
    assert old_study.BenchmarkJob is config.BenchmarkJob and old_study.run_study is study.run_study
    assert old_study.main is study.main and old_study.write_report is report.write_report


def test_config_package_keeps_the_public_names(tmp_path):
    from cardiossl.platform.config import JOB_KINDS, ConfigError, PretrainJob, load_job

    job = load_job(REPO / "jobs" / "pretrain_position.yaml", env={"CARDIOSSL_HOME": "/tmp/cardiossl-compat"})
    assert isinstance(job, PretrainJob) and {"pretrain", "finetune", "benchmark"} <= set(JOB_KINDS.names())
    (tmp_path / "bad.yaml").write_text("kind: nope\n")
    with pytest.raises(ConfigError, match="kind: unknown job kind 'nope'"):
        load_job(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("module", "yaml", "expected"),
    [
        ("cardiossl.platform.finetune", "pretrain_position.yaml", "is not a fine-tuning job"),
        ("cardiossl.platform.fewshot.finetune", "pretrain_position.yaml", "is not a fine-tuning job"),
        ("cardiossl.platform.study", "pretrain_position.yaml", "`benchmark` runs kind: benchmark"),
        ("cardiossl.platform.fewshot.study", "pretrain_position.yaml", "`benchmark` runs kind: benchmark"),
        ("cardiossl.platform.launch", "finetune_fewshot.yaml", "is not run by this launcher"),
    ],
)
def test_python_m_entry_points_forward_to_main(tmp_path, module, yaml, expected):
    """Each entry point loads the YAML with the real ``main`` and refuses a job of the wrong kind (exit 2)."""
    env = {**os.environ, "CARDIOSSL_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", module, str(REPO / "jobs" / yaml)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stdout + proc.stderr


def test_the_executable_yamls_name_the_new_modules():
    first = {p.name: p.read_text().splitlines()[0] for p in (REPO / "jobs").glob("*.yaml")}
    assert first["finetune_fewshot.yaml"] == "#!/usr/bin/env -S python -m cardiossl.platform.fewshot.finetune"
    assert first["benchmark_fewshot.yaml"] == "#!/usr/bin/env -S python -m cardiossl.platform.fewshot.study"
    for module in {line.split("python -m ")[1] for line in first.values()}:
        assert importlib.util.find_spec(module) is not None, module
