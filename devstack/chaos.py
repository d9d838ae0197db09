"""`make chaos`: the local stack under a scripted storm, then an account of every profile.

What it does, all on 127.0.0.1, bounded in time and stopping by itself:

1. Starts the local stack (`python -m devstack`, what `make local` runs) on free ports, with the template's time
   settings scaled by `--time-scale`, fewer receives before the DLQ (`MAX_RECEIVE_COUNT`) and a shorter longest
   backoff (`RETRY_MAX_SECONDS`), delivery invocations that crash mid-batch (`LOCAL_FAULT_DELIVERY_CRASH_RATE`) and
   SQS entries that fail at ingest (`LOCAL_FAULT_SQS_SEND_RATE`).
2. Concurrent clients post `--profiles` profiles in AEP's three input shapes (a tenth in the HTTP API shape, one
   per request; the rest in Destination SDK batches) and retry like AEP's best-effort aggregation: an answer of
   403/408/409/429/5xx, or none, is retried twice (after 15 s and 30 s, scaled), then the request is dropped.
3. Meanwhile, slot by slot: the MoEngage emulator answers 5xx and 429 at the target rates (it takes one fault status
   at a time, so the status alternates with per-slot rates that average out to the targets), answers later than the
   delivery's read timeout, and goes down (drops connections); and the profile queue refuses every send for a while
   (an SQS outage as ingest sees it: ingest answers 503 once its deadline passes).
4. The faults stop and the queue drains. Every profile acknowledged to a client must then be in MoEngage (its user
   exists with the run's marker attributes) or in the DLQ. `ops.redrive` (`make redrive`) moves the DLQ back, the
   queue drains again, and every acknowledged profile must be in MoEngage.
5. Prints the settings and a summary table, writes it as JSON (`bench/results/chaos.json`) and exits 1 if an
   acknowledged profile was lost or a request was refused with a status AEP does not retry.

    python -m devstack.chaos                  # 10,000 profiles, 8 clients (about 2 minutes)
    python -m devstack.chaos --quick          # 1,000 profiles, half-second fault slots (about 30 s)
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import requests

from devstack.process import StackProcess
from devstack.template import local_settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
QUEUE_NAME = "aep-moengage-profiles"
HOST = "127.0.0.1"
TOKEN = "chaos-token"  # noqa: S105 - the local stack's ingest token for this run
REGION = "us-east-1"

# AEP's best-effort aggregation retries these twice, after 15 s and 30 s, then drops the request (reliability-perf.md
# section 5); any other 5xx is retried as well. No answer at all (timeout, connection error) is retried too.
AEP_RETRIED_STATUSES = frozenset({403, 408, 409, 429, 500, 502, 503, 504})
AEP_RETRY_WAITS_SECONDS = (15.0, 30.0)
NO_ANSWER = "no answer"  # the attempt's "status" when the client saw a timeout or a connection error
DOWN = "no answer (down)"  # a MoEngage call the emulator dropped without answering
SHAPES = ("http_api", "sdk_profiles", "sdk_template")
# Share of the profiles sent in the HTTP API shape (one profile per request, hence one queue message each). The
# local stack's moto slows down in proportion to the messages queued, so most profiles come in SDK batches.
HTTP_API_SHARE = 0.1
SERVER_ERRORS = (500, 503, 502)  # the 5xx statuses the emulator takes turns answering
# The SQS outage: the profile queue's MaximumMessageSize drops to SQS's minimum, below every message of the run.
SQS_OUTAGE_MAX_MESSAGE_SIZE = 1024
SQS_OUTAGE_FIRST_SLOT = 4  # position in the cycle where the outage starts
# Every profile carries this text (under MoEngage's 512 characters): it makes every queue message larger than the
# outage's MaximumMessageSize, and it is what AEP's values look like (markup, quotes, emoji, any script).
NOTES = 'Prefers <b>express</b> delivery \u2013 “gift wrap” 🎁 & "quotes" ' + "ø" * 400
# Read timeout of a MoEngage call when the stack runs scaled down (stack.py sets MOENGAGE_TIMEOUT_SECONDS=0.5,1.5).
SCALED_READ_TIMEOUT_SECONDS = 1.5


def aep_retries(status: int | str) -> bool:
    """Would AEP retry a request answered so?"""
    return status == NO_ANSWER or (isinstance(status, int) and (status in AEP_RETRIED_STATUSES or status >= 500))


# ------------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class ChaosOptions:
    profiles: int = 10_000
    clients: int = 8
    time_scale: float = 0.01
    quick: bool = False
    # Fault rates. Delivery: shares of MoEngage Data API calls. Crash: share of delivery invocations. SQS: share
    # of the ingest's SendMessageBatch entries (each failed entry is retried by ingest within its deadline).
    server_error_rate: float = 0.3
    rate_limited_rate: float = 0.2
    slow_delay_ms: int = 2_000  # above the scaled delivery read timeout (1.5 s): the call times out
    delivery_crash_rate: float = 0.1
    sqs_send_failure_rate: float = 0.2
    # Fault schedule: the status alternates every slot; in every cycle of `cycle_slots` slots, `slow_slots`
    # answer late and then `down_slots` drop every connection.
    slot_seconds: float = 1.0
    cycle_slots: int = 20
    slow_slots: int = 3
    down_slots: int = 3
    sqs_outage_seconds: float = 4.0  # per cycle, the queue refuses every send (ingest answers 503 after 1.5 s)
    # Delivery retries, shortened so that the run ends in minutes (the template: 10 receives, backoff up to 2 h).
    max_receive_count: int = 4
    retry_max_seconds: int = 2
    client_timeout_seconds: float = 5.0
    drain_timeout_seconds: float = 240.0
    max_profiles_per_request: int = 100
    seed: int | None = None

    @classmethod
    def quick_run(cls, **overrides: Any) -> ChaosOptions:
        """About 30 s: 1,000 profiles, half-second fault slots (a cycle of 10 s still has every fault)."""
        values: dict[str, Any] = {
            "profiles": 1_000,
            "quick": True,
            "slot_seconds": 0.5,
            "drain_timeout_seconds": 90.0,
            "max_profiles_per_request": 25,
        }
        values.update(overrides)
        return cls(**values)

    def error_slot_rates(self) -> tuple[float, float]:
        """Per-slot injection rates for 5xx and 429 slots so that, over a cycle, the shares are the targets."""
        pattern = fault_pattern()
        server_share = sum(1 for status in pattern if status != 429) / len(pattern)
        server = self.server_error_rate / server_share
        limited = self.rate_limited_rate / (1 - server_share)
        if server > 1 or limited > 1:
            raise ValueError("fault rates too high for the alternating schedule (5xx <= 0.6, 429 <= 0.4)")
        return server, limited

    def validate(self) -> None:
        self.error_slot_rates()
        outage_slots = math.ceil(self.sqs_outage_seconds / self.slot_seconds)
        if SQS_OUTAGE_FIRST_SLOT + outage_slots > self.cycle_slots - self.down_slots - self.slow_slots:
            raise ValueError("the SQS outage must end before the slow and down slots of the cycle")
        if self.profiles < 3 or self.clients < 1 or not 0 < self.time_scale <= 1:
            raise ValueError("profiles must be at least 3, clients at least 1, time_scale in (0, 1]")


def fault_pattern() -> tuple[int, ...]:
    """The status of consecutive slots: 3 of 5 answer 5xx (500, 503, 502), 2 of 5 answer 429."""
    return (SERVER_ERRORS[0], 429, SERVER_ERRORS[1], 429, SERVER_ERRORS[2])


# ------------------------------------------------------------------------------------------------------ the stack


class Emulator:
    """The MoEngage emulator's control and inspection endpoints (DESIGN.md, local stack)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._session = requests.Session()
        self._lock = threading.Lock()

    def control(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            response = self._session.post(f"{self.base_url}/_emulator/{path}", json=body, timeout=10)
        response.raise_for_status()

    def faults(self, status: int | None, rate: float, delay_ms: int = 0) -> None:
        self.control("faults", {"status": status, "rate": rate, "delay_ms": delay_ms})

    def down(self, down: bool) -> None:
        self.control("down", {"down": down})

    def calm(self) -> None:
        self.faults(None, 0.0, 0)
        self.down(False)

    def requests_log(self) -> list[dict[str, Any]]:
        with self._lock:
            response = self._session.get(f"{self.base_url}/_emulator/requests", timeout=120)
        response.raise_for_status()
        return response.json()["requests"]  # type: ignore[no-any-return]

    def dropped(self) -> list[dict[str, Any]]:
        with self._lock:
            response = self._session.get(f"{self.base_url}/_emulator/dropped", timeout=60)
        response.raise_for_status()
        return response.json()["dropped"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Job:
    """One request to post: its shape and the sequence numbers of the profiles in it."""

    shape: str
    seqs: tuple[int, ...]


@dataclass
class RequestOutcome:
    job: Job
    statuses: list[int | str] = field(default_factory=list)  # one per attempt
    acknowledged: bool = False
    accepted: int = 0


class Workload:
    """Profiles with a marker (the run id and a sequence number) that proves which ones reached MoEngage."""

    def __init__(self, run_id: str, profiles: int, max_per_request: int, rng: random.Random) -> None:
        self.run_id = run_id
        self.jobs = self._plan(profiles, max_per_request, rng)
        self.shape_of = {seq: job.shape for job in self.jobs for seq in job.seqs}

    @staticmethod
    def _plan(profiles: int, max_per_request: int, rng: random.Random) -> list[Job]:
        """HTTP API profiles one per request (as AEP sends them), SDK ones in batches of 1 to `max_per_request`
        (as AEP bundles them), the two SDK shapes sharing what the HTTP API shape leaves."""
        jobs: list[Job] = []
        http_api = max(1, round(profiles * HTTP_API_SHARE))
        counts = {"http_api": http_api, "sdk_profiles": (profiles - http_api + 1) // 2}
        counts["sdk_template"] = profiles - http_api - counts["sdk_profiles"]
        seq = 0
        for shape in SHAPES:
            end = seq + counts[shape]
            while seq < end:
                size = 1 if shape == "http_api" else min(end - seq, rng.randint(1, max_per_request))
                jobs.append(Job(shape, tuple(range(seq, seq + size))))
                seq += size
        rng.shuffle(jobs)
        return jobs

    def customer_id(self, seq: int) -> str:
        return f"chaos-{self.run_id}-{seq:06d}"

    def marker(self, seq: int) -> dict[str, Any]:
        """The attributes, as MoEngage stores them, that only this run's profile `seq` carries."""
        if self.shape_of[seq] == "http_api":
            return {"_tenant.chaos.run": self.run_id, "_tenant.chaos.seq": seq}
        return {"chaos_run": self.run_id, "chaos_seq": seq}

    def body(self, job: Job) -> bytes:
        profiles = [self._profile(job.shape, seq) for seq in job.seqs]
        payload: Any = profiles[0] if job.shape == "http_api" else {"profiles": profiles}
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")

    def _profile(self, shape: str, seq: int) -> dict[str, Any]:
        customer_id = self.customer_id(seq)
        email = f"chaos.{self.run_id}.{seq}@example.com"
        first_name = f"Zoë {self.run_id}-{seq}"
        if shape == "http_api":
            return {
                "identityMap": {
                    "crmid": [{"id": customer_id}],
                    "ecid": [{"id": f"{seq:020d}{self.run_id}"}],
                },
                "person": {"name": {"firstName": first_name, "lastName": "O'Brien & <Ångström>"}},
                "personalEmail": {"address": email},
                "_tenant": {"chaos": {"run": self.run_id, "seq": seq, "notes": NOTES}},
                "segmentMembership": {
                    "ups": {
                        "chaos-segment-a": {
                            "status": "realized",
                            "name": "Chaos \u2013 gold 🎯",
                            "lastQualificationTime": "2026-01-01T00:00:00Z",
                        }
                    }
                },
            }
        if shape == "sdk_profiles":
            return {
                "identityMap": {"user_id": [{"id": customer_id}]},
                "segmentMembership": {"ups": {"chaos-segment-b": {"status": "existing"}}},
                "attributes": {
                    "first_name": {"value": first_name},
                    "email": {"value": email},
                    "chaos_run": {"value": self.run_id},
                    "chaos_seq": {"value": seq},
                    "notes": {"value": NOTES},
                    "unset": {},
                },
            }
        return {
            "identities": [{"type": "user_id", "id": customer_id}],
            "AdobeExperiencePlatformSegments": {"add": ["chaos-segment-c"], "remove": []},
            "attributes": {"first_name": first_name, "chaos_run": self.run_id, "chaos_seq": seq, "notes": NOTES},
        }


class Clients:
    """`clients` threads posting the workload's jobs, retrying like AEP's best-effort aggregation."""

    def __init__(self, workload: Workload, api_url: str, options: ChaosOptions) -> None:
        self._workload = workload
        self._api_url = api_url
        self._options = options
        self._jobs: queue.Queue[Job] = queue.Queue()
        for job in workload.jobs:
            self._jobs.put(job)
        self.outcomes: list[RequestOutcome] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"chaos-client-{n}", daemon=True) for n in range(options.clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> None:
        ends = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, ends - time.monotonic()))

    @property
    def done(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def _run(self) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        waits = [wait * self._options.time_scale for wait in AEP_RETRY_WAITS_SECONDS]
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            body = self._workload.body(job)
            outcome = RequestOutcome(job)
            for attempt in range(len(waits) + 1):
                if attempt:
                    time.sleep(waits[attempt - 1])
                try:
                    response = session.post(
                        self._api_url, data=body, headers=headers, timeout=self._options.client_timeout_seconds
                    )
                except requests.RequestException:
                    outcome.statuses.append(NO_ANSWER)
                    session.close()
                    session = requests.Session()  # a fresh connection, as after a timeout
                    continue
                outcome.statuses.append(response.status_code)
                if response.status_code == 200:
                    outcome.acknowledged = True
                    try:
                        outcome.accepted = int(response.json().get("accepted", 0))
                    except ValueError:
                        outcome.accepted = 0  # reported as a problem: an acknowledgement must count the profiles
                    break
                if not aep_retries(response.status_code):
                    break
            with self._lock:
                self.outcomes.append(outcome)


# ------------------------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Slot:
    """What the storm does during one slot."""

    status: int  # the status the emulator injects (5xx or 429), at `rate`
    rate: float
    delay_ms: int = 0  # the emulator answers this late (slow window)
    moengage_down: bool = False  # the emulator drops every connection
    sqs_outage: bool = False  # the profile queue refuses every send (ingest answers 503 once its deadline passes)

    @property
    def kinds(self) -> list[str]:
        kinds = ["moengage down" if self.moengage_down else f"moengage {'429' if self.status == 429 else '5xx'}"]
        if self.delay_ms and not self.moengage_down:
            kinds.append("moengage slow")
        if self.sqs_outage:
            kinds.append("sqs outage")
        return kinds


class FaultSchedule:
    """Drives the faults slot by slot in a thread, until stopped (and at least one full cycle ran).

    The emulator takes one fault status at a time, so the status alternates every slot: 3 slots of 5 answer 5xx
    and 2 answer 429, each at a rate that makes the shares over a cycle the targets. In every cycle some slots
    answer late, some drop every connection (MoEngage down), and the profile queue refuses sends for a while
    (its MaximumMessageSize is set to 1 KiB, below every profile message: an SQS outage as ingest sees it).
    """

    def __init__(self, emulator: Emulator, sqs: SQSClient, queue_url: str, options: ChaosOptions) -> None:
        self._emulator = emulator
        self._sqs = sqs
        self._queue_url = queue_url
        self._options = options
        self._max_message_size = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MaximumMessageSize"])[
            "Attributes"
        ]["MaximumMessageSize"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)
        self.seconds: dict[str, float] = {}  # seconds per kind of fault
        self.cycles_completed = 0

    def slot(self, number: int) -> Slot:
        options = self._options
        pattern = fault_pattern()
        server_rate, limited_rate = options.error_slot_rates()
        status = pattern[number % len(pattern)]
        position = number % options.cycle_slots
        down_from = options.cycle_slots - options.down_slots
        slow_from = down_from - options.slow_slots
        outage_slots = math.ceil(options.sqs_outage_seconds / options.slot_seconds)
        return Slot(
            status=status,
            rate=limited_rate if status == 429 else server_rate,
            delay_ms=options.slow_delay_ms if slow_from <= position < down_from else 0,
            moengage_down=position >= down_from,
            sqs_outage=SQS_OUTAGE_FIRST_SLOT <= position < SQS_OUTAGE_FIRST_SLOT + outage_slots,
        )

    def start(self) -> None:
        self._thread.start()

    def stop_after_cycle(self, more: Callable[[], bool], deadline: float) -> None:
        """Keep going while `more()` or until a whole cycle ran; then end every fault."""
        while time.monotonic() < deadline and (more() or self.cycles_completed < 1):
            time.sleep(0.2)
        self._stop.set()
        self._thread.join(10)
        self._emulator.calm()
        self._set_sqs_outage(False)

    def _set_sqs_outage(self, outage: bool) -> None:
        size = str(SQS_OUTAGE_MAX_MESSAGE_SIZE) if outage else self._max_message_size
        self._sqs.set_queue_attributes(QueueUrl=self._queue_url, Attributes={"MaximumMessageSize": size})

    def _run(self) -> None:
        number = 0
        previous: Slot | None = None
        started = time.monotonic()
        while not self._stop.is_set():
            slot = self.slot(number)
            try:
                self._emulator.faults(slot.status, slot.rate, slot.delay_ms)
                if previous is None or slot.moengage_down != previous.moengage_down:
                    self._emulator.down(slot.moengage_down)
                if previous is None or slot.sqs_outage != previous.sqs_outage:
                    self._set_sqs_outage(slot.sqs_outage)
                previous = slot
            except Exception:  # a control call failed: the next slot sets everything again
                previous = None
            for kind in slot.kinds:
                self.seconds[kind] = self.seconds.get(kind, 0.0) + self._options.slot_seconds
            number += 1
            if number % self._options.cycle_slots == 0:
                self.cycles_completed += 1
            self._stop.wait(max(0.0, started + number * self._options.slot_seconds - time.monotonic()))


# -------------------------------------------------------------------------------------------------- accounting


@dataclass
class DlqContent:
    messages: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # messages per failure_reason
    customer_ids: set[str] = field(default_factory=set)


def queue_urls(sqs: SQSClient) -> tuple[str, str]:
    urls = sqs.list_queues()["QueueUrls"]
    dlq = next(url for url in urls if "dlq" in url.rsplit("/", 1)[1])
    main = next(url for url in urls if url.rsplit("/", 1)[1] == QUEUE_NAME)
    return main, dlq


def queue_depth(sqs: SQSClient, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_drained(sqs: SQSClient, url: str, timeout: float, say: Callable[[str], None]) -> bool:
    """Until the queue holds nothing, visible or in flight, twice in a row (half a second apart)."""
    ends = time.monotonic() + timeout
    empty_checks = 0
    last_report = 0.0
    while time.monotonic() < ends:
        depth = queue_depth(sqs, url)
        empty_checks = empty_checks + 1 if depth == 0 else 0
        if empty_checks >= 2:
            return True
        if time.monotonic() - last_report >= 10:
            say(f"  draining: {depth} messages in the queue")
            last_report = time.monotonic()
        time.sleep(0.5)
    return False


def read_dlq(sqs: SQSClient, dlq_url: str) -> DlqContent:
    """Every DLQ message's reason and profiles, leaving them all in the DLQ (visible again at the end)."""
    content = DlqContent()
    handles: dict[str, str] = {}
    expected = queue_depth(sqs, dlq_url)
    idle = 0
    while len(handles) < expected and idle < 3:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
        ).get("Messages", [])
        new = [message for message in messages if message["MessageId"] not in handles]
        idle = 0 if new else idle + 1
        for message in messages:
            handles[message["MessageId"]] = message["ReceiptHandle"]
        for message in new:
            attribute = message.get("MessageAttributes", {}).get("failure_reason")
            reason = attribute.get("StringValue", "") if attribute else ""
            content.reasons[reason or "(none: moved by SQS after maxReceiveCount)"] += 1
            try:
                body = json.loads(message["Body"])
                for profile in body.get("profiles", []):
                    for ids in profile.get("identities", {}).values():
                        content.customer_ids.update(ids)
            except (ValueError, AttributeError):
                pass
    content.messages = len(handles)
    items = list(handles.values())
    for start in range(0, len(items), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for n, handle in enumerate(items[start : start + 10])
            ],
        )
    return content


def delivered_seqs(
    emulator_url: str, workload: Workload, seqs: Iterable[int], *, threads: int = 6, within: float = 300.0
) -> set[int]:
    """The profiles whose user exists in MoEngage with this run's marker attributes (checked within `within` s;
    a profile not checked in time counts as not delivered)."""
    local = threading.local()
    deadline = time.monotonic() + within

    def check(seq: int) -> int | None:
        if time.monotonic() > deadline:
            return None
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        customer_id = urllib.parse.quote(workload.customer_id(seq), safe="")
        try:
            response = session.get(f"{emulator_url}/_emulator/users/{customer_id}", timeout=10)
            attributes = response.json().get("attributes", {}) if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        if not isinstance(attributes, dict):
            return None
        return seq if all(attributes.get(name) == value for name, value in workload.marker(seq).items()) else None

    with ThreadPoolExecutor(threads) as pool:
        return {seq for seq in pool.map(check, sorted(seqs)) if seq is not None}


@dataclass
class CallStats:
    """MoEngage Data API calls seen by the emulator, and by the delivery function."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # customer elements MoEngage accepted again for a user it already had from this run
    users_duplicated: int = 0
    elements_sent: int = 0


def call_stats(log: Sequence[dict[str, Any]], run_prefix: str) -> CallStats:
    stats = CallStats(total=len(log))
    accepted: Counter[str] = Counter()
    for request in log:
        status = request.get("status")
        stats.by_status[DOWN if status is None else str(status)] += 1
        body = request.get("body")
        elements = body.get("elements", []) if isinstance(body, dict) else []
        ids = {
            str(element.get("customer_id"))
            for element in elements
            if isinstance(element, dict)
            and element.get("type") == "customer"
            and str(element.get("customer_id", "")).startswith(run_prefix)
        }
        stats.elements_sent += len(ids)
        if status == 200:
            accepted.update(ids)
    stats.duplicates = sum(count - 1 for count in accepted.values() if count > 1)
    stats.users_duplicated = sum(1 for count in accepted.values() if count > 1)
    return stats


def stack_counters(lines: Sequence[str]) -> dict[str, int]:
    """From the stack's output: delivery crashes, MoEngage calls that timed out, SQS entries retried at ingest."""
    counters: Counter[str] = Counter()
    timeout_ms = SCALED_READ_TIMEOUT_SECONDS * 1000 * 0.95
    for line in lines:
        if "InjectedCrashError: injected delivery crash" in line:
            counters["delivery_crashes"] += 1
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("message") == "request answered":
            counters["ingest_sqs_entries_retried"] += int(record.get("retried_entries") or 0)
        if "_aws" in record and record.get("StatusClass") == "network" and "MoEngageLatency" in record:
            # A call without an answer that lasted the read timeout is one the delivery function gave up on.
            value = record["MoEngageLatency"]
            latencies = value if isinstance(value, list) else [value]
            counters["delivery_call_timeouts"] += sum(1 for latency in latencies if float(latency) >= timeout_ms)
    return dict(counters)


# ------------------------------------------------------------------------------------------------------- report


@dataclass
class ChaosReport:
    run_id: str
    ok: bool
    profiles_sent: int
    profiles_by_shape: dict[str, int]
    requests_sent: int
    acknowledged: int
    delivered_before_redrive: int
    dead_lettered: int  # acknowledged profiles not delivered but kept in the DLQ, after the first drain
    dead_letter_messages: int
    dead_letter_reasons: dict[str, int]
    lost_before_redrive: int
    redriven: int
    redriven_delivered: int
    delivered: int
    dead_lettered_after_redrive: int
    lost: int
    still_queued: int
    duplicates: int
    users_duplicated: int
    client_5xx_answers: int
    client_no_answers: int
    client_attempts_by_status: dict[str, int]
    requests_retried_by_client: int
    requests_not_acknowledged: int
    not_acknowledged_statuses: dict[str, int]
    not_acknowledged_with_unretried_status: int
    profiles_not_acknowledged: int
    profiles_not_acknowledged_delivered: int
    moengage_calls: int
    moengage_calls_by_status: dict[str, int]
    moengage_call_timeouts: int
    moengage_elements_dropped: int
    delivery_invocations_crashed: int
    ingest_sqs_entries_retried: int
    fault_seconds: dict[str, float]
    measured_rates: dict[str, float]
    settings: dict[str, Any]
    problems: list[str]
    wall_seconds: float
    phase_seconds: dict[str, float]
    stack_output: list[str] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stack_output")
        return data


def settings_used(options: ChaosOptions) -> dict[str, Any]:
    """The settings the stack runs with: the template's, scaled as devstack/stack.py does, plus the overrides."""
    template = local_settings()
    scale = options.time_scale
    delivery = template.delivery.environment
    visibility = int(template.queue_attributes.get("VisibilityTimeout", 30))
    return {
        "time_scale": scale,
        "visibility_timeout_seconds": max(1, round(visibility * scale)),
        "batch_size": template.batch_size,
        "batching_window_seconds": template.batching_window_seconds * scale,
        "delivery_timeout_seconds": max(5.0, template.delivery.timeout_seconds * scale),
        "RETRY_BASE_SECONDS": max(0, round(float(delivery.get("RETRY_BASE_SECONDS", 60)) * scale)),
        "RETRY_MAX_SECONDS": options.retry_max_seconds,
        "MAX_RECEIVE_COUNT": options.max_receive_count,
        "MOENGAGE_TIMEOUT_SECONDS": "0.5,1.5" if scale < 1 else delivery.get("MOENGAGE_TIMEOUT_SECONDS", "3,10"),
        "RATE_LIMIT_USERS_PER_MINUTE": int(delivery.get("RATE_LIMIT_USERS_PER_MINUTE", 54_000)),
        "ENQUEUE_DEADLINE_MS": int(template.ingest.environment.get("ENQUEUE_DEADLINE_MS", 1500)),
        "client_retry_waits_seconds": [round(wait * scale, 3) for wait in AEP_RETRY_WAITS_SECONDS],
        "client_timeout_seconds": options.client_timeout_seconds,
        "clients": options.clients,
    }


def fault_rates(options: ChaosOptions) -> dict[str, Any]:
    server, limited = options.error_slot_rates()
    return {
        "moengage_5xx_rate": options.server_error_rate,
        "moengage_429_rate": options.rate_limited_rate,
        "moengage_5xx_slot_rate": round(server, 3),
        "moengage_429_slot_rate": round(limited, 3),
        "moengage_slow_delay_ms": options.slow_delay_ms,
        "delivery_crash_rate": options.delivery_crash_rate,
        "ingest_sqs_send_failure_rate": options.sqs_send_failure_rate,
        "sqs_outage_seconds_per_cycle": options.sqs_outage_seconds,
        "slot_seconds": options.slot_seconds,
        "cycle": f"{options.cycle_slots} slots of alternating 5xx/429 (rates above); from slot "
        f"{SQS_OUTAGE_FIRST_SLOT} SQS refuses sends for {options.sqs_outage_seconds:g} s; the last "
        f"{options.slow_slots + options.down_slots} slots MoEngage answers {options.slow_delay_ms} ms late, "
        "then is down",
    }


def run(options: ChaosOptions, say: Callable[[str], None] = print) -> ChaosReport:
    """Start the local stack, run the scenario, stop the stack; the report says what happened to every profile."""
    options.validate()
    started = time.monotonic()
    rng = random.Random(options.seed)
    run_id = "r" + uuid.uuid4().hex[:8]
    workload = Workload(run_id, options.profiles, options.max_profiles_per_request, rng)
    settings = settings_used(options)
    settings["fault_rates"] = fault_rates(options)
    say(f"chaos run {run_id}: {options.profiles:,} profiles in {len(workload.jobs):,} requests")
    say("settings (the template's, scaled by the time scale, and the run's overrides):")
    for name, value in settings.items():
        if isinstance(value, dict):
            say(f"  {name}:")
            say("\n".join(f"    {key} = {item}" for key, item in value.items()))
        else:
            say(f"  {name} = {value}")
    stack = StackProcess(
        {
            "LOCAL_TIME_SCALE": str(options.time_scale),
            "LOCAL_FAULT_DELIVERY_CRASH_RATE": str(options.delivery_crash_rate),
            "LOCAL_FAULT_SQS_SEND_RATE": str(options.sqs_send_failure_rate),
            "MAX_RECEIVE_COUNT": str(options.max_receive_count),
            "RETRY_MAX_SECONDS": str(options.retry_max_seconds),
        },
        token=TOKEN,
    )
    stack.start()
    try:
        scenario = Scenario(stack, options, workload, say)
        scenario.phases["start"] = time.monotonic() - started
        report = scenario.run(settings)
    finally:
        stack.stop()
    report.wall_seconds = round(time.monotonic() - started, 1)
    report.stack_output = stack.output
    return report


class Scenario:
    """Load under faults, drain, account, redrive, drain, account."""

    def __init__(self, stack: StackProcess, options: ChaosOptions, workload: Workload, say: Callable[[str], None]):
        self.stack = stack
        self.options = options
        self.workload = workload
        self.say = say
        self.emulator = Emulator(stack.emulator_url)
        self.sqs = stack.sqs()
        self.queue_url, self.dlq_url = queue_urls(self.sqs)
        self.problems: list[str] = []
        self.phases: dict[str, float] = {}
        self._seq_of = {workload.customer_id(seq): seq for seq in workload.shape_of}

    def _timed(self, phase: str, mark: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - mark

    def load_under_faults(self) -> tuple[Clients, FaultSchedule, int]:
        """Post everything while the faults run; returns the clients, the schedule and the calls made meanwhile."""
        mark = time.monotonic()
        schedule = FaultSchedule(self.emulator, self.stack.sqs(), self.queue_url, self.options)
        clients = Clients(self.workload, self.stack.api_url, self.options)
        schedule.start()
        clients.start()
        deadline = mark + 120 + 0.03 * self.options.profiles
        last = time.monotonic()
        while clients.running() and time.monotonic() < deadline:
            time.sleep(0.5)
            if time.monotonic() - last >= 10:
                self.say(f"  load: {clients.done:,}/{len(self.workload.jobs):,} requests answered")
                last = time.monotonic()
        clients.join(self.options.client_timeout_seconds * 4)
        schedule.stop_after_cycle(clients.running, deadline)
        calls_under_faults = len(self.emulator.requests_log())
        self._timed("load_under_faults", mark)
        if clients.running():
            self.problems.append("the clients did not finish within the load deadline")
        self.say(f"load done in {self.phases['load_under_faults']:.1f} s; faults stopped")
        return clients, schedule, calls_under_faults

    def drain(self, phase: str) -> None:
        mark = time.monotonic()
        if not wait_drained(self.sqs, self.queue_url, self.options.drain_timeout_seconds, self.say):
            self.problems.append(f"the queue did not drain within {self.options.drain_timeout_seconds:.0f} s ({phase})")
        self._timed(phase, mark)

    def in_dlq(self) -> tuple[DlqContent, set[int]]:
        content = read_dlq(self.sqs, self.dlq_url)
        return content, {self._seq_of[cid] for cid in content.customer_ids if cid in self._seq_of}

    def redrive(self) -> None:
        """What `make redrive` runs, against the stack's moto server."""
        mark = time.monotonic()
        completed = subprocess.run(  # noqa: S603 - this interpreter, a fixed module
            [sys.executable, "-m", "ops.redrive", "--queue-url", self.queue_url, "--dlq-url", self.dlq_url],
            cwd=ROOT,
            env=self.stack.aws_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        for line in (completed.stdout + completed.stderr).strip().splitlines():
            self.say(f"  redrive: {line}")
        if completed.returncode != 0:
            self.problems.append(f"ops.redrive exited {completed.returncode}")
        self._timed("redrive", mark)

    def run(self, settings: dict[str, Any]) -> ChaosReport:
        workload, emulator_url = self.workload, self.stack.emulator_url
        clients, schedule, calls_under_faults = self.load_under_faults()
        outcomes = clients.outcomes
        acked = {seq for outcome in outcomes if outcome.acknowledged for seq in outcome.job.seqs}
        not_acked = [outcome for outcome in outcomes if not outcome.acknowledged]
        not_acked_seqs = {seq for outcome in not_acked for seq in outcome.job.seqs}

        # The faults have stopped: once the queue is empty, every acknowledged profile is in MoEngage or the DLQ.
        self.drain("drain")
        mark = time.monotonic()
        delivered_first = delivered_seqs(emulator_url, workload, acked | not_acked_seqs)
        dlq_first, in_dlq_first = self.in_dlq()
        lost_first = acked - delivered_first - in_dlq_first
        self._timed("account", mark)
        dead_lettered = (in_dlq_first & acked) - delivered_first
        self.say(
            f"after the drain: {len(delivered_first & acked):,} delivered, {len(dead_lettered):,} in the DLQ "
            f"({dlq_first.messages} messages: {dict(dlq_first.reasons)}), {len(lost_first)} lost"
        )

        # `make redrive`, then drain and account again: the redriven profiles must reach MoEngage.
        if dlq_first.messages:
            self.redrive()
            self.drain("drain_after_redrive")
        mark = time.monotonic()
        missing = acked - delivered_first
        delivered = (delivered_first & acked) | (delivered_seqs(emulator_url, workload, missing) if missing else set())
        _, in_dlq_final = self.in_dlq()
        lost = acked - delivered - in_dlq_final
        still_queued = queue_depth(self.sqs, self.queue_url)
        log = self.emulator.requests_log()
        prefix = f"chaos-{workload.run_id}-"
        dropped = [
            item
            for item in self.emulator.dropped()
            if str((item.get("element") or {}).get("customer_id", "")).startswith(prefix)
        ]
        self._timed("account", mark)

        counters = stack_counters(self.stack.output)
        calls = call_stats(log, prefix)
        under_faults = call_stats(log[:calls_under_faults], prefix)
        attempts: Counter[str] = Counter(str(status) for outcome in outcomes for status in outcome.statuses)
        unretried = [outcome for outcome in not_acked if not aep_retries(outcome.statuses[-1])]
        short = [outcome for outcome in outcomes if outcome.acknowledged and outcome.accepted != len(outcome.job.seqs)]
        for count, problem in (
            (len(lost_first), "acknowledged profiles were neither in MoEngage nor in the DLQ after the drain"),
            (len(lost), "acknowledged profiles were neither in MoEngage nor in the DLQ at the end"),
            (len(unretried), "requests were refused with a status AEP does not retry"),
            (len(short), "acknowledged requests did not accept every profile"),
            (len(dropped), "elements of this run were silently dropped by MoEngage"),
            (len(workload.jobs) - len(outcomes), "requests were never answered"),
            (len(dead_lettered - delivered), "redriven profiles did not reach MoEngage"),
        ):
            if count:
                self.problems.append(f"{count:,} {problem}")
        return ChaosReport(
            run_id=workload.run_id,
            ok=not self.problems,
            profiles_sent=self.options.profiles,
            profiles_by_shape=dict(Counter(workload.shape_of.values())),
            requests_sent=len(workload.jobs),
            acknowledged=len(acked),
            delivered_before_redrive=len(delivered_first & acked),
            dead_lettered=len(dead_lettered),
            dead_letter_messages=dlq_first.messages,
            dead_letter_reasons=dict(dlq_first.reasons),
            lost_before_redrive=len(lost_first),
            redriven=len(dead_lettered) if dlq_first.messages else 0,
            redriven_delivered=len(dead_lettered & delivered),
            delivered=len(delivered),
            dead_lettered_after_redrive=len((in_dlq_final & acked) - delivered),
            lost=len(lost),
            still_queued=still_queued,
            duplicates=calls.duplicates,
            users_duplicated=calls.users_duplicated,
            client_5xx_answers=sum(count for status, count in attempts.items() if status.startswith("5")),
            client_no_answers=attempts[NO_ANSWER],
            client_attempts_by_status=dict(attempts),
            requests_retried_by_client=sum(1 for outcome in outcomes if len(outcome.statuses) > 1),
            requests_not_acknowledged=len(not_acked),
            not_acknowledged_statuses=dict(Counter(str(outcome.statuses[-1]) for outcome in not_acked)),
            not_acknowledged_with_unretried_status=len(unretried),
            profiles_not_acknowledged=len(not_acked_seqs),
            profiles_not_acknowledged_delivered=len(not_acked_seqs & delivered_first),
            moengage_calls=calls.total,
            moengage_calls_by_status=dict(calls.by_status),
            moengage_call_timeouts=counters.get("delivery_call_timeouts", 0),
            moengage_elements_dropped=len(dropped),
            delivery_invocations_crashed=counters.get("delivery_crashes", 0),
            ingest_sqs_entries_retried=counters.get("ingest_sqs_entries_retried", 0),
            fault_seconds={kind: round(seconds, 1) for kind, seconds in sorted(schedule.seconds.items())},
            measured_rates=measured_rates(under_faults, counters),
            settings=settings,
            problems=self.problems,
            wall_seconds=0.0,
            phase_seconds={name: round(seconds, 1) for name, seconds in self.phases.items()},
        )


def measured_rates(under_faults: CallStats, counters: dict[str, int]) -> dict[str, float]:
    """Shares of the MoEngage calls made while the faults ran (the drain's calls all succeed)."""
    by_status = under_faults.by_status
    answered = sum(count for status, count in by_status.items() if status != DOWN) or 1
    return {
        "moengage_calls_under_faults": under_faults.total,
        "moengage_5xx_share_of_answers": round(
            sum(count for status, count in by_status.items() if status.startswith("5")) / answered, 3
        ),
        "moengage_429_share_of_answers": round(by_status["429"] / answered, 3),
        "moengage_timed_out_share_of_calls": round(
            counters.get("delivery_call_timeouts", 0) / max(1, under_faults.total), 3
        ),
        "moengage_down_share_of_calls": round(by_status[DOWN] / max(1, under_faults.total), 3),
    }


def summary_table(report: ChaosReport) -> str:
    rates = report.settings["fault_rates"]
    measured = report.measured_rates
    shapes = ", ".join(f"{shape} {count:,}" for shape, count in report.profiles_by_shape.items())
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.dead_letter_reasons.items()))
    by_status = ", ".join(f"{status}: {count:,}" for status, count in sorted(report.moengage_calls_by_status.items()))
    rows: list[tuple[str, str]] = [
        ("profiles sent", f"{report.profiles_sent:,} in {report.requests_sent:,} requests ({shapes})"),
        ("acknowledged (200)", f"{report.acknowledged:,}"),
        ("delivered", f"{report.delivered:,} ({report.delivered_before_redrive:,} before the redrive)"),
        (
            "dead-lettered",
            f"{report.dead_lettered:,} profiles in {report.dead_letter_messages:,} DLQ messages ({reasons or 'none'})",
        ),
        ("lost before the redrive", f"{report.lost_before_redrive:,}"),
        ("redriven -> delivered", f"{report.redriven:,} -> {report.redriven_delivered:,}"),
        ("LOST", f"{report.lost:,}"),
        ("duplicates", f"{report.duplicates:,} user updates accepted again ({report.users_duplicated:,} users)"),
        (
            "5xx returned to clients",
            f"{report.client_5xx_answers:,} (+ {report.client_no_answers:,} attempts without an answer); "
            f"{report.requests_retried_by_client:,} requests retried",
        ),
        (
            "requests not acknowledged",
            f"{report.requests_not_acknowledged:,} ({report.profiles_not_acknowledged:,} profiles, "
            f"{report.profiles_not_acknowledged_delivered:,} of them delivered anyway); last status "
            f"{report.not_acknowledged_statuses or '-'}; not retryable by AEP: "
            f"{report.not_acknowledged_with_unretried_status}",
        ),
        (
            "MoEngage calls",
            f"{report.moengage_calls:,} ({by_status}); {report.moengage_call_timeouts:,} timed out",
        ),
        (
            "fault rates (target)",
            f"MoEngage 5xx {rates['moengage_5xx_rate']:.0%} and 429 {rates['moengage_429_rate']:.0%} of calls, "
            f"{rates['moengage_slow_delay_ms']:,} ms late in slow windows, down in down windows; delivery crash "
            f"{rates['delivery_crash_rate']:.0%} of invocations; ingest SQS entries failing "
            f"{rates['ingest_sqs_send_failure_rate']:.0%}, and all of them in SQS outages "
            f"({rates['sqs_outage_seconds_per_cycle']:g} s a cycle)",
        ),
        (
            "fault rates (measured)",
            f"of {measured['moengage_calls_under_faults']:,.0f} MoEngage calls under faults: 5xx "
            f"{measured['moengage_5xx_share_of_answers']:.1%} and 429 {measured['moengage_429_share_of_answers']:.1%}"
            f" of answers, timed out {measured['moengage_timed_out_share_of_calls']:.1%}, dropped (down) "
            f"{measured['moengage_down_share_of_calls']:.1%}; {report.delivery_invocations_crashed} delivery "
            f"invocations crashed mid-batch; {report.ingest_sqs_entries_retried:,} SQS entries retried by ingest",
        ),
        ("fault windows (s)", ", ".join(f"{kind} {seconds:g}" for kind, seconds in report.fault_seconds.items())),
        (
            "wall time",
            f"{report.wall_seconds:.1f} s ("
            + ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in report.phase_seconds.items())
            + ")",
        ),
        ("result", "OK: nothing lost" if report.ok else "FAILED: " + "; ".join(report.problems)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)} | {value}" for name, value in rows)


def write_json(report: ChaosReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, help="profiles to post (default 10,000; 1,000 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default %(default)s)")
    parser.add_argument(
        "--time-scale", type=float, default=0.01, help="LOCAL_TIME_SCALE for the stack (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="a bounded version: 1,000 profiles, short fault windows")
    parser.add_argument(
        "--sqs-send-failure-rate",
        type=float,
        help=f"LOCAL_FAULT_SQS_SEND_RATE: share of ingest's SQS entries that fail "
        f"(default {ChaosOptions.sqs_send_failure_rate})",
    )
    parser.add_argument(
        "--crash-rate",
        type=float,
        help=f"LOCAL_FAULT_DELIVERY_CRASH_RATE: share of delivery invocations that crash mid-batch "
        f"(default {ChaosOptions.delivery_crash_rate})",
    )
    parser.add_argument("--seed", type=int, help="random seed of the workload's shapes and batch sizes")
    parser.add_argument(
        "--output", type=Path, help="JSON summary (default bench/results/chaos.json, chaos-quick.json with --quick)"
    )
    parser.add_argument("--stack-log", type=Path, help="also write everything the local stack printed to this file")
    return parser


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s `finally`, which stops the local stack


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    overrides: dict[str, Any] = {"clients": args.clients, "time_scale": args.time_scale, "seed": args.seed}
    if args.profiles is not None:
        overrides["profiles"] = args.profiles
    if args.sqs_send_failure_rate is not None:
        overrides["sqs_send_failure_rate"] = args.sqs_send_failure_rate
    if args.crash_rate is not None:
        overrides["delivery_crash_rate"] = args.crash_rate
    options = ChaosOptions.quick_run(**overrides) if args.quick else ChaosOptions(**overrides)
    try:
        options.validate()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = args.output or RESULTS_DIR / ("chaos-quick.json" if options.quick else "chaos.json")
    report = run(options, say=lambda text: print(text, flush=True))
    print(summary_table(report), flush=True)
    write_json(report, output)
    print(f"summary written to {output}", flush=True)
    if args.stack_log:
        args.stack_log.parent.mkdir(parents=True, exist_ok=True)
        args.stack_log.write_text("\n".join(report.stack_output) + "\n", encoding="utf-8")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
