"""Delivery Lambda: SQS batch of queue messages -> MoEngage Data API, with a partial batch response."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from aep_moengage.delivery import runtime
from aep_moengage.delivery.sending import Deadline
from aep_moengage.delivery.service import InboundMessage, deliver_batch
from aep_moengage.observability import logger, metrics, tracer
from aep_moengage.warmup import freeze_cold_start_heap


class HandedBackToQueue(Exception):
    """Raised for a message to retry later: BatchProcessor lists it in batchItemFailures."""


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    dependencies = runtime.dependencies()
    freeze_cold_start_heap()
    messages = [InboundMessage.from_sqs_record(record) for record in event.get("Records", [])]
    deadline = Deadline.from_context(context, request_timeout_seconds=dependencies.settings.request_timeout_seconds)
    report = deliver_batch(messages, dependencies, deadline)

    def record_handler(record: SQSRecord) -> None:
        if record.message_id in report.retry_message_ids:
            raise HandedBackToQueue(record.message_id)

    processor = BatchProcessor(event_type=EventType.SQS)
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
