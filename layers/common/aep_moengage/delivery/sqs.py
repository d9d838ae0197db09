"""SQS adapter: the only delivery module that uses boto3 (visibility changes and DLQ sends)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from aep_moengage.models.queue import ATTR_CORRELATION_ID, ATTR_FAILURE_DETAIL, ATTR_FAILURE_REASON

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

MAX_ATTRIBUTE_LENGTH = 1_000


class DeadLetterQueueUnsetError(Exception):
    """DLQ_URL is not set: permanent failures are left to the queue's redrive policy."""


@lru_cache(maxsize=1)
def sqs_client() -> SQSClient:
    config = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client("sqs", config=config)


class SqsQueue:
    """The `QueuePort` of the delivery service, on the source queue and its DLQ."""

    def __init__(self, client: SQSClient, *, queue_url: str | None, dlq_url: str | None) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dlq_url = dlq_url

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        if self._queue_url is None:  # without QUEUE_URL the queue's own visibility timeout applies
            return
        self._client.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    def send_to_dlq(self, body: str, *, reason: str, detail: str, correlation_id: str | None) -> None:
        if self._dlq_url is None:
            raise DeadLetterQueueUnsetError("DLQ_URL is not set")
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            ATTR_FAILURE_REASON: {"DataType": "String", "StringValue": reason},
            ATTR_FAILURE_DETAIL: {"DataType": "String", "StringValue": detail[:MAX_ATTRIBUTE_LENGTH] or "-"},
        }
        if correlation_id:
            attributes[ATTR_CORRELATION_ID] = {"DataType": "String", "StringValue": correlation_id}
        self._client.send_message(QueueUrl=self._dlq_url, MessageBody=body, MessageAttributes=attributes)
