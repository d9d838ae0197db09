"""Packing profiles into queue messages and sending them with retries (fake SQS client, no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aep_moengage.ingest.enqueue import EnqueueError, PackedMessage, SqsEnqueuer, pack_profiles
from aep_moengage.models.queue import CanonicalProfile, QueueMessage

NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


def profiles(count: int, attribute_bytes: int = 900) -> list[CanonicalProfile]:
    return [
        CanonicalProfile(index=i, identities={"user_id": [f"u-{i}"]}, attributes={"bio": "é" * (attribute_bytes // 2)})
        for i in range(count)
    ]


def test_packing_keeps_every_profile_in_order_and_under_the_size_limit() -> None:
    packing = pack_profiles(profiles(1000), correlation_id="cid-1", received_at=NOW, max_bytes=64 * 1024)
    assert packing.oversized == []
    assert [i for m in packing.messages for i in m.indexes] == list(range(1000))
    for message in packing.messages:
        assert message.size == len(message.body.encode()) <= 64 * 1024
        parsed = QueueMessage.model_validate_json(message.body)
        assert parsed.correlation_id == "cid-1"
        assert [p.index for p in parsed.profiles] == list(message.indexes)
    # and the messages are full: every one but the last could not take its successor's profile
    profile_size = len(profiles(1)[0].model_dump_json(exclude_none=True).encode())
    for message in packing.messages[:-1]:
        assert message.size + 1 + profile_size > 64 * 1024


def test_a_profile_larger_than_a_message_is_reported_not_dropped_silently() -> None:
    big = CanonicalProfile(index=1, identities={"u": ["x"]}, attributes={"blob": "x" * 10_000})
    packing = pack_profiles([*profiles(1), big], correlation_id="c", received_at=NOW, max_bytes=8192)
    assert packing.oversized == [1]
    assert [m.indexes for m in packing.messages] == [(0,)]


class FakeSqs:
    """Answers SendMessageBatch like SQS; `script` decides per call which entry ids fail or whether to raise."""

    def __init__(self, script: list[Any] | None = None) -> None:
        self.script = script or []
        self.calls: list[list[dict[str, Any]]] = []
        self.stored: dict[str, str] = {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        action = self.script.pop(0) if self.script else None
        if isinstance(action, Exception):
            raise action
        failing = set(action or ())
        ok = [e for e in Entries if e["Id"] not in failing]
        for entry in ok:
            self.stored[entry["MessageBody"]] = entry["MessageAttributes"]["correlation_id"]["StringValue"]
        return {
            "Successful": [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": ""} for e in ok],
            "Failed": [{"Id": i, "SenderFault": False, "Code": "InternalError"} for i in failing],
        }


def messages(count: int, size: int = 100) -> list[PackedMessage]:
    return [PackedMessage(body=f"{n:04d}" + "x" * (size - 4), size=size, indexes=(n,)) for n in range(count)]


def test_batches_hold_at_most_ten_entries_and_one_megabyte() -> None:
    sqs = FakeSqs()
    stats = SqsEnqueuer(sqs, "q").send(messages(25), correlation_id="c", deadline=float("inf"))  # type: ignore[arg-type]
    assert [len(call) for call in sqs.calls] == [10, 10, 5]
    assert stats.calls == 3

    sqs = FakeSqs()
    SqsEnqueuer(sqs, "q").send(messages(6, size=240 * 1024), correlation_id="c", deadline=float("inf"))  # type: ignore[arg-type]
    assert [len(call) for call in sqs.calls] == [4, 2]


def test_a_failed_entry_is_retried_until_stored() -> None:
    # Given SQS fails entry "3" in the first call and raises on the second
    sqs = FakeSqs(script=[["3"], ConnectionError("reset")])
    enqueuer = SqsEnqueuer(sqs, "q", sleep=lambda _: None)  # type: ignore[arg-type]
    # When ten messages are sent
    stats = enqueuer.send(messages(10), correlation_id="cid", deadline=float("inf"))
    # Then all ten are stored, the failed one after two retries, each with the correlation id
    assert len(sqs.stored) == 10
    assert set(sqs.stored.values()) == {"cid"}
    assert [len(call) for call in sqs.calls] == [10, 1, 1]
    assert stats.retried_entries == 2


def test_sqs_down_raises_after_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds + 0.01

    sqs = FakeSqs(script=[ConnectionError("down")] * 1000)
    enqueuer = SqsEnqueuer(sqs, "q", clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    with pytest.raises(EnqueueError, match="1 message"):
        enqueuer.send(messages(1), correlation_id="c", deadline=1.5)
    assert now[0] >= 1.5
    assert len(sqs.calls) > 1
