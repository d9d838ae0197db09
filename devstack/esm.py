"""A poller that behaves like Lambda's SQS event source mapping, for the local stack.

Like the real one: long-polls the queue, gathers up to `batch_size` messages or until the batching window closes,
invokes the handler with an SQS event, deletes what succeeded (honouring `batchItemFailures`), and leaves the
rest to come back after the visibility timeout; a raised error fails the whole batch. The queue's own redrive
policy moves a message to the DLQ after maxReceiveCount receives, as in AWS.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("devstack.esm")
SQS_RECEIVE_MAX = 10


@dataclass
class InvokeContext:
    """The parts of Lambda's context object the handlers use."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


@dataclass
class EsmStats:
    invocations: int = 0
    handler_errors: int = 0
    messages_received: int = 0
    messages_deleted: int = 0
    messages_failed: int = 0


class SqsEventSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        batch_size: int,
        batching_window_seconds: float,
        function_timeout_seconds: float,
        function_name: str = "DeliveryFunction",
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._batch_size = batch_size
        self._window = batching_window_seconds
        self._timeout = function_timeout_seconds
        self._function_name = function_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = EsmStats()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqs-event-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._gather()
                if batch:
                    self._invoke(batch)
            except Exception:  # the poller must survive anything (moto restarts, handler bugs)
                LOG.exception("event source poll failed")
                self._stop.wait(1)

    def _gather(self) -> list[dict[str, Any]]:
        """Receive until the batch is full or the batching window, opened by the first message, closes."""
        batch: list[dict[str, Any]] = []
        window_ends: float | None = None
        while not self._stop.is_set() and len(batch) < self._batch_size:
            remaining = 1.0 if window_ends is None else window_ends - time.monotonic()
            if remaining <= 0:
                break
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, self._batch_size - len(batch)),
                WaitTimeSeconds=1 if remaining >= 1 else 0,  # long polls of 1 s keep stop() responsive
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages and window_ends is None:
                window_ends = time.monotonic() + self._window
            if not messages and remaining < 1:
                time.sleep(min(remaining, 0.05))
            batch.extend(messages)
        return batch

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(message) for message in messages]}
        by_id = {message["MessageId"]: message for message in messages}
        self.stats.invocations += 1
        self.stats.messages_received += len(messages)
        context = InvokeContext(self._function_name, self._timeout)
        try:
            response = self._handler(event, context)
        except Exception:
            # Lambda: a function error fails the whole batch; the messages return after the visibility timeout.
            LOG.warning("delivery invocation failed; the batch returns after the visibility timeout", exc_info=True)
            self.stats.handler_errors += 1
            self.stats.messages_failed += len(messages)
            return
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        done = [message for message_id, message in by_id.items() if message_id not in failed]
        self.stats.messages_failed += len(failed)
        for start in range(0, len(done), SQS_RECEIVE_MAX):
            chunk = done[start : start + SQS_RECEIVE_MAX]
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)],
            )
        self.stats.messages_deleted += len(done)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        """An SQS record exactly as Lambda delivers it (camelCase attribute maps)."""
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": json.loads(json.dumps(attributes)),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": "us-east-1",
        }
