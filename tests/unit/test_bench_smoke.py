"""The benchmark's arithmetic on fixed counts (no timing: `make bench` measures, tests never assert timings)."""

from __future__ import annotations

import pytest

from bench.cost import CostInputs, cost_per_million, cpu_scale, profiles_per_delivery_invocation
from bench.report import flags
from bench.stats import percentile

ONE_PROFILE_REQUESTS = CostInputs(
    profiles_per_request=1,
    request_bytes=1_200,
    ingest_invocations=1_000,
    ingest_cpu_ms=0.7,
    ingest_sqs_calls=1,
    ingest_memory_mb=256,
    ingest_log_bytes=1_250,
    sqs_billable_requests=1_200,
    message_bytes=1_400,
    profiles_per_message=1,
    batch_size=100,
    delivery_cpu_ms=250,
    moengage_requests=10,
    delivery_memory_mb=512,
    delivery_log_bytes=29_000,
)


def test_cost_per_million_one_profile_requests() -> None:
    cost = cost_per_million(ONE_PROFILE_REQUESTS)
    usd = cost["usd"]
    # A million HTTP API calls of 1.2 KB at $1.00 per million; 1.2M SQS requests at $0.40 per million
    assert usd["api_gateway"] == pytest.approx(1.00)
    assert usd["sqs"] == pytest.approx(0.48)
    assert usd["secrets_manager"] == 0  # cached: no read per request
    assert cost["delivery_invocations"] == 10_000  # BatchSize 100 one-profile messages
    assert cost["ingest_billed_ms"] == 25  # ceil(0.7 ms x 1769/256 + one 20 ms SQS call)
    assert usd["total"] == pytest.approx(sum(v for k, v in usd.items() if k != "total"), abs=1e-3)


def test_large_messages_are_capped_by_the_invoke_payload() -> None:
    sdk = CostInputs(**{**ONE_PROFILE_REQUESTS.__dict__, "message_bytes": 115_000, "profiles_per_message": 100})
    assert profiles_per_delivery_invocation(sdk) == 54 * 100  # 6 MiB / (115 KB + record envelope)
    assert cpu_scale(256) == pytest.approx(1_769 / 256)
    assert cpu_scale(2_048) == 1.0


def test_flags_name_the_figures_below_their_goals() -> None:
    results = {
        "ingest": {"1": {"ratio_p50": 1.2}, "1000": {"ratio_p50": 3.5}},
        "cold_start": {"bytecode": {"ratio_to_boto3": {"ingest_app": 1.6, "deliver_app": 2.4}}},
        "sustained": {"share_of_limit": 0.91, "rate_limited_429": 0},
    }
    assert flags(results) == [
        "ingest overhead: 3.5x the bare send at 1000 profile(s)/request",
        "import time: deliver_app 2.4x boto3 (bytecode)",
    ]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([float(n) for n in range(1, 51)], 0.99) == 50.0
