"""Ingest Lambda: POST /v1/profiles from AEP (API Gateway HTTP API, payload format 2.0) -> SQS."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import Counter
from functools import cache
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from aep_moengage.aws import sqs_client
from aep_moengage.ingest.auth import active_tokens
from aep_moengage.ingest.enqueue import SqsEnqueuer
from aep_moengage.ingest.normalize import InputShape
from aep_moengage.ingest.service import HttpRequest, HttpResponse, IngestReport, IngestService, error_response
from aep_moengage.ingest.settings import ConfigurationError, load_settings
from aep_moengage.observability import METRICS_NAMESPACE, SERVICE, logger, metrics, tracer
from aep_moengage.secrets import get_json_secret
from aep_moengage.warmup import freeze_cold_start_heap


@cache
def ingest_service() -> IngestService:
    settings = load_settings()
    return IngestService(
        settings,
        tokens=lambda: active_tokens(
            get_json_secret(settings.token_secret_name, max_age=settings.secret_cache_seconds)
        ),
        enqueuer=SqsEnqueuer(sqs_client(), settings.queue_url),
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.perf_counter()
    report = IngestReport()
    correlation_id = str(event.get("requestContext", {}).get("requestId") or context.aws_request_id)
    try:
        request = request_from_event(event, correlation_id)
        service = ingest_service()
        freeze_cold_start_heap()
        response = service.handle(request, report)
    except BadEventBodyError as error:
        report.refused = "invalid_encoding"
        response = error_response(400, "invalid_encoding", str(error), correlation_id)
    except ConfigurationError:
        logger.exception("ingest is misconfigured")
        report.refused = "misconfigured"
        response = error_response(503, "unavailable", "the service is misconfigured; retry later", correlation_id)
    except Exception:  # never let API Gateway answer a bare 500: AEP retries 503, and the body says what happened
        logger.exception("unexpected ingest failure")
        report.refused = "internal_error"
        response = error_response(503, "unavailable", "unexpected failure; retry the request", correlation_id)
    record_outcome(report, response, duration_ms=(time.perf_counter() - started) * 1000)
    return response_to_event(response)


class BadEventBodyError(ValueError):
    pass


def request_from_event(event: dict[str, Any], correlation_id: str) -> HttpRequest:
    headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadEventBodyError("the body is not valid base64") from None
    else:
        body = raw.encode("utf-8", errors="surrogatepass")
    source_ip = event.get("requestContext", {}).get("http", {}).get("sourceIp")
    return HttpRequest(headers=headers, body=body, correlation_id=correlation_id, source_ip=source_ip)


def response_to_event(response: HttpResponse) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "headers": {"Content-Type": "application/json", **response.headers},
        # ASCII-escaped: a refusal may quote a field name that UTF-8 cannot carry (an unpaired surrogate).
        "body": json.dumps(response.body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def record_outcome(report: IngestReport, response: HttpResponse, *, duration_ms: float) -> None:
    """One business metric per outcome, in total and per input shape, and one log line with counts only."""
    result = report.result
    received = result.count_by_shape() if result else Counter[InputShape]()
    enqueued = result.count_by_shape(report.enqueued_indexes) if result else Counter[InputShape]()
    rejected = result.count_by_shape(r.index for r in report.rejected) if result else Counter[InputShape]()
    for name, counts in (
        ("ProfilesReceived", received),
        ("ProfilesEnqueued", enqueued),
        ("ProfilesRejected", rejected),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=counts.total())
    if report.refused:
        metrics.add_metric(name="RequestsRefused", unit=MetricUnit.Count, value=1)
    if response.status >= 500:
        metrics.add_metric(name="EnqueueFailures", unit=MetricUnit.Count, value=1)
    for shape in received:
        by_shape = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
        by_shape.add_dimension(name="shape", value=shape.value)
        by_shape.add_metric(name="ProfilesReceived", unit=MetricUnit.Count, value=received[shape])
        by_shape.add_metric(name="ProfilesEnqueued", unit=MetricUnit.Count, value=enqueued[shape])
        by_shape.add_metric(name="ProfilesRejected", unit=MetricUnit.Count, value=rejected[shape])
        by_shape.flush_metrics()
    logger.info(
        "request answered",
        status=response.status,
        refused=report.refused,
        received=received.total(),
        enqueued=enqueued.total(),
        rejected=rejected.total(),
        shapes={shape.value: count for shape, count in received.items()},
        messages=report.messages,
        sqs_calls=report.sqs_calls,
        retried_entries=report.retried_entries,
        duration_ms=round(duration_ms, 1),
    )
