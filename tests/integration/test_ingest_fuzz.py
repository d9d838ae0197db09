"""Property-based fuzzing of the ingest endpoint: whatever arrives, the answer is a JSON refusal or an acceptance.

The handler runs in-process against moto (SQS, Secrets Manager), fed with API Gateway HTTP API events built the way
the local stack builds them from raw HTTP (`devstack.ingest_server.api_gateway_event`: a body that is not UTF-8
arrives base64-encoded). Hypothesis generates malformed, oversized, deeply nested, wrongly typed and wrongly encoded
bodies and headers, and mutations of AEP's own samples. For every one of them:

- the handler returns (never raises) and never answers 5xx (AEP would retry a request that cannot succeed);
- every refusal is JSON `{"error": {"code", "message"}, "correlation_id"}`; 401 carries `WWW-Authenticate`;
- an acceptance accounts for every profile (`received == accepted + len(rejected)`);
- and the same warm handler keeps accepting a valid request after every tenth case.

`make test` runs FUZZ_EXAMPLES (default 1,500) cases; `FUZZ_EXAMPLES=10000 pytest tests/integration/test_ingest_fuzz.py`
runs the full campaign. The count is printed and asserted at the end.

Integer literals over 4,300 digits (Python refuses to parse them) are left to their own test,
`test_an_integer_too_long_for_python_is_refused_not_retried`.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingest_app
from aep_moengage.observability import logger
from devstack.ingest_server import api_gateway_event
from tests.conftest import AEP_SAMPLES_DIR, FakeLambdaContext, load_event, moto_ingest

TOKEN = "fuzz-token-0123456789"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
MAX_BODY_BYTES = 65_536  # small, so that oversized bodies are cheap to generate
QUEUE_MESSAGE_MAX_BYTES = 8_192  # small, so that oversized profiles are cheap to generate
VALID_EVERY = 10
REFUSAL_STATUSES = {400, 401, 413, 415}
PYTHON_INT_MAX_DIGITS = 4_300


# ------------------------------------------------------------------------------------------------ the handler


@dataclass
class FuzzStack:
    queue_url: str
    sqs: Any
    stats: Counter[str] = field(default_factory=Counter)

    def drain(self) -> None:
        """Delete what the accepted cases queued (moto slows down as a queue grows; PurgeQueue is once a minute)."""
        while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )


@pytest.fixture
def fuzz_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FuzzStack]:
    env = {
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "QUEUE_MESSAGE_MAX_BYTES": str(QUEUE_MESSAGE_MAX_BYTES),
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    with moto_ingest(monkeypatch, tokens=(TOKEN,), env=env) as aws:
        level = logger.log_level
        logger.setLevel("WARNING")  # thousands of requests: one INFO line each would flood the captured output
        yield FuzzStack(aws.queue_url, aws.sqs)
        logger.setLevel(level)


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return ingest_app.lambda_handler(event, FakeLambdaContext())  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------- seeds


def _seeds() -> list[Any]:
    """Valid bodies of every shape: the events' bodies and AEP's samples."""
    seeds = []
    for name in ("ingest_http_api_profile.json", "ingest_sdk_profiles.json", "ingest_sdk_template.json"):
        seeds.append(json.loads(load_event(name)["body"]))
    seeds.append(json.loads(load_event("ingest_unicode_values.json")["body"]))
    for path in sorted(AEP_SAMPLES_DIR.glob("*.json")):
        seeds.append(json.loads(path.read_text(encoding="utf-8")))
    return seeds


SEEDS = _seeds()
VALID_BODY = json.dumps({"identityMap": {"user_id": [{"id": "fuzz-valid-user"}]}, "tier": "gold"}).encode()


# ------------------------------------------------------------------------------------------------ strategies

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "0", "null", "realized", "exited", "existing", "2024-02-30T25:61:00Z", "\x00", "☃"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)


@st.composite
def mutated_seed(draw: st.DrawFn) -> Any:
    """A valid AEP body with a few nodes replaced, deleted, added or retyped: wrongly typed fields."""
    body = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = body
        path_length = draw(st.integers(0, 6))
        for _ in range(path_length):
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node)))
                if not isinstance(node[key], dict | list) or draw(st.booleans()):
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                index = draw(st.integers(0, len(node) - 1))
                if not isinstance(node[index], dict | list):
                    break
                node = node[index]
            else:
                break
        action = draw(st.sampled_from(["replace", "delete", "add", "wrap"]))
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if action == "replace":
                node[key] = draw(json_values)
            elif action == "delete":
                del node[key]
            elif action == "add":
                node[draw(st.text(max_size=20))] = draw(json_values)
            else:
                node[key] = [node[key]] if draw(st.booleans()) else {"value": node[key]}
        elif isinstance(node, list) and node:
            index = draw(st.integers(0, len(node) - 1))
            node[index] = draw(json_values)
        else:
            body = draw(json_values)
    return body


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """Nesting from a few levels to far past the JSON parser's recursion limit, at the top or inside a field."""
    depth = draw(st.one_of(st.integers(1, 64), st.integers(500, 1_200), st.integers(5_000, 60_000)))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"value":', "}")]))
    leaf = draw(st.sampled_from(["1", '"x"', "null", "{}", "[]"]))
    nested = opener * depth + leaf + closer * depth
    where = draw(st.sampled_from(["top", "attribute", "identityMap", "segmentMembership", "sdk_attribute"]))
    if where == "top":
        return nested.encode()
    if where == "attribute":
        return ('{"identityMap":{"user_id":[{"id":"u-deep"}]},"deep":' + nested + "}").encode()
    if where == "identityMap":
        return ('{"identityMap":{"user_id":' + nested + "}}").encode()
    if where == "segmentMembership":
        return ('{"identityMap":{"user_id":[{"id":"u"}]},"segmentMembership":' + nested + "}").encode()
    return ('{"profiles":[{"identityMap":{"user_id":[{"id":"u"}]},"attributes":{"a":' + nested + "}}]}").encode()


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    """A body over MAX_BODY_BYTES, or profiles over a queue message on their own, next to valid ones."""
    kind = draw(st.sampled_from(["body", "profile", "many_profiles"]))
    if kind == "body":
        size = draw(st.integers(MAX_BODY_BYTES + 1, MAX_BODY_BYTES * 3))
        return ('{"identityMap":{"user_id":[{"id":"u"}]},"blob":"' + "x" * size + '"}').encode()
    big = "é" * draw(st.integers(QUEUE_MESSAGE_MAX_BYTES // 2, QUEUE_MESSAGE_MAX_BYTES * 2))
    if kind == "profile":
        return json.dumps({"identityMap": {"user_id": [{"id": "u-big"}]}, "notes": big}).encode()
    profiles = [
        {"identityMap": {"user_id": [{"id": f"u-{n}"}]}, "attributes": {"notes": {"value": big if n % 2 else "ok"}}}
        for n in range(draw(st.integers(1, 12)))
    ]
    return json.dumps({"profiles": profiles}).encode()


@st.composite
def wrongly_encoded(draw: st.DrawFn) -> bytes:
    """A valid body in another encoding, with a BOM, or with bytes that are not UTF-8."""
    text = json.dumps(draw(st.sampled_from(SEEDS)), ensure_ascii=False)
    kind = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "bom", "invalid_bytes", "truncated", "cp1252"]))
    if kind in ("utf-16", "utf-32"):
        return text.encode(kind)
    if kind in ("latin-1", "cp1252"):
        return text.encode(kind, errors="replace")
    raw = text.encode("utf-8")
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "truncated":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    position = draw(st.integers(0, len(raw)))
    junk = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"]))
    return raw[:position] + junk + raw[position:]


@st.composite
def odd_literals(draw: st.DrawFn) -> bytes:
    """JSON-ish literals a parser may choke on, placed where values go."""
    literal = draw(
        st.sampled_from(
            [
                "NaN",
                "-Infinity",
                "Infinity",
                "1e400",
                "-1e400",
                "1e-400",
                '"\\ud800"',
                '"\\udfff\\ud800"',
                '"\\u0000"',
                '"\\uZZZZ"',
                "01",
                "+1",
                ".5",
                "true false",
                "'single'",
                '"unterminated',
                "[1,]",
                "{,}",
            ]
        )
        | st.integers(1, PYTHON_INT_MAX_DIGITS - 300).map(lambda digits: "9" * digits)
        | st.integers(1, 4_000).map(lambda digits: "-0." + "1" * digits + "e-99999")
    )
    where = draw(st.sampled_from(["attribute", "id", "time", "status", "top"]))
    if where == "top":
        return literal.encode()
    if where == "id":
        return ('{"identityMap":{"user_id":[{"id":' + literal + "}]}}").encode()
    if where == "time":
        segment = '{"status":"realized","lastQualificationTime":' + literal + "}"
        return ('{"identityMap":{"user_id":[{"id":"u"}]},"segmentMembership":{"ups":{"s":' + segment + "}}}").encode()
    if where == "status":
        return (
            '{"identityMap":{"user_id":[{"id":"u"}]},"segmentMembership":{"ups":{"s":{"status":' + literal + "}}}}"
        ).encode()
    return ('{"identityMap":{"user_id":[{"id":"u"}]},"value":' + literal + "}").encode()


bodies = st.one_of(
    st.binary(max_size=2_000),
    json_values.map(lambda value: json.dumps(value).encode()),
    mutated_seed().map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
    mutated_seed().map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
    st.lists(mutated_seed(), min_size=1, max_size=5).map(lambda items: json.dumps({"profiles": items}).encode()),
    deeply_nested(),
    oversized(),
    wrongly_encoded(),
    odd_literals(),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", errors="surrogatepass")),
)

valid_authorizations = st.sampled_from(
    [f"Bearer {TOKEN}", f"bearer  {TOKEN} ", "Basic " + base64.b64encode(f"aep:{TOKEN}".encode()).decode()]
)
wrong_authorizations = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "Bearer",
            "Bearer ",
            f"Token {TOKEN}",
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN.upper()}",
            "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(),
            "Basic !!notbase64!!",
            "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
            f"Bearer {TOKEN}\x00",
            "Bearer \u202e" + TOKEN,
        ]
    ),
    st.text(max_size=200).map(lambda text: "Bearer " + text),
    st.text(max_size=200),
)
valid_content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", " application/json ;charset=latin-1"]
)
wrong_content_types = st.one_of(
    st.sampled_from(
        [
            "application/json, text/plain",
            "application/jsonx",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    st.none(),
    st.text(max_size=60),
)
extra_headers = st.dictionaries(
    st.text(min_size=1, max_size=30).map(str.lower),
    st.one_of(st.text(max_size=100), st.just("x" * 8_192), st.just("\u00ff\u00fe\u0000")),
    max_size=4,
)


@dataclass(frozen=True)
class Case:
    body: bytes
    headers: dict[str, str]
    base64_text: str | None  # a body sent with isBase64Encoded, as is (possibly not base64 at all)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Mostly well-authenticated JSON requests (so that the bodies are what is tested), some with wrong headers."""
    mode = draw(st.integers(0, 9))
    authorization = draw(wrong_authorizations if mode in (7, 9) else valid_authorizations)
    content_type = draw(wrong_content_types if mode in (8, 9) else valid_content_types)
    headers = dict(draw(extra_headers))
    for name, value in (("authorization", authorization), ("content-type", content_type)):
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    base64_text = draw(st.text(max_size=200)) if draw(st.integers(0, 19)) == 0 else None
    return Case(draw(bodies), headers, base64_text)


def event_for(case: Case) -> dict[str, Any]:
    event = api_gateway_event("POST", "/v1/profiles", case.headers, case.body, "198.51.100.7")
    if case.base64_text is not None:
        event["body"], event["isBase64Encoded"] = case.base64_text, True
    return event


# ---------------------------------------------------------------------------------------------------- oracle


def check_answer(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What every answer must look like; returns the status and the parsed body."""
    status = response["statusCode"]
    assert status < 500, response
    assert status == 200 or status in REFUSAL_STATUSES, response
    assert response["headers"]["Content-Type"] == "application/json"
    body = json.loads(response["body"])
    assert isinstance(body, dict)
    assert body.get("correlation_id")
    if status == 200:
        assert body["status"] == "accepted"
        assert body["accepted"] >= 1
        assert body["received"] == body["accepted"] + len(body["rejected"])
        assert all(set(item) == {"index", "reason"} and item["reason"] for item in body["rejected"])
    else:
        error = body["error"]
        assert set(error) == {"code", "message"}, body
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
    if status == 401:
        assert "Bearer" in response["headers"]["WWW-Authenticate"]
    return status, body


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_every_malformed_request_gets_a_json_refusal_and_valid_ones_keep_working(
    fuzz_stack: FuzzStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = fuzz_stack.stats
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
    @given(case=cases())
    def one_case(case: Case) -> None:
        # Given any request at all
        # When the ingest handler answers it
        status, _ = check_answer(invoke(event_for(case)))
        # Then (check_answer) no 5xx, and a JSON refusal that names the problem, or an acceptance that adds up
        stats["cases"] += 1
        stats[str(status)] += 1
        # And the same warm handler keeps accepting a valid request
        if stats["cases"] % VALID_EVERY == 0:
            valid = api_gateway_event(
                "POST",
                "/v1/profiles",
                {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
                VALID_BODY,
                "198.51.100.7",
            )
            valid_status, valid_body = check_answer(invoke(valid))
            assert (valid_status, valid_body["accepted"]) == (200, 1)
            stats["valid_interleaved"] += 1
        if stats["cases"] % 250 == 0:
            fuzz_stack.drain()

    one_case()
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(stats.items()) if status.isdigit())
    with capsys.disabled():
        print(
            f"\ningest fuzz: {stats['cases']} generated requests ({summary}) and {stats['valid_interleaved']} valid"
            f" ones interleaved, in {elapsed:.1f} s: no 5xx, every refusal JSON with error.code and error.message"
        )
    # Then hypothesis ran every example it was asked for, and the refusals were exercised, not only acceptances
    assert stats["cases"] >= EXAMPLES
    assert stats["valid_interleaved"] >= EXAMPLES // VALID_EVERY
    assert all(stats[str(status)] > 0 for status in (200, 400, 401, 413, 415))


# ------------------------------------------------------------------------------------- found by fuzzing (fixed)


def test_an_integer_too_long_for_python_is_refused_not_retried(fuzz_stack: FuzzStack) -> None:
    # Given a profile whose attribute is an integer of 5,000 digits (valid JSON)
    body = ('{"identityMap":{"user_id":[{"id":"u-1"}]},"points":' + "9" * 5_000 + "}").encode()
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    # When the ingest handler answers it
    status, body_json = check_answer(invoke(api_gateway_event("POST", "/v1/profiles", headers, body, "203.0.113.9")))
    # Then it is a 400 that names the problem (not a 503 that AEP retries)
    assert status == 400
    assert body_json["error"]["code"] == "invalid_json"
