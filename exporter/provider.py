"""The provider plugin contract: a sans-I/O description of one provider's status API.

A plugin subclasses `Provider[ItsSettings, ItsParams]`, declares data (name, default base URL,
settings and params models, status map, cadence) and implements `build_request` and
`parse_body` (or `parse_response` when error responses need special handling). It never sends
a request, sleeps or retries: the host does all of that, so a plugin is a pure function of its
inputs and its tests need no server.

What every status body needs is done here once, around the plugin's `parse_body`
(`call_status`): the raw status must be a string, and a `failed` call's free-text reason is
classified into a `FailureReason` unless the plugin set one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Callable, ClassVar, Generic, Mapping, TypeVar
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from .errors import PollError
from .model import BatchProgress, CallPage, CallStatus, ErrorReason, ListedCall, State
from .parsing import classify_failure, parse_retry_after

#: Ids and path params: 1-128 of `A-Z a-z 0-9 . _ : -`, never `.` or `..` (docs/design.md, Limits).
PATH_SEGMENT_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _not_dot_segment(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("must not be '.' or '..'")
    return value


PathSegment = Annotated[
    str,
    StringConstraints(pattern=PATH_SEGMENT_PATTERN),
    AfterValidator(_not_dot_segment),
    Field(json_schema_extra={"not": {"enum": [".", ".."]}}),
]


def _header_safe(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text or not all(33 <= ord(c) <= 126 for c in text):
        raise ValueError("must be non-empty printable ASCII without spaces (it is sent as an HTTP header)")
    return value


#: a credential sent as a header value: refused at config time if it could not be sent
HeaderSecret = Annotated[SecretStr, AfterValidator(_header_safe)]
Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]


class ProviderSettings(BaseModel):
    """Base of a plugin's account settings model; unknown keys are a config error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CallParams(BaseModel):
    """Base of a plugin's per-call params model: the call id plus the plugin's path params.

    Subclasses narrow `call_id` (e.g. to `Uuid`) and add fields; every string that goes into a
    URL should be a `PathSegment` or narrower.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: PathSegment = Field(description="the provider's call id")


S = TypeVar("S", bound=ProviderSettings)
P = TypeVar("P", bound=CallParams)


class Provider(Generic[S, P]):
    """One provider status API. The host makes one instance per configured account.

    Generic over the plugin's settings and params models (`Provider[MySettings, MyParams]`), so
    `self.settings` and the `call` of `build_request` have the plugin's own types.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    default_base_url: ClassVar[str]
    # class attributes too; not `ClassVar`, which cannot hold the type variables
    Settings: type[S]
    Params: type[P]
    #: the body field holding the raw status (`call_status` checks it is a string)
    status_key: ClassVar[str] = "status"
    #: raw provider status (exactly as the API spells it) -> normalized state
    status_map: ClassVar[Mapping[str, State]]
    #: seconds between polls while a call is in each non-terminal state
    cadence: ClassVar[Mapping[State, float]]
    #: the account's rate limit unless configured: the provider's documented limit, when it has one
    default_max_requests_per_second: ClassVar[float] = 20.0
    #: `extras` keys holding the number dialled, and keys holding the provider's free-form
    #: metadata (CRM fields echoed back): the host applies the `privacy` config to both
    destination_extras: ClassVar[frozenset[str]] = frozenset()
    metadata_extras: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: S, base_url: str | None = None) -> None:
        self.settings = settings
        self.base_url = (base_url or self.default_base_url_for(settings)).rstrip("/")

    @classmethod
    def default_base_url_for(cls, settings: S) -> str:
        """The documented base URL; override when it depends on settings (e.g. a region)."""
        return cls.default_base_url

    # -- the two pure functions ---------------------------------------------------------

    def build_request(self, call: P) -> httpx.Request:
        """The status request for `call` (use `self.url` so ids are encoded safely)."""
        raise NotImplementedError

    def parse_response(self, call: P, response: httpx.Response) -> CallStatus:
        """Turn a response into a `CallStatus`, or raise `PollError` naming the reason.

        An override (for special error bodies) hands the body on with `self.call_status(body)`.
        """
        self.raise_for_status(response)
        return self.call_status(self.json_object(response))

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        """Parse a status record (a status response's JSON object, a listed call, a webhook).

        `body[self.status_key]` is a string when this is called (`call_status` checks it).
        """
        raise NotImplementedError

    def call_status(self, body: dict[str, Any]) -> CallStatus:
        """`parse_body` with what every plugin needs around it: the raw status must be a string
        (else `PollError(invalid_response)`), and a `failed` call's `reason` text refines
        `failure_reason` through `classify_failure` unless the plugin set one."""
        raw = body.get(self.status_key)
        if not isinstance(raw, str):
            raise PollError(ErrorReason.INVALID_RESPONSE, f"`{self.status_key}` is missing or not a string")
        status = self.parse_body(body)
        if status.state is State.FAILED and status.failure_reason is None and status.reason:
            return replace(status, failure_reason=classify_failure(status.reason))
        return status

    # -- optional capabilities (issue: discovery, bulk status, webhooks) ---------------------
    #
    # A plugin offers discovery and bulk status by declaring `scope_keys` and implementing the
    # list pair; batch progress with the progress pair; push with `parse_webhook`. The host does
    # the paging, the timing and the rate limiting, exactly as for status requests.

    #: the keys a watch scope may use (e.g. {"agent_id"}); empty: no list endpoint
    scope_keys: ClassVar[frozenset[str]] = frozenset()
    #: raw statuses a bulk refresh lists, one filtered listing each (the non-terminal ones)
    list_status_filters: ClassVar[tuple[str, ...]] = ()
    #: when True, a scope lists calls created before it was added too (a batch: all its jobs)
    scope_includes_past: ClassVar[bool] = False
    #: when True, discovery also passes `created_after` (the oldest creation time it still
    #: needs) to `build_list_request`, for APIs that filter by creation time instead of paging
    list_filters_created_after: ClassVar[bool] = False

    def build_list_request(self, scope: Mapping[str, str], page: int, status: str | None) -> httpx.Request:
        """Page `page` (1-based) of the calls in `scope`, newest first, optionally one status.

        With `list_filters_created_after`, discovery calls it with a keyword argument
        `created_after` too (an aware datetime; absent on a scope's first full listing). When
        the previous page's `CallPage.next_cursor` was set, it comes back as keyword `cursor`.
        """
        raise NotImplementedError

    def parse_list_response(self, scope: Mapping[str, str], response: httpx.Response) -> CallPage:
        """A list response as a page of `ListedCall`s (raise `PollError` like `parse_response`)."""
        raise NotImplementedError

    def build_progress_request(self, scope: Mapping[str, str]) -> httpx.Request:
        """The batch-progress request for `scope`."""
        raise NotImplementedError

    def parse_progress_response(self, scope: Mapping[str, str], response: httpx.Response) -> BatchProgress:
        raise NotImplementedError

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        """A result webhook's body as the call it is about; ValueError if it is not one.

        The host decodes the body first: a JSON object, or the fields of an
        `application/x-www-form-urlencoded` body (as Twilio sends) as a dict of strings.
        """
        raise NotImplementedError

    def verify_webhook(self, request: httpx.Request) -> None:
        """Check the provider's signature on a result webhook before its body is parsed.

        `request` is the webhook as received: method, the URL the exporter was called on
        (query string included), headers and the raw body. Raise `WebhookSignatureError` when
        the provider documents a signature and it is missing or wrong. The default checks
        nothing: the account's `webhook_token` is the only proof then.
        """

    def paged_calls(
        self, response: httpx.Response, items_key: str, identity: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> CallPage:
        """A list response of the common shape `{items_key: [records], "pagination": {"hasNext"}}`:
        each record parsed like a status body, `identity(record)` giving its call id and params."""
        self.raise_for_status(response)
        body = self.json_object(response)
        items, paging = body.get(items_key), body.get("pagination")
        if not isinstance(items, list) or not isinstance(paging, dict):
            raise PollError(ErrorReason.INVALID_RESPONSE, f"a list response needs `{items_key}` and `pagination`")
        if not all(isinstance(item, dict) for item in items):
            raise PollError(ErrorReason.INVALID_RESPONSE, f"`{items_key}` holds something else than objects")
        calls = tuple(ListedCall(identity(item), self.call_status(item)) for item in items)
        return CallPage(calls, has_next=paging.get("hasNext") is True)

    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether the plugin implements `list`, `progress` or `webhook`."""
        method = {"list": "parse_list_response", "progress": "parse_progress_response", "webhook": "parse_webhook"}[
            capability
        ]
        return getattr(cls, method) is not getattr(Provider, method)

    # -- helpers plugins call -------------------------------------------------------------

    def url(self, *segments: str, query: Mapping[str, str] | None = None) -> httpx.URL:
        """`base_url` + each segment URL-encoded as exactly one path segment.

        Empty, `.` and `..` segments are refused: URL normalization would remove them and
        change which resource is addressed.
        """
        for segment in segments:
            if str(segment) in ("", ".", ".."):
                raise ValueError(f"path segment {segment!r} is not allowed")
        path = "/".join(quote(str(s), safe="") for s in segments)
        return httpx.URL(f"{self.base_url}/{path}", params=query)

    def normalize(self, raw: Any) -> State:
        """Map a raw status through `status_map`; anything unknown is `State.UNKNOWN`."""
        return self.status_map.get(raw, State.UNKNOWN) if isinstance(raw, str) else State.UNKNOWN

    @staticmethod
    def raise_for_status(response: httpx.Response) -> None:
        """Raise the `PollError` a non-2xx response stands for (the common HTTP semantics)."""
        code = response.status_code
        if 200 <= code < 300:
            return
        where = f"HTTP {code} from {response.request.url.path}" if _has_request(response) else f"HTTP {code}"
        if code in (401, 403):
            raise PollError(ErrorReason.UNAUTHORIZED, f"{where}: credentials refused")
        if code == 404:
            raise PollError(ErrorReason.NOT_FOUND, f"{where}: call not found")
        if code == 429:
            raise PollError(
                ErrorReason.RATE_LIMITED,
                f"{where}: rate limited",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if code >= 500:
            raise PollError(
                ErrorReason.SERVER_ERROR,
                f"{where}: provider error",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        raise PollError(ErrorReason.CLIENT_ERROR, f"{where}: request refused")

    @staticmethod
    def json_object(response: httpx.Response) -> dict[str, Any]:
        """The body as a JSON object, or `PollError(invalid_response)`."""
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise PollError(ErrorReason.INVALID_RESPONSE, f"body is not JSON: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise PollError(ErrorReason.INVALID_RESPONSE, "body is not a JSON object")
        return body


def _has_request(response: httpx.Response) -> bool:
    try:
        _ = response.request
    except RuntimeError:
        return False
    return True
