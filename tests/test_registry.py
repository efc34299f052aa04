"""The one registry mechanism: decorator, duplicates, unknown names, lazy entry points."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from cardiossl.registry import PluginWarning, Registry, RegistryError


def test_decorator_registers_under_given_name_and_default_name():
    reg = Registry("widget")

    @reg.register("alpha")
    class A:
        pass

    @reg.register()
    class B:
        name = "beta"

    assert reg.get("alpha") is A
    assert reg.get("beta") is B
    assert reg.names() == ["alpha", "beta"]
    assert reg.entry("alpha").source == f"{__name__}:test_decorator_registers_under_given_name_and_default_name.<locals>.A"
    assert "alpha" in reg and "gamma" not in reg and len(reg) == 2


def test_duplicate_name_raises_naming_both_sources():
    reg = Registry("widget")

    def first():
        pass

    def second():
        pass

    reg.add("same", first)
    reg.add("same", first)  # the very same object again is harmless
    with pytest.raises(RegistryError) as info:
        reg.add("same", second)
    msg = str(info.value)
    assert "first" in msg and "second" in msg and "'same'" in msg
    assert reg.get("same") is first  # the original survives


def test_unknown_name_lists_registered_and_suggests():
    reg = Registry("pretext", "cardiossl.test-none")
    reg.add("position", object())
    reg.add("rotation", object())
    with pytest.raises(RegistryError) as info:
        reg.get("positon")
    msg = str(info.value)
    assert "did you mean 'position'" in msg
    assert "position, rotation" in msg
    assert "cardiossl.test-none" in msg


def test_bad_names_refused():
    reg = Registry("widget")
    with pytest.raises(RegistryError):
        reg.add("", object())


class _FakeDist:
    name = "fake-plugin-dist"


class _FakeEntryPoint:
    def __init__(self, name, value, loader, calls):
        self.name, self.value, self._loader, self._calls = name, value, loader, calls
        self.dist = _FakeDist()

    def load(self):
        self._calls.append(self.name)
        return self._loader()


def test_entry_points_load_lazily_on_first_lookup(monkeypatch):
    """Entry points are read at the first lookup, not at construction or registration."""
    calls: list[str] = []
    module = types.ModuleType("fake_plugin_mod")

    class Plug:
        pass

    module.Plug = Plug
    monkeypatch.setitem(sys.modules, "fake_plugin_mod", module)
    group = "cardiossl.test-lazy"
    real = importlib.metadata.entry_points

    def fake_entry_points(**kw):
        if kw.get("group") == group:
            return [_FakeEntryPoint("plug", "fake_plugin_mod:Plug", lambda: Plug, calls)]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry("widget", group)
    reg.add("builtin", object())
    assert calls == []  # nothing loaded yet
    assert reg.get("plug") is Plug
    assert calls == ["plug"]
    assert reg.entry("plug").source == "entry point plug = fake_plugin_mod:Plug (package fake-plugin-dist)"
    reg.names()
    assert calls == ["plug"]  # loaded once


def test_entry_point_clashing_with_builtin_is_reported_and_skipped(monkeypatch):
    group = "cardiossl.test-clash"
    real = importlib.metadata.entry_points

    class Other:
        pass

    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: [_FakeEntryPoint("builtin", "x:Other", lambda: Other, [])] if kw.get("group") == group else real(**kw),
    )
    reg = Registry("widget", group)
    builtin = object()
    reg.add("builtin", builtin, source="cardiossl.builtin:Thing")
    with pytest.warns(PluginWarning, match="skipped the widget plugin") as info:
        assert reg.names() == ["builtin"] and reg.get("builtin") is builtin  # the built-in stays
    message = str(info[0].message)
    assert "cardiossl.builtin:Thing" in message and "fake-plugin-dist" in message
    assert [e.name for e in reg.load_errors] == ["builtin"] and "duplicate" in reg.load_errors[0].error


def test_project_registries_hold_the_builtins():
    from cardiossl.backbones import BACKBONES, HEADS
    from cardiossl.pretexts import PRETEXTS

    assert {"position", "rotation", "context"} <= set(PRETEXTS.names())
    assert {"unet", "unet_bai", "unet_tiny"} <= set(BACKBONES.names())
    assert {"segmentation", "classification", "reconstruction"} <= set(HEADS.names())
    with pytest.raises(RegistryError, match="did you mean 'rotation'"):
        PRETEXTS.get("rotaton")
