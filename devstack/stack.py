"""The whole pipeline on one machine: moto (SQS, Secrets Manager), the ingest API, the SQS event source calling
the delivery handler, and the MoEngage emulator (or the real MoEngage). No AWS account, no Docker."""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from devstack.esm import SqsEventSource
from devstack.ingest_server import IngestServer
from devstack.moengage_emulator import MoEngageEmulator
from devstack.template import LocalSettings, local_settings

ROOT = Path(__file__).resolve().parent.parent
LOG = logging.getLogger("devstack")
REGION = "us-east-1"
QUEUE_NAME = "aep-moengage-profiles"
DLQ_NAME = "aep-moengage-profiles-dlq"
INGEST_SECRET = "aep-moengage/ingest-tokens"  # noqa: S105 - a secret's name
MOENGAGE_SECRET = "aep-moengage/moengage"  # noqa: S105 - a secret's name
EMULATOR_WORKSPACE, EMULATOR_KEY = "LOCALWS", "local-key"


class InjectedCrashError(RuntimeError):
    """A delivery invocation made to crash by the local stack's fault injection (chaos runs)."""


@dataclass(frozen=True)
class RealMoEngage:
    workspace_id: str
    data_api_key: str
    data_center: str


@dataclass
class StackConfig:
    """Everything is read from the environment with the defaults of DESIGN.md's contract."""

    host: str = "127.0.0.1"
    api_port: int = 3000
    aws_port: int = 5000
    emulator_port: int = 3100
    ingest_token: str = "local-dev-token"  # noqa: S105 - the documented local token
    # Multiplies the template's time settings (visibility timeout, batching window, retry backoff, delivery
    # timeout) so that redelivery and the DLQ can be exercised in seconds; 1 = the template's own values.
    time_scale: float = 1.0
    emulator_users_per_minute: int = 60_000
    real_moengage: RealMoEngage | None = None
    # Fault injection for chaos runs: share of delivery invocations that crash, of ingest SQS sends that fail.
    delivery_crash_rate: float = 0.0
    sqs_send_failure_rate: float = 0.0
    overrides: dict[str, str] = field(default_factory=dict)  # handler settings, e.g. RATE_LIMIT_USERS_PER_MINUTE

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StackConfig:
        env = dict(os.environ if env is None else env)
        real = None
        if env.get("MOENGAGE_WORKSPACE_ID") and env.get("MOENGAGE_DATA_API_KEY"):
            real = RealMoEngage(
                env["MOENGAGE_WORKSPACE_ID"], env["MOENGAGE_DATA_API_KEY"], env.get("MOENGAGE_DATA_CENTER", "DC-01")
            )
        handler_settings = set(local_settings().ingest.environment) | set(local_settings().delivery.environment)
        return cls(
            api_port=int(env.get("LOCAL_API_PORT", 3000)),
            aws_port=int(env.get("LOCAL_AWS_PORT", 5000)),
            emulator_port=int(env.get("MOENGAGE_EMULATOR_PORT", 3100)),
            ingest_token=env.get("LOCAL_INGEST_TOKEN", "local-dev-token"),
            time_scale=float(env.get("LOCAL_TIME_SCALE", 1.0)),
            emulator_users_per_minute=int(env.get("LOCAL_MOENGAGE_USERS_PER_MINUTE", 60_000)),
            real_moengage=real,
            delivery_crash_rate=float(env.get("LOCAL_FAULT_DELIVERY_CRASH_RATE", 0)),
            sqs_send_failure_rate=float(env.get("LOCAL_FAULT_SQS_SEND_RATE", 0)),
            overrides={name: env[name] for name in handler_settings if name in env},
        )


class FlakySqsClient:
    """Wraps the ingest function's SQS client so that a share of SendMessageBatch entries fails (chaos)."""

    def __init__(self, client: Any, failure_rate: float) -> None:
        self._client = client
        self._rate = failure_rate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        failing = [e for e in entries if random.random() < self._rate]
        passing = [e for e in entries if e not in failing]
        response = self._client.send_message_batch(**{**kwargs, "Entries": passing}) if passing else {}
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InjectedFailure"} for e in failing]
        return {"Successful": response.get("Successful", []), "Failed": response.get("Failed", []) + failed}


class LocalStack:
    def __init__(self, config: StackConfig | None = None, settings: LocalSettings | None = None) -> None:
        self.config = config or StackConfig.from_env()
        self.settings = settings or local_settings()
        self.emulator: MoEngageEmulator | None = None
        self._moto: ThreadedMotoServer | None = None
        self._ingest: IngestServer | None = None
        self.event_source: SqsEventSource | None = None
        self.queue_url = self.dlq_url = ""
        self.sqs: Any = None

    # --------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        config, scale = self.config, self.config.time_scale
        self._moto = ThreadedMotoServer(ip_address=config.host, port=config.aws_port, verbose=False)
        self._moto.start()
        aws_endpoint = "http://{}:{}".format(*self._moto.get_host_and_port())
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            os.environ.pop(name, None)
        self.sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name=REGION)
        self._create_queues(scale)
        base_url = self._start_moengage()
        self._create_secrets()
        self._configure_handlers(base_url, scale)
        ingest_app, deliver_app = _import_handlers()
        if config.sqs_send_failure_rate:
            real_client = ingest_app.sqs_client
            ingest_app.sqs_client = lambda: FlakySqsClient(real_client(), config.sqs_send_failure_rate)
        self._ingest = IngestServer(
            (config.host, config.api_port), ingest_app.lambda_handler, self.settings.ingest.timeout_seconds
        )
        self._ingest.start()
        self.event_source = SqsEventSource(
            self.sqs,
            self.queue_url,
            self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ],
            self._crashing(deliver_app.lambda_handler),
            batch_size=self.settings.batch_size,
            batching_window_seconds=self.settings.batching_window_seconds * scale,
            function_timeout_seconds=max(5.0, self.settings.delivery.timeout_seconds * scale),
        )
        self.event_source.start()

    def stop(self) -> None:
        if self.event_source:
            self.event_source.stop()
        if self._ingest:
            self._ingest.stop()
        if self.emulator:
            self.emulator.stop()
        if self._moto:
            self._moto.stop()

    @property
    def api_url(self) -> str:
        assert self._ingest is not None
        return "http://{}:{}/v1/profiles".format(*self._ingest.server_address[:2])

    @property
    def aws_endpoint(self) -> str:
        return os.environ["AWS_ENDPOINT_URL"]

    # ----------------------------------------------------------------------------------------------- parts
    def _create_queues(self, scale: float) -> None:
        dlq_attributes = dict(self.settings.dlq_attributes)
        self.dlq_url = self.sqs.create_queue(QueueName=DLQ_NAME, Attributes=dlq_attributes)["QueueUrl"]
        dlq_arn = self._queue_arn(self.dlq_url)
        attributes = dict(self.settings.queue_attributes)
        attributes["VisibilityTimeout"] = str(max(1, round(int(attributes.get("VisibilityTimeout", 30)) * scale)))
        # MAX_RECEIVE_COUNT in the environment overrides the template for the queue and the handler alike.
        max_receive_count = self.config.overrides.get("MAX_RECEIVE_COUNT", self.settings.max_receive_count)
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
        attributes.pop("ReceiveMessageWaitTimeSeconds", None)  # the local poller long-polls 1 s at a time
        self.queue_url = self.sqs.create_queue(QueueName=QUEUE_NAME, Attributes=attributes)["QueueUrl"]

    def _queue_arn(self, url: str) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        return str(attributes["QueueArn"])

    def _start_moengage(self) -> str | None:
        if self.config.real_moengage:
            real = self.config.real_moengage
            LOG.warning(
                "delivering to the REAL MoEngage: workspace %s in %s (not the emulator)",
                real.workspace_id,
                real.data_center,
            )
            return None
        self.emulator = MoEngageEmulator(
            self.config.host,
            self.config.emulator_port,
            workspace_id=EMULATOR_WORKSPACE,
            api_key=EMULATOR_KEY,
            users_per_minute=self.config.emulator_users_per_minute,
        )
        url = self.emulator.start()
        LOG.info("MoEngage emulator on %s (workspace %s)", url, EMULATOR_WORKSPACE)
        return url

    def _create_secrets(self) -> None:
        secrets = boto3.client("secretsmanager", endpoint_url=self.aws_endpoint, region_name=REGION)
        real = self.config.real_moengage
        moengage = (
            {"workspace_id": real.workspace_id, "data_api_key": real.data_api_key, "data_center": real.data_center}
            if real
            else {"workspace_id": EMULATOR_WORKSPACE, "data_api_key": EMULATOR_KEY, "data_center": "DC-01"}
        )
        for name, value in ((INGEST_SECRET, {"tokens": [self.config.ingest_token]}), (MOENGAGE_SECRET, moengage)):
            secrets.create_secret(Name=name, SecretString=json.dumps(value))

    def _configure_handlers(self, moengage_base_url: str | None, scale: float) -> None:
        environment = {**self.settings.ingest.environment, **self.settings.delivery.environment}
        environment.update(
            {
                "INGEST_TOKEN_SECRET_NAME": INGEST_SECRET,
                "MOENGAGE_SECRET_NAME": MOENGAGE_SECRET,
                "QUEUE_URL": self.queue_url,
                "DLQ_URL": self.dlq_url,
                # One local delivery environment: it gets the whole rate limit, not a share of it.
                "MAX_CONCURRENCY": "1",
                "RETRY_BASE_SECONDS": str(max(0, round(float(environment.get("RETRY_BASE_SECONDS", 60)) * scale))),
                "RETRY_MAX_SECONDS": str(max(1, round(float(environment.get("RETRY_MAX_SECONDS", 7200)) * scale))),
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon on a laptop
            }
        )
        if scale < 1:
            # A scaled-down delivery timeout must still fit a MoEngage call: the emulator answers in milliseconds.
            environment["MOENGAGE_TIMEOUT_SECONDS"] = "0.5,1.5"
        environment.update(self.config.overrides)
        if moengage_base_url:
            environment["MOENGAGE_BASE_URL"] = moengage_base_url
        else:
            environment.pop("MOENGAGE_BASE_URL", None)
        os.environ.update(environment)

    def _crashing(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        rate = self.config.delivery_crash_rate
        if not rate:
            return handler

        def crash_sometimes(event: dict[str, Any], context: Any) -> Any:
            if random.random() < rate:
                # Crash mid-batch: after the delivery handler ran on the first half of the records.
                half = {"Records": event["Records"][: len(event["Records"]) // 2]}
                if half["Records"]:
                    handler(half, context)
                raise InjectedCrashError("injected delivery crash")
            return handler(event, context)

        return crash_sometimes


def _import_handlers() -> tuple[Any, Any]:
    """Import the handlers from their function folders, as the Lambda runtime does from each CodeUri."""
    for folder in ("functions/ingest", "functions/deliver"):
        path = str(ROOT / folder)
        if path not in sys.path:
            sys.path.insert(0, path)
    return importlib.import_module("ingest_app"), importlib.import_module("deliver_app")
