"""Send elements to MoEngage: pack requests, rate-limit, retry, split (413), bisect (400), classify outcomes.

Every element ends DELIVERED, FAILED (permanent: goes to the DLQ) or RETRY (handed back to SQS).
Retries inside one invocation stop while there is still time to answer SQS: a first call needs one request
timeout plus a reserve; a retry needs twice the request timeout left after its wait.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from aep_moengage.delivery.client import CallKind, CallResult, bulk_body_size
from aep_moengage.delivery.elements import Element
from aep_moengage.delivery.ratelimit import TokenBucket
from aep_moengage.secrets import SecretUnavailableError

MAX_REQUEST_BYTES = 100_000  # MoEngage: 100 KB a bulk request (102,400), with a margin
MAX_ATTEMPTS = 5  # per request, for 429/5xx/timeouts ("retry ... a maximum of 5 times")
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 20.0
RESERVE_SECONDS = 2.0  # kept for DLQ sends, visibility changes and the response


class BulkClient(Protocol):
    def post_bulk(self, elements: Sequence[bytes]) -> CallResult: ...

    def refresh_credentials(self) -> None: ...


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class ElementOutcome:
    verdict: Verdict
    reason: str = ""  # short code, e.g. moengage_rejected, moengage_unavailable
    detail: str = ""  # no PII, no secrets


DELIVERED = ElementOutcome(Verdict.DELIVERED)


class Deadline:
    """The invocation's remaining time, read once from the Lambda context and counted down locally."""

    def __init__(
        self,
        seconds: float,
        *,
        request_timeout_seconds: float,
        reserve_seconds: float = RESERVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._end = clock() + seconds
        self.request_timeout = request_timeout_seconds
        self.reserve = reserve_seconds

    @classmethod
    def from_context(cls, context: Any, *, request_timeout_seconds: float) -> Deadline:
        return cls(context.get_remaining_time_in_millis() / 1000.0, request_timeout_seconds=request_timeout_seconds)

    def remaining(self) -> float:
        return self._end - self._clock()

    def can_call(self) -> bool:
        return self.remaining() >= self.request_timeout + self.reserve

    def can_retry_after(self, wait_seconds: float) -> bool:
        return self.remaining() - wait_seconds >= 2 * self.request_timeout + self.reserve

    def wait_budget(self) -> float:
        """How long one may sleep and still make a call."""
        return max(0.0, self.remaining() - self.request_timeout - self.reserve)


def _ignore(_: CallResult) -> None:
    return None


class BulkSender:
    def __init__(
        self,
        client: BulkClient,
        limiter: TokenBucket,
        deadline: Deadline,
        *,
        on_call: Callable[[CallResult], None] = _ignore,
        on_auth_failure: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._deadline = deadline
        self._on_call = on_call
        self._on_auth_failure = on_auth_failure
        self._sleep = sleep
        self._rng = rng
        self._max_bytes = max_request_bytes
        self._max_attempts = max_attempts
        self._auth_refreshed = False
        self._stopped: ElementOutcome | None = None  # set when nothing more can be sent in this invocation
        self.requests_sent = 0

    def send(self, elements: Sequence[Element]) -> list[ElementOutcome]:
        outcomes: list[ElementOutcome | None] = [None] * len(elements)
        for chunk in self._pack(elements, outcomes):
            if self._stopped is None and not self._deadline.can_call():
                self._stopped = ElementOutcome(Verdict.RETRY, "no_time_left", "invocation time ran out")
            users = sum(elements[index].users for index in chunk)
            if self._stopped is None and not self._limiter.acquire(users, self._deadline.wait_budget()):
                self._stopped = ElementOutcome(Verdict.RETRY, "rate_limited_locally", "client-side rate limit")
            if self._stopped is not None:
                for index in chunk:
                    outcomes[index] = self._stopped
                continue
            self._send_request(chunk, elements, outcomes)
        not_sent = self._stopped or ElementOutcome(Verdict.RETRY, "not_sent", "")
        return [outcome or not_sent for outcome in outcomes]

    def _pack(self, elements: Sequence[Element], outcomes: list[ElementOutcome | None]) -> list[list[int]]:
        """Greedy packing in order: as many elements as fit under the size limit and the limiter's capacity."""
        chunks: list[list[int]] = []
        chunk: list[int] = []
        chunk_bytes = chunk_users = 0
        max_users = self._limiter.max_acquire
        for index, element in enumerate(elements):
            size = len(element.body)
            if bulk_body_size(size, 1) > self._max_bytes:
                outcomes[index] = ElementOutcome(
                    Verdict.FAILED, "element_too_large", f"one user's element is {size} bytes (limit 100 KB)"
                )
                continue
            fits = bulk_body_size(chunk_bytes + size, len(chunk) + 1) <= self._max_bytes
            if chunk and (not fits or chunk_users + element.users > max_users):
                chunks.append(chunk)
                chunk, chunk_bytes, chunk_users = [], 0, 0
            chunk.append(index)
            chunk_bytes += size
            chunk_users += element.users
        if chunk:
            chunks.append(chunk)
        return chunks

    def _send_request(
        self, indices: list[int], elements: Sequence[Element], outcomes: list[ElementOutcome | None]
    ) -> None:
        parts: deque[list[int]] = deque([indices])
        while parts:
            part = parts.popleft()
            result = self._call_with_retries([elements[index].body for index in part])
            if result is None:  # stopped: no time left or credentials refused
                continue
            if result.kind in (CallKind.TOO_LARGE, CallKind.BAD_REQUEST) and len(part) > 1:
                half = len(part) // 2
                parts.extendleft([part[half:], part[:half]])  # extendleft reverses: first half goes first
                continue
            for index in part:
                outcomes[index] = _outcome(result, elements[index] if len(part) == 1 else None)

    def _call_with_retries(self, bodies: list[bytes]) -> CallResult | None:
        attempt = 0
        while True:
            if self._stopped is not None:
                return None
            if not self._deadline.can_call():
                self._stopped = ElementOutcome(Verdict.RETRY, "no_time_left", "invocation time ran out")
                return None
            result = self._client.post_bulk(bodies)
            self.requests_sent += 1
            self._on_call(result)
            if result.kind is CallKind.AUTH:
                if not self._auth_refreshed and self._refresh_credentials():
                    continue
                self._on_auth_failure()
                self._stopped = ElementOutcome(Verdict.RETRY, "moengage_auth_failed", result.detail)
                return None
            if result.kind not in (CallKind.RATE_LIMITED, CallKind.TRANSIENT):
                return result
            attempt += 1
            wait = result.retry_after_seconds
            if wait is None:  # exponential backoff with full jitter
                wait = self._rng() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
            if attempt >= self._max_attempts or not self._deadline.can_retry_after(wait):
                return result
            self._sleep(wait)

    def _refresh_credentials(self) -> bool:
        """Re-read the secret once per invocation: a rotated key must deliver without a redeploy."""
        self._auth_refreshed = True
        try:
            self._client.refresh_credentials()
        except SecretUnavailableError:
            return False
        return True


def _outcome(result: CallResult, single: Element | None) -> ElementOutcome:
    if result.kind is CallKind.OK:
        return DELIVERED
    if result.kind is CallKind.RATE_LIMITED:
        return ElementOutcome(Verdict.RETRY, "moengage_rate_limited", result.detail)
    if result.kind is CallKind.TRANSIENT:
        return ElementOutcome(Verdict.RETRY, "moengage_unavailable", result.detail)
    detail = redact(result.detail, single) if single else result.detail
    return ElementOutcome(Verdict.FAILED, "moengage_rejected", detail)


def redact(text: str, element: Element) -> str:
    """MoEngage's error text may echo the element's data: blank out its id and string values."""
    values = {element.customer_id}
    try:
        payload = json.loads(element.body)
    except ValueError:
        payload = {}
    _collect_strings([payload.get("attributes"), payload.get("actions")], values)
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


def _collect_strings(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        into.add(value)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, into)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, into)
