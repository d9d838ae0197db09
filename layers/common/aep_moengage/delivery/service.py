"""One invocation: parse SQS messages -> map -> merge per customer -> pack -> send -> one outcome per message.

A message is settled (deleted from the queue) when every profile in it was delivered, skipped or sent to the
DLQ with its reason. Otherwise it is handed back to SQS with an exponential visibility backoff; on its last
allowed receive it goes to the DLQ as `retries_exhausted` instead, so every DLQ message carries a reason.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from aep_moengage.delivery import telemetry
from aep_moengage.delivery.elements import ProfileRef, build_elements
from aep_moengage.delivery.mapping import MappedProfile, MappingRules, UnmappedProfile, map_profile
from aep_moengage.delivery.ratelimit import TokenBucket
from aep_moengage.delivery.sending import BulkClient, BulkSender, Deadline, ElementOutcome, Verdict
from aep_moengage.delivery.settings import SQS_MAX_VISIBILITY_SECONDS, DeliverySettings
from aep_moengage.models.queue import ATTR_CORRELATION_ID, QueueMessage
from aep_moengage.observability import logger

MAX_DETAIL_LENGTH = 1_000


class QueuePort(Protocol):
    def change_visibility(self, receipt_handle: str, seconds: int) -> None: ...

    def send_to_dlq(self, body: str, *, reason: str, detail: str, correlation_id: str | None) -> None: ...


@dataclass(frozen=True)
class InboundMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    correlation_id: str | None

    @classmethod
    def from_sqs_record(cls, record: Mapping[str, Any]) -> InboundMessage:
        attributes = record.get("attributes") or {}
        correlation = ((record.get("messageAttributes") or {}).get(ATTR_CORRELATION_ID) or {}).get("stringValue")
        return cls(
            message_id=record["messageId"],
            receipt_handle=record.get("receiptHandle", ""),
            body=record.get("body") or "",
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            correlation_id=correlation,
        )


@dataclass
class DeliveryDependencies:
    settings: DeliverySettings
    rules: MappingRules
    client: BulkClient
    limiter: TokenBucket
    queue: QueuePort
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random


class ProfileStatus(StrEnum):
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRY = "retry"


_SEVERITY = {ProfileStatus.DELIVERED: 0, ProfileStatus.SKIPPED: 0, ProfileStatus.FAILED: 1, ProfileStatus.RETRY: 2}


@dataclass(frozen=True)
class ProfileOutcome:
    status: ProfileStatus
    reason: str = ""
    detail: str = ""

    @classmethod
    def of_element(cls, outcome: ElementOutcome) -> ProfileOutcome:
        status = {
            Verdict.DELIVERED: ProfileStatus.DELIVERED,
            Verdict.FAILED: ProfileStatus.FAILED,
            Verdict.RETRY: ProfileStatus.RETRY,
        }[outcome.verdict]
        return cls(status, outcome.reason, outcome.detail)


@dataclass
class BatchReport:
    """What happened to the batch: the messages to hand back to SQS and the counts behind the metrics."""

    retry_message_ids: set[str] = field(default_factory=set)
    delivered: int = 0
    skipped: int = 0
    retried: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dropped_attributes: Counter[str] = field(default_factory=Counter)
    requests: int = 0


def deliver_batch(messages: Sequence[InboundMessage], deps: DeliveryDependencies, deadline: Deadline) -> BatchReport:
    report = BatchReport()
    logger.append_keys(correlation_ids=sorted({m.correlation_id for m in messages if m.correlation_id}))
    parsed: list[tuple[InboundMessage, QueueMessage]] = []
    for message in messages:
        try:
            parsed.append((message, QueueMessage.model_validate_json(message.body)))
        except ValidationError as error:
            _dead_letter_invalid(message, error, deps, report)

    outcomes: dict[ProfileRef, ProfileOutcome] = {}
    mapped: list[tuple[ProfileRef, MappedProfile]] = []
    for message, queue_message in parsed:
        for position, profile in enumerate(queue_message.profiles):
            ref = ProfileRef(message.message_id, position)
            result = map_profile(profile, deps.rules)
            if isinstance(result, UnmappedProfile):
                status = ProfileStatus.SKIPPED if result.skipped else ProfileStatus.FAILED
                outcomes[ref] = ProfileOutcome(status, result.reason, result.detail)
                continue
            if result.dropped:
                report.dropped_attributes.update(item.reason for item in result.dropped)
                logger.warning(
                    "attributes not sent: MoEngage would reject or alter them",
                    extra={
                        "message_id": message.message_id,
                        "correlation_id": message.correlation_id,
                        "profile_index": profile.index,
                        "dropped": [{"attribute": item.name, "reason": item.reason} for item in result.dropped],
                    },
                )
            mapped.append((ref, result))

    elements, invalid_users = build_elements(
        mapped, update_existing_only=deps.settings.update_existing_only, audience_events=deps.settings.audience_events
    )
    for invalid in invalid_users:
        for ref in invalid.sources:
            outcomes[ref] = ProfileOutcome(ProfileStatus.FAILED, "invalid_element", invalid.detail)

    recorder = telemetry.CallRecorder()
    sender = BulkSender(
        deps.client,
        deps.limiter,
        deadline,
        on_call=recorder.on_call,
        on_auth_failure=recorder.on_auth_failure,
        sleep=deps.sleep,
        rng=deps.rng,
    )
    for element, element_outcome in zip(elements, sender.send(elements), strict=True):
        new = ProfileOutcome.of_element(element_outcome)
        for ref in element.sources:
            current = outcomes.get(ref)
            if current is None or _SEVERITY[new.status] > _SEVERITY[current.status]:
                outcomes[ref] = new
    recorder.flush()
    report.requests = sender.requests_sent

    for message, queue_message in parsed:
        _settle(message, queue_message, outcomes, deps, report)
    _emit_metrics(report)
    logger.info(
        "batch delivered",
        extra={
            "messages": len(messages),
            "retry_messages": len(report.retry_message_ids),
            "profiles_delivered": report.delivered,
            "profiles_skipped": report.skipped,
            "profiles_retried": report.retried,
            "profiles_failed": dict(report.failed),
            "moengage_requests": report.requests,
        },
    )
    return report


def _settle(
    message: InboundMessage,
    queue_message: QueueMessage,
    outcomes: dict[ProfileRef, ProfileOutcome],
    deps: DeliveryDependencies,
    report: BatchReport,
) -> None:
    unknown = ProfileOutcome(ProfileStatus.RETRY, "not_sent", "")
    per_profile = [
        outcomes.get(ProfileRef(message.message_id, position), unknown)
        for position in range(len(queue_message.profiles))
    ]
    retry = [position for position, outcome in enumerate(per_profile) if outcome.status is ProfileStatus.RETRY]
    log_keys = {"message_id": message.message_id, "correlation_id": message.correlation_id}
    if retry and message.receive_count < deps.settings.max_receive_count:
        seconds = visibility_backoff(message.receive_count, deps.settings, deps.rng)
        try:
            deps.queue.change_visibility(message.receipt_handle, seconds)
        except Exception as error:  # the queue's own visibility timeout applies instead
            logger.warning("could not change visibility", extra={**log_keys, "error": type(error).__name__})
        report.retry_message_ids.add(message.message_id)
        report.retried += len(retry)
        logger.info(
            "message handed back to SQS",
            extra={
                **log_keys,
                "receive_count": message.receive_count,
                "visibility_seconds": seconds,
                "reasons": sorted({per_profile[position].reason for position in retry}),
            },
        )
        return

    groups: dict[str, list[int]] = {}
    for position, outcome in enumerate(per_profile):
        if outcome.status is ProfileStatus.FAILED:
            groups.setdefault(outcome.reason, []).append(position)
    if retry:
        groups["retries_exhausted"] = retry
    for reason, positions in groups.items():
        failed_message = queue_message.model_copy(update={"profiles": [queue_message.profiles[p] for p in positions]})
        detail = _group_detail(reason, [(queue_message.profiles[p].index, per_profile[p]) for p in positions])
        correlation_id = message.correlation_id or queue_message.correlation_id
        if not _send_to_dlq(failed_message.model_dump_json(), reason, detail, correlation_id, deps, log_keys):
            report.retry_message_ids.add(message.message_id)
            report.retried += len(per_profile) - sum(o.status is ProfileStatus.SKIPPED for o in per_profile)
            return
    for reason, positions in groups.items():
        report.failed[reason] += len(positions)
    report.delivered += sum(outcome.status is ProfileStatus.DELIVERED for outcome in per_profile)
    report.skipped += sum(outcome.status is ProfileStatus.SKIPPED for outcome in per_profile)


def _group_detail(reason: str, failures: list[tuple[int, ProfileOutcome]]) -> str:
    """'profiles [0, 3]: <detail>' per distinct detail; for retries_exhausted the last error."""
    by_detail: dict[str, list[int]] = {}
    for index, outcome in failures:
        text = outcome.detail or outcome.reason
        if reason == "retries_exhausted":
            text = f"last error {outcome.reason}: {outcome.detail}".rstrip(": ")
        by_detail.setdefault(text, []).append(index)
    return "; ".join(f"profiles {indexes}: {text}" for text, indexes in by_detail.items())[:MAX_DETAIL_LENGTH]


def _dead_letter_invalid(
    message: InboundMessage, error: ValidationError, deps: DeliveryDependencies, report: BatchReport
) -> None:
    """A body that is not a QueueMessage goes to the DLQ as it came (it cannot be rebuilt)."""
    # Locations and messages only: the input values may be PII.
    detail = "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'body'}: {issue['msg']}" for issue in error.errors()
    )
    log_keys = {"message_id": message.message_id, "correlation_id": message.correlation_id}
    if _send_to_dlq(
        message.body, "invalid_message", detail[:MAX_DETAIL_LENGTH], message.correlation_id, deps, log_keys
    ):
        report.failed["invalid_message"] += 1
    else:
        report.retry_message_ids.add(message.message_id)


def _send_to_dlq(
    body: str,
    reason: str,
    detail: str,
    correlation_id: str | None,
    deps: DeliveryDependencies,
    log_keys: dict[str, Any],
) -> bool:
    try:
        deps.queue.send_to_dlq(body, reason=reason, detail=detail, correlation_id=correlation_id)
    except Exception as error:  # never lose a message: it is handed back to SQS instead
        logger.error("could not send to the DLQ", extra={**log_keys, "reason": reason, "error": type(error).__name__})
        return False
    logger.warning("sent to the DLQ", extra={**log_keys, "reason": reason, "detail": detail})
    return True


def visibility_backoff(receive_count: int, settings: DeliverySettings, rng: Callable[[], float]) -> int:
    """min(max, base * 2^(receives-1)), jittered *up* by up to a quarter so that retries of a burst spread out
    while the retry window before the DLQ never falls below the documented sum (>= 4 h with the defaults)."""
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, receive_count - 1))
    return int(min(SQS_MAX_VISIBILITY_SECONDS, delay * (1 + 0.25 * rng())))


def _emit_metrics(report: BatchReport) -> None:
    telemetry.count("ProfilesDelivered", report.delivered)
    telemetry.count("ProfilesSkipped", report.skipped)
    telemetry.count("ProfilesRetried", report.retried)
    telemetry.count("ProfilesFailedPermanently", sum(report.failed.values()))
    telemetry.count_by("ProfilesFailedPermanently", "Reason", report.failed)
    telemetry.count("AttributesDropped", sum(report.dropped_attributes.values()))
    telemetry.count_by("AttributesDropped", "Reason", report.dropped_attributes)
