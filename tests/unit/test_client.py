"""MoEngage client and sender against real local HTTP servers: the MoEngage emulator, and a small server that
answers 400 for a request holding a bad element (MoEngage's bulk endpoint drops bad elements with a 200, so the
bisection path is exercised against a stricter server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from aep_moengage.delivery.client import (
    CallKind,
    MoEngageClient,
    MoEngageCredentials,
    classify_status,
    new_session,
    retry_after_seconds,
    scrub,
)
from aep_moengage.delivery.elements import Element, ProfileRef, serialize
from aep_moengage.delivery.ratelimit import TokenBucket
from aep_moengage.delivery.sending import BulkSender, Deadline, ElementOutcome, Verdict
from devstack.moengage_emulator import MoEngageEmulator

WORKSPACE, KEY = "LOCALWS", "local-key"


class Credentials:
    """A CredentialsSource: the current key, and what a re-read of the secret returns."""

    def __init__(self, key: str = KEY, rotated: str | None = None) -> None:
        self.key, self.rotated, self.forced = key, rotated, 0

    def __call__(self, *, force: bool = False) -> MoEngageCredentials:
        if force:
            self.forced += 1
            self.key = self.rotated or self.key
        return MoEngageCredentials(workspace_id=WORKSPACE, data_api_key=SecretStr(self.key), data_center="01")


class Sleeps:
    """Records waits instead of sleeping; runs `then` at the first wait (e.g. clear the fault)."""

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        self.waits: list[float] = []
        self._then = then

    def __call__(self, seconds: float) -> None:
        if not self.waits:
            self._then()
        self.waits.append(seconds)


@pytest.fixture(scope="module")
def emulator() -> Iterator[MoEngageEmulator]:
    server = MoEngageEmulator("127.0.0.1", 0, workspace_id=WORKSPACE, api_key=KEY, window_seconds=7)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_emulator(emulator: MoEngageEmulator) -> None:
    emulator.reset()


def customer(customer_id: str, **attributes: Any) -> Element:
    body = serialize({"type": "customer", "customer_id": customer_id, "attributes": attributes})
    return Element(body=body, sources=frozenset({ProfileRef("m", 0)}), users=1, customer_id=customer_id)


def make_client(
    base_url: str, credentials: Credentials | None = None, timeout: tuple[float, float] = (1.0, 2.0)
) -> MoEngageClient:
    return MoEngageClient(
        session=new_session(), base_url=base_url, credentials=credentials or Credentials(), timeout=timeout
    )


def make_sender(
    client: MoEngageClient,
    *,
    sleep: Callable[[float], None] | None = None,
    limiter: TokenBucket | None = None,
    seconds: float = 60.0,
    **options: Any,
) -> BulkSender:
    deadline = Deadline(seconds, request_timeout_seconds=client.timeout_seconds)
    return BulkSender(
        client,
        limiter or TokenBucket(10_000),
        deadline,
        sleep=sleep or Sleeps(),
        rng=lambda: 0.5,
        **options,
    )


def verdicts(outcomes: list[ElementOutcome]) -> list[str]:
    return [outcome.verdict.value for outcome in outcomes]


# ------------------------------------------------------------------------------------------------------ 200


def test_200_delivers_and_moengage_stores_values_as_sent(emulator: MoEngageEmulator) -> None:
    # Given two users
    elements = [customer("u-1", first_name="Zoë", note='a & "b" <c> 😀'), customer("u-2", tier="gold")]
    # When they are sent
    sender = make_sender(make_client(emulator.base_url))
    outcomes = sender.send(elements)
    # Then one request delivered both, exactly as given, and nothing was silently dropped
    assert verdicts(outcomes) == ["delivered", "delivered"]
    assert emulator.user("u-1") == {"first_name": "Zoë", "note": 'a & "b" <c> 😀'}
    [request] = emulator.requests_log()
    assert (request["path"], request["status"], len(request["body"]["elements"])) == ("/v1/transition/LOCALWS", 200, 2)
    assert emulator.dropped() == []


# ------------------------------------------------------------------------------------------------------ 400


class StrictServer:
    """Answers 400 like MoEngage's single-user API when any element's customer_id starts with 'bad'."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ids = [element["customer_id"] for element in body["elements"]]
                outer.requests.append(ids)
                bad = [customer_id for customer_id in ids if customer_id.startswith("bad")]
                status = 400 if bad else 200
                answer = (
                    {"status": "fail", "error": {"type": "AttributeError", "message": f"customer_id '{bad[0]}' is bad"}}
                    if bad
                    else {"status": "success", "message": "ok"}
                )
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def strict_server() -> Iterator[StrictServer]:
    server = StrictServer()
    yield server
    server.stop()


def test_400_bisects_to_the_one_bad_element_among_50(strict_server: StrictServer) -> None:
    # Given 50 users, one of which the server rejects
    elements = [customer(f"u-{n}") for n in range(50)]
    elements[37] = customer("bad-user-37")
    # When they are sent
    outcomes = make_sender(make_client(strict_server.base_url)).send(elements)
    # Then only that element fails permanently, with MoEngage's error type and without the id (PII)
    failed = [index for index, outcome in enumerate(outcomes) if outcome.verdict is Verdict.FAILED]
    assert failed == [37]
    assert outcomes[37].reason == "moengage_rejected"
    assert "HTTP 400 AttributeError" in outcomes[37].detail
    assert "bad-user-37" not in outcomes[37].detail
    # and the other 49 were delivered, by bisection: at most 1 + 2 * ceil(log2(50)) requests
    delivered = {
        customer_id for ids in strict_server.requests for customer_id in ids if not customer_id.startswith("bad")
    }
    assert len(delivered) == 49
    assert len(strict_server.requests) <= 13


# ------------------------------------------------------------------------------------------------------ 401


def test_401_rereads_the_secret_once_and_delivers_with_the_rotated_key(emulator: MoEngageEmulator) -> None:
    # Given MoEngage's key was rotated and the secret already holds the new one
    emulator.rotate_key("new-key")
    credentials = Credentials(KEY, rotated="new-key")
    # When users are sent with the cached (old) key
    outcomes = make_sender(make_client(emulator.base_url, credentials)).send([customer("u-1")])
    # Then the secret was re-read once and the retry was delivered
    assert verdicts(outcomes) == ["delivered"]
    assert credentials.forced == 1
    assert [request["status"] for request in emulator.requests_log()] == [401, 200]


def test_401_with_a_still_wrong_key_hands_everything_back_and_stops_sending(emulator: MoEngageEmulator) -> None:
    # Given a key that is wrong in the secret too
    emulator.rotate_key("new-key")
    credentials = Credentials(KEY)
    auth_failures: list[int] = []
    limiter = TokenBucket(1_000, capacity=2)  # two users a request: several requests would be needed
    sender = make_sender(
        make_client(emulator.base_url, credentials), limiter=limiter, on_auth_failure=lambda: auth_failures.append(1)
    )
    # When five users are sent
    outcomes = sender.send([customer(f"u-{n}") for n in range(5)])
    # Then all are retried later (a fixed key must deliver them), after one re-read and two requests only
    assert {(o.verdict, o.reason) for o in outcomes} == {(Verdict.RETRY, "moengage_auth_failed")}
    assert "local-key" not in outcomes[0].detail and "new-key" not in outcomes[0].detail
    assert (credentials.forced, len(auth_failures), len(emulator.requests_log())) == (1, 1, 2)


# ------------------------------------------------------------------------------------------------------ 413


def test_413_splits_the_request_in_halves(emulator: MoEngageEmulator) -> None:
    # Given 60 users of ~3 KB and a sender allowed to build a 180 KB request (MoEngage: 100 KB)
    elements = [
        customer(f"u-{n}", bio="x" * 500, a="y" * 500, b="z" * 500, c="w" * 500, d="v" * 500) for n in range(60)
    ]
    sender = make_sender(make_client(emulator.base_url), max_request_bytes=200_000)
    # When they are sent
    outcomes = sender.send(elements)
    # Then MoEngage's 413 made the sender split the request, and everything was delivered
    assert set(verdicts(outcomes)) == {"delivered"}
    assert [(r["status"], len(r["body"]["elements"]) if r["body"] else None) for r in emulator.requests_log()] == [
        (413, 60),
        (200, 30),
        (200, 30),
    ]


def test_an_element_over_100_kb_fails_without_a_request(emulator: MoEngageEmulator) -> None:
    huge = customer("u-big", **{f"a{n}": "x" * 500 for n in range(210)})
    outcomes = make_sender(make_client(emulator.base_url)).send([huge, customer("u-2")])
    assert [(o.verdict, o.reason) for o in outcomes] == [
        (Verdict.FAILED, "element_too_large"),
        (Verdict.DELIVERED, ""),
    ]
    assert len(emulator.requests_log()) == 1


# ------------------------------------------------------------------------------------------------------ 429


@pytest.mark.parametrize("unit", ["seconds", "epoch"])
def test_429_waits_for_x_ratelimit_reset_in_either_unit(emulator: MoEngageEmulator, unit: str) -> None:
    # Given MoEngage answers 429 with x-ratelimit-reset in seconds (7) or as an epoch (now + 7)
    emulator.set_faults(429, 1.0, reset_header=unit)
    sleeps = Sleeps(then=lambda: emulator.set_faults(None, 0.0))
    calls: list[CallKind] = []
    sender = make_sender(make_client(emulator.base_url), sleep=sleeps, on_call=lambda result: calls.append(result.kind))
    # When a user is sent
    outcomes = sender.send([customer("u-1")])
    # Then the sender waited until the reset, retried, and delivered
    assert verdicts(outcomes) == ["delivered"]
    assert len(sleeps.waits) == 1 and 5.5 <= sleeps.waits[0] <= 8.0
    assert calls == [CallKind.RATE_LIMITED, CallKind.OK]


def test_429_beyond_the_remaining_time_is_handed_back(emulator: MoEngageEmulator) -> None:
    emulator.set_faults(429, 1.0)
    sleeps = Sleeps()
    outcomes = make_sender(make_client(emulator.base_url), sleep=sleeps, seconds=12.0).send([customer("u-1")])
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.RETRY, "moengage_rate_limited")]
    assert sleeps.waits == []


def test_real_rate_limit_window_429_then_delivered(emulator: MoEngageEmulator) -> None:
    # Given a workspace limit of 5 users a 1-second window, already used up
    emulator.set_rate_limit(5, window_seconds=1)
    client = make_client(emulator.base_url)
    assert verdicts(make_sender(client).send([customer(f"a-{n}") for n in range(5)])) == ["delivered"] * 5
    # When 3 more users are sent (really sleeping until the reset)
    outcomes = make_sender(client, sleep=time.sleep).send([customer(f"b-{n}") for n in range(3)])
    # Then the 429 was waited out
    assert verdicts(outcomes) == ["delivered"] * 3
    assert [r["status"] for r in emulator.requests_log()] == [200, 429, 200]


# ------------------------------------------------------------------------------------------- 5xx and network


def test_5xx_is_retried_with_backoff(emulator: MoEngageEmulator) -> None:
    emulator.set_faults(503, 1.0)
    sleeps = Sleeps(then=lambda: emulator.set_faults(None, 0.0))
    outcomes = make_sender(make_client(emulator.base_url), sleep=sleeps).send([customer("u-1")])
    assert verdicts(outcomes) == ["delivered"]
    assert sleeps.waits == [0.5]  # full jitter (rng 0.5) of the 1 s base


def test_persistent_5xx_is_handed_back_after_5_attempts(emulator: MoEngageEmulator) -> None:
    emulator.set_faults(500, 1.0)
    sleeps = Sleeps()
    outcomes = make_sender(make_client(emulator.base_url), sleep=sleeps).send([customer("u-1")])
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.RETRY, "moengage_unavailable")]
    assert outcomes[0].detail.startswith("HTTP 500")
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0]
    assert len(emulator.requests_log()) == 5


def test_timeout_is_retried(emulator: MoEngageEmulator) -> None:
    # Given MoEngage answers after 600 ms and the client waits 200 ms for an answer
    emulator.set_faults(None, 0.0, delay_ms=600)
    sleeps = Sleeps(then=lambda: emulator.set_faults(None, 0.0))
    kinds: list[tuple[CallKind, int | None]] = []
    client = make_client(emulator.base_url, timeout=(0.5, 0.2))
    sender = make_sender(client, sleep=sleeps, on_call=lambda r: kinds.append((r.kind, r.status)))
    # When a user is sent
    outcomes = sender.send([customer("u-1")])
    # Then the timeout was retried and delivered
    assert verdicts(outcomes) == ["delivered"]
    assert kinds == [(CallKind.TRANSIENT, None), (CallKind.OK, 200)]


def test_connection_reset_is_retried(emulator: MoEngageEmulator) -> None:
    emulator.set_down(True)
    sleeps = Sleeps(then=lambda: emulator.set_down(False))
    outcomes = make_sender(make_client(emulator.base_url), sleep=sleeps).send([customer("u-1")])
    assert verdicts(outcomes) == ["delivered"]
    assert len(sleeps.waits) == 1


def test_other_4xx_is_permanent(emulator: MoEngageEmulator) -> None:
    emulator.set_faults(415, 1.0)
    outcomes = make_sender(make_client(emulator.base_url)).send([customer("u-1"), customer("u-2")])
    assert {(o.verdict, o.reason) for o in outcomes} == {(Verdict.FAILED, "moengage_rejected")}


def test_no_request_without_time_for_it(emulator: MoEngageEmulator) -> None:
    outcomes = make_sender(make_client(emulator.base_url), seconds=3.0).send([customer("u-1")])
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.RETRY, "no_time_left")]
    assert emulator.requests_log() == []


# ------------------------------------------------------------------------------------------- packing and limits


def test_requests_carry_at_most_what_the_rate_limiter_can_give(emulator: MoEngageEmulator) -> None:
    limiter = TokenBucket(200, capacity=10)
    outcomes = make_sender(make_client(emulator.base_url), limiter=limiter).send(
        [customer(f"u-{n}") for n in range(25)]
    )
    assert set(verdicts(outcomes)) == {"delivered"}
    assert [len(r["body"]["elements"]) for r in emulator.requests_log()] == [10, 10, 5]


def test_requests_stay_under_100_kb(emulator: MoEngageEmulator) -> None:
    elements = [customer(f"u-{n}", bio="é" * 400) for n in range(300)]  # ~850 bytes each in UTF-8
    outcomes = make_sender(make_client(emulator.base_url)).send(elements)
    assert set(verdicts(outcomes)) == {"delivered"}
    sizes = [
        len(json.dumps(r["body"], ensure_ascii=False, separators=(",", ":")).encode()) for r in emulator.requests_log()
    ]
    assert max(sizes) <= 100_000 and len(sizes) == 3


# ------------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, CallKind.OK),
        (202, CallKind.OK),
        (400, CallKind.BAD_REQUEST),
        (401, CallKind.AUTH),
        (403, CallKind.AUTH),
        (408, CallKind.TRANSIENT),
        (409, CallKind.PERMANENT),
        (413, CallKind.TOO_LARGE),
        (415, CallKind.PERMANENT),
        (429, CallKind.RATE_LIMITED),
        (500, CallKind.TRANSIENT),
        (503, CallKind.TRANSIENT),
    ],
)
def test_status_classification_table(status: int, kind: CallKind) -> None:
    assert classify_status(status) is kind


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), ("1700000030", 30.0), ("1699999990", 0.0), ("soon", None), (None, None), ("", None)],
)
def test_x_ratelimit_reset_as_seconds_or_epoch(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=1_700_000_000.0) == expected


def test_scrub_removes_the_key_and_authorization_values() -> None:
    text = scrub("failed with local-key; Authorization: Basic TE9DQUxXUzpsb2NhbC1rZXk=", "local-key")
    assert "local-key" not in text and "TE9DQUxX" not in text
