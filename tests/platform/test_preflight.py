"""A job that cannot run is refused before anything is created: one message naming the field, exit 2,
no MLflow run, no Ray Train run, and no Ray retry."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from cardiossl.platform import launch, preflight, runtime
from cardiossl.platform.config import ConfigError, load_job
from cardiossl.registry import Entry

from conftest import tiny_pretrain_overrides

REPO = Path(__file__).resolve().parents[2]


def pretrain_argv(store, root, pretext="position", **extra) -> list[str]:
    sets = tiny_pretrain_overrides(store, root, pretext, **extra)
    return [str(REPO / "jobs" / f"pretrain_{pretext}.yaml")] + [a for s in sets for a in ("--set", s)]


@pytest.mark.parametrize("extra, field, words", [
    ({"cohort.store": "/nonexistent/cohort.zarr"}, "cohort.store", "does not exist"),
    ({"cohort.views": "[rvot]"}, "cohort.views", "holds no slices of view(s) rvot"),
    ({"cohort.subjects": "[synth00000, nobody]"}, "cohort.subjects", "nobody"),
    ({"cohort.split.val": 6}, "cohort.split", "leave none of 6 for training"),
    ({"batch_size": 4096}, "batch_size", "is more than the"),
    ({"cohort.views": "[4ch]"}, "pretext.name", "none of the"),
])
def test_pretrain_refusals_come_before_any_run(tiny_store, tmp_path, capsys, extra, field, words):
    code = launch.main(pretrain_argv(tiny_store, tmp_path, **{k: v for k, v in extra.items()}))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0] and words in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_missing_store_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"cardiossl ingest SOURCE --out /nonexistent/x.zarr.*CARDIOSSL_COHORT"):
        preflight.open_store("/nonexistent/x.zarr")
    with pytest.raises(ConfigError, match="mount the store"):
        preflight.open_store("s3://bucket/cohort.zarr")
    (tmp_path / "not-a-store").mkdir()
    with pytest.raises(ConfigError, match="not a cardiossl cohort store"):
        preflight.open_store(str(tmp_path / "not-a-store"))


def test_a_job_that_can_run_passes_and_says_what_it_found(tiny_store, tmp_path):
    job = load_job(REPO / "jobs" / "pretrain_rotation.yaml", tiny_pretrain_overrides(tiny_store, tmp_path, "rotation"))
    found = preflight.check_pretrain(job)
    from cardiossl.platform.training import split_cohort

    assert found["splits"] == split_cohort(job)  # the split the run would use (hash rule)
    assert found["subjects"] == {k: len(v) for k, v in found["splits"].items()}
    assert sum(found["subjects"].values()) == 6 and found["subjects"]["train"] >= 4 and found["subjects"]["test"] == 0
    assert found["train_slices"] > 4
    assert found["views"]["sa"] > 0


def test_a_plugin_from_a_script_is_refused_with_the_way_out():
    class Scripted:
        __module__ = "__main__"

    with pytest.raises(ConfigError, match=r"registered from a script.*Move the class into a module.*plugins.md"):
        runtime.plugin_modules([Entry("mine", Scripted, "__main__:Scripted")])
    builtin = Entry("position", type("P", (), {"__module__": "cardiossl.pretexts.position"}), "x")
    entry_point = Entry("jig", type("J", (), {"__module__": "jig"}), "entry point jig = jig:J (package jig)")
    assert runtime.plugin_modules([builtin, entry_point]) == ([], [])


def test_a_plugin_module_is_named_to_the_workers_and_shipped_unless_installed(tmp_path, monkeypatch):
    local = types.ModuleType("my_local_plugins")
    local.__file__ = str(tmp_path / "my_local_plugins.py")
    installed = types.ModuleType("their_pkg")
    installed.__file__ = "/venv/lib/python3.11/site-packages/their_pkg/__init__.py"
    monkeypatch.setitem(__import__("sys").modules, "my_local_plugins", local)
    monkeypatch.setitem(__import__("sys").modules, "their_pkg", installed)
    a = Entry("a", type("A", (), {"__module__": "my_local_plugins"}), "my_local_plugins:A")
    b = Entry("b", type("B", (), {"__module__": "their_pkg.sub"}), "their_pkg.sub:B")
    names, ship = runtime.plugin_modules([a, b])
    assert names == ["my_local_plugins", "their_pkg.sub"] and ship == [local]


def test_the_worker_side_lookup_names_what_is_missing():
    missing = preflight._lookup({"cardiossl.pretexts:PRETEXTS": ["position", "nope"]}, ["no_such_module_xyz"])
    assert any("module 'no_such_module_xyz' does not import" in m for m in missing)
    assert any(m.startswith("pretext 'nope': unknown pretext 'nope'") for m in missing)
    assert not any("'position'" in m for m in missing)


def test_the_runtime_env_carries_the_home_unless_the_job_sets_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDIOSSL_HOME", str(tmp_path))
    monkeypatch.delenv("CARDIOSSL_COHORT", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    env = runtime.runtime_env(extra_env={"RAY_ADDRESS": "10.0.0.1:6379"})
    assert env["env_vars"]["CARDIOSSL_HOME"] == str(tmp_path) and env["env_vars"]["RAY_ADDRESS"] == "10.0.0.1:6379"
    assert env["env_vars"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0" and "py_modules" not in env
    # inside a `ray job submit` job whose runtime env already sets it, the job's value stands (Ray
    # refuses a driver env var that the job also sets)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"env_vars": {"CARDIOSSL_HOME": "/shared"}}}))
    assert "CARDIOSSL_HOME" not in runtime.runtime_env()["env_vars"]


def test_a_plugin_module_that_does_not_import_is_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = launch.main([str(REPO / "jobs" / "pretrain_rotation.yaml"), "--plugin", "no_such_plugin_mod"])
    err = capsys.readouterr().err
    assert code == 2 and "--plugin no_such_plugin_mod: cannot import it" in err and "Traceback" not in err
