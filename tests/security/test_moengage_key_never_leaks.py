"""The MoEngage key never leaves the delivery function: not in a log line, a metric or a DLQ message, even on errors.

MoEngage is made to fail in every way the client classifies: 401 everywhere (a rotated key), 5xx, 429, answers later
than the read timeout, connections dropped, the HTTP library raising, and a hostile or buggy endpoint that echoes
the request's credentials back in its error text (as `Authorization: Basic …`, as a bare Basic value, and as the
raw key). Each batch is on its last allowed receive, so every failure goes to the DLQ with its detail. Logs, DLQ
message attributes and bodies are scanned for the key, `workspace:key` and its base64 (the Basic header value).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

import deliver_app
from aep_moengage.delivery import runtime
from aep_moengage.models.queue import CanonicalProfile, QueueMessage
from devstack.moengage_emulator import MoEngageEmulator
from tests.conftest import FakeLambdaContext, moto_delivery

WORKSPACE, KEY = "KEYWS042", "dk-9a7f3c2e1b0d4f6a8c5e"
PAIR = f"{WORKSPACE}:{KEY}"
BASIC = base64.b64encode(PAIR.encode()).decode()
SECRETS = (KEY, PAIR, BASIC)


class EchoingMoEngage(ThreadingHTTPServer):
    """Answers every call with `status` and an error text that repeats the caller's credentials."""

    daemon_threads = True

    def __init__(self, status: int, style: str) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.status, self.style = status, style

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _EchoHandler(BaseHTTPRequestHandler):
    server: EchoingMoEngage

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        header = self.headers.get("Authorization", "")
        message = {
            "header": f"bad request, Authorization: {header}",
            "bare": f"credentials {header} are not valid for this app",
            "raw": f"key {KEY} for {WORKSPACE} rejected",
            "decoded": f"user {PAIR} unknown",
        }[self.server.style]
        body = json.dumps({"status": "fail", "error": {"type": "Auth", "message": message, "request_id": "r"}})
        data = body.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class Aws:
    sqs: Any
    dlq_url: str
    secrets: Any

    def dlq_messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages"):
            found += messages
        return found


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    credentials = {"workspace_id": WORKSPACE, "data_api_key": KEY, "data_center": "DC-01"}
    env = {"MOENGAGE_TIMEOUT_SECONDS": "0.5,1", "MAX_RECEIVE_COUNT": "2"}
    with moto_delivery(monkeypatch, credentials=credentials, env=env) as aws:
        yield Aws(aws.sqs, aws.dlq_url, aws.secrets)


def last_receive_batch() -> dict[str, Any]:
    """Two messages on their last allowed receive (MAX_RECEIVE_COUNT=2): one user each, one of them alone."""
    records = []
    for number in range(2):
        profiles = [
            CanonicalProfile(index=n, identities={"user_id": [f"key-test-{number}-{n}"]}, attributes={"tier": "gold"})
            for n in range(1 + number)
        ]
        body = QueueMessage(correlation_id=f"c-{number}", received_at=datetime.now(UTC), profiles=profiles)
        records.append(
            {
                "messageId": f"m-{number}",
                "receiptHandle": f"h-{number}",
                "body": body.model_dump_json(),
                "attributes": {"ApproximateReceiveCount": "2"},
                "messageAttributes": {"correlation_id": {"stringValue": f"c-{number}", "dataType": "String"}},
                "eventSource": "aws:sqs",
            }
        )
    return {"Records": records}


def deliver(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    monkeypatch.setenv("MOENGAGE_BASE_URL", base_url)
    runtime.clear_caches()
    try:
        deliver_app.lambda_handler(last_receive_batch(), FakeLambdaContext(remaining_ms=6_000))
    except Exception as error:  # a failed batch: Lambda logs the error's text, so it is scanned too
        print(f"{type(error).__name__}: {error}")


def assert_no_key(output: str, aws: Aws, *, expect_dlq: bool = True) -> None:
    dead = aws.dlq_messages()
    if expect_dlq:
        assert dead, "nothing reached the DLQ: its attributes were not exercised"
    stored = "\n".join(json.dumps(m.get("MessageAttributes", {})) + m["Body"] for m in dead)
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} in the logs"
        assert secret not in stored, f"{secret!r} in a DLQ message"


EMULATOR_FAILURES: dict[str, Callable[[MoEngageEmulator], None]] = {
    "401-key-rotated-elsewhere": lambda emulator: emulator.rotate_key("a-key-the-connector-does-not-have"),
    "500": lambda emulator: emulator.set_faults(500, 1.0),
    "503": lambda emulator: emulator.set_faults(503, 1.0),
    "429": lambda emulator: emulator.set_faults(429, 1.0),
    "413": lambda emulator: emulator.set_faults(413, 1.0),
    "timeout": lambda emulator: emulator.set_faults(None, 0.0, delay_ms=1_500),
    "down": lambda emulator: emulator.set_down(True),
}


@pytest.mark.parametrize("failure", sorted(EMULATOR_FAILURES))
def test_the_key_is_not_logged_when_moengage_fails(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, log_output: Callable[[], str], failure: str
) -> None:
    # Given MoEngage (the emulator, with this workspace's key) failing so, and a batch on its last receive
    with MoEngageEmulator("127.0.0.1", 0, workspace_id=WORKSPACE, api_key=KEY) as emulator:
        EMULATOR_FAILURES[failure](emulator)
        # When the delivery handler runs
        deliver(monkeypatch, emulator.base_url)
        attempts = emulator.requests_log()
    # Then MoEngage was called, and neither the logs nor the DLQ hold the key or the Basic header value
    assert attempts
    assert_no_key(log_output(), aws)


def test_the_key_is_not_logged_when_the_http_library_raises_with_it(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, log_output: Callable[[], str]
) -> None:
    # Given an HTTP library that fails with the request's credentials in its error text
    def failing_post(self: requests.Session, url: str, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError(f"POST {url} failed; Authorization: Basic {BASIC}; auth={kwargs.get('auth')}")

    monkeypatch.setattr(requests.Session, "post", failing_post)
    # When the delivery handler runs; Then the error is handled and the key is nowhere
    deliver(monkeypatch, "http://127.0.0.1:9")
    assert_no_key(log_output(), aws)


@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("style", ["header", "raw", "decoded", "bare"])
def test_the_key_is_not_logged_when_moengage_echoes_it(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, log_output: Callable[[], str], status: int, style: str
) -> None:
    # Given an endpoint whose error repeats "Authorization: Basic <value>", the key, workspace:key, or the bare
    # Basic value without naming the header
    server = EchoingMoEngage(status, style)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # When the delivery handler runs
        deliver(monkeypatch, server.base_url)
    finally:
        server.shutdown()
        server.server_close()
    # Then the key and the header value are scrubbed from the logs and the DLQ details
    assert_no_key(log_output(), aws)
