"""End to end over real HTTP: AEP's requests in, the final MoEngage user state out, through the local stack."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import AEP_SAMPLES_DIR, EVENTS_DIR, INGEST_EVENT_EXPECTATIONS, load_event
from tests.e2e.conftest import TOKEN, RunningStack, start_stack

pytestmark = pytest.mark.e2e

CUST = "CUST-000123"
SEG_A, SEG_B, SEG_EXITED = (
    "36a51c13-9dd6-4d2c-8aa3-07d785ea5075",
    "788d8874-8007-4253-92b7-ee6b6c20c6f3",
    "8f812592-3f06-416b-bd50-e7831848a31a",
)
SDK_PROFILES_STATE = {
    CUST: (
        {"first_name": "Hermione", "last_name": "Granger", "aep_anonymous_id": "e86fb215-0921-4537-bc77-969ff775752c"},
        {SEG_A, SEG_B},
    ),
    "47bd00a9-8fc6-434e-a118-0b7f24f1a976": (
        {
            "first_name": "José",
            "last_name": "Müller-Łukasiewicz",
            "birth_date": "1980/07/31",
            "aep_anonymous_profile": True,
        },
        {SEG_A},
    ),
}
HTTP_API_STATE = {
    CUST: (
        {
            "first_name": "Zoë",
            "last_name": "Ångström",
            "email": "zoe.angstrom@example.com",
            "birthday": "1985-03-14",
            "aep_anonymous_id": "14575006536349286404619648085736425115",
        },
        {"Cart abandoners – 7 days", "354e086f-2e11-49a2-9e39-e5d9a76be683"},
    )
}
TEMPLATE_STATE = {
    CUST: ({"aep_anonymous_id": "e86fb215-0921-4537-bc77-969ff775752c"}, {SEG_A, SEG_B}),
    "anon-7f3c9b2e": ({"aep_anonymous_profile": True}, {SEG_A}),
    "u-1004": ({}, set()),
}
# Final MoEngage state per request: customer_id -> (attributes that must match byte-exact, AEPSegments).
EXPECTED_STATE: dict[str, dict[str, tuple[dict[str, Any], set[str]]]] = {
    "ingest_http_api_profile.json": HTTP_API_STATE,
    "ingest_sdk_profiles.json": SDK_PROFILES_STATE,
    "ingest_basic_auth.json": SDK_PROFILES_STATE,
    "ingest_sdk_template.json": TEMPLATE_STATE,
    "ingest_unicode_values.json": {
        "u-ünï-😀": (
            {
                "first_name": 'O\'Brien "Al" <b>&amp;</b>',
                "last_name": "山田 太郎 – Ωμέγα – العربية – हिन्दी 👩‍👩‍👧",
                "loyalty.tags": ["a&b", "<c>", 'd"e'],
                "loyalty.points": 1250,
                "loyalty.ratio": 0.1,
                "loyalty.member": True,
            },
            {'VIP "gold" & <friends>'},
        )
    },
    "ingest_partial_rejection.json": {
        CUST: SDK_PROFILES_STATE[CUST],
        "u-3": ({"first_name": "Bare", "aep_anonymous_id": None}, set()),
    },
    "http_api_destination_sample.json": HTTP_API_STATE,
    "sdk_default_two_profiles.json": SDK_PROFILES_STATE,
    "sdk_sample_template_output_three_profiles.json": TEMPLATE_STATE,
}


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    # The template's settings at 1/100 of their times, and a small body limit for the 413 event.
    running = start_stack({"MAX_BODY_BYTES": "65536"})
    yield running
    assert running.stop() == 0, "the stack did not stop cleanly on SIGTERM"


@pytest.fixture(autouse=True)
def clean_emulator(stack: RunningStack) -> None:
    stack.control("reset")


def post_event(stack: RunningStack, event: dict[str, Any]) -> Any:
    """Send an API Gateway event's request over HTTP, with the stack's token where the event has the default one."""
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode("utf-8")
    headers = {k: v for k, v in event["headers"].items() if k not in ("host", "content-length")}
    if "authorization" in headers:
        headers["authorization"] = headers["authorization"].replace("local-dev-token", TOKEN)
        if headers["authorization"].startswith("Basic "):
            headers["authorization"] = "Basic " + base64.b64encode(f"aep:{TOKEN}".encode()).decode()
    return requests.post(stack.api_url, data=body, headers=headers, timeout=10)


def assert_state(stack: RunningStack, expected: dict[str, tuple[dict[str, Any], set[str]]]) -> None:
    for customer_id, (attributes, segments) in expected.items():
        user = stack.wait_for(lambda cid=customer_id: stack.user(cid), 20, f"user {customer_id}")
        for name, value in attributes.items():
            if value is None:
                assert name not in user["attributes"], name
            else:
                assert user["attributes"].get(name) == value, (customer_id, name)
        assert set(user["attributes"].get("AEPSegments", [])) == segments, customer_id


@pytest.mark.parametrize("name", sorted(INGEST_EVENT_EXPECTATIONS))
def test_every_event_file_over_http(stack: RunningStack, name: str) -> None:
    # Given an event of events/, sent as the HTTP request it describes
    status, accepted, rejected = INGEST_EVENT_EXPECTATIONS[name]
    # When it is posted to the local ingest API
    response = post_event(stack, load_event(name))
    # Then the answer is as expected, and once delivered the users in MoEngage are exactly right
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    if status == 200:
        assert (body["accepted"], len(body["rejected"])) == (accepted, rejected)
    else:
        assert body["error"]["code"] and body["error"]["message"]
    stack.wait_idle()
    if name in EXPECTED_STATE:
        assert_state(stack, EXPECTED_STATE[name])
    else:
        assert stack.requests_log() == []  # a refused request reaches nobody


@pytest.mark.parametrize("path", sorted(AEP_SAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_aep_sample_over_http(stack: RunningStack, path: Path) -> None:
    response = stack.post(path.read_bytes())
    assert response.status_code == 200, response.text
    stack.wait_idle()
    assert_state(stack, EXPECTED_STATE[path.name])
    # and every MoEngage request was a bulk request that MoEngage accepted, with nothing silently dropped
    assert {r["path"] for r in stack.requests_log()} == {"/v1/transition/LOCALWS"}


def test_nothing_is_silently_dropped_by_moengage(stack: RunningStack) -> None:
    for name in sorted(EXPECTED_STATE):
        source = EVENTS_DIR / name if (EVENTS_DIR / name).exists() else AEP_SAMPLES_DIR / name
        if source.parent == EVENTS_DIR:
            post_event(stack, json.loads(source.read_text(encoding="utf-8")))
        else:
            stack.post(source.read_bytes())
    stack.wait_idle()
    dropped = requests.get(f"{stack.emulator_url}/_emulator/dropped", timeout=5).json()["dropped"]
    assert dropped == []


@pytest.fixture
def impatient_stack() -> Iterator[RunningStack]:
    """3 receives and 1 s between them, so that the DLQ is reached in seconds."""
    running = start_stack({"MAX_RECEIVE_COUNT": "3", "RETRY_MAX_SECONDS": "1"})
    yield running
    running.stop()


def test_a_profile_that_keeps_failing_ends_in_the_dlq_with_its_reason(impatient_stack: RunningStack) -> None:
    stack = impatient_stack
    # Given MoEngage answers 500 to everything
    stack.control("faults", {"status": 500, "rate": 1.0})
    sqs = stack.sqs()
    dlq_url = next(u for u in sqs.list_queues()["QueueUrls"] if "dlq" in u)
    # When a profile is posted
    response = stack.post(json.dumps({"identityMap": {"user_id": [{"id": "always-failing"}]}}))
    assert response.status_code == 200
    # Then after maxReceiveCount (3 here) receives it is in the DLQ, with the reason, and no longer queued
    messages = stack.wait_for(
        lambda: sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"], AttributeNames=["All"]).get(
            "Messages"
        ),
        60,
        "a message in the DLQ",
    )
    stack.control("faults", {"status": None, "rate": 0})
    (message,) = messages
    assert json.loads(message["Body"])["profiles"][0]["identities"] == {"user_id": ["always-failing"]}
    assert message["MessageAttributes"]["failure_reason"]["StringValue"] == "retries_exhausted"
    attempts = [r for r in stack.requests_log() if r["status"] == 500]
    assert len(attempts) >= 3
    assert stack.queue_depths()["aep-moengage-profiles"] == 0
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])


def test_a_burst_over_the_rate_limit_is_delivered_in_full(stack: RunningStack) -> None:
    # Given MoEngage allows 1,000 users per 3-second window, far below the connector's own limit
    stack.control("rate_limit", {"users_per_minute": 1000, "window_seconds": 3})
    # When 2,000 profiles arrive at once in 40 requests
    for batch in range(40):
        profiles = [
            {"identityMap": {"user_id": [{"id": f"burst-{batch}-{i}"}]}, "attributes": {"n": {"value": i}}}
            for i in range(50)
        ]
        assert stack.post(json.dumps({"profiles": profiles})).status_code == 200
    # Then every one of them reaches MoEngage, though MoEngage refused some calls with 429
    stack.wait_idle(timeout=90)
    log = stack.requests_log()
    delivered = {e["customer_id"] for r in log if r["status"] == 200 for e in r["body"]["elements"]}
    assert len(delivered) == 2000
    assert any(r["status"] == 429 for r in log)
    assert all(stack.user(f"burst-{b}-{i}") for b in (0, 39) for i in (0, 49))
    assert stack.queue_depths()["aep-moengage-profiles-dlq"] == 0
    stack.control("rate_limit", {"users_per_minute": 60000, "window_seconds": 60})
