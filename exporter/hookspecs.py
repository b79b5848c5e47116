"""Hook specifications: the only ways a plugin plugs in."""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "outbound_call_exporter"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(register: Callable[[type], None]) -> None:
    """Register provider classes (subclasses of `Provider`) by calling `register(cls)`."""


@hookspec
def register_fakes(register: Callable[[type], None]) -> None:
    """Register fake provider servers (`outbound_call_exporter.testing.FakeProvider` subclasses) for
    tests and `demo`."""
