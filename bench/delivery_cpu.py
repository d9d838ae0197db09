"""CPU time to turn 1,000 queued profiles into MoEngage requests: the pure delivery functions, no network.

parse (QueueMessage from the SQS bodies ingest wrote) -> map (identities, attributes, audiences) -> build elements
(merge per user, validate, serialize) -> pack and serialize the bulk requests (BulkSender with a client that only
builds the request body, as the real client does, and answers 200).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.workload import request_body

PROFILES = 1_000
REPEATS = 9


class _SerializingClient:
    """A BulkClient that builds each request body exactly like MoEngageClient and sends nothing."""

    def __init__(self) -> None:
        self.bytes = 0

    def post_bulk(self, elements: Sequence[bytes]) -> Any:
        from aep_moengage.delivery.client import CallKind, CallResult, bulk_body

        self.bytes += len(bulk_body(elements))
        return CallResult(CallKind.OK, 200, 0.0)

    def refresh_credentials(self) -> None:
        return None


def queue_bodies(profiles: int = PROFILES, per_request: int = 100) -> list[str]:
    """The SQS message bodies ingest writes for `profiles` typical profiles sent 100 per AEP request."""
    from aep_moengage.ingest.enqueue import pack_profiles
    from aep_moengage.ingest.normalize import normalize_body

    bodies: list[str] = []
    for first in range(0, profiles, per_request):
        result = normalize_body(json.loads(request_body(per_request, start=first)))
        packing = pack_profiles(
            result.profiles, correlation_id=f"cpu-{first}", received_at=datetime.now(UTC), max_bytes=245_760
        )
        bodies.extend(message.body for message in packing.messages)
    return bodies


@dataclass
class OfflineDelivery:
    stage_seconds: list[float]  # CPU: parse, map, elements, pack_serialize
    elements: list[Any]
    requests: int
    request_bytes: int


def deliver_offline(bodies: list[str]) -> OfflineDelivery:
    """The delivery pipeline on these SQS bodies, without network: CPU seconds per stage and what it built."""
    from aep_moengage.delivery import runtime
    from aep_moengage.delivery.elements import ProfileRef, build_elements
    from aep_moengage.delivery.mapping import MappedProfile, map_profile
    from aep_moengage.delivery.ratelimit import TokenBucket
    from aep_moengage.delivery.sending import BulkSender, Deadline
    from aep_moengage.models.queue import QueueMessage

    rules = runtime.mapping_rules()
    client = _SerializingClient()
    sender = BulkSender(client, TokenBucket(1e9), Deadline(60.0, request_timeout_seconds=13.0))
    t0 = time.process_time()
    messages = [QueueMessage.model_validate_json(body) for body in bodies]
    t1 = time.process_time()
    mapped: list[tuple[ProfileRef, MappedProfile]] = []
    for number, message in enumerate(messages):
        for position, profile in enumerate(message.profiles):
            result = map_profile(profile, rules)
            if isinstance(result, MappedProfile):
                mapped.append((ProfileRef(f"m{number}", position), result))
    t2 = time.process_time()
    elements, _ = build_elements(mapped)
    t3 = time.process_time()
    sender.send(elements)
    t4 = time.process_time()
    return OfflineDelivery([t1 - t0, t2 - t1, t3 - t2, t4 - t3], elements, sender.requests_sent, client.bytes)


def measure() -> dict[str, Any]:
    bodies = queue_bodies()
    stages: dict[str, list[float]] = {"parse": [], "map": [], "elements": [], "pack_serialize": [], "total": []}
    for _ in range(REPEATS):
        run = deliver_offline(bodies)
        for name, value in zip(stages, [*run.stage_seconds, sum(run.stage_seconds)], strict=True):
            stages[name].append(value)
    total = statistics.median(stages["total"])
    return {
        "profiles": PROFILES,
        "repeats": REPEATS,
        "cpu_ms_median": round(total * 1000, 2),
        "cpu_ms_by_stage": {name: round(statistics.median(values) * 1000, 2) for name, values in stages.items()},
        "profiles_per_cpu_second": round(PROFILES / total) if total else 0,
        "elements": len(run.elements),
        "users": sum(element.users for element in run.elements),
        "requests": run.requests,
        "request_bytes": run.request_bytes,
    }
