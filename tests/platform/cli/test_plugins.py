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


def test_plugins_show_lists_parameters_with_defaults_and_help():
    res = runner.invoke(app, ["plugins", "show", "position", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    params = {p["name"]: p for p in data["params"]}
    assert data["kind"] == "pretext" and data["source"] == "cardiossl.pretexts.position:PositionPretext"
    assert params["box_mm"]["default"] == 20.0 and "box" in params["box_mm"]["help"]
    assert params["target"]["type"] == "'boxes' | 'lines' | 'slice_location'"
    bai = {p["name"]: p["default"] for p in json.loads(runner.invoke(app, ["plugins", "show", "unet_bai", "--json"])
                                                      .output)["params"]}
    assert bai["depth"] == 5 and bai["max_width"] == 256  # the preset, not the plain U-Net's defaults
    text = runner.invoke(app, ["plugins", "show", "context"]).output
    assert "mask_fraction" in text and "0.25" in text and "fraction of pixels masked" in text
    missing = runner.invoke(app, ["plugins", "show", "positon"])
    assert missing.exit_code == 2 and "did you mean 'position'" in missing.output


def test_descriptions_are_plain_text():
    from cardiossl.registry import describe

    class Documented:
        """Uses ``make_target`` and :class:`~torch.nn.Module` with `emphasis`."""

    assert describe(Documented) == "Uses make_target and torch.nn.Module with emphasis."
    rows = json.loads(runner.invoke(app, ["plugins", "list", "--json"]).output)["plugins"]
    assert not [r["description"] for r in rows if "`" in r["description"]]
