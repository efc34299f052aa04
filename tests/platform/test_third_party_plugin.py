"""A real third-party pretext package, built and pip-installed in the test, found through its entry
point: it shows in `cardiossl plugins list` and trains through the same contract as the built-ins.

The package is installed with ``pip install --target`` into a temporary folder that only the
subprocesses see (PYTHONPATH), so the shared virtual environment is never modified: the entry-point
discovery is the same (importlib.metadata reads the installed dist-info on sys.path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest


PLUGIN_SOURCE = '''
"""A third-party pretext: predict whether the image intensities were inverted."""
from typing import ClassVar

import numpy as np
import torch.nn.functional as F
from pydantic import Field

from cardiossl.pretexts import Pretext, PretextConfig, TargetSpec


class InvertConfig(PretextConfig):
    p: float = Field(0.5, ge=0, le=1)


class InvertPretext(Pretext):
    """Was the image intensity-inverted? (third-party test plugin)"""

    name: ClassVar[str] = "invert"
    Config = InvertConfig

    @property
    def uses_decoder(self):
        return False

    def target_spec(self, image_shape):
        return {"input": TargetSpec((1, *image_shape), np.dtype(np.float32)),
                "target": TargetSpec((), np.dtype(np.int64), 0, 1)}

    def make_target(self, sample, rng):
        flip = bool(rng.random() < self.config.p)
        img = np.asarray(sample["image"], dtype=np.float32)
        return dict(sample, input=-img if flip else img, target=np.int64(flip))

    def build_head(self, backbone):
        from cardiossl.backbones import HEADS
        return HEADS.get("classification")(backbone.encoder.channels[-1], 2)

    def loss(self, output, batch):
        return {"loss": F.cross_entropy(output, batch["target"].long())}

    def metrics(self, output, batch):
        return {"accuracy": (output.argmax(1) == batch["target"]).float().mean().item()}
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cardiossl-invert-plugin"
version = "0.0.1"
requires-python = ">=3.10"

[project.entry-points."cardiossl.pretexts"]
invert = "cardiossl_invert_plugin:InvertPretext"

[tool.setuptools]
py-modules = ["cardiossl_invert_plugin"]
'''

TRAIN_SCRIPT = textwrap.dedent('''
    import json
    import numpy as np
    import torch
    from torch.utils.data import default_collate
    from cardiossl.backbones import build_backbone
    from cardiossl.pretexts import PRETEXTS
    from cardiossl.pretexts.testing import check_contract, example_subject

    entry = PRETEXTS.entry("invert")
    pretext = PRETEXTS.get("invert")({"p": 0.5})
    result = check_contract(pretext)
    # A few optimiser steps through the contract: the loss must go down.
    samples = [s for s in example_subject(shape=(32, 32), n_slices=8) if s["view"] == "sa"]
    batch = default_collate([
        {k: v for k, v in pretext.make_target(s, np.random.default_rng([0, 0, 0, i])).items()
         if k in ("input", "target")} for i, s in enumerate(samples)])
    torch.manual_seed(0)
    net = build_backbone("unet_tiny")
    head = pretext.build_head(net)
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = pretext.loss(pretext.forward(net, head, batch["input"]), batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(json.dumps({"source": entry.source, "contract": result, "losses": losses}))
''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "cardiossl_invert_plugin.py").write_text(PLUGIN_SOURCE)
    target = tmp_path_factory.mktemp("plugin-site")
    install(src, target)
    assert list(target.glob("cardiossl_invert_plugin-0.0.1.dist-info/entry_points.txt"))
    return target


def install(src, target) -> None:
    """pip-install the package in ``src`` into the folder ``target`` (offline, no dependencies)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"


def run(args, plugin_path, timeout=180):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_path), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_installed_plugin_shows_in_plugins_list(plugin_path):
    proc = run([sys.executable, "-m", "cardiossl.platform.cli", "plugins", "list", "--json"], plugin_path)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)["plugins"]}
    row = rows[("pretext", "invert")]
    assert row["source"] == "entry point invert = cardiossl_invert_plugin:InvertPretext (package cardiossl-invert-plugin)"
    assert row["description"].startswith("Was the image intensity-inverted?")
    assert ("pretext", "position") in rows and ("backbone", "unet_bai") in rows


def test_installed_plugin_trains_through_the_contract(plugin_path):
    proc = run([sys.executable, "-c", TRAIN_SCRIPT], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "cardiossl-invert-plugin" in result["source"]
    assert result["contract"]["encoder_grad"] > 0
    losses = result["losses"]
    assert all(map(lambda x: x == x, losses)) and losses[-1] < losses[0]


BROKEN_PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cardiossl-broken-plugin"
version = "0.0.1"
requires-python = ">=3.10"

[project.entry-points."cardiossl.pretexts"]
aaa_broken = "cardiossl_broken_plugin:Jigsaw"
missing_object = "cardiossl_broken_ok:NoSuchClass"

[project.entry-points."cardiossl.backbones"]
broken_backbone = "cardiossl_broken_plugin:Net"

[tool.setuptools]
py-modules = ["cardiossl_broken_plugin", "cardiossl_broken_ok"]
'''

LOOKUPS = textwrap.dedent('''
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from cardiossl.backbones import BACKBONES
        from cardiossl.pretexts import PRETEXTS
        found = {"position": PRETEXTS.get("position").name, "invert": PRETEXTS.get("invert").name,
                 "unet": BACKBONES.get("unet").__name__}
    try:
        PRETEXTS.get("aaa_broken")
        lookup = "no error"
    except LookupError as exc:
        lookup = str(exc)
    print(json.dumps({"found": found, "lookup": lookup,
                      "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
''')


@pytest.fixture(scope="module")
def broken_path(tmp_path_factory, plugin_path):
    """A fake broken distribution beside the good one: a module that fails to import, an entry point
    whose object does not exist."""
    src = tmp_path_factory.mktemp("broken-src")
    (src / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (src / "cardiossl_broken_plugin.py").write_text("raise ImportError('needs libjigsaw.so, not installed')\n")
    (src / "cardiossl_broken_ok.py").write_text("VALUE = 1\n")
    install(src, plugin_path)
    yield plugin_path
    for p in plugin_path.glob("cardiossl_broken*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_a_broken_plugin_is_reported_and_skipped_and_every_other_still_loads(broken_path):
    """Defect 4: the first entry point that failed to load raised, and every later lookup in that
    registry (built-ins included) failed with its error."""
    proc = run([sys.executable, "-c", LOOKUPS], broken_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["found"] == {"position": "position", "invert": "invert", "unet": r["found"]["unet"]}
    assert "needs libjigsaw.so" in r["lookup"] and "cardiossl-broken-plugin" in r["lookup"]
    assert any(w.startswith("PluginWarning") and "aaa_broken" in w and "ImportError" in w for w in r["warnings"])
    assert any("broken_backbone" in w for w in r["warnings"])

    proc = run([sys.executable, "-m", "cardiossl.platform.cli", "plugins", "list", "--json"], broken_path)
    assert proc.returncode == 1, proc.stderr  # something is broken: say so
    out = json.loads(proc.stdout)
    names = {(row["kind"], row["name"]) for row in out["plugins"]}
    assert {("pretext", "position"), ("pretext", "invert"), ("backbone", "unet")} <= names
    broken = {(b["kind"], b["name"]): b for b in out["broken"]}
    assert set(broken) == {("pretext", "aaa_broken"), ("pretext", "missing_object"), ("backbone", "broken_backbone")}
    assert "ImportError: needs libjigsaw.so" in broken[("pretext", "aaa_broken")]["error"]
    assert "NoSuchClass" in broken[("pretext", "missing_object")]["error"]
    assert "(package cardiossl-broken-plugin)" in broken[("backbone", "broken_backbone")]["source"]
    proc = run([sys.executable, "-m", "cardiossl.platform.cli", "plugins", "list"], broken_path)
    assert "broken pretext plugin aaa_broken" in proc.stdout and "invert" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_without_the_package_the_name_is_unknown(plugin_path):
    """This process does not have the package on its path: the lookup lists what exists."""
    from cardiossl.registry import RegistryError
    from cardiossl.pretexts import PRETEXTS

    with pytest.raises(RegistryError, match="unknown pretext 'invert'.*position"):
        PRETEXTS.get("invert")
