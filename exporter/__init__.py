"""outbound-call-exporter: Prometheus metrics for outbound voice-AI calls.

The public API for plugin authors is exactly `__all__`; everything else is internal.
"""

from ._version import __version__
from .errors import PollError, WebhookSignatureError
from .hookspecs import hookimpl
from .model import BatchProgress, CallPage, CallStatus, ErrorReason, Event, FailureReason, ListedCall, State
from .parsing import (
    answered_before_end,
    classify_failure,
    number_field,
    parse_duration,
    parse_retry_after,
    parse_timestamp,
)
from .provider import CallParams, HeaderSecret, PathSegment, Provider, ProviderSettings, Uuid

__all__ = [
    "__version__",
    "hookimpl",
    "Provider",
    "ProviderSettings",
    "CallParams",
    "CallStatus",
    "ListedCall",
    "CallPage",
    "BatchProgress",
    "Event",
    "State",
    "ErrorReason",
    "FailureReason",
    "classify_failure",
    "PollError",
    "WebhookSignatureError",
    "PathSegment",
    "HeaderSecret",
    "Uuid",
    "parse_timestamp",
    "parse_retry_after",
    "parse_duration",
    "answered_before_end",
    "number_field",
]
