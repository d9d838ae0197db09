"""Run the real handlers in-process: moto for SQS and Secrets Manager, the MoEngage emulator on a free port.

Also: a counter of AWS API calls (every boto3 client, whatever created it) and a sink that swallows, and counts,
what the handlers print (Powertools JSON logs and EMF metrics: what CloudWatch Logs would ingest).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.client

from bench import add_handler_paths
from devstack.process import free_port
from devstack.template import load_template, local_settings

REGION = "us-east-1"
INGEST_SECRET = "bench/ingest-tokens"  # noqa: S105 - a secret's name
MOENGAGE_SECRET = "bench/moengage"  # noqa: S105 - a secret's name
WORKSPACE, API_KEY = "LOCALWS", "local-key"
SQS_CHUNK_BYTES = 64 * 1024  # SQS bills every 64 KB of a request's payload as one request


def configure_environment() -> None:
    """Fake credentials and the Powertools settings of template.yaml's Globals, before any client exists."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_SERVICE_NAME": "aep-moengage",
            "POWERTOOLS_METRICS_NAMESPACE": "AepMoEngage",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here (see the README, Benchmarks)
            "SECRET_CACHE_SECONDS": "300",
        }
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    add_handler_paths()


@dataclass(frozen=True)
class FunctionSpec:
    memory_mb: int
    timeout_seconds: float
    architectures: tuple[str, ...]


@dataclass(frozen=True)
class TemplateFacts:
    """What the benchmark takes from template.yaml: the functions' sizes and the event source's batching."""

    ingest: FunctionSpec
    delivery: FunctionSpec
    batch_size: int
    batching_window_seconds: float
    max_concurrency: int
    rate_limit_users_per_minute: int
    queue_attributes: dict[str, str]


def template_facts() -> TemplateFacts:
    template = load_template()
    settings = local_settings(template)
    globals_ = template.get("Globals", {}).get("Function", {})

    def spec(handler_prefix: str) -> FunctionSpec:
        properties = next(
            r["Properties"]
            for r in template["Resources"].values()
            if r["Type"] == "AWS::Serverless::Function"
            and str(r["Properties"].get("Handler", "")).startswith(handler_prefix)
        )
        return FunctionSpec(
            memory_mb=int(properties.get("MemorySize", globals_.get("MemorySize", 128))),
            timeout_seconds=float(properties.get("Timeout", globals_.get("Timeout", 3))),
            architectures=tuple(properties.get("Architectures", globals_.get("Architectures", ["x86_64"]))),
        )

    return TemplateFacts(
        ingest=spec("ingest_app."),
        delivery=spec("deliver_app."),
        batch_size=settings.batch_size,
        batching_window_seconds=settings.batching_window_seconds,
        max_concurrency=settings.max_concurrency,
        rate_limit_users_per_minute=int(settings.parameters.get("RateLimitUsersPerMinute") or 54_000),
        queue_attributes=dict(settings.queue_attributes),
    )


# ------------------------------------------------------------------------------------------- output and context


class CountingSink(io.TextIOBase):
    """A text stream that keeps nothing but the number of UTF-8 bytes written to it."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8", errors="replace"))
        return len(text)

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def handler_output(sink: CountingSink) -> Iterator[None]:
    """Send the handlers' logs (the package's Powertools Logger) and EMF metrics (printed) into `sink`."""
    from aep_moengage.observability import logger

    handler = logger.registered_handler
    previous = handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object the handlers use."""

    function_name: str = "bench"
    memory_limit_in_mb: int = 256
    timeout_seconds: float = 60.0
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


def sqs_event(
    bodies: list[str], prefix: str, queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:bench"
) -> dict[str, Any]:
    """An SQS event as Lambda's event source builds it, for bodies that were never in a queue (first receive)."""
    return {
        "Records": [
            {
                "messageId": f"{prefix}-{number}",
                "receiptHandle": f"{prefix}-handle-{number}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
            }
            for number, body in enumerate(bodies)
        ]
    }


# -------------------------------------------------------------------------------------------------- AWS calls


@dataclass
class AwsCall:
    service: str
    operation: str
    request_bytes: int  # SQS: the payload SQS bills (message bodies and attributes sent)
    response_bytes: int  # SQS: the payload received (ReceiveMessage bodies and attributes)
    items: int  # SQS: messages sent, received or deleted

    @property
    def billable_requests(self) -> int:
        """SQS bills each 64 KB chunk of a request's payload (sent or received) as one request."""
        payload = max(self.request_bytes, self.response_bytes)
        return max(1, -(-payload // SQS_CHUNK_BYTES))


def _attributes_bytes(attributes: dict[str, Any] | None) -> int:
    total = 0
    for name, value in (attributes or {}).items():
        total += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        total += len(str(value.get("StringValue", "")).encode())
    return total


def _message_bytes(message: dict[str, Any]) -> int:
    return len(str(message.get("MessageBody", message.get("Body", ""))).encode()) + _attributes_bytes(
        message.get("MessageAttributes")
    )


class AwsCallRecorder:
    """Counts every boto3 API call made in the process while active (all clients, including Powertools')."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self._original: Callable[..., Any] | None = None

    def __enter__(self) -> AwsCallRecorder:
        client_class: Any = botocore.client.BaseClient
        original = client_class._make_api_call
        recorder = self

        def recording(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            response = original(client, operation_name, api_params)
            recorder._record(client.meta.service_model.service_name, operation_name, api_params, response)
            return response

        self._original = original
        client_class._make_api_call = recording
        return self

    def __exit__(self, *exc: object) -> None:
        if self._original is not None:
            client_class: Any = botocore.client.BaseClient
            client_class._make_api_call = self._original

    def _record(self, service: str, operation: str, params: dict[str, Any], response: dict[str, Any]) -> None:
        sent = received = items = 0
        if operation == "SendMessageBatch":
            sent, items = sum(_message_bytes(e) for e in params["Entries"]), len(params["Entries"])
        elif operation == "SendMessage":
            sent, items = _message_bytes(params), 1
        elif operation == "ReceiveMessage":
            messages = response.get("Messages", [])
            received, items = sum(_message_bytes(m) for m in messages), len(messages)
        elif operation == "DeleteMessageBatch":
            items = len(params["Entries"])
        self.calls.append(AwsCall(service, operation, sent, received, items))

    def of(self, operation: str, *, non_empty: bool = False) -> list[AwsCall]:
        return [c for c in self.calls if c.operation == operation and (c.items or not non_empty)]

    def clear(self) -> None:
        self.calls.clear()


# ------------------------------------------------------------------------------------------ MoEngage emulator


class EmulatorProcess:
    """The MoEngage emulator in its own process on a free port (its work never shares the handlers' GIL),
    driven through its `/_emulator/*` control API."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        command = [sys.executable, "-m", "devstack.moengage_emulator", "--port", str(self.port)]
        command += ["--workspace-id", WORKSPACE, "--api-key", API_KEY]
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip() == "ready":
                return self
        raise RuntimeError("the MoEngage emulator did not start")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def control(self, route: str, body: dict[str, Any] | None = None) -> Any:
        import requests

        response = requests.post(f"{self.base_url}/_emulator/{route}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self, *, users_per_minute: int | None = None) -> None:
        """Forget everything; no rate limit unless one is given."""
        self.control("reset")
        self.control("rate_limit", {"users_per_minute": users_per_minute, "events_per_minute": None})

    def requests_log(self) -> list[dict[str, Any]]:
        import requests

        response = requests.get(f"{self.base_url}/_emulator/requests", timeout=30)
        response.raise_for_status()
        return list(response.json()["requests"])


# ------------------------------------------------------------------------------------------ in-process stack


class InProcessStack:
    """moto (SQS, Secrets Manager) and both handlers in this process, configured like template.yaml; the MoEngage
    emulator in its own process."""

    def __init__(self, facts: TemplateFacts) -> None:
        self.facts = facts
        self.sink = CountingSink()
        self._exit = contextlib.ExitStack()
        self.queue_url = self.dlq_url = ""

    def __enter__(self) -> InProcessStack:
        import boto3
        from moto import mock_aws

        configure_environment()
        self.emulator = self._exit.enter_context(EmulatorProcess())
        self.emulator.reset()
        self._exit.enter_context(mock_aws())
        self.sqs: Any = boto3.client("sqs", region_name=REGION)
        secrets = boto3.client("secretsmanager", region_name=REGION)
        self.dlq_url = self.sqs.create_queue(QueueName="bench-dlq")["QueueUrl"]
        secrets.create_secret(Name=INGEST_SECRET, SecretString=json.dumps({"tokens": ["bench-token"]}))
        credentials = {"workspace_id": WORKSPACE, "data_api_key": API_KEY, "data_center": "DC-01"}
        secrets.create_secret(Name=MOENGAGE_SECRET, SecretString=json.dumps(credentials))
        os.environ.update(
            {
                "INGEST_TOKEN_SECRET_NAME": INGEST_SECRET,
                "MOENGAGE_SECRET_NAME": MOENGAGE_SECRET,
                "MOENGAGE_BASE_URL": self.emulator.base_url,
                "DLQ_URL": self.dlq_url,
                "MAX_BODY_BYTES": "5000000",
                "QUEUE_MESSAGE_MAX_BYTES": "245760",
                "ENQUEUE_DEADLINE_MS": "1500",
                "RATE_LIMIT_USERS_PER_MINUTE": str(self.facts.rate_limit_users_per_minute),
                "MAX_CONCURRENCY": str(self.facts.max_concurrency),
            }
        )
        self._exit.enter_context(handler_output(self.sink))
        import deliver_app
        import ingest_app

        self.ingest_app, self.deliver_app = ingest_app, deliver_app
        self.new_queue("bench-queue")
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset_handlers()
        self._exit.close()

    def reset_handlers(self, **environment: str) -> None:
        """A cold start of both handlers' caches (settings, clients, secret cache, rate limiter)."""
        from aws_lambda_powertools.utilities import parameters

        from aep_moengage import aws
        from aep_moengage.delivery import runtime
        from aep_moengage.ingest.settings import load_settings
        from aep_moengage.observability import metrics

        os.environ.update(environment)
        load_settings.cache_clear()
        self.ingest_app.ingest_service.cache_clear()
        aws.sqs_client.cache_clear()
        runtime.clear_caches()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        metrics.clear_metrics()

    def ingest(self, event: dict[str, Any]) -> dict[str, Any]:
        context = LambdaContext("IngestFunction", self.facts.ingest.memory_mb, self.facts.ingest.timeout_seconds)
        response: dict[str, Any] = self.ingest_app.lambda_handler(event, context)
        if response["statusCode"] != 200:
            raise RuntimeError(f"ingest answered {response['statusCode']}: {response['body'][:300]}")
        return response

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        context = LambdaContext("DeliveryFunction", self.facts.delivery.memory_mb, self.facts.delivery.timeout_seconds)
        response: dict[str, Any] = self.deliver_app.lambda_handler(event, context)
        return response

    def new_queue(self, name: str) -> str:
        """A fresh, empty source queue for the handlers (moto allows one PurgeQueue a minute)."""
        attributes = {k: v for k, v in self.facts.queue_attributes.items() if k != "ReceiveMessageWaitTimeSeconds"}
        self.queue_url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.reset_handlers(QUEUE_URL=self.queue_url)
        return self.queue_url

    def empty_queue(self) -> None:
        """Forget every message of the current queue at once (outside timed code): moto scans the whole queue on
        every call, so a queue that keeps growing would make each send slower than the one before."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.sqs.models import sqs_backends

        name = self.queue_url.rsplit("/", 1)[1]
        sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[name]._messages.clear()
