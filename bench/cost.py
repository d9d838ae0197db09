"""Variable cost per million profiles, from the counts and durations measured by the benchmark.

Prices: us-east-1 list prices of `reference/costmodel.py` (the dict `P`; sources in `reference/reliability-perf.md`
section 6), copied here so that the benchmark runs without the reference folder. Free tiers are ignored.
What is measured and what is assumed is said per line in the README, section Benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PRICES: dict[str, float] = {
    "httpapi_per_request": 1.00 / 1e6,  # per 512 KB of request (HTTP API meters in 512 KB increments)
    "lambda_per_request": 0.20 / 1e6,
    "lambda_arm64_per_gb_second": 0.0000133334,
    "sqs_per_request": 0.40 / 1e6,  # per 64 KB chunk of payload
    "secrets_per_call": 0.05 / 1e4,
    "logs_per_gb": 0.50,
}
PRICES_SOURCE = "reference/costmodel.py (P), us-east-1 list prices; sources in reference/reliability-perf.md section 6"

MILLION = 1_000_000
HTTPAPI_METER_BYTES = 512 * 1024
LAMBDA_FULL_VCPU_MB = 1_769  # "1,769 MB = 1 vCPU; CPU scales in proportion" (reliability-perf.md section 3)
LAMBDA_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024  # a batch must fit one synchronous invoke
SQS_RECORD_OVERHEAD_BYTES = 1_000  # [assumption] a record's envelope in the event beside its body
# [assumptions] network time that the in-process benchmark cannot see:
SQS_CALL_MS = 20.0  # one SendMessageBatch from Lambda to SQS in-region, client work included
MOENGAGE_CALL_MS = 300.0  # one MoEngage bulk call (the assumption of reference/costmodel.py)
PLATFORM_LOG_BYTES = 350  # START/END/REPORT lines per invocation
ACCESS_LOG_BYTES = 400  # one API Gateway access log line in the template's format


@dataclass(frozen=True)
class CostInputs:
    """Per 1,000 profiles unless said otherwise; `*_cpu_ms` measured on this machine at a full core."""

    profiles_per_request: int
    request_bytes: float  # one AEP request's body
    ingest_invocations: float
    ingest_cpu_ms: float  # per invocation: the handler's own CPU (the bare SQS send's CPU taken off)
    ingest_sqs_calls: float  # per invocation
    ingest_memory_mb: int
    ingest_log_bytes: float  # per invocation, as printed by the handler
    sqs_billable_requests: float  # send + receive + delete, 64 KB chunks counted
    message_bytes: float  # one SQS message
    profiles_per_message: float
    batch_size: int  # the event source's BatchSize
    delivery_cpu_ms: float  # for 1,000 profiles, the handler's thread
    moengage_requests: float
    delivery_memory_mb: int
    delivery_log_bytes: float  # per 1,000 profiles, as printed by the handler
    secret_reads: float = 0.0  # GetSecretValue per 1,000 profiles in steady state (cached: 0)


def cpu_scale(memory_mb: int) -> float:
    """How much longer CPU work takes at `memory_mb` than on one full core (Lambda gives CPU in proportion)."""
    return max(1.0, LAMBDA_FULL_VCPU_MB / memory_mb)


def profiles_per_delivery_invocation(inputs: CostInputs) -> float:
    """A full batch: BatchSize messages, or fewer if their records pass the 6 MB invoke payload."""
    by_payload = LAMBDA_INVOKE_PAYLOAD_BYTES // (inputs.message_bytes + SQS_RECORD_OVERHEAD_BYTES)
    return max(1, min(inputs.batch_size, by_payload)) * inputs.profiles_per_message


def cost_per_million(inputs: CostInputs, prices: dict[str, float] | None = None) -> dict[str, Any]:
    p = prices or PRICES
    per_thousand = MILLION / 1_000
    api_requests = inputs.ingest_invocations * per_thousand
    meters = max(1, math.ceil(inputs.request_bytes / HTTPAPI_METER_BYTES))
    ingest_ms = math.ceil(
        inputs.ingest_cpu_ms * cpu_scale(inputs.ingest_memory_mb) + inputs.ingest_sqs_calls * SQS_CALL_MS
    )
    ingest_gb_seconds = api_requests * ingest_ms / 1000 * inputs.ingest_memory_mb / 1024
    delivery_invocations = MILLION / profiles_per_delivery_invocation(inputs)
    delivery_seconds = (
        per_thousand
        * (inputs.delivery_cpu_ms * cpu_scale(inputs.delivery_memory_mb) + inputs.moengage_requests * MOENGAGE_CALL_MS)
        / 1000
    )
    delivery_gb_seconds = delivery_seconds * inputs.delivery_memory_mb / 1024
    log_bytes = (
        api_requests * (inputs.ingest_log_bytes + PLATFORM_LOG_BYTES + ACCESS_LOG_BYTES)
        + per_thousand * inputs.delivery_log_bytes
        + delivery_invocations * PLATFORM_LOG_BYTES
    )
    lines = {
        "api_gateway": api_requests * meters * p["httpapi_per_request"],
        "ingest_lambda": api_requests * p["lambda_per_request"] + ingest_gb_seconds * p["lambda_arm64_per_gb_second"],
        "sqs": inputs.sqs_billable_requests * per_thousand * p["sqs_per_request"],
        "delivery_lambda": delivery_invocations * p["lambda_per_request"]
        + delivery_gb_seconds * p["lambda_arm64_per_gb_second"],
        "secrets_manager": inputs.secret_reads * per_thousand * p["secrets_per_call"],
        "cloudwatch_logs": log_bytes / 1024**3 * p["logs_per_gb"],
    }
    total = sum(lines.values())
    return {
        "inputs": asdict(inputs),
        "usd": {name: round(value, 4) for name, value in lines.items()} | {"total": round(total, 4)},
        "api_requests": round(api_requests),
        "ingest_billed_ms": ingest_ms,
        "delivery_invocations": round(delivery_invocations),
        "delivery_seconds": round(delivery_seconds, 1),
        "log_mib": round(log_bytes / 1024**2, 1),
    }
