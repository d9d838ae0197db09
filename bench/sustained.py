"""Sustained delivery rate against MoEngage's rate limit, with time scaled down.

MoEngage allows 60,000 users a minute per workspace; the connector's default (template RateLimitUsersPerMinute) is
90% of it. Here the emulator (its own process) counts users in windows of WINDOW_SECONDS instead of 60 s, with the
limit scaled alike (60,000 x W/60 per window); the connector keeps its per-second rate and its token bucket's burst
(3 s of the rate) is scaled like the window, else the first short window would get 3 s of extra users.

The real delivery handler is invoked back to back on full batches (BatchSize one-profile messages, as the event
source delivers a backlog from the HTTP API destination), one execution environment with the whole rate
(MAX_CONCURRENCY=1, as in the local stack). Not the local stack itself: its single poller gathers the next batch
only after the invocation ends, and moto scans the whole queue on every call, which adds seconds between batches
that AWS's poller (fetching while the function runs) does not.

Share of the limit = users accepted per second over the steady part (from the second window to the start of the
last, partial one: the first window holds the initial burst) / the limit per second. Every MoEngage call is timed
where the client makes it; users per window are also counted, as the emulator counts them.
"""

from __future__ import annotations

import time
from typing import Any

from bench.delivery_cpu import deliver_offline, queue_bodies
from bench.harness import InProcessStack, sqs_event

MOENGAGE_USERS_PER_MINUTE = 60_000
CONNECTOR_SHARE = 0.9  # template default RateLimitUsersPerMinute 54,000 = 90% of MoEngage's limit
BURST_SECONDS = 3.0  # aep_moengage.delivery.ratelimit.BURST_SECONDS
WINDOW_SECONDS = 5.0
WINDOWS = 5.0  # users sent: this many windows at the connector's rate


def measure(
    stack: InProcessStack, *, window_seconds: float = WINDOW_SECONDS, windows: float = WINDOWS
) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from aep_moengage.delivery import ratelimit, runtime

    scale = window_seconds / 60.0
    limit_per_window = round(MOENGAGE_USERS_PER_MINUTE * scale)
    connector_per_minute = round(MOENGAGE_USERS_PER_MINUTE * CONNECTOR_SHARE)
    connector_per_second = connector_per_minute / 60.0
    batch_size = stack.facts.batch_size

    bodies = queue_bodies(1_000, per_request=1)  # one profile per message: the HTTP API destination
    sample = deliver_offline(bodies[:batch_size])  # customer elements per profile: an audience exit is one more
    users_per_profile = sum(element.users for element in sample.elements) / batch_size
    batches = round(connector_per_second * window_seconds * windows / users_per_profile / batch_size)

    saved_burst = ratelimit.BURST_SECONDS
    ratelimit.BURST_SECONDS = BURST_SECONDS * scale
    calls: list[tuple[float, int | None, int]] = []
    handed_back = 0
    try:
        stack.reset_handlers(RATE_LIMIT_USERS_PER_MINUTE=str(connector_per_minute), MAX_CONCURRENCY="1")
        stack.deliver(sqs_event(bodies[:1], "warm"))  # cold start outside the measurement: secret, session
        client = runtime.moengage_client()
        post_bulk = client.post_bulk

        def timed(elements: Any) -> Any:
            result = post_bulk(elements)
            calls.append((time.monotonic(), result.status, sum(e.count(b'"type":"customer"') for e in elements)))
            return result

        client.post_bulk = timed  # type: ignore[method-assign]
        stack.emulator.reset()
        stack.emulator.control(
            "rate_limit",
            {"users_per_minute": limit_per_window, "events_per_minute": None, "window_seconds": window_seconds},
        )
        for number in range(batches):
            first = number * batch_size % len(bodies)
            event = sqs_event(bodies[first : first + batch_size], f"b{number}")
            try:
                handed_back += len(stack.deliver(event).get("batchItemFailures", []))
            except BatchProcessingError:  # every message handed back: the whole batch fails
                handed_back += len(event["Records"])
    finally:
        ratelimit.BURST_SECONDS = saved_burst
        stack.reset_handlers(
            RATE_LIMIT_USERS_PER_MINUTE=str(stack.facts.rate_limit_users_per_minute),
            MAX_CONCURRENCY=str(stack.facts.max_concurrency),
        )
    accepted = [(at, users) for at, status, users in calls if status == 200]
    per_window = _users_per_window(accepted, window_seconds)
    steady_rate, steady_seconds = _steady_rate(accepted, window_seconds, len(per_window))
    limit_per_second = limit_per_window / window_seconds
    statuses: dict[str, int] = {}
    for _, status, _ in calls:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "window_seconds": window_seconds,
        "time_scale": round(scale, 4),
        "limit_users_per_window": limit_per_window,
        "limit_users_per_second": round(limit_per_second, 1),
        "connector_users_per_minute": connector_per_minute,
        "connector_burst_seconds": round(BURST_SECONDS * scale, 3),
        "profiles": batches * batch_size,
        "users_per_profile": users_per_profile,
        "invocations": batches,
        "users_per_window": per_window,
        "steady_seconds": round(steady_seconds, 2),
        "steady_users_per_second": round(steady_rate, 1),
        "share_of_limit": round(steady_rate / limit_per_second, 3),
        "share_of_connector_rate": round(steady_rate / connector_per_second, 3),
        "max_window_share": round(max(per_window) / limit_per_window, 3) if per_window else 0.0,
        "statuses": statuses,
        "rate_limited_429": statuses.get("429", 0),
        "messages_handed_back": handed_back,
    }


def _steady_rate(accepted: list[tuple[float, int]], window_seconds: float, windows: int) -> tuple[float, float]:
    """Users per second between the calls of the steady part: from the first call of the second window to the last
    call before the last (partial) window; the first call's users are the fencepost and not counted."""
    if windows < 3:
        return 0.0, 0.0
    start = accepted[0][0]
    steady = [
        (at, users) for at, users in accepted if start + window_seconds <= at < start + (windows - 1) * window_seconds
    ]
    if len(steady) < 2:
        return 0.0, 0.0
    seconds = steady[-1][0] - steady[0][0]
    return sum(users for _, users in steady[1:]) / seconds, seconds


def _users_per_window(accepted: list[tuple[float, int]], window_seconds: float) -> list[int]:
    """Users accepted per window of `window_seconds`, from the first accepted call (as the emulator counts)."""
    if not accepted:
        return []
    start = accepted[0][0]
    counts = [0] * (int((accepted[-1][0] - start) // window_seconds) + 1)
    for at, users in accepted:
        counts[int((at - start) // window_seconds)] += users
    return counts
