"""Peak Python memory of one handler run (tracemalloc), beside the handlers' resident size after import.

tracemalloc counts what Python allocates during the run (all threads of this process: the handler, and for ingest
moto's copy of the messages it stores). The MoEngage emulator runs in its own process and is not counted.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.delivery_cpu import queue_bodies
from bench.harness import InProcessStack, sqs_event
from bench.workload import api_gateway_event, request_body


def _peak(run: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] / 1024 / 1024
    finally:
        tracemalloc.stop()


def measure(stack: InProcessStack) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for profiles in (1, 100, 1_000):
        stack.new_queue(f"bench-memory-{profiles}")
        event = api_gateway_event(request_body(profiles), request_id=f"memory-{profiles}")
        stack.ingest(event)  # warm: settings, client, secret cache
        stack.empty_queue()
        results[f"ingest_{profiles}_profiles_mib"] = round(_peak(partial(stack.ingest, event)), 2)
        stack.empty_queue()
    event = sqs_event(queue_bodies(), "memory", stack.queue_arn)
    stack.reset_handlers(RATE_LIMIT_USERS_PER_MINUTE="100000000")  # no waiting for tokens in this run
    stack.emulator.reset()
    stack.deliver({"Records": event["Records"][:1]})  # warm: settings, secret, session
    results["delivery_1000_profiles_mib"] = round(_peak(lambda: stack.deliver(event)), 2)
    stack.reset_handlers(RATE_LIMIT_USERS_PER_MINUTE=str(stack.facts.rate_limit_users_per_minute))
    return results
