"""The delivery service with a fake MoEngage client and a fake queue: outcomes per message, DLQ grouping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aep_moengage.delivery.client import CallKind, CallResult
from aep_moengage.delivery.mapping import MappingRules, load_mapping_table
from aep_moengage.delivery.ratelimit import TokenBucket
from aep_moengage.delivery.sending import Deadline
from aep_moengage.delivery.service import DeliveryDependencies, InboundMessage, deliver_batch
from aep_moengage.delivery.settings import DeliverySettings
from aep_moengage.models.queue import CanonicalProfile, QueueMessage

OK = CallResult(CallKind.OK, 200, 1.0)
DOWN = CallResult(CallKind.TRANSIENT, 503, 1.0, None, "ServerError", "Internal Server Error")


class FakeClient:
    """Answers every call with `answer`, or 400 for a request holding a customer_id in `rejects`."""

    def __init__(self, answer: CallResult = OK, rejects: frozenset[str] = frozenset()) -> None:
        self.answer, self.rejects = answer, rejects
        self.requests: list[list[dict[str, Any]]] = []

    def post_bulk(self, elements: Sequence[bytes]) -> CallResult:
        parsed = [json.loads(element) for element in elements]
        self.requests.append(parsed)
        if any(element["customer_id"] in self.rejects for element in parsed):
            return CallResult(CallKind.BAD_REQUEST, 400, 1.0, None, "AttributeError", "bad element")
        return self.answer

    def refresh_credentials(self) -> None:
        return None


class FakeQueue:
    def __init__(self, fail_dlq: bool = False, fail_visibility: bool = False) -> None:
        self.fail_dlq, self.fail_visibility = fail_dlq, fail_visibility
        self.visibility: list[tuple[str, int]] = []
        self.dead: list[dict[str, Any]] = []

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        if self.fail_visibility:
            raise RuntimeError("SQS unavailable")
        self.visibility.append((receipt_handle, seconds))

    def send_to_dlq(self, body: str, *, reason: str, detail: str, correlation_id: str | None) -> None:
        if self.fail_dlq:
            raise RuntimeError("SQS unavailable")
        self.dead.append({"body": body, "reason": reason, "detail": detail, "correlation_id": correlation_id})


def dependencies(client: FakeClient, queue: FakeQueue, **env: str) -> DeliveryDependencies:
    settings = DeliverySettings.from_env({"MOENGAGE_SECRET_NAME": "s", "MAX_RECEIVE_COUNT": "3", **env})
    return DeliveryDependencies(
        settings=settings,
        rules=MappingRules.from_settings(settings, load_mapping_table()),
        client=client,
        limiter=TokenBucket(10_000),
        queue=queue,
        sleep=lambda _: None,
        rng=lambda: 0.0,
    )


def message(number: int, *user_ids: str, receive_count: int = 1) -> InboundMessage:
    profiles = [
        CanonicalProfile(index=10 + n, identities={"user_id": [user_id]}, attributes={"n": n})
        for n, user_id in enumerate(user_ids)
    ]
    body = QueueMessage(correlation_id=f"c-{number}", received_at=datetime.now(UTC), profiles=profiles)
    return InboundMessage(f"m-{number}", f"r-{number}", body.model_dump_json(), receive_count, f"c-{number}")


def run(messages: list[InboundMessage], client: FakeClient, queue: FakeQueue, **env: str) -> Any:
    return deliver_batch(messages, dependencies(client, queue, **env), Deadline(60, request_timeout_seconds=1))


def test_each_reason_gets_its_own_dlq_message_holding_only_its_profiles() -> None:
    # Given one message with a good user, a blocked id and a user MoEngage rejects
    client, queue = FakeClient(rejects=frozenset({"u-bad"})), FakeQueue()
    # When it is delivered
    report = run([message(1, "u-good", "null", "u-bad")], client, queue)
    # Then it settles; the DLQ holds one message per reason with only its profiles (original indexes kept)
    assert report.retry_message_ids == set()
    assert report.delivered == 1
    assert dict(report.failed) == {"rejected_customer_id": 1, "moengage_rejected": 1}
    by_reason = {dead["reason"]: dead for dead in queue.dead}
    assert [p["index"] for p in json.loads(by_reason["rejected_customer_id"]["body"])["profiles"]] == [11]
    assert [p["index"] for p in json.loads(by_reason["moengage_rejected"]["body"])["profiles"]] == [12]
    assert by_reason["moengage_rejected"]["detail"] == "profiles [12]: HTTP 400 AttributeError: bad element"
    assert {dead["correlation_id"] for dead in queue.dead} == {"c-1"}


def test_a_retry_holds_back_the_permanent_failures_of_its_message_until_the_last_receive() -> None:
    client, queue = FakeClient(answer=DOWN), FakeQueue()
    report = run([message(1, "u-1", "null", receive_count=2)], client, queue)
    assert report.retry_message_ids == {"m-1"}
    assert queue.dead == []
    assert queue.visibility == [("r-1", 120)]  # 60 s * 2^(2-1), rng 0.0: no jitter


def test_on_the_last_receive_everything_goes_to_the_dlq_with_reasons() -> None:
    client, queue = FakeClient(answer=DOWN), FakeQueue()
    report = run([message(1, "u-1", "null", receive_count=3)], client, queue)
    assert report.retry_message_ids == set()
    assert sorted(dead["reason"] for dead in queue.dead) == ["rejected_customer_id", "retries_exhausted"]
    [exhausted] = [dead for dead in queue.dead if dead["reason"] == "retries_exhausted"]
    assert (
        exhausted["detail"]
        == "profiles [10]: last error moengage_unavailable: HTTP 503 ServerError: Internal Server Error"
    )


def test_a_user_in_two_messages_is_one_element_and_its_outcome_reaches_both_messages() -> None:
    client, queue = FakeClient(rejects=frozenset({"u-1"})), FakeQueue()
    report = run([message(1, "u-1"), message(2, "u-1", "u-2")], client, queue)
    assert [len(request) for request in client.requests] == [2, 1, 1]  # one request, then bisection
    assert sorted((dead["correlation_id"], dead["reason"]) for dead in queue.dead) == [
        ("c-1", "moengage_rejected"),
        ("c-2", "moengage_rejected"),
    ]
    assert report.delivered == 1


def test_a_failed_dlq_send_hands_the_message_back() -> None:
    client, queue = FakeClient(), FakeQueue(fail_dlq=True)
    report = run([message(1, "u-1", "null"), message(2, "u-2")], client, queue)
    assert report.retry_message_ids == {"m-1"}


def test_invalid_bodies_go_to_the_dlq_as_received() -> None:
    client, queue = FakeClient(), FakeQueue()
    bad = InboundMessage("m-9", "r-9", "not json", 1, "c-9")
    report = run([bad, message(1, "u-1")], client, queue)
    assert report.retry_message_ids == set()
    assert [(dead["body"], dead["reason"], dead["correlation_id"]) for dead in queue.dead] == [
        ("not json", "invalid_message", "c-9")
    ]


def test_a_failed_visibility_change_still_hands_the_message_back() -> None:
    client, queue = FakeClient(answer=DOWN), FakeQueue(fail_visibility=True)
    report = run([message(1, "u-1")], client, queue)
    assert report.retry_message_ids == {"m-1"}


def test_skipped_anonymous_profiles_settle_without_requests() -> None:
    client, queue = FakeClient(), FakeQueue()
    profile = CanonicalProfile(index=0, identities={"ecid": ["e-1"]})
    body = QueueMessage(correlation_id="c", received_at=datetime.now(UTC), profiles=[profile]).model_dump_json()
    report = run([InboundMessage("m", "r", body, 1, None)], client, queue, ANONYMOUS_PROFILES="skip")
    assert (report.skipped, report.retry_message_ids, client.requests) == (1, set(), [])
