"""`cardiossl plugins list`: every registered plugin with its source (the installed third-party
case is tests/platform/test_third_party_plugin.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cardiossl.platform.cli import app

runner = CliRunner()


def test_plugins_list_shows_builtins_with_sources():
    res = runner.invoke(app, ["plugins", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {(r["kind"], r["name"]): r["source"] for r in json.loads(res.output)["plugins"]}
    assert rows[("pretext", "position")] == "cardiossl.pretexts.position:PositionPretext"
    assert rows[("backbone", "unet_bai")] == "cardiossl.backbones.unet:unet_bai"
    assert rows[("head", "segmentation")] == "cardiossl.backbones.heads:SegmentationHead"
    assert any(kind == "reader" for kind, _ in rows)
    table = runner.invoke(app, ["plugins", "list", "--kind", "pretext"])
    assert table.exit_code == 0 and "rotation" in table.output and "unet_bai" not in table.output
