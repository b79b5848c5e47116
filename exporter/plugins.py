"""Plugin manager: discover provider plugins from entry points, validate them, once.

A plugin that fails to import, raises in its hook, or declares something invalid is recorded
as a `PluginFailure` and logged; the other plugins keep working.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import httpx
import pluggy
from pydantic import BaseModel

from . import hookspecs
from .model import ACTIVE_STATES, State
from .provider import CallParams, Provider, ProviderSettings

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class PluginFailure:
    source: str
    error: str


@dataclass
class Registry:
    """Validated providers and fakes by name, plus what failed to load."""

    providers: dict[str, type[Provider[Any, Any]]] = field(default_factory=dict)
    fakes: dict[str, type[Any]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def build_registry(plugins: Iterable[tuple[str, object]]) -> Registry:
    """Register `(name, plugin object)` pairs and collect what their hooks declare."""
    pm = make_plugin_manager()
    registry = Registry()
    order = _register_all(pm, registry, plugins)  # registration order decides which of two duplicates loses
    for plugin in order:
        name = pm.get_name(plugin) or repr(plugin)
        others = [p for p in order if p is not plugin]
        for hook, target, check, key_attr in (
            ("register_providers", registry.providers, _check_provider, "name"),
            ("register_fakes", registry.fakes, _check_fake, "provider"),
        ):
            caller = pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=_registering(registry, hook, target, check, key_attr, name))
            except Exception as exc:
                _fail(registry, name, f"{hook}: {exc}")
    return registry


def _register_all(pm: pluggy.PluginManager, registry: Registry, plugins: Iterable[tuple[str, object]]) -> list[object]:
    """Register each plugin with pluggy; those it refuses are recorded as failures."""
    order: list[object] = []
    for name, plugin in plugins:
        try:
            pm.register(plugin, name=name)
            order.append(plugin)
        except Exception as exc:  # pluggy raises ValueError / PluginValidationError
            _fail(registry, name, f"cannot register: {exc}")
    while True:  # an impl without a spec disables its plugin, not the others
        try:
            pm.check_pending()
            return order
        except pluggy.PluginValidationError as exc:
            _fail(registry, pm.get_name(exc.plugin) or repr(exc.plugin), str(exc))
            pm.unregister(exc.plugin)
            order.remove(exc.plugin)


def _registering(
    registry: Registry,
    hook: str,
    target: dict[str, type[Any]],
    check: Callable[[type], None],
    key_attr: str,
    source: str,
) -> Callable[[type], None]:
    """The `register` callable a plugin's `hook` gets: validate, refuse duplicates, record."""

    def register(cls: type) -> None:
        check(cls)
        key = getattr(cls, key_attr)
        if key in target:
            raise ValueError(f"name {key!r} is already registered by plugin {registry.sources.get(hook + key, '?')!r}")
        target[key] = cls
        registry.sources[hook + key] = source

    return register


def _fail(registry: Registry, source: str, error: str) -> None:
    registry.failures.append(PluginFailure(source, error))
    log.error("plugin %s disabled: %s", source, error)


def entry_point_plugins() -> list[tuple[str, object]]:
    """Import every plugin of the entry-point group; import failures become `PluginFailure`s."""
    loaded: list[tuple[str, object]] = []
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        try:
            loaded.append((ep.name, ep.load()))
        except Exception as exc:
            loaded.append((ep.name, _ImportFailed(f"import of {ep.value} failed: {type(exc).__name__}: {exc}")))
    return loaded


class _ImportFailed:
    """Stands in for a plugin that did not import, so the failure is reported like others."""

    def __init__(self, error: str) -> None:
        self.error = error


_registry: Registry | None = None


def load_registry() -> Registry:
    """The registry of installed plugins, loaded once per process."""
    global _registry
    if _registry is None:
        plugins = entry_point_plugins()
        failed = [(n, p) for n, p in plugins if isinstance(p, _ImportFailed)]
        _registry = build_registry([(n, p) for n, p in plugins if not isinstance(p, _ImportFailed)])
        for name, plugin in failed:
            _fail(_registry, name, plugin.error)
    return _registry


def _check_provider(cls: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{cls!r} is not a Provider subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{cls.__name__}.name must match {NAME_PATTERN.pattern}, got {name!r}")
    for attr, base in (("Settings", ProviderSettings), ("Params", CallParams)):
        model = getattr(cls, attr, None)
        if not (isinstance(model, type) and issubclass(model, base)):
            raise TypeError(f"{name}: {attr} must subclass {base.__name__}")
    if not isinstance(getattr(cls, "default_base_url", None), str):
        raise TypeError(f"{name}: default_base_url must be a string")
    httpx.URL(cls.default_base_url)
    status_map = getattr(cls, "status_map", None)
    if not status_map or not all(isinstance(v, State) for v in status_map.values()):
        raise TypeError(f"{name}: status_map must map raw statuses to State")
    cadence = getattr(cls, "cadence", {})
    missing = [s.value for s in ACTIVE_STATES if not cadence.get(s, 0) > 0]
    if missing:
        raise ValueError(f"{name}: cadence needs a positive interval for {', '.join(missing)}")
    if cls.build_request is Provider.build_request:
        raise TypeError(f"{name}: build_request is not implemented")
    if cls.parse_response is Provider.parse_response and cls.parse_body is Provider.parse_body:
        raise TypeError(f"{name}: neither parse_response nor parse_body is implemented")


def _check_fake(cls: type) -> None:
    from .testing import FakeProvider

    if not (isinstance(cls, type) and issubclass(cls, FakeProvider)):
        raise TypeError(f"{cls!r} is not a FakeProvider subclass")
    if not isinstance(getattr(cls, "provider", None), str):
        raise TypeError(f"{cls.__name__}.provider must name the provider it fakes")


def describe_model(model: type[BaseModel]) -> list[dict[str, object]]:
    """Fields of a settings/params model for `plugins` output: name, type, required, secret."""
    rows = []
    for fname, info in model.model_fields.items():
        rows.append(
            {
                "name": fname,
                "required": info.is_required(),
                "secret": "SecretStr" in repr(info.annotation),
                "default": None if info.is_required() else info.default,
                "description": info.description or "",
            }
        )
    return rows
