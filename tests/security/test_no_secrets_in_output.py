"""Secrets and PII never appear in what the functions print, trace or answer.

Both handlers run in-process (moto for SQS and Secrets Manager, the MoEngage emulator over HTTP) on every event file
and every AEP sample, with their log output captured (`log_output`: Powertools log lines and EMF metrics), X-Ray
subsegments captured by an in-memory emitter, and the HTTP answers and DLQ message attributes kept. Each is scanned
for the callers' tokens (and the Basic header that carries one), the MoEngage key (and its Basic header), and the
personal data of the samples: identity ids and attribute values.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import deliver_app
import ingest_app
from devstack.moengage_emulator import MoEngageEmulator
from tests.conftest import EVENTS_DIR, FakeLambdaContext, aep_sample_paths, load_event, moto_delivery, moto_ingest

EVENT_TOKEN = "local-dev-token"  # what the event files present (ingest_basic_auth.json as a Basic password)
WORKSPACE, KEY = "SECWS001", "mk-live-5f0c2d9e8b7a4136"
BASIC_KEY = base64.b64encode(f"{WORKSPACE}:{KEY}".encode()).decode()
NOT_PII = {"realized", "existing", "exited", "ups", "CustomerAudienceUpload", "user_id", "anonymous_id", "value"}


def secrets_of_event(event: dict[str, Any]) -> set[str]:
    """The credential an event presents: the bearer token, or the Basic blob and the password inside it."""
    found = {EVENT_TOKEN, KEY, BASIC_KEY, f"{WORKSPACE}:{KEY}"}
    header = (event.get("headers") or {}).get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if credential.strip():
        found.add(credential.strip())
        if scheme.lower() == "basic":
            found.add(base64.b64decode(credential).decode().partition(":")[2])
    return {value for value in found if len(value) >= 6}


def pii_of(value: Any, *, key: str = "", inside_audiences: bool = False) -> set[str]:
    """Identity ids and attribute values (strings of 4+ characters), not audience ids, names or statuses."""
    found: set[str] = set()
    if key in ("segmentMembership", "AdobeExperiencePlatformSegments", "audiences"):
        inside_audiences = True
    if isinstance(value, dict):
        for child_key, child in value.items():
            found |= pii_of(child, key=str(child_key), inside_audiences=inside_audiences)
    elif isinstance(value, list):
        for child in value:
            found |= pii_of(child, key=key, inside_audiences=inside_audiences)
    elif (
        isinstance(value, str)
        and not inside_audiences
        and len(value) >= 4
        and value not in NOT_PII
        and key not in ("type", "schema_version", "correlation_id", "received_at")
    ):
        found.add(value)
    return found


def leaks(text: str, values: set[str]) -> list[str]:
    return sorted(value for value in values if value in text)


# --------------------------------------------------------------------------------------------------- traces


@dataclass
class CapturedTraces:
    entities: list[str] = field(default_factory=list)

    def send_entity(self, entity: Any) -> None:
        self.entities.append(entity.serialize())

    def set_daemon_address(self, address: Any) -> None:
        return None

    @property
    def ip(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return 2000

    def text(self) -> str:
        return "\n".join(self.entities)


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedTraces]:
    """Turn Powertools' Tracer on as in Lambda, with every closed (sub)segment serialized into memory."""
    from aws_lambda_powertools import Tracer
    from aws_xray_sdk import global_sdk_config
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.lambda_launcher import LambdaContext

    captured = CapturedTraces()
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "security-test")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
    previous_context, previous_emitter = xray_recorder.context, xray_recorder.emitter
    xray_recorder.configure(context=LambdaContext(), emitter=captured, sampling=False, streaming_threshold=1)
    Tracer._reset_config()
    Tracer(service="aep-moengage", disabled=False, auto_patch=False)
    global_sdk_config.set_sdk_enabled(True)
    yield captured
    Tracer._reset_config()
    Tracer(service="aep-moengage", disabled=True)
    xray_recorder.configure(context=previous_context, emitter=previous_emitter)


# ---------------------------------------------------------------------------------------------------- ingest


@pytest.fixture
def ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # ingest_refused_too_large.json is 74 KB
    with moto_ingest(monkeypatch, tokens=(EVENT_TOKEN,), env={"MAX_BODY_BYTES": "65536"}) as aws:
        yield aws.sqs


def ingest_events() -> list[tuple[str, dict[str, Any]]]:
    """Every events/ingest_*.json, and every AEP sample posted as it is."""
    events = [(path.name, load_event(path.name)) for path in sorted(EVENTS_DIR.glob("ingest_*.json"))]
    for path in aep_sample_paths():
        event = load_event("ingest_http_api_profile.json")
        event["body"] = path.read_text(encoding="utf-8")
        events.append((path.name, event))
    return events


@pytest.mark.parametrize(("name", "event"), ingest_events(), ids=[name for name, _ in ingest_events()])
def test_ingest_logs_traces_and_answers_hold_no_secret_and_no_pii(
    ingest: Any, traces: CapturedTraces, log_output: Callable[[], str], name: str, event: dict[str, Any]
) -> None:
    # Given an event (accepted, partly rejected or refused) and the personal data and credentials it carries
    try:
        body = json.loads(event["body"])
    except ValueError:
        body = {}
    pii = pii_of(body)
    secrets = secrets_of_event(event)
    # When the ingest handler answers it
    response = ingest_app.lambda_handler(event, FakeLambdaContext())
    # Then neither the answer, nor the logs and metrics, nor the trace segments contain any of them
    output = log_output()
    assert output.strip(), "the handler logged nothing: the scan would prove nothing"
    assert traces.entities, "no trace segment was captured: the scan would prove nothing"
    for where, text in (("answer", json.dumps(response)), ("logs", output), ("traces", traces.text())):
        assert leaks(text, secrets) == [], f"{name}: a credential in the {where}"
        assert leaks(text, pii) == [], f"{name}: personal data in the {where}"


def test_the_pii_scan_would_catch_a_leak() -> None:
    # Given the personal data of the HTTP API sample; Then the scan finds each value in a text that holds it
    pii = pii_of(json.loads(load_event("ingest_http_api_profile.json")["body"]))
    assert {"CUST-000123", "zoe.angstrom@example.com", "1985-03-14"} <= pii
    assert leaks('{"message": "x", "email": "zoe.angstrom@example.com"}', pii) == ["zoe.angstrom@example.com"]
    assert not pii & NOT_PII


# -------------------------------------------------------------------------------------------------- delivery


@dataclass
class Delivery:
    emulator: MoEngageEmulator
    sqs: Any
    dlq_url: str

    def dlq_attributes(self) -> str:
        """Every DLQ message's attributes (reason, detail, correlation id) as one text; the messages are kept."""
        texts = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages"):
            texts += [json.dumps(message.get("MessageAttributes", {}), ensure_ascii=False) for message in messages]
        return "\n".join(texts)


@pytest.fixture
def delivery(monkeypatch: pytest.MonkeyPatch) -> Iterator[Delivery]:
    credentials = {"workspace_id": WORKSPACE, "data_api_key": KEY, "data_center": "DC-01"}
    with MoEngageEmulator("127.0.0.1", 0, workspace_id=WORKSPACE, api_key=KEY) as emulator:
        env = {"MOENGAGE_BASE_URL": emulator.base_url, "MOENGAGE_TIMEOUT_SECONDS": "0.5,1", "MAX_RECEIVE_COUNT": "2"}
        with moto_delivery(monkeypatch, credentials=credentials, env=env) as aws:
            yield Delivery(emulator, aws.sqs, aws.dlq_url)


def delivery_events() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, load_event(path.name)) for path in sorted(EVENTS_DIR.glob("sqs_deliver_*.json"))]


MOENGAGE_ANSWERS: dict[str, Callable[[MoEngageEmulator], None]] = {
    "ok": lambda emulator: None,
    "500": lambda emulator: emulator.set_faults(500, 1.0),
    "429": lambda emulator: emulator.set_faults(429, 1.0),
    "401": lambda emulator: emulator.rotate_key("a-key-this-connector-does-not-have"),
    "timeout": lambda emulator: emulator.set_faults(None, 0.0, delay_ms=1_500),
    "down": lambda emulator: emulator.set_down(True),
}


@pytest.mark.parametrize("answer", sorted(MOENGAGE_ANSWERS))
@pytest.mark.parametrize(("name", "event"), delivery_events(), ids=[name for name, _ in delivery_events()])
def test_delivery_logs_traces_and_dlq_details_hold_no_secret_and_no_pii(
    delivery: Delivery,
    traces: CapturedTraces,
    log_output: Callable[[], str],
    name: str,
    event: dict[str, Any],
    answer: str,
) -> None:
    # Given a batch of queue messages on their last allowed receive, and MoEngage answering so
    pii = set().union(*(pii_of(json.loads(record["body"])) for record in event["Records"]))
    for record in event["Records"]:
        record["attributes"]["ApproximateReceiveCount"] = "2"
    MOENGAGE_ANSWERS[answer](delivery.emulator)
    # When the delivery handler runs (whatever it delivers, hands back or dead-letters)
    try:
        deliver_app.lambda_handler(event, FakeLambdaContext(remaining_ms=6_000))
    except Exception as error:  # every message handed back: the error text is what Lambda would log
        print(f"{type(error).__name__}: {error}")
    # Then the logs, the trace segments and the DLQ's reasons and details hold neither the key nor personal data
    output = log_output()
    secrets = {KEY, BASIC_KEY, f"{WORKSPACE}:{KEY}"}
    assert traces.entities
    for where, text in (("logs", output), ("traces", traces.text()), ("DLQ attributes", delivery.dlq_attributes())):
        assert leaks(text, secrets) == [], f"{name}/{answer}: the MoEngage key in the {where}"
        assert leaks(text, pii) == [], f"{name}/{answer}: personal data in the {where}"


def test_scanned_samples_exist() -> None:
    # Given the fixtures the scans run on; Then there is something to scan
    assert len(ingest_events()) >= 15
    assert len(delivery_events()) >= 2
    assert all(Path(path).exists() for path in aep_sample_paths())
