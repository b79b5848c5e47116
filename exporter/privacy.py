"""Privacy and access by default (docs/design.md, "Privacy and access by default").

Call records carry personal data: the number dialled, and whatever CRM fields a team passed to
the provider when it triggered the call. Plugins declare which of their `extras` hold those
(`Provider.destination_extras`, `Provider.metadata_extras`); the host applies the operator's
`privacy` policy to every status before it is stored, logged, exported or shown, so every
plugin, third-party ones too, gets the same protection without writing any of it.

Declarations cover the fields a plugin knows about. As a safety net for the ones it does not
(a number quoted in a failure text, an undeclared field, a raw status the plugin does not
know), every other string the record keeps is searched for phone numbers: an international
one (`+` and 7-15 digits), or any digit run holding a declared destination's last seven digits,
is masked (or removed with `omit`) too.

The access half: a REST API that accepts writes without a token must not listen where a whole
network can reach it, unless the operator says so (`allow_unauthenticated_writes`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from .model import CallStatus, State

if TYPE_CHECKING:
    from .config import Config
    from .provider import Provider

#: what replaces the hidden digits: always seven, so the mask does not tell the number's length
MASK = "•••••••"
#: what replaces a number found in free text when `destination: omit`
OMITTED = "[number omitted]"
#: E.164 country codes of two digits (1 and 7 are the one-digit ones; every other code has three)
_TWO_DIGIT_CODES = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
#: a phone number in free text: an optional `+`, then 7-15 digits, single separators allowed
_NUMBER = re.compile(r"\+?\d(?:[ .()-]?\d){6,14}")
_NON_DIGIT = re.compile(r"\D")
_FIELDS = tuple(f.name for f in fields(CallStatus))


class Privacy(BaseModel):
    """The `privacy` config block: what a call record keeps of personal data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the number dialled: `masked` (country code and last two digits), `full`, or `omit`
    destination: Literal["masked", "full", "omit"] = "masked"
    #: keep the provider's free-form metadata (e.g. Telzino `request_metadata`, CRM ids)
    provider_metadata: bool = False

    def apply(self, provider: Provider | type[Provider], status: CallStatus) -> CallStatus:
        """`status` with its `reason` and `extras` reduced to what this policy keeps."""
        extras, reason = status.extras, status.reason
        odd = status.state is State.UNKNOWN  # a raw status the plugin does not know is free text too
        if not extras and not reason and not odd:
            return status
        metadata = () if self.provider_metadata else provider.metadata_extras
        if self.destination == "full":
            if not any(key in extras for key in metadata):
                return status
            return _with(status, extras={k: v for k, v in extras.items() if k not in metadata})
        destinations, masked = provider.destination_extras, self.destination == "masked"
        known, kept, free = [], {}, []
        for key, value in extras.items():
            if key in metadata:
                continue
            if key in destinations:
                digits = _digits(value)
                if len(digits) >= 7:
                    known.append(digits[-7:])
                if masked:
                    kept[key] = mask_number(value)
            else:
                kept[key] = value
                free.append(key)
        text = _TextMasker(tuple(known), omit=not masked)
        for key in free:
            kept[key] = text.deep(kept[key])
        return _with(
            status,
            extras=kept,
            reason=text(reason) if reason else reason,
            provider_status=text(status.provider_status) if odd else status.provider_status,
        )


def _with(status: CallStatus, **changes: Any) -> CallStatus:
    """`dataclasses.replace`, at a third of its cost (this runs on every poll)."""
    return CallStatus(**{**{name: getattr(status, name) for name in _FIELDS}, **changes})


def mask_number(value: Any) -> str:
    """At most the country code and the last two digits: `+18135551234` -> `+1•••••••34`.

    A value without a leading `+` has no knowable country code (only the last two digits are
    kept); one with fewer than seven digits is not a phone number we can safely show any of.
    """
    text = value.strip() if isinstance(value, str) else str(value) if isinstance(value, int) else ""
    if MASK in text:  # masked already (a webhook handed over by another replica): kept as it is
        return text
    digits = _digits(text)
    if len(digits) < 7:
        return MASK
    prefix = f"+{country_code(digits)}" if text.startswith("+") and digits[0] != "0" else ""
    return f"{prefix}{MASK}{digits[-2:]}"


def country_code(digits: str) -> str:
    """The E.164 country code that starts `digits` (the codes are prefix-free)."""
    if digits[0] in "17":
        return digits[0]
    return digits[:2] if digits[:2] in _TWO_DIGIT_CODES else digits[:3]


def _digits(value: Any) -> str:
    return _NON_DIGIT.sub("", value) if isinstance(value, str) else str(value) if isinstance(value, int) else ""


class _TextMasker:
    """Masks phone numbers in free text: international ones, and any ending like a destination."""

    def __init__(self, known: tuple[str, ...], omit: bool) -> None:
        self.known = known
        self.omit = omit

    def __call__(self, text: str) -> str:
        return _NUMBER.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        found = match.group()
        digits = _digits(found)
        if not found.startswith("+") and not any(k in digits for k in self.known):
            return found  # a long number that is not a phone number we know of (an id, a time)
        return OMITTED if self.omit else mask_number(found)

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value


# -- access: unauthenticated writes on a shared network ------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def writes_refused(config: Config) -> bool:
    """POST/DELETE on the REST API answer 403: reachable from the network, no api_token set,
    and the operator has not deliberately allowed unauthenticated writes."""
    from .config import split_address

    return (
        config.api_token is None
        and not config.allow_unauthenticated_writes
        and not is_loopback(split_address(config.listen_address)[0])
    )


def writes_refused_message(config: Config) -> str:
    return (
        f"writes need an api_token: this exporter listens on {config.listen_address} (not loopback) and "
        "no api_token is set; set api_token (or allow_unauthenticated_writes: true to accept "
        "writes from anyone who can reach the port)"
    )


def access_warning(config: Config) -> str | None:
    """What start-up and `check-config` say about the listener and the token (None: nothing)."""
    from .config import split_address

    if config.api_token is not None or is_loopback(split_address(config.listen_address)[0]):
        return None
    if config.allow_unauthenticated_writes:
        return (
            f"allow_unauthenticated_writes is true and listen_address {config.listen_address} is not "
            "loopback: anyone who can reach the port can register and delete watched calls; set api_token"
        )
    return (
        f"listen_address {config.listen_address} is not loopback and no api_token is set: POST/DELETE on "
        "the REST API answer 403 until api_token is set (reads, /metrics and webhooks are unaffected)"
    )
