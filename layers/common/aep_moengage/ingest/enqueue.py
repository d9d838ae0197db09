"""Pack canonical profiles into queue messages and make them durable in SQS within a deadline."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from aep_moengage.models.queue import ATTR_CORRELATION_ID, ATTR_SCHEMA_VERSION, SCHEMA_VERSION, CanonicalProfile

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH_ENTRIES = 10
# SendMessageBatch: the bodies of one call add up to at most 1 MiB; keep room for attributes.
SQS_BATCH_BYTES = 1_000_000


@dataclass(frozen=True)
class PackedMessage:
    body: str
    size: int  # UTF-8 bytes of body
    indexes: tuple[int, ...]  # positions of its profiles in the AEP request


@dataclass
class Packing:
    messages: list[PackedMessage]
    oversized: list[int]  # indexes of profiles that do not fit in one message on their own
    unencodable: list[int]  # indexes of profiles with text UTF-8 cannot carry (JSON's lone surrogate escapes)


def pack_profiles(
    profiles: Sequence[CanonicalProfile], *, correlation_id: str, received_at: datetime, max_bytes: int
) -> Packing:
    """Greedy packing in request order. Each profile is serialized once; the envelope is written around them,
    so the body is exactly a QueueMessage's JSON without a second serialization pass."""
    head = (
        f'{{"schema_version":{SCHEMA_VERSION},"correlation_id":{json.dumps(correlation_id)},'
        f'"received_at":"{received_at.isoformat().replace("+00:00", "Z")}","profiles":['
    )
    overhead = len(head.encode()) + 2  # "]}"
    messages: list[PackedMessage] = []
    oversized: list[int] = []
    unencodable: list[int] = []
    parts: list[str] = []
    indexes: list[int] = []
    size = overhead

    def flush() -> None:
        nonlocal parts, indexes, size
        if parts:
            messages.append(PackedMessage(head + ",".join(parts) + "]}", size, tuple(indexes)))
        parts, indexes, size = [], [], overhead

    for profile in profiles:
        try:
            encoded = profile.model_dump_json(exclude_none=True)
            encoded_size = len(encoded.encode())
        except (PydanticSerializationError, UnicodeEncodeError):
            unencodable.append(profile.index)
            continue
        if overhead + encoded_size > max_bytes:
            oversized.append(profile.index)
            continue
        if parts and size + 1 + encoded_size > max_bytes:
            flush()
        size += encoded_size + (1 if parts else 0)  # the comma between profiles
        parts.append(encoded)
        indexes.append(profile.index)
    flush()
    return Packing(messages, oversized, unencodable)


@dataclass
class SendStats:
    calls: int = 0  # SendMessageBatch calls made
    retried_entries: int = 0


class EnqueueError(Exception):
    """Some messages could not be made durable before the deadline (answered with 503, which AEP retries)."""

    def __init__(self, message: str, stats: SendStats) -> None:
        super().__init__(message)
        self.stats = stats


class SqsEnqueuer:
    """Sends packed messages with SendMessageBatch, retrying failed entries until a deadline."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._clock = clock
        self._sleep = sleep

    def send(self, messages: Sequence[PackedMessage], *, correlation_id: str, deadline: float) -> SendStats:
        attributes: dict[str, Any] = {
            ATTR_CORRELATION_ID: {"DataType": "String", "StringValue": correlation_id},
            ATTR_SCHEMA_VERSION: {"DataType": "Number", "StringValue": str(SCHEMA_VERSION)},
        }
        pending: dict[str, PackedMessage] = {str(number): message for number, message in enumerate(messages)}
        stats = SendStats()
        attempt = 0
        last_error = ""
        while pending:
            if attempt and self._clock() >= deadline:
                raise EnqueueError(f"{len(pending)} message(s) not enqueued before the deadline: {last_error}", stats)
            if attempt:
                stats.retried_entries += len(pending)
                # full jitter, capped so that a retry still fits before the deadline
                backoff = random.uniform(0, min(0.2, 0.025 * 2**attempt))  # noqa: S311 - jitter, not security
                self._sleep(max(0.0, min(backoff, deadline - self._clock())))
            attempt += 1
            for batch in _batches(list(pending.items())):
                entries: list[SendMessageBatchRequestEntryTypeDef] = [
                    {"Id": entry_id, "MessageBody": message.body, "MessageAttributes": attributes}
                    for entry_id, message in batch
                ]
                stats.calls += 1
                try:
                    response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
                except Exception as error:  # botocore ClientError, connection errors, timeouts
                    last_error = type(error).__name__
                    continue
                for ok in response.get("Successful", []):
                    pending.pop(ok["Id"], None)
                for failed in response.get("Failed", []):
                    last_error = failed.get("Code", "Failed")
        return stats


def _batches(items: list[tuple[str, PackedMessage]]) -> list[list[tuple[str, PackedMessage]]]:
    """Groups of at most 10 entries and 1 MB of bodies."""
    batches: list[list[tuple[str, PackedMessage]]] = []
    current: list[tuple[str, PackedMessage]] = []
    current_bytes = 0
    for item in items:
        if current and (len(current) == SQS_BATCH_ENTRIES or current_bytes + item[1].size > SQS_BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item[1].size
    if current:
        batches.append(current)
    return batches
