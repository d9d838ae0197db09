"""Ingest handler time per request, as a ratio to the bare SQS send of the same messages, measured side by side.

A = the real ingest handler (auth with the cached token, parse, normalize, pack, SendMessageBatch, metrics, log).
B = `SendMessageBatch` of exactly the entries A sent (captured from A's own call), with A's own moto client.
Pairs alternate A/B and B/A so that machine noise and ordering effects hit both; the queue is emptied between
pairs (outside the timed code) so that moto's per-call cost stays constant.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.harness import InProcessStack, LambdaContext
from bench.stats import Phase, profile_summary, ratio, summary_ms
from bench.workload import api_gateway_event, request_body

PAIRS = {1: 300, 100: 80, 1_000: 20}
WARMUP_PAIRS = 5
POOR_RATIO = 1.5


def measure(stack: InProcessStack, pairs: dict[int, int] | None = None) -> dict[str, Any]:
    return {str(profiles): _measure(stack, profiles, count) for profiles, count in (pairs or PAIRS).items()}


def _measure(stack: InProcessStack, profiles: int, count: int) -> dict[str, Any]:
    from aep_moengage.aws import sqs_client

    stack.new_queue(f"bench-overhead-{profiles}")
    event = api_gateway_event(request_body(profiles), request_id=f"overhead-{profiles}")
    context = LambdaContext("IngestFunction", stack.facts.ingest.memory_mb, stack.facts.ingest.timeout_seconds)
    handler = stack.ingest_app.lambda_handler
    client: Any = sqs_client()  # the handler's own client (cached factory): its first call below uses this one
    captured = _capture_batches(client, lambda: stack.ingest(event))
    queue_url = stack.queue_url

    def run_handler() -> None:
        handler(event, context)

    def run_bare() -> None:
        for entries in captured:
            client.send_message_batch(QueueUrl=queue_url, Entries=entries)

    timings: dict[str, list[float]] = {"handler": [], "bare": []}
    cpu: dict[str, list[float]] = {"handler": [], "bare": []}
    order = (("handler", run_handler), ("bare", run_bare))
    for number in range(WARMUP_PAIRS + count):
        for name, run in order if number % 2 == 0 else order[::-1]:
            started, cpu_started = time.perf_counter(), time.thread_time()
            run()
            elapsed, cpu_used = time.perf_counter() - started, time.thread_time() - cpu_started
            if number >= WARMUP_PAIRS:
                timings[name].append(elapsed)
                cpu[name].append(cpu_used)
        stack.empty_queue()
    handler_ms, bare_ms = summary_ms(timings["handler"]), summary_ms(timings["bare"])
    result: dict[str, Any] = {
        "profiles": profiles,
        "request_bytes": len(event["body"].encode()),
        "sqs_calls": len(captured),
        "messages": sum(len(entries) for entries in captured),
        "handler": handler_ms,
        "bare_send": bare_ms,
        "ratio_p50": ratio(handler_ms["p50_ms"], bare_ms["p50_ms"]),
        "ratio_p99": ratio(handler_ms["p99_ms"], bare_ms["p99_ms"]),
        "overhead_ms_p50": round(handler_ms["p50_ms"] - bare_ms["p50_ms"], 3),
        "handler_cpu_ms_p50": round(statistics.median(cpu["handler"]) * 1000, 3),
        "bare_cpu_ms_p50": round(statistics.median(cpu["bare"]) * 1000, 3),
    }
    if result["ratio_p50"] > POOR_RATIO:
        result["phases_ms"] = _phases(event["body"], bare_ms["p50_ms"], handler_ms["p50_ms"])
        result["profile"] = _profile(run_handler, stack, count)
    return result


def _phases(body: str, send_ms: float, handler_ms: float, repeat: int = 9) -> dict[str, float]:
    """The handler's steps timed directly (no profiler, which inflates small Python functions), medians in ms:
    the same functions on the same body; the send is the bare send; the rest is decorators, metrics, log, GC."""
    from aep_moengage.ingest.enqueue import pack_profiles
    from aep_moengage.ingest.normalize import normalize_body

    steps: dict[str, list[float]] = {"parse JSON body": [], "normalize": [], "pack (serialize messages)": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        parsed = json.loads(body.encode().decode("utf-8"))
        t1 = time.perf_counter()
        normalized = normalize_body(parsed)
        t2 = time.perf_counter()
        pack_profiles(normalized.profiles, correlation_id="phases", received_at=datetime.now(UTC), max_bytes=245_760)
        t3 = time.perf_counter()
        for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            steps[name].append(seconds)
    phases = {name: round(statistics.median(values) * 1000, 2) for name, values in steps.items()}
    phases["SQS send (bare send p50)"] = send_ms
    phases["rest (decorators, metrics, log line, GC)"] = round(max(0.0, handler_ms - sum(phases.values())), 2)
    return phases


def _capture_batches(client: Any, run: Callable[[], Any]) -> list[list[dict[str, Any]]]:
    """The Entries of every SendMessageBatch the handler's client makes while `run` runs."""
    batches: list[list[dict[str, Any]]] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        batches.append(copy.deepcopy(params["Entries"]))

    client.meta.events.register("provide-client-params.sqs.SendMessageBatch", keep, unique_id="bench-capture")
    try:
        run()
    finally:
        client.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", unique_id="bench-capture")
    if not batches:
        raise RuntimeError("the ingest handler sent nothing to SQS")
    return batches


# Where the handler's time goes: cumulative time of these functions, as a share of the whole handler.
PHASES: dict[str, Phase] = {
    "parse JSON body": ("json/__init__.py", "loads", "ingest/service.py", "handle"),
    "normalize (validate, flatten, models)": ("ingest/normalize.py", "normalize_body"),
    "pack (serialize messages)": ("ingest/enqueue.py", "pack_profiles"),
    "SQS send: botocore": ("ingest/enqueue.py", "send"),  # minus moto, below
    "SQS send: moto (not in Lambda)": ("moto/core/botocore_stubber.py", "__call__"),
    "metrics and log line": ("ingest_app.py", "record_outcome"),
    "auth (cached tokens)": ("ingest/auth.py", "is_authorized"),
}


def _profile(run_handler: Callable[[], None], stack: InProcessStack, count: int) -> dict[str, Any]:
    def run() -> None:
        run_handler()
        stack.empty_queue()

    summary = profile_summary(run, repeat=max(5, count // 4), total=("logging/logger.py", "decorate"), phases=PHASES)
    phases = summary["phases_pct"]
    phases["SQS send: botocore"] = round(phases["SQS send: botocore"] - phases["SQS send: moto (not in Lambda)"], 1)
    other = "other (decorators, event, response)"
    phases[other] = round(max(0.0, 100.0 - sum(pct for label, pct in phases.items() if label != other)), 1)
    return summary
