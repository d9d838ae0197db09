"""Throughput through the local stack over HTTP (`bench.stack_child`: what `make local` runs, on free ports, in its
own process): AEP requests of 100 profiles posted by two clients, MoEngage's rate limit lifted (emulator and
connector); profiles per second from the first post to the last MoEngage request that completed delivery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from bench.workload import TOKEN, request_body
from devstack.process import StackProcess

STACK_START_TIMEOUT = 60.0


@dataclass
class Delivery:
    at: float
    status: int
    users: int


class RunningStack(StackProcess):
    """`bench.stack_child` (the local stack with a hook that reports each request the emulator answers)."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, token=TOKEN, module="bench.stack_child", on_line=self._record_delivery)
        self.deliveries: list[Delivery] = []

    def _record_delivery(self, line: str) -> bool:
        if not line.startswith("BENCH "):
            return False
        _, at, status, users = line.split()
        self.deliveries.append(Delivery(float(at), int(status), int(users)))
        return True

    def delivered_users(self) -> int:
        """Customer elements MoEngage accepted so far."""
        return sum(d.users for d in self.deliveries if d.status == 200)

    def control(self, route: str, body: dict[str, Any]) -> None:
        requests.post(f"{self.emulator_url}/_emulator/{route}", json=body, timeout=10).raise_for_status()


@contextmanager
def local_stack(extra_env: dict[str, str]) -> Iterator[RunningStack]:
    stack = RunningStack({"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING", **extra_env})
    stack.start(timeout=STACK_START_TIMEOUT)
    try:
        yield stack
    finally:
        stack.stop()


def _post_all(stack: RunningStack, bodies: list[str], clients: int = 2) -> tuple[float, float]:
    """Post every body (each client keeps its connection); the time of the first post and of the last answer."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    local = threading.local()

    def post(body: str) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(stack.api_url, data=body.encode("utf-8"), headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")

    started = time.time()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(post, bodies))
    return started, time.time()


def _wait_for_users(stack: RunningStack, users: int, timeout: float) -> None:
    ends = time.monotonic() + timeout
    while stack.delivered_users() < users:
        if time.monotonic() > ends or stack.returncode is not None:
            tail = "\n".join(stack.output[-20:])
            raise RuntimeError(f"delivered {stack.delivered_users()} of {users} users in {timeout} s:\n{tail}")
        time.sleep(0.05)


def throughput(profiles: int = 10_000, per_request: int = 100, users_per_profile: float = 1.0) -> dict[str, Any]:
    """Profiles per second end to end with every rate limit lifted."""
    env = {"LOCAL_TIME_SCALE": "0.2", "RATE_LIMIT_USERS_PER_MINUTE": "100000000"}
    bodies = [request_body(per_request, start=first) for first in range(0, profiles, per_request)]
    with local_stack(env) as stack:
        stack.control("rate_limit", {"users_per_minute": None, "events_per_minute": None})
        users = round(profiles * users_per_profile)
        started, posted = _post_all(stack, bodies)
        _wait_for_users(stack, users, timeout=120)
        finished = max(d.at for d in stack.deliveries if d.status == 200)
        statuses = _statuses(stack)
    return {
        "profiles": profiles,
        "profiles_per_request": per_request,
        "time_scale": 0.2,
        "seconds": round(finished - started, 2),
        "profiles_per_second": round(profiles / (finished - started)),
        "ingest_profiles_per_second": round(profiles / (posted - started)),
        "moengage_requests": sum(statuses.values()),
        "statuses": statuses,
    }


def _statuses(stack: RunningStack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for delivery in stack.deliveries:
        counts[str(delivery.status)] = counts.get(str(delivery.status), 0) + 1
    return counts
