"""The ingest use case: from an HTTP request to profiles safe in SQS, or a refusal that names the problem."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from aep_moengage.ingest.auth import WWW_AUTHENTICATE, TokenSecretError, is_authorized
from aep_moengage.ingest.enqueue import EnqueueError, SqsEnqueuer, pack_profiles
from aep_moengage.ingest.normalize import NormalizationResult, Rejection, UnrecognizedBodyError, normalize_body
from aep_moengage.ingest.settings import IngestSettings
from aep_moengage.secrets import SecretUnavailableError

JSON_MEDIA_TYPES = ("application/json",)
# AEP retries 503 (and 429, 5xx) twice, after 15 s and 30 s.
RETRY_AFTER_SECONDS = "15"


@dataclass(frozen=True)
class HttpRequest:
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    correlation_id: str
    source_ip: str | None = None


@dataclass
class HttpResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestReport:
    """What happened, for metrics and the one log line per request (counts only, never values)."""

    refused: str | None = None  # error code when the request as a whole was refused
    result: NormalizationResult | None = None
    enqueued_indexes: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    messages: int = 0
    sqs_calls: int = 0
    retried_entries: int = 0


def error_response(status: int, code: str, message: str, correlation_id: str, **extra: Any) -> HttpResponse:
    return HttpResponse(
        status, {"error": {"code": code, "message": message}, "correlation_id": correlation_id, **extra}
    )


class NonJsonConstantError(ValueError):
    """Python's json module accepts NaN and Infinity, which JSON (RFC 8259) does not."""


def _reject_constant(name: str) -> Any:
    raise NonJsonConstantError(f"{name} is not a JSON value")


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        tokens: Callable[[], tuple[str, ...]],
        enqueuer: SqsEnqueuer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._enqueuer = enqueuer
        self._clock = clock

    def handle(self, request: HttpRequest, report: IngestReport) -> HttpResponse:
        started = self._clock()
        cid = request.correlation_id

        def refuse(status: int, code: str, message: str, **extra: Any) -> HttpResponse:
            report.refused = code
            return error_response(status, code, message, cid, **extra)

        if not self._source_allowed(request.source_ip):
            return refuse(403, "forbidden_source", "requests from this address are not allowed")
        try:
            tokens = self._tokens()
        except (SecretUnavailableError, TokenSecretError) as error:
            response = refuse(503, "auth_unavailable", f"authentication is not available: {error}")
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response
        if not is_authorized(request.headers.get("authorization"), tokens):
            response = refuse(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
            response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
            return response

        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in JSON_MEDIA_TYPES:
            return refuse(415, "unsupported_media_type", "Content-Type must be application/json")
        if len(request.body) > self._settings.max_body_bytes:
            return refuse(
                413,
                "payload_too_large",
                f"the body is {len(request.body)} bytes; the limit is {self._settings.max_body_bytes} bytes",
                limit_bytes=self._settings.max_body_bytes,
            )
        try:
            body = json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as error:
            return refuse(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {error.start})")
        except json.JSONDecodeError as error:
            return refuse(400, "invalid_json", f"the body is not valid JSON: {error.msg} at line {error.lineno}")
        except NonJsonConstantError as error:
            return refuse(400, "invalid_json", f"the body is not valid JSON: {error}")
        except RecursionError:
            return refuse(400, "invalid_json", "the body is nested too deeply")
        except ValueError:  # e.g. an integer literal over Python's 4,300-digit limit
            return refuse(400, "invalid_json", "the body holds a number too long to read")
        try:
            result = normalize_body(body)
        except UnrecognizedBodyError as error:
            return refuse(400, "unrecognized_shape", str(error))
        except RecursionError:
            return refuse(400, "invalid_json", "the body is nested too deeply")
        report.result = result

        packing = pack_profiles(
            result.profiles,
            correlation_id=cid,
            received_at=datetime.now(UTC),
            max_bytes=self._settings.queue_message_max_bytes,
        )
        rejected = [
            *result.rejected,
            *(
                Rejection(index, f"the profile is larger than {self._settings.queue_message_max_bytes} bytes")
                for index in packing.oversized
            ),
            *(
                Rejection(index, "the profile holds text that is not valid Unicode (an unpaired surrogate escape)")
                for index in packing.unencodable
            ),
        ]
        rejected.sort(key=lambda rejection: rejection.index)
        report.rejected = rejected
        rejected_body = [{"index": r.index, "reason": r.reason} for r in rejected]
        if not packing.messages:
            return refuse(
                400, "no_usable_profile", "no profile in the request can be delivered", rejected=rejected_body
            )

        deadline = started + self._settings.enqueue_deadline_ms / 1000
        try:
            stats = self._enqueuer.send(packing.messages, correlation_id=cid, deadline=deadline)
        except EnqueueError as error:
            report.sqs_calls, report.retried_entries = error.stats.calls, error.stats.retried_entries
            response = refuse(503, "enqueue_failed", "the profiles could not be stored; retry the request")
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response
        report.sqs_calls, report.retried_entries = stats.calls, stats.retried_entries
        report.enqueued_indexes = [index for message in packing.messages for index in message.indexes]
        report.messages = len(packing.messages)
        enqueued = len(report.enqueued_indexes)
        return HttpResponse(
            200,
            {
                "status": "accepted",
                "correlation_id": cid,
                "received": enqueued + len(rejected),
                "accepted": enqueued,
                "rejected": rejected_body,
            },
        )

    def _source_allowed(self, source_ip: str | None) -> bool:
        allowed = self._settings.allowed_source_cidrs
        if not allowed:
            return True
        try:
            address = ip_address(source_ip or "")
        except ValueError:
            return False
        return any(address in network for network in allowed)
