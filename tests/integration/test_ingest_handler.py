"""The ingest handler in-process against moto's SQS and Secrets Manager, fed with events/ files."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import ingest_app
from aep_moengage.ingest.settings import load_settings
from aep_moengage.models.queue import QueueMessage
from tests.conftest import (
    AEP_SAMPLES_DIR,
    INGEST_EVENT_EXPECTATIONS,
    INGEST_SECRET_NAME,
    FakeLambdaContext,
    IngestAws,
    load_event,
    moto_ingest,
    reset_ingest_caches,
)

TOKEN = "local-dev-token"


@dataclass
class Stack(IngestAws):
    def drain(self) -> list[dict[str, Any]]:
        """Every message in the queue (body parsed and validated as a QueueMessage) with its attributes."""
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                found.append(
                    {
                        "raw": message["Body"],
                        "message": QueueMessage.model_validate_json(message["Body"]),
                        "attributes": message.get("MessageAttributes", {}),
                    }
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with moto_ingest(monkeypatch, tokens=(TOKEN,)) as aws:
        yield Stack(aws.queue_url, aws.sqs, aws.secrets)


def invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = ingest_app.lambda_handler(event, FakeLambdaContext())  # type: ignore[arg-type]
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def with_body(body: Any, *, token: str = TOKEN, request_id: str = "req-test") -> dict[str, Any]:
    event = load_event("ingest_sdk_profiles.json")
    event["body"] = json.dumps(body, ensure_ascii=False)
    event["headers"]["authorization"] = f"Bearer {token}"
    event["requestContext"]["requestId"] = request_id
    return event


EXPECTED_STATUS = INGEST_EVENT_EXPECTATIONS


def test_every_event_file_has_an_expectation() -> None:
    from tests.conftest import EVENTS_DIR

    assert {p.name for p in EVENTS_DIR.glob("ingest_*.json")} == set(EXPECTED_STATUS)


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_event_files(stack: Stack, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an event from events/ (the size-limit event is 74 KB, over the limit set here)
    monkeypatch.setenv("MAX_BODY_BYTES", "65536")
    reset_ingest_caches()
    status, accepted, rejected = EXPECTED_STATUS[name]
    event = load_event(name)
    # When the handler answers it
    code, body, headers = invoke(event)
    # Then the status, the counts and the queue agree; refusals are JSON that names the problem
    assert code == status, body
    queued = [p for m in stack.drain() for p in m["message"].profiles]
    assert len(queued) == accepted
    if status == 200:
        assert body["accepted"] == accepted
        assert len(body["rejected"]) == rejected
        assert body["correlation_id"] == event["requestContext"]["requestId"]
    else:
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["message"]
        assert len(body.get("rejected", [])) == rejected
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")


def test_partial_rejection_lists_index_and_reason(stack: Stack) -> None:
    _, body, _ = invoke(load_event("ingest_partial_rejection.json"))
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3]
    assert "no identity" in body["rejected"][0]["reason"]
    assert "status" in body["rejected"][1]["reason"]
    assert "JSON object" in body["rejected"][2]["reason"]
    queued = [p for m in stack.drain() for p in m["message"].profiles]
    assert [p.index for p in queued] == [0, 4]
    assert queued[1].identities == {"user_id": ["u-3", "u-3b"], "crmid": ["c-3"]}  # several ids, in order


@pytest.mark.parametrize("path", sorted(AEP_SAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_aep_sample_is_enqueued_whole(stack: Stack, path: Any) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    expected = len(body.get("profiles", [body]))
    code, answer, _ = invoke(with_body(body))
    assert code == 200
    assert answer["accepted"] == expected and answer["rejected"] == []
    assert sum(len(m["message"].profiles) for m in stack.drain()) == expected


def test_values_round_trip_byte_exact_into_the_queue(stack: Stack) -> None:
    # Given values with quotes, &, <>, emoji and non-Latin scripts
    event = load_event("ingest_unicode_values.json")
    sent = json.loads(event["body"])
    # When they are ingested
    code, _, _ = invoke(event)
    assert code == 200
    (queued,) = stack.drain()
    (profile,) = queued["message"].profiles
    # Then every value is the same string, not HTML-escaped nor \u-escaped in the message body
    assert profile.attributes["person.name.firstName"] == sent["person"]["name"]["firstName"]
    assert profile.attributes["person.name.lastName"] == sent["person"]["name"]["lastName"]
    assert profile.attributes["loyalty.tags"] == ["a&b", "<c>", 'd"e']
    assert profile.attributes["loyalty.points"] == 1250 and profile.attributes["loyalty.ratio"] == 0.1
    assert profile.identities == {"user_id": ["u-ünï-😀"]}
    (audience,) = profile.audiences
    assert (audience.namespace, audience.status.value, audience.name) == (
        "CustomerAudienceUpload",
        "existing",
        'VIP "gold" & <friends>',
    )
    for text in ("山田 太郎 – Ωμέγα – العربية – हिन्दी 👩‍👩‍👧", "u-ünï-😀", "<b>&amp;</b>"):
        assert text.encode("utf-8") in queued["raw"].encode("utf-8")


def test_correlation_id_travels_in_the_message_attributes(stack: Stack) -> None:
    invoke(with_body(json.loads(load_event("ingest_sdk_profiles.json")["body"]), request_id="corr-123"))
    (queued,) = stack.drain()
    assert queued["attributes"]["correlation_id"]["StringValue"] == "corr-123"
    assert queued["message"].correlation_id == "corr-123"


def test_one_thousand_profiles_in_one_request(stack: Stack) -> None:
    body = {
        "profiles": [
            {
                "identityMap": {"user_id": [{"id": f"user-{i:04d}"}]},
                "segmentMembership": {
                    "ups": {"aud-1": {"status": "realized", "lastQualificationTime": "2026-12-01T10:00:00Z"}}
                },
                "attributes": {"first_name": {"value": f"Name {i}"}, "bio": {"value": "x" * 800}},
            }
            for i in range(1000)
        ]
    }
    code, answer, _ = invoke(with_body(body))
    assert code == 200 and answer["accepted"] == 1000
    queued = stack.drain()
    assert sorted(p.index for m in queued for p in m["message"].profiles) == list(range(1000))
    assert all(len(m["raw"].encode()) <= load_settings().queue_message_max_bytes for m in queued)
    assert len(queued) == 5  # ~1.05 MB of profiles in 240 KiB messages


class FlakySqs:
    """Wraps moto's client: scripted failures of SendMessageBatch entries or whole calls."""

    def __init__(self, real: Any, *, fail_first_entry_times: int = 0, down: bool = False, succeed_calls: int = 0):
        self.real = real
        self.fail_first_entry_times = fail_first_entry_times
        self.down = down
        self.succeed_calls = succeed_calls
        self.calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self.down and self.calls > self.succeed_calls:
            raise ConnectionError("SQS is down")
        if self.fail_first_entry_times > 0:
            self.fail_first_entry_times -= 1
            failed, rest = Entries[0], Entries[1:]
            response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=rest) if rest else {"Successful": []}
            response["Failed"] = [{"Id": failed["Id"], "SenderFault": False, "Code": "ServiceUnavailable"}]
            return response  # type: ignore[no-any-return]
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)  # type: ignore[no-any-return]


def test_a_failed_batch_entry_is_retried(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakySqs(stack.sqs, fail_first_entry_times=2)
    monkeypatch.setattr(ingest_app, "sqs_client", lambda: flaky)
    body = json.loads(load_event("ingest_sdk_profiles.json")["body"])
    code, answer, _ = invoke(with_body(body))
    assert code == 200 and answer["accepted"] == 2
    assert flaky.calls == 3
    assert sum(len(m["message"].profiles) for m in stack.drain()) == 2


def test_sqs_down_answers_503_and_never_acknowledges_part_of_a_request(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SQS takes the first batch call then goes down, and the deadline is short
    monkeypatch.setenv("ENQUEUE_DEADLINE_MS", "300")
    reset_ingest_caches()
    flaky = FlakySqs(stack.sqs, down=True, succeed_calls=1)
    monkeypatch.setattr(ingest_app, "sqs_client", lambda: flaky)
    big = {"profiles": [{"identityMap": {"u": [{"id": f"u{i}"}]}, "attributes": {"b": "y" * 900}} for i in range(2000)]}
    event = with_body(big)
    # When a request needs two batch calls
    code, answer, headers = invoke(event)
    # Then AEP gets a 503 (which it retries) with a JSON reason, never a 2xx for a half-stored request
    assert code == 503
    assert answer["error"]["code"] == "enqueue_failed"
    assert headers["Retry-After"] == "15"
    assert flaky.calls >= 2


def test_token_rotation_old_and_new_both_accepted_while_listed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")  # see every secret change at once
    reset_ingest_caches()
    body = json.loads(load_event("ingest_sdk_profiles.json")["body"])
    # Given the secret lists the old and the new token
    stack.set_tokens("old-token", "new-token")
    assert invoke(with_body(body, token="old-token"))[0] == 200
    assert invoke(with_body(body, token="new-token"))[0] == 200
    # When the old token is removed
    stack.set_tokens("new-token")
    # Then only the new one is accepted
    assert invoke(with_body(body, token="old-token"))[0] == 401
    assert invoke(with_body(body, token="new-token"))[0] == 200


def test_the_token_secret_is_cached_not_fetched_per_request(stack: Stack) -> None:
    body = json.loads(load_event("ingest_sdk_profiles.json")["body"])
    assert invoke(with_body(body))[0] == 200
    # Given the secret changes behind the cache (default TTL 300 s)
    stack.set_tokens("another-token")
    # Then the cached token list still answers (no GetSecretValue per request)
    assert invoke(with_body(body))[0] == 200


def test_missing_token_secret_is_a_retryable_503(stack: Stack) -> None:
    stack.secrets.delete_secret(SecretId=INGEST_SECRET_NAME, ForceDeleteWithoutRecovery=True)
    code, answer, headers = invoke(load_event("ingest_sdk_profiles.json"))
    assert code == 503 and answer["error"]["code"] == "auth_unavailable" and "Retry-After" in headers


def test_source_allowlist(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "198.51.100.0/24, 2001:db8::/32")
    reset_ingest_caches()
    event = load_event("ingest_sdk_profiles.json")
    assert invoke(event)[0] == 403  # 192.0.2.10 is not listed
    event["requestContext"]["http"]["sourceIp"] = "198.51.100.7"
    assert invoke(event)[0] == 200


def test_missing_content_type_and_bad_base64_are_4xx(stack: Stack) -> None:
    event = load_event("ingest_sdk_profiles.json")
    del event["headers"]["content-type"]
    assert invoke(event)[0] == 415
    event = load_event("ingest_sdk_profiles.json")
    event["isBase64Encoded"] = True
    event["body"] = "%%%not-base64"
    code, answer, _ = invoke(event)
    assert code == 400 and answer["error"]["code"] == "invalid_encoding"
    event = load_event("ingest_sdk_profiles.json")
    event["isBase64Encoded"] = True
    event["body"] = base64.b64encode(b'{"profiles": [\xff]}').decode()
    code, answer, _ = invoke(event)
    assert code == 400 and answer["error"]["code"] == "invalid_encoding"


def test_logs_and_metrics_carry_counts_but_no_pii(stack: Stack, log_output: Callable[[], str]) -> None:
    invoke(load_event("ingest_unicode_values.json"))
    invoke(load_event("ingest_sdk_profiles.json"))
    output = log_output()
    for value in ("O'Brien", "山田", "u-ünï", "Hermione", "CUST-000123", TOKEN):
        assert value not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    answered = [line for line in lines if line.get("message") == "request answered"]
    assert [line["correlation_id"] for line in answered] == ["req-ingest_unicode_values", "req-ingest_sdk_profiles"]
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for line in emf for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ProfilesReceived", "ProfilesEnqueued", "ProfilesRejected"} <= names
    assert any(line.get("shape") == "sdk_profiles" and line.get("ProfilesEnqueued") == [2.0] for line in emf)


def test_unexpected_failure_is_a_json_503(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ingest_app.IngestService, "handle", explode)
    code, answer, _ = invoke(load_event("ingest_sdk_profiles.json"))
    assert code == 503 and answer["error"]["code"] == "unavailable"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(stack: Stack, literal: str) -> None:
    event = load_event("ingest_sdk_profiles.json")
    event["body"] = '{"identityMap": {"u": [{"id": "1"}]}, "score": ' + literal + "}"
    code, answer, _ = invoke(event)
    assert code == 400 and answer["error"]["code"] == "invalid_json"


def test_a_number_too_large_for_a_double_rejects_only_its_profile(stack: Stack) -> None:
    event = load_event("ingest_sdk_profiles.json")
    event["body"] = (
        '{"profiles": [{"identityMap": {"u": [{"id": "1"}]}, "x": 1e400}, {"identityMap": {"u": [{"id": "2"}]}}]}'
    )
    code, answer, _ = invoke(event)
    assert code == 200 and answer["accepted"] == 1 and answer["rejected"][0]["index"] == 0


def test_an_unpaired_surrogate_escape_rejects_only_its_profile(stack: Stack) -> None:
    # JSON allows "\ud800" but UTF-8 cannot carry it: that profile is refused with a reason, not a 5xx
    event = load_event("ingest_sdk_profiles.json")
    event["body"] = (
        '{"profiles": [{"identityMap": {"u": [{"id": "a\\ud800"}]}}, {"identityMap": {"u": [{"id": "ok"}]},'
        ' "name": "b\\udc00"}, {"identityMap": {"u": [{"id": "fine"}]}}]}'
    )
    code, answer, _ = invoke(event)
    assert code == 200 and answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [0, 1]
    assert "Unicode" in answer["rejected"][0]["reason"]
    (queued,) = stack.drain()
    assert queued["message"].profiles[0].identities == {"u": ["fine"]}
