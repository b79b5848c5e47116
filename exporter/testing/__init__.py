"""Test support for plugin authors: the fake-provider base and the faults it can inject.

A plugin ships a fake of its provider's API (registered with the `register_fakes` hook) for its
tests and for `outbound-call-exporter demo`. Subclass `FakeProvider`, declare the routes, auth,
raw status names and how a record looks; the base gives scripted lifecycles (`Step`),
retention expiry, request counting, list endpoints, result webhooks, a real server on
127.0.0.1 (`running()` in a thread, `start()` in your loop, `down()`/`up()`) and injected
faults (`inject(faults.status(503))`; `faults` has the pieces to compose others).

The public API of this module is exactly `__all__`.
"""

from __future__ import annotations

from . import faults
from .calls import ANSWER_DROP_MIX, DEFAULT_MIX, SPIKE_MIX, FakeCall, Step, pagination
from .fake import FakeProvider
from .faults import Fault, http_date_in

__all__ = [
    "FakeProvider",
    "FakeCall",
    "Step",
    "Fault",
    "faults",
    "http_date_in",
    "pagination",
    "DEFAULT_MIX",
    "SPIKE_MIX",
    "ANSWER_DROP_MIX",
]
