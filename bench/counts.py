"""Requests per 1,000 profiles through the real handlers: ingest -> SQS (moto) -> event source -> delivery -> MoEngage.

The ingest handler fills the queue, then an event source like Lambda's drains it: ReceiveMessage of up to 10
messages until a batch holds BatchSize messages (the template's), one delivery invocation per batch (the local
stack's `SqsEventSource` builds the event and deletes what succeeded with DeleteMessageBatch), which sends to the
MoEngage emulator. Every AWS call is counted at botocore; MoEngage requests are counted in the emulator.

moto scans the whole queue on every call, so the queue is filled and drained in rounds of at most BatchSize
messages: each round is exactly one full batch, as a backlog of 1,000 messages would give.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.harness import AwsCallRecorder, InProcessStack
from bench.workload import api_gateway_event, request_body
from devstack.esm import SQS_RECEIVE_MAX, SqsEventSource

PROFILES = 1_000


@dataclass
class PipelineCounts:
    """Everything counted while 1,000 profiles went through, in `profiles_per_request`-profile AEP requests."""

    profiles: int
    profiles_per_request: int
    batch_size: int
    wire_bytes_per_profile: float
    ingest_invocations: int
    send_calls: int
    messages: int
    message_bytes_avg: float
    send_billable: int
    receive_calls: int  # non-empty ReceiveMessage calls (the idle polls of an empty queue are a fixed cost)
    receive_billable: int
    delete_calls: int
    delivery_invocations: int
    moengage_requests: int
    moengage_statuses: dict[str, int]
    elements: int
    users: int  # customer elements: what MoEngage's users-a-minute limit counts
    request_bytes_avg: float
    element_bytes_avg: float
    secret_reads: int
    ingest_log_bytes_per_invocation: float
    delivery_log_bytes_per_invocation: float
    ingest_ms_median: float
    delivery_ms_median: float
    delivery_cpu_ms_total: float  # CPU time of the handler's own thread, all invocations

    @property
    def sqs_requests(self) -> int:
        return self.send_calls + self.receive_calls + self.delete_calls

    @property
    def sqs_billable(self) -> int:
        return self.send_billable + self.receive_billable + self.delete_calls

    @property
    def profiles_per_moengage_request(self) -> float:
        return self.profiles / self.moengage_requests if self.moengage_requests else 0.0

    @property
    def users_per_profile(self) -> float:
        return self.users / self.profiles

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "sqs_requests": self.sqs_requests,
            "sqs_billable": self.sqs_billable,
            "profiles_per_moengage_request": round(self.profiles_per_moengage_request, 1),
            "users_per_profile": round(self.users_per_profile, 2),
        } | {name: round(value, 2) for name, value in asdict(self).items() if isinstance(value, float)}


def run_pipeline(stack: InProcessStack, profiles_per_request: int) -> PipelineCounts:
    batch_size = stack.facts.batch_size
    stack.new_queue(f"bench-counts-{profiles_per_request}-{batch_size}")
    stack.emulator.reset()
    requests = PROFILES // profiles_per_request
    bodies = [request_body(profiles_per_request, start=n * profiles_per_request) for n in range(requests)]
    delivery_ms: list[float] = []
    delivery_cpu_ms: list[float] = []

    def timed_handler(event: dict[str, Any], context: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return stack.deliver_app.lambda_handler(event, context)
        finally:
            delivery_ms.append((time.perf_counter() - started) * 1000)
            delivery_cpu_ms.append((time.thread_time() - cpu) * 1000)

    source = SqsEventSource(
        stack.sqs,
        stack.queue_url,
        stack.queue_arn,
        timed_handler,
        batch_size=batch_size,
        batching_window_seconds=stack.facts.batching_window_seconds,
        function_timeout_seconds=stack.facts.delivery.timeout_seconds,
    )
    ingest_ms: list[float] = []
    ingest_log = delivery_log = 0
    with AwsCallRecorder() as aws:
        for first in range(0, requests, batch_size):
            log_start = stack.sink.bytes
            for number in range(first, min(requests, first + batch_size)):
                started = time.perf_counter()
                stack.ingest(api_gateway_event(bodies[number], request_id=f"counts-{profiles_per_request}-{number}"))
                ingest_ms.append((time.perf_counter() - started) * 1000)
            ingest_log += stack.sink.bytes - log_start
            log_start = stack.sink.bytes
            _drain(stack, source, batch_size)
            delivery_log += stack.sink.bytes - log_start
        sends = aws.of("SendMessageBatch")
        messages = sum(call.items for call in sends)
        receives = aws.of("ReceiveMessage", non_empty=True)
        deletes = aws.of("DeleteMessageBatch")
        secret_reads = len(aws.of("GetSecretValue"))
    if source.stats.messages_deleted != messages:
        raise RuntimeError(f"the event source deleted {source.stats.messages_deleted} of {messages} messages")

    sent = [r for r in stack.emulator.requests_log() if r["path"].startswith("/v1/")]
    statuses: dict[str, int] = {}
    for request in sent:
        statuses[str(request["status"])] = statuses.get(str(request["status"]), 0) + 1
    elements = [element for r in sent if r["status"] == 200 for element in r["body"]["elements"]]
    request_bytes = [len(_compact(r["body"])) for r in sent]
    invocations = source.stats.invocations
    return PipelineCounts(
        profiles=PROFILES,
        profiles_per_request=profiles_per_request,
        batch_size=batch_size,
        wire_bytes_per_profile=sum(len(b.encode()) for b in bodies) / PROFILES,
        ingest_invocations=requests,
        send_calls=len(sends),
        messages=messages,
        message_bytes_avg=sum(call.request_bytes for call in sends) / max(1, messages),
        send_billable=sum(call.billable_requests for call in sends),
        receive_calls=len(receives),
        receive_billable=sum(call.billable_requests for call in receives),
        delete_calls=len(deletes),
        delivery_invocations=invocations,
        moengage_requests=len(sent),
        moengage_statuses=statuses,
        elements=len(elements),
        users=sum(1 for element in elements if element.get("type") == "customer"),
        request_bytes_avg=statistics.fmean(request_bytes) if request_bytes else 0.0,
        element_bytes_avg=statistics.fmean(len(_compact(e)) for e in elements) if elements else 0.0,
        secret_reads=secret_reads,
        ingest_log_bytes_per_invocation=ingest_log / requests,
        delivery_log_bytes_per_invocation=delivery_log / max(1, invocations),
        ingest_ms_median=statistics.median(ingest_ms),
        delivery_ms_median=statistics.median(delivery_ms) if delivery_ms else 0.0,
        delivery_cpu_ms_total=sum(delivery_cpu_ms),
    )


def _drain(stack: InProcessStack, source: SqsEventSource, batch_size: int) -> None:
    """Receive batches of up to `batch_size` messages (10 a call) and invoke delivery on each, until empty."""
    while True:
        batch: list[Any] = []
        while len(batch) < batch_size:
            messages = stack.sqs.receive_message(
                QueueUrl=stack.queue_url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, batch_size - len(batch)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                break
            batch.extend(messages)
        if not batch:
            return
        source._invoke(batch)  # the local stack's event source: Lambda's event, partial batch response, deletes


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
