"""The worked example of docs/plugins.md, run as the guide says: it is complete, short, passes the
contract checker, and a job can name it (its module imported with --plugin). Its run on Ray
workers is in tests/platform/test_launch.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, plugin_guide_example

CHECK = """
import json, my_pretexts
from cardiossl.pretexts.testing import check_contract
print(json.dumps([check_contract(my_pretexts.FlipPretext(p)) for p in my_pretexts.FlipPretext.variants()]))
"""


def test_the_guides_example_is_short_complete_and_passes_the_contract(tmp_path):
    path = plugin_guide_example(tmp_path)
    assert len(path.read_text().strip().splitlines()) < 50
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result[0]["encoder_grad"] > 0 and 0.0 <= result[0]["accuracy"] <= 1.0


def test_a_job_names_the_example_through_plugin(tmp_path, tiny_store):
    plugin_guide_example(tmp_path)
    cli = [sys.executable, "-m", "cardiossl.platform.cli"]
    job = str(REPO / "jobs" / "pretrain_rotation.yaml")
    ok = subprocess.run(cli + ["validate", job, "--plugin", "my_pretexts", "--set", "pretext.name=flip", "--show"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "name: flip" in ok.stdout and "p: 0.5" in ok.stdout and "cardiossl-flip-encoder" in ok.stdout
    unknown = subprocess.run(cli + ["validate", job, "--set", "pretext.name=flip"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert unknown.returncode == 2 and "unknown pretext 'flip'" in unknown.stderr
    shown = subprocess.run(cli + ["show", str(tiny_store), "--subject", "synth00001", "--pretext", "flip",
                                  "--plugin", "my_pretexts", "--out", str(tmp_path / "flip.png")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "flip.png").stat().st_size > 1000
