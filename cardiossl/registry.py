"""One typed registry for every pluggable part (pretexts, backbones, heads, readers, job kinds).

A decorator registers a class or factory under a name. A duplicate name raises and names both
sources (timm silently overwrites; we refuse). Third-party packages register through an
entry-point group that is loaded lazily on the first lookup, as zarr-python does for codecs. A
broken entry point (its module fails to import, its object is missing, its name clashes) is skipped
with a ``PluginWarning`` and kept in ``load_errors`` (``cardiossl plugins list`` shows it): one bad
installed package must not hide the built-ins or the other plugins.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """Raised for unknown or duplicate names; the message lists what exists."""


class PluginWarning(UserWarning):
    """A third-party plugin that could not be loaded and was skipped."""


@dataclass(frozen=True)
class LoadError:
    """An entry point that was skipped: its name, where it came from and why."""

    kind: str
    name: str
    source: str
    error: str


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    source: str  # "module:qualname", or "entry point NAME = VALUE (package DIST)"


def _source_of(obj: object) -> str:
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}:{qualname}"


class Registry(Generic[T]):
    """Name -> object map with decorator registration and lazy entry-point discovery."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = entry_point_group is None
        self._lock = threading.RLock()
        self.load_errors: list[LoadError] = []  # broken entry points, skipped

    # registration ---------------------------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("position")``; the name defaults to ``obj.name``."""

        def decorator(obj: T) -> T:
            self.add(name or getattr(obj, "name", None) or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: T, source: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")
        source = source or _source_of(obj)
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None:
                if existing.obj is obj:
                    return  # the same object imported twice (e.g. module reloaded through two paths)
                raise RegistryError(
                    f"duplicate {self.kind} name {name!r}: already registered by {existing.source}, "
                    f"registered again by {source}; rename one of them"
                )
            self._entries[name] = Entry(name, obj, source)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    # lookup ---------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                dist = getattr(ep, "dist", None)
                dist_name = f" (package {dist.name})" if dist is not None else ""
                source = f"entry point {ep.name} = {ep.value}{dist_name}"
                try:
                    obj = ep.load()
                    # Loading the module may already have registered it via the decorator.
                    current = self._entries.get(ep.name)
                    if current is not None and current.obj is obj:
                        self._entries[ep.name] = Entry(ep.name, obj, source)
                        continue
                    self.add(ep.name, obj, source)
                except (Exception, SystemExit) as exc:  # one broken plugin must not hide the others
                    error = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
                    self.load_errors.append(LoadError(self.kind, ep.name, source, error))
                    warnings.warn(f"cardiossl: skipped the {self.kind} plugin from {source}: {error}",
                                  PluginWarning, stacklevel=4)

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._entries[name].obj
        except KeyError:
            broken = [e for e in self.load_errors if e.name == name]
            if broken:
                raise RegistryError(
                    f"{self.kind} {name!r} is a plugin that could not be loaded ({broken[0].source}): "
                    f"{broken[0].error}; fix or uninstall that package"
                ) from None
            known = sorted(self._entries)
            hint = difflib.get_close_matches(name, known, n=1)
            did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
            group = (
                f" Third-party {self.kind}s register through the entry-point group "
                f"{self.entry_point_group!r}."
                if self.entry_point_group
                else ""
            )
            raise RegistryError(
                f"unknown {self.kind} {name!r}{did_you_mean} Registered: {', '.join(known) or '(none)'}."
                + group
            ) from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def entries(self) -> list[Entry[T]]:
        self._load_entry_points()
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def plain_doc(text: str) -> str:
    """reST markup of a docstring as plain text: ``code`` and :role:`target` -> code, target."""
    text = re.sub(r":[\w.]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"`([^`]+)`_?", r"\1", text)


def describe(obj: object) -> str:
    """First line of a plugin's docstring, as plain text, for `cardiossl plugins list`."""
    doc = inspect.getdoc(obj) or ""
    return plain_doc(doc.splitlines()[0]) if doc else ""
