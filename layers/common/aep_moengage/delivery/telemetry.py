"""Delivery metrics (EMF through the package's one Metrics object) and their dimensioned variants."""

from __future__ import annotations

from collections import Counter

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from aep_moengage.delivery.client import CallKind, CallResult, status_class
from aep_moengage.observability import METRICS_NAMESPACE, SERVICE, metrics


def count(name: str, value: int = 1) -> None:
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_by(name: str, dimension: str, counts: Counter[str]) -> None:
    """One metric per dimension value (e.g. ProfilesFailedPermanently by Reason), emitted at once."""
    for key, value in sorted(counts.items()):
        if value:
            with single_metric(
                name=name,
                unit=MetricUnit.Count,
                value=value,
                namespace=METRICS_NAMESPACE,
                default_dimensions={"service": SERVICE, dimension: key},
            ):
                pass


class CallRecorder:
    """Counts MoEngage calls and latency by status class (2xx, 4xx, 5xx, network) during one invocation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.auth_failures = 0

    def on_call(self, result: CallResult) -> None:
        status = status_class(result.status)
        self.calls[status] += 1
        count("MoEngageCalls")
        metrics.add_metric(name="MoEngageLatency", unit=MetricUnit.Milliseconds, value=round(result.latency_ms, 1))
        if result.kind is CallKind.RATE_LIMITED:
            count("MoEngageRateLimited")
        with single_metric(
            name="MoEngageLatency",
            unit=MetricUnit.Milliseconds,
            value=round(result.latency_ms, 1),
            namespace=METRICS_NAMESPACE,
            default_dimensions={"service": SERVICE, "StatusClass": status},
        ):
            pass

    def on_auth_failure(self) -> None:
        self.auth_failures += 1
        count("MoEngageAuthFailures")

    def flush(self) -> None:
        count_by("MoEngageCalls", "StatusClass", self.calls)
        self.calls.clear()
