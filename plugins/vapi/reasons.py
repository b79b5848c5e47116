"""Vapi's `endedReason` (627 documented values) as a terminal state, a failure category and a SIP code.

Vapi reports every finished call as `status: "ended"`; only `endedReason` says how it ended.
The values follow a few families (docs.vapi.ai/calls/call-ended-reason, copied to
docs/providers/reference/vapi.md; the full enum is docs/providers/reference/vapi-ended-reasons.txt, from
Vapi's OpenAPI `Call.endedReason`), so they are classified by exact value first, then by family:

- `customer-busy` → busy; `customer-did-not-answer` → no_answer; the outbound SIP 408/480
  errors → no_answer (the doc's "phone rang but no answer: customer-did-not-answer,
  customer-busy, SIP 408/480"); `vonage-rejected` → busy (rejected: carriers report busy so);
- `manually-canceled`, `scheduled-call-deleted`, `call-deleted` → cancelled;
- every error family (`call.start.error-*`, `call.in-progress.error-*`, `pipeline-error-*`,
  `*-failed-to-connect-call`, `assistant-not-*`, `assistant-request-*` errors, worker and
  transport drops) → failed;
- everything else (the assistant or the customer ended it, timeouts, transfers, voicemail,
  hooks) → completed: the call happened.

A reason Vapi adds later falls into its family; one outside every family is `completed` when
it reads like an ordinary end and `failed` when it mentions an error or a failure.
"""

from __future__ import annotations

import re

from outbound_call_exporter import FailureReason, State

#: exact values whose outcome is not `completed`, with their failure category
EXACT: dict[str, tuple[State, FailureReason | None]] = {
    "customer-busy": (State.BUSY, FailureReason.BUSY),
    "customer-did-not-answer": (State.NO_ANSWER, FailureReason.NO_ANSWER),
    "vonage-rejected": (State.BUSY, FailureReason.REJECTED),
    "manually-canceled": (State.CANCELLED, FailureReason.CANCELLED),
    "scheduled-call-deleted": (State.CANCELLED, FailureReason.CANCELLED),
    "call-deleted": (State.CANCELLED, FailureReason.CANCELLED),
    "call.ringing.sip-inbound-caller-hungup-before-call-connect": (State.CANCELLED, FailureReason.CANCELLED),
    "twilio-failed-to-connect-call": (State.FAILED, FailureReason.UNREACHABLE),
    "vonage-failed-to-connect-call": (State.FAILED, FailureReason.UNREACHABLE),
    "twilio-reported-customer-misdialed": (State.FAILED, FailureReason.UNREACHABLE),
    "call.in-progress.error-sip-outbound-call-failed-to-connect": (State.FAILED, FailureReason.UNREACHABLE),
    "call.in-progress.error-sip-inbound-call-failed-to-connect": (State.FAILED, FailureReason.UNREACHABLE),
    "call.ringing.error-sip-inbound-call-failed-to-connect": (State.FAILED, FailureReason.UNREACHABLE),
    "call.start.error-subscription-concurrency-limit-reached": (State.FAILED, FailureReason.QUEUE_TIMEOUT),
    "customer-did-not-give-microphone-permission": (State.FAILED, FailureReason.OTHER),
    "assistant-join-timed-out": (State.FAILED, FailureReason.OTHER),
    "assistant-not-found": (State.FAILED, FailureReason.OTHER),
    "assistant-not-valid": (State.FAILED, FailureReason.OTHER),
    "assistant-request-failed": (State.FAILED, FailureReason.OTHER),
    "assistant-request-returned-error": (State.FAILED, FailureReason.OTHER),
    "assistant-request-returned-unspeakable-error": (State.FAILED, FailureReason.OTHER),
    "assistant-request-returned-invalid-assistant": (State.FAILED, FailureReason.OTHER),
    "assistant-request-returned-no-assistant": (State.FAILED, FailureReason.OTHER),
    "call-start-error-neither-assistant-nor-server-set": (State.FAILED, FailureReason.OTHER),
    "worker-shutdown": (State.FAILED, FailureReason.OTHER),
    "phone-call-provider-closed-websocket": (State.FAILED, FailureReason.OTHER),
    "phone-call-provider-bypass-enabled-but-no-call-received": (State.FAILED, FailureReason.OTHER),
}

#: `call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable` → 480
_SIP = re.compile(r"\bsip-(\d{3})-")
#: SIP answers that mean the callee was not reached (Vapi: "phone rang but no answer ... SIP 408/480")
_NOT_ANSWERED_SIP = {408, 480}
_ERROR_FAMILY = re.compile(r"^(call\.[a-z-]+\.error-|call\.start\.|pipeline-|call-start-error)|error|fault|failed")


def sip_code(reason: str) -> int | None:
    """The SIP status an `endedReason` names, if any."""
    match = _SIP.search(reason)
    return int(match.group(1)) if match else None


def classify(reason: str | None) -> tuple[State, FailureReason | None]:
    """The terminal state (and failure category) an ended call with this reason is in."""
    if not reason:
        return State.COMPLETED, None  # ended without a reason: nothing says it went wrong
    if reason in EXACT:
        return EXACT[reason]
    code = sip_code(reason)
    if code in _NOT_ANSWERED_SIP:
        return State.NO_ANSWER, FailureReason.NO_ANSWER
    if code is not None:
        return State.FAILED, FailureReason.REJECTED if code in (403, 603) else FailureReason.OTHER
    if _ERROR_FAMILY.search(reason):
        return State.FAILED, FailureReason.OTHER
    return State.COMPLETED, None
