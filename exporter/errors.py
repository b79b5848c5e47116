"""Every exception the exporter raises on purpose, in one place.

Messages name the field, account or URL path involved but never a secret: they end up in logs,
CLI output and API responses.
"""

from __future__ import annotations

from .model import ErrorReason


class ExporterError(Exception):
    """Base class of the exporter's own errors."""


class ConfigError(ExporterError):
    """The configuration file or environment is invalid."""


class PluginError(ExporterError):
    """A provider plugin failed to load or declared something invalid."""


class RequestError(ExporterError):
    """A REST API request was refused; `status` is the HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class WebhookSignatureError(ExporterError):
    """A result webhook's provider signature is missing or does not verify (answered with 401).

    Plugins raise it from `Provider.verify_webhook`; the message must not quote the signature
    or the secret it was computed with.
    """


class PollError(ExporterError):
    """A status request failed; `reason` is the bounded label it is counted under.

    Plugins raise it (usually through `Provider.raise_for_status`) and the host's HTTP layer
    raises it for timeouts, connection errors and oversized bodies. `retry_after` is the
    provider's requested wait in seconds, when it gave one.
    """

    def __init__(self, reason: ErrorReason, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
