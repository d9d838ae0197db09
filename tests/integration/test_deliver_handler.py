"""The delivery handler in-process: moto SQS and Secrets Manager, the MoEngage emulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

import deliver_app
from aep_moengage.delivery import runtime
from aep_moengage.models.queue import AudienceChange, AudienceStatus, CanonicalProfile, QueueMessage
from devstack.moengage_emulator import MoEngageEmulator
from tests.conftest import MOENGAGE_SECRET_NAME, DeliveryAws, FakeLambdaContext, load_event, moto_delivery

CREDENTIALS = {"workspace_id": "LOCALWS", "data_api_key": "local-key", "data_center": "DC-01"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[MoEngageEmulator]:
    server = MoEngageEmulator("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


class Aws(DeliveryAws):
    def dlq_messages(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
        )
        return [
            {
                "body": json.loads(message["Body"]) if message["Body"].startswith("{") else message["Body"],
                "reason": message["MessageAttributes"]["failure_reason"]["StringValue"],
                "detail": message["MessageAttributes"]["failure_detail"]["StringValue"],
                "correlation_id": message["MessageAttributes"].get("correlation_id", {}).get("StringValue"),
            }
            for message in answer.get("Messages", [])
        ]

    def sqs_event(self, bodies: list[str]) -> dict[str, Any]:
        """Send, then receive as Lambda's event source mapping would: real receipt handles and receive counts."""
        for number, body in enumerate(bodies):
            self.sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=body,
                MessageAttributes={"correlation_id": {"DataType": "String", "StringValue": f"corr-{number}"}},
            )
        received: list[dict[str, Any]] = []
        while len(received) < len(bodies):
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                VisibilityTimeout=30,
            )
            received.extend(answer.get("Messages", []))
        return {"Records": [_lambda_record(message) for message in received]}

    def visible_messages(self) -> int:
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return len(answer.get("Messages", []))


def _lambda_record(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
        "messageAttributes": {
            name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:aep-moengage-queue",
        "awsRegion": "us-east-1",
    }


@pytest.fixture
def aws(emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    emulator.reset()
    env = {"MOENGAGE_BASE_URL": emulator.base_url, "MOENGAGE_TIMEOUT_SECONDS": "1,2", "MAX_RECEIVE_COUNT": "3"}
    with moto_delivery(monkeypatch, credentials=CREDENTIALS, env=env) as aws:
        yield Aws(aws.sqs, aws.secrets, aws.queue_url, aws.dlq_url)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.clear_caches()


def queue_message(*profiles: CanonicalProfile, correlation_id: str = "corr") -> str:
    return QueueMessage(
        correlation_id=correlation_id, received_at=datetime.now(UTC), profiles=list(profiles)
    ).model_dump_json()


def a_profile(index: int, user_id: str, **attributes: Any) -> CanonicalProfile:
    return CanonicalProfile(index=index, identities={"user_id": [user_id]}, attributes=attributes)


def typical_profile(index: int) -> CanonicalProfile:
    """About 1 KB once mapped: standard fields, a few custom ones, three audiences."""
    return CanonicalProfile(
        index=index,
        identities={"crmid": [f"CUST-{index:06d}"], "ecid": [f"{index:038d}"]},
        attributes={
            "person.name.firstName": "Zoë",
            "person.name.lastName": "Ångström-Löfgren",
            "personalEmail.address": f"customer.{index:06d}@example.com",
            "mobilePhone.number": f"+46 70 {index:07d}",
            "person.gender": "female",
            "person.birthDate": "1985-03-14",
            "_tenant.loyalty.tier": "gold",
            "_tenant.loyalty.points": 12_345,
            "_tenant.preferences.categories": ["shoes", "bags", "outdoor & travel"],
            "_tenant.lastOrder.id": f"ORD-{index:010d}",
            "_tenant.notes": "Prefers <b>express</b> delivery – “gift wrap” 🎁 " + "x" * 330,
            "homeAddress.city": "Göteborg",
            "homeAddress.countryCode": "SE",
        },
        audiences=[
            AudienceChange(audience_id=f"{n}-seg", status=AudienceStatus.REALIZED, name=f"Audience number {n} – EU")
            for n in range(3)
        ],
    )


def invoke(event: dict[str, Any], context: FakeLambdaContext | None = None) -> dict[str, Any]:
    return deliver_app.lambda_handler(event, context or FakeLambdaContext())  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ happy path


def test_sample_event_is_delivered_to_moengage(aws: Aws, emulator: MoEngageEmulator) -> None:
    # Given the sample SQS event (every AEP sample, normalized into queue messages)
    event = load_event("sqs_deliver_batch.json")
    for record in event["Records"]:
        QueueMessage.model_validate_json(record["body"])
    # When the handler runs
    response = invoke(event)
    # Then every message succeeded and MoEngage holds the users, merged across messages, nothing dropped
    assert response == {"batchItemFailures": []}
    user = emulator.user("CUST-000123")
    assert user is not None
    assert user["first_name"] == "Hermione"  # the later message wins
    assert user["birthday"] == "1985-03-14"
    assert user["AEPSegments"] == [
        "Cart abandoners – 7 days",
        "354e086f-2e11-49a2-9e39-e5d9a76be683",
        "36a51c13-9dd6-4d2c-8aa3-07d785ea5075",
        "788d8874-8007-4253-92b7-ee6b6c20c6f3",
    ]
    assert emulator.user("47bd00a9-8fc6-434e-a118-0b7f24f1a976") == {
        "first_name": "José",
        "last_name": "Müller-Łukasiewicz",
        "birth_date": "1980/07/31",
        "aep_anonymous_profile": True,
        "AEPSegments": ["36a51c13-9dd6-4d2c-8aa3-07d785ea5075"],
    }
    assert emulator.dropped() == []
    assert len(emulator.requests_log()) == 1
    assert aws.dlq_messages() == []


def test_1000_typical_profiles_leave_in_at_most_12_requests(aws: Aws, emulator: MoEngageEmulator) -> None:
    # Given 10 messages of 100 typical profiles (~1 KB each as MoEngage elements)
    profiles = [typical_profile(index) for index in range(1_000)]
    bodies = [queue_message(*profiles[start : start + 100]) for start in range(0, 1_000, 100)]
    event = {"Records": [_fake_record(n, body) for n, body in enumerate(bodies)]}
    # When the handler runs
    response = invoke(event)
    # Then all were delivered in at most 12 requests, each under 100 KB
    assert response == {"batchItemFailures": []}
    requests = emulator.requests_log()
    sizes = [len(json.dumps(r["body"], ensure_ascii=False, separators=(",", ":")).encode()) for r in requests]
    elements = sum(len(r["body"]["elements"]) for r in requests)
    print(f"1,000 profiles: {len(requests)} requests, {elements} elements, sizes {sizes}")
    assert elements == 1_000
    assert 900 <= sum(sizes) / elements <= 1_200  # "about 1 KB" each
    assert len(requests) <= 12
    assert max(sizes) <= 100_000
    assert emulator.user("CUST-000999") is not None
    assert emulator.dropped() == []


def _fake_record(number: int, body: str, receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": f"msg-{number}",
        "receiptHandle": f"handle-{number}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
        "messageAttributes": {"correlation_id": {"stringValue": f"corr-{number}", "dataType": "String"}},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:aep-moengage-queue",
    }


# ------------------------------------------------------------------------------------------ permanent failures


def test_permanent_failures_go_to_the_dlq_with_their_reason_and_the_rest_is_delivered(
    aws: Aws, emulator: MoEngageEmulator
) -> None:
    # Given a body that is no queue message, and a message with one good and one blocked customer id
    event = load_event("sqs_deliver_partial_failure.json")
    event["Records"].insert(0, _fake_record(9, '{"schema_version": 99}'))
    # When the handler runs
    response = invoke(event)
    # Then no message is retried; the DLQ holds each failure with its reason; the good profiles were delivered
    assert response == {"batchItemFailures": []}
    assert emulator.user("u-partial-1") == {"first_name": "Ada"}
    assert emulator.user("u-partial-2") == {"email": "b@example.com"}
    dead = sorted(aws.dlq_messages(), key=lambda message: message["reason"])
    assert [(m["reason"], m["correlation_id"]) for m in dead] == [
        ("invalid_message", "corr-9"),
        ("rejected_customer_id", "partial-correlation-2"),
    ]
    assert dead[0]["body"] == {"schema_version": 99}  # as received
    failed = QueueMessage.model_validate(dead[1]["body"])  # only the failed profile, still a queue message
    assert [p.identities for p in failed.profiles] == [{"user_id": ["null"]}]
    assert "profiles [1]" in dead[1]["detail"]


def test_a_message_whose_dlq_send_fails_is_handed_back(
    aws: Aws, emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings(monkeypatch, DLQ_URL=aws.dlq_url + "-missing")
    event = load_event("sqs_deliver_partial_failure.json")
    response = invoke(event)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


# ------------------------------------------------------------------------------------------------- retries


def test_moengage_down_hands_messages_back_with_visibility_backoff(
    aws: Aws, emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given MoEngage answers 500 to everything, and two messages, one of them with a permanent failure only
    emulator.set_faults(500, 1.0)
    event = aws.sqs_event(
        [queue_message(a_profile(0, "u-1")), queue_message(a_profile(0, "u-2")), queue_message(a_profile(0, "null"))]
    )
    context = FakeLambdaContext(remaining_ms=9_000)  # room for one request and one retry (3 s timeout each)
    # When the handler runs
    response = invoke(event, context)
    # Then the two deliverable messages are retried later and stay invisible for the backoff; the other settled
    retried = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
    assert retried == {record["messageId"] for record in event["Records"] if '"null"' not in record["body"]}
    assert aws.visible_messages() == 0  # 60 s base backoff, jittered down to no less than 30 s
    assert [m["reason"] for m in aws.dlq_messages()] == ["rejected_customer_id"]


def test_last_receive_goes_to_the_dlq_as_retries_exhausted(aws: Aws, emulator: MoEngageEmulator) -> None:
    # Given MoEngage answers 503 and a message on its last allowed receive (MAX_RECEIVE_COUNT=3)
    emulator.set_faults(503, 1.0)
    event = {"Records": [_fake_record(1, queue_message(a_profile(0, "u-1"), correlation_id="c-1"), receive_count=3)]}
    # When the handler runs
    response = invoke(event, FakeLambdaContext(remaining_ms=9_000))
    # Then the message is settled, and the DLQ holds it with its reason and last error
    assert response == {"batchItemFailures": []}
    [dead] = aws.dlq_messages()
    assert dead["reason"] == "retries_exhausted"
    assert "moengage_unavailable" in dead["detail"] and "HTTP 503" in dead["detail"]


def test_when_every_message_is_retried_the_whole_batch_fails(aws: Aws, emulator: MoEngageEmulator) -> None:
    emulator.set_faults(500, 1.0)
    event = {"Records": [_fake_record(1, queue_message(a_profile(0, "u-1")))]}
    with pytest.raises(BatchProcessingError):
        invoke(event, FakeLambdaContext(remaining_ms=6_000))


def test_rotated_key_is_picked_up_from_the_secret_after_a_401(aws: Aws, emulator: MoEngageEmulator) -> None:
    # Given a warm function that delivered with the old key
    assert invoke({"Records": [_fake_record(1, queue_message(a_profile(0, "u-1")))]}) == {"batchItemFailures": []}
    # When the key is rotated in MoEngage and in the secret
    emulator.rotate_key("rotated-key")
    aws.secrets.put_secret_value(
        SecretId=MOENGAGE_SECRET_NAME, SecretString=json.dumps({**CREDENTIALS, "data_api_key": "rotated-key"})
    )
    response = invoke({"Records": [_fake_record(2, queue_message(a_profile(0, "u-2")))]})
    # Then the next batch is delivered after one 401
    assert response == {"batchItemFailures": []}
    assert [r["status"] for r in emulator.requests_log()] == [200, 401, 200]
    assert emulator.user("u-2") == {}


def test_a_key_wrong_everywhere_hands_back_and_counts_auth_failures(
    aws: Aws, emulator: MoEngageEmulator, log_output: Callable[[], str]
) -> None:
    emulator.rotate_key("rotated-key")
    event = {"Records": [_fake_record(n, queue_message(a_profile(0, f"u-{n}"))) for n in range(2)]}
    event["Records"].append(_fake_record(9, queue_message(a_profile(0, "null"))))
    response = invoke(event)
    assert len(response["batchItemFailures"]) == 2
    output = log_output()
    assert '"MoEngageAuthFailures"' in output
    assert "local-key" not in output and "rotated-key" not in output


# ----------------------------------------------------------------------------------------------- settings


def test_update_existing_only_does_not_create_users(
    aws: Aws, emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings(monkeypatch, UPDATE_EXISTING_ONLY="true")
    response = invoke({"Records": [_fake_record(1, queue_message(a_profile(0, "new-user", tier="gold")))]})
    assert response == {"batchItemFailures": []}
    [request] = emulator.requests_log()
    assert request["body"]["elements"][0]["update_existing_only"] is True
    assert emulator.user("new-user") is None


def test_anonymous_profiles_can_be_skipped(
    aws: Aws, emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings(monkeypatch, ANONYMOUS_PROFILES="skip")
    anonymous = CanonicalProfile(index=0, identities={"ECID": ["e-1"]}, attributes={"a": 1})
    response = invoke({"Records": [_fake_record(1, queue_message(anonymous))]})
    assert response == {"batchItemFailures": []}
    assert emulator.requests_log() == []
    assert aws.dlq_messages() == []


def test_audience_events_are_sent_when_enabled(
    aws: Aws, emulator: MoEngageEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings(monkeypatch, AUDIENCE_EVENTS="true", AUDIENCE_NAMES='{"seg-1": "VIP"}')
    member = CanonicalProfile(
        index=0,
        identities={"user_id": ["u-1"]},
        audiences=[AudienceChange(audience_id="seg-1", status=AudienceStatus.REALIZED)],
    )
    assert invoke({"Records": [_fake_record(1, queue_message(member))]}) == {"batchItemFailures": []}
    assert emulator.user("u-1") == {"AEPSegments": ["VIP"]}
    events = emulator.events("u-1")
    assert events is not None
    assert [(e["action"], e["attributes"]["audience_name"]) for e in events] == [("AEP Audience Entered", "VIP")]


# ---------------------------------------------------------------------------------------- metrics and logs


def test_metrics_and_logs_carry_outcomes_and_correlation_ids_but_no_pii(
    aws: Aws, emulator: MoEngageEmulator, log_output: Callable[[], str]
) -> None:
    profile = a_profile(0, "secret-user-42", **{"person.name.firstName": "Zoë", "bio": "x" * 600})
    blocked = a_profile(1, "none")
    invoke({"Records": [_fake_record(1, queue_message(profile, blocked, correlation_id="corr-abc"))]})
    output = log_output()
    for metric in ("ProfilesDelivered", "ProfilesFailedPermanently", "MoEngageCalls", "MoEngageLatency"):
        assert f'"{metric}"' in output
    assert '"Reason":"rejected_customer_id"' in output
    assert '"StatusClass":"2xx"' in output
    assert '"Reason":"value_too_long"' in output  # the dropped attribute, reported by name
    assert "corr-1" in output  # the correlation id of the SQS message
    assert "secret-user-42" not in output and "Zoë" not in output and "xxxxxxxx" not in output
