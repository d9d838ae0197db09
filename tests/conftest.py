"""Shared test setup: fake AWS credentials, Powertools env, cache/metric resets, a fake Lambda context."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = ROOT / "events"
AEP_SAMPLES_DIR = ROOT.parent / "shared" / "reference" / "samples" / "aep"

# Set before any boto3 client or Powertools object exists (module import time of the test session).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "aep-moengage",
        "POWERTOOLS_METRICS_NAMESPACE": "AepMoEngage",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_DEV": "0",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)


# events/ingest_*.json -> (HTTP status, profiles accepted, profiles listed as rejected). The size-limit event is
# over MAX_BODY_BYTES only when that is set below its 74 KB (tests set 65536).
INGEST_EVENT_EXPECTATIONS: dict[str, tuple[int, int, int]] = {
    "ingest_http_api_profile.json": (200, 1, 0),
    "ingest_sdk_profiles.json": (200, 2, 0),
    "ingest_sdk_template.json": (200, 3, 0),
    "ingest_basic_auth.json": (200, 2, 0),
    "ingest_unicode_values.json": (200, 1, 0),
    "ingest_partial_rejection.json": (200, 2, 3),
    "ingest_refused_not_json.json": (400, 0, 0),
    "ingest_refused_unrecognized_shape.json": (400, 0, 0),
    "ingest_refused_no_usable_profile.json": (400, 0, 2),
    "ingest_refused_content_type.json": (415, 0, 0),
    "ingest_refused_no_token.json": (401, 0, 0),
    "ingest_refused_wrong_token.json": (401, 0, 0),
    "ingest_refused_too_large.json": (413, 0, 0),
}


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(autouse=True)
def _reset_powertools() -> Iterator[None]:
    """Every test starts with empty secret caches and metric buffers."""
    from aws_lambda_powertools.utilities import parameters

    from aep_moengage.observability import metrics

    parameters.clear_caches()
    metrics.clear_metrics()
    yield
    parameters.clear_caches()
    metrics.clear_metrics()


@pytest.fixture
def log_output(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Everything the function printed: Powertools log lines and EMF metric blobs (stdout)."""
    from aep_moengage.observability import logger

    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    yield lambda: buffer.getvalue() + capsys.readouterr().out
    handler.setStream(previous)  # type: ignore[attr-defined]


INGEST_SECRET_NAME = "aep-moengage/ingest-tokens"


@dataclass
class IngestAws:
    """moto's SQS queue and Secrets Manager as the ingest handler sees them."""

    queue_url: str
    sqs: Any
    secrets: Any

    def set_tokens(self, *tokens: str) -> None:
        self.secrets.put_secret_value(SecretId=INGEST_SECRET_NAME, SecretString=json.dumps({"tokens": list(tokens)}))


def reset_ingest_caches() -> None:
    """Forget the ingest handler's settings, service and SQS client (built once per cold start)."""
    import ingest_app
    from aep_moengage.aws import sqs_client
    from aep_moengage.ingest.settings import load_settings

    load_settings.cache_clear()
    ingest_app.ingest_service.cache_clear()
    sqs_client.cache_clear()


@contextmanager
def moto_ingest(
    monkeypatch: pytest.MonkeyPatch, *, tokens: tuple[str, ...], env: dict[str, str] | None = None
) -> Iterator[IngestAws]:
    """The ingest handler's AWS side in moto (queue and token secret) and its environment, caches reset."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs")
        secrets = boto3.client("secretsmanager")
        queue_url = sqs.create_queue(QueueName="aep-moengage-profiles", Attributes={"MaximumMessageSize": "1048576"})[
            "QueueUrl"
        ]
        secrets.create_secret(Name=INGEST_SECRET_NAME, SecretString=json.dumps({"tokens": list(tokens)}))
        for name, value in {
            "INGEST_TOKEN_SECRET_NAME": INGEST_SECRET_NAME,
            "QUEUE_URL": queue_url,
            **(env or {}),
        }.items():
            monkeypatch.setenv(name, value)
        reset_ingest_caches()
        try:
            yield IngestAws(queue_url, sqs, secrets)
        finally:
            reset_ingest_caches()


MOENGAGE_SECRET_NAME = "aep-moengage/moengage"


@dataclass
class DeliveryAws:
    """moto's queue, DLQ and MoEngage secret as the delivery handler sees them."""

    sqs: Any
    secrets: Any
    queue_url: str
    dlq_url: str


@contextmanager
def moto_delivery(
    monkeypatch: pytest.MonkeyPatch, *, credentials: dict[str, str], env: dict[str, str] | None = None
) -> Iterator[DeliveryAws]:
    """The delivery handler's AWS side in moto and its environment (add MOENGAGE_BASE_URL), caches reset."""
    import boto3
    from moto import mock_aws

    from aep_moengage.delivery import runtime

    runtime.clear_caches()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="aep-moengage-queue")["QueueUrl"]
        dlq_url = sqs.create_queue(QueueName="aep-moengage-dlq")["QueueUrl"]
        secrets.create_secret(Name=MOENGAGE_SECRET_NAME, SecretString=json.dumps(credentials))
        settings = {"MOENGAGE_SECRET_NAME": MOENGAGE_SECRET_NAME, "QUEUE_URL": queue_url, "DLQ_URL": dlq_url}
        for name, value in {**settings, **(env or {})}.items():
            monkeypatch.setenv(name, value)
        try:
            yield DeliveryAws(sqs, secrets, queue_url, dlq_url)
        finally:
            runtime.clear_caches()


def load_event(name: str) -> dict[str, Any]:
    """Load one file of events/ (the same files feed `sam local invoke -e`)."""
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def aep_sample_paths() -> list[Path]:
    return sorted(AEP_SAMPLES_DIR.glob("*.json"))
