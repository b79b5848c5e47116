"""A fake Trillet batch-calls API, faithful to the job-status doc.

`GET /v1/api/batch-calls/{batchId}/calls/{jobId}` with `x-api-key` and `x-workspace-id`;
statuses waiting / active / completed / failed; `startTime` / `endTime` in epoch milliseconds,
`duration` in seconds, `error` text on failed jobs (busy and no-answer live only there), a
`result` object on completed ones, and `404 {"status": "not_found", "error": ...}` for an
unknown job or one past retention.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, Mapping

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider, Step

#: what Trillet writes in `error` for each way a job fails (the busy text is the doc's own)
ERRORS = {
    State.BUSY: "Number busy - unable to connect after 3 attempts",
    State.NO_ANSWER: "No answer - unable to connect after 3 attempts",
    State.FAILED: "Call failed due to a telephony error",
}


def _ms(ts: float) -> int:
    return int(ts * 1000)


class TrilletFake(FakeProvider):
    provider = "trillet"
    #: busy and no-answer are `failed` jobs at Trillet (with an `error` text); no dialing state
    raw_status = {
        State.QUEUED: "waiting",
        State.IN_PROGRESS: "active",
        State.COMPLETED: "completed",
        State.FAILED: "failed",
        State.BUSY: "failed",
        State.NO_ANSWER: "failed",
    }
    batch_id = "batch_7891011121314"
    workspace_id = "ws_fake_workspace"

    def default_credentials(self) -> dict[str, str]:
        return {"api_key": "fake-trillet-key", "workspace_id": self.workspace_id}

    def demo_settings(self) -> dict[str, Any]:
        return {**self.credentials, "batch_id": self.batch_id}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/api/batch-calls/{batch_id}/calls/{job_id}", self._status),
            web.get("/v1/api/batch-calls/{batch_id}/calls", self._list),
            web.get("/v1/api/batch-calls/{batch_id}/status", self._progress),
        ]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """`?page&limit(≤100, default 20)&status=all|waiting|active|completed|failed`."""
        q = request.query
        status = q.get("status", "all")
        try:
            page, limit = int(q.get("page", "1")), int(q.get("limit", "20"))
        except ValueError:
            return web.json_response({"error": "page and limit must be integers"}, status=400)
        if status not in ("all", *self.raw_status.values()) or not 1 <= limit <= 100 or page < 1:
            return web.json_response({"error": "invalid query"}, status=400)
        return await self.serve_list(
            request, {"batch_id": request.match_info["batch_id"]}, None if status == "all" else status, page, limit
        )

    def render_list(
        self, items: list[dict[str, Any]], paging: dict[str, Any], calls: list[FakeCall], now: float
    ) -> dict[str, Any]:
        return {"calls": items, "pagination": paging, "summary": {"total": len(calls), **self._counts(calls, now)}}

    def _counts(self, calls: list[FakeCall], now: float) -> dict[str, int]:
        counts = {s: 0 for s in ("waiting", "active", "completed", "failed")}
        for call in calls:
            counts[call.steps[call.step_index(now, self.speed)].status] += 1
        return counts

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/api/batch-calls/{batchId}/status`: the batch's counters; 404 for an unknown batch."""
        refused = await self.gate(request, "progress")
        if refused is not None:
            return refused
        now = time.time()
        calls = self.matching({"batch_id": request.match_info["batch_id"]}, None, now)
        if not calls:
            return self.not_found()
        counts = self._counts(calls, now)
        complete = counts["waiting"] == counts["active"] == 0
        return web.json_response(
            {
                "status": "completed" if complete else "processing",
                "isComplete": complete,
                **counts,
                "total": len(calls),
                "startTime": _ms(min(c.created for c in calls)),
                "lastCompletedTime": None,
                "completedTime": _ms(now) if complete else None,
                "averageCallDuration": None,
                "recent_calls": [],
            }
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return await self.serve_status(request, m["job_id"], {"batch_id": m["batch_id"]})

    def authorized(self, request: web.Request) -> bool:
        return (
            request.headers.get("x-api-key") == self.credentials["api_key"]
            and request.headers.get("x-workspace-id") == self.credentials["workspace_id"]
        )

    def not_found(self) -> web.Response:
        return web.json_response({"status": "not_found", "error": "Call not found"}, status=404)

    def key(self, call_id: str, params: Mapping[str, str]) -> tuple[str, ...]:
        return (params.get("batch_id", ""), call_id)

    def new_params(self) -> dict[str, str]:
        return {"batch_id": self.batch_id}

    def add_call(self, call_id: str | None = None, *args: Any, **kwargs: Any) -> FakeCall:
        """As the base, with Trillet-looking job ids (`call_…`) by default."""
        return super().add_call(call_id or f"call_{uuid.uuid4().hex[:16]}", *args, **kwargs)

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        return {"error": ERRORS[outcome]} if outcome in ERRORS else {}

    def lifecycle(self, outcome: State, rng: random.Random | None = None) -> list[Step]:
        """waiting -> active (ringing, then talking if answered) -> completed | failed."""
        rng = rng or self.rng
        start = rng.uniform(0.5, 3)
        steps = [Step("waiting", 0.0), Step("active", start)]
        if outcome is State.COMPLETED:
            return steps + [Step("completed", start + rng.uniform(10, 50))]
        ring = {State.NO_ANSWER: (20, 45), State.BUSY: (1, 5)}.get(outcome, (0.5, 4))
        return steps + [Step("failed", start + rng.uniform(*ring))]

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1 and status in ("completed", "failed")
        started = next(
            (call.created + s.after / self.speed for s in call.steps[1 : index + 1] if s.status != "waiting"), None
        )
        record: dict[str, Any] = {"jobId": call.call_id, "status": status, "phone_number": "+1234567890"}
        if started is not None:
            record["startTime"] = _ms(started)
        if terminal:
            ended = call.ended_at(self.speed)
            record["endTime"] = _ms(ended)
            if status == "completed":
                record["duration"] = round(ended - (started if started is not None else ended))
                record["result"] = {
                    "callId": f"call_{call.call_id[-12:]}",
                    "transcript": "Hello John, this is an automated call...",
                    "outcome": "successful",
                    "metadata": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"},
                }
            record.update(call.fields)
        return record
