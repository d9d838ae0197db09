"""No request without a valid token is accepted: through the ingest handler, against moto's Secrets Manager and SQS.

Covers missing, wrong, old-after-rotation and wrong-scheme credentials, failing closed when the token secret is
unusable, and timing safety: every credential comparison in the product is `hmac.compare_digest`, over every active
token, with no early exit (checked in the source and at run time).
"""

from __future__ import annotations

import ast
import base64
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ingest_app
from aep_moengage.ingest import auth
from tests.conftest import (
    INGEST_SECRET_NAME,
    ROOT,
    FakeLambdaContext,
    IngestAws,
    load_event,
    moto_ingest,
    reset_ingest_caches,
)

OLD, NEW = "old-token-4f1c9e0b7a3d2265", "new-token-8d02b6e1c5f74a93"
BODY = json.dumps({"identityMap": {"user_id": [{"id": "u-security"}]}, "tier": "gold"})
PRODUCT_SOURCES = sorted([*(ROOT / "layers/common/aep_moengage").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])
SECRET_NAMES = re.compile(r"token|credential|password|api_?key|secret", re.IGNORECASE)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Ingest(IngestAws):
    def post(self, authorization: str | None, body: str = BODY) -> tuple[int, dict[str, Any], dict[str, str]]:
        event = load_event("ingest_http_api_profile.json")
        event["headers"].pop("authorization", None)
        if authorization is not None:
            event["headers"]["authorization"] = authorization
        event["body"] = body
        response = ingest_app.lambda_handler(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]), response["headers"]

    def queued(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])


@pytest.fixture
def ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingest]:
    with moto_ingest(monkeypatch, tokens=(OLD,), env={"SECRET_CACHE_SECONDS": "0"}) as aws:  # rotations seen at once
        yield Ingest(aws.queue_url, aws.sqs, aws.secrets)


REFUSED = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer ", id="scheme-and-space"),
    pytest.param("Bearer not-the-token", id="wrong"),
    pytest.param(f"Bearer {OLD[:-1]}", id="prefix"),
    pytest.param(f"Bearer {OLD}0", id="longer"),
    pytest.param(f"Bearer {OLD.upper()}", id="other-case"),
    pytest.param(f"Bearer  {OLD}\u200b", id="zero-width-suffix"),
    pytest.param(f"Bearer {OLD}\x00", id="nul-suffix"),
    pytest.param(f"Token {OLD}", id="wrong-scheme-token"),
    pytest.param(f"Digest {OLD}", id="wrong-scheme-digest"),
    pytest.param(f"Bearer{OLD}", id="no-space"),
    pytest.param(OLD, id="no-scheme"),
    pytest.param(basic(OLD, ""), id="basic-token-as-user"),
    pytest.param(basic(OLD, "wrong"), id="basic-token-as-user-wrong-password"),
    pytest.param("Basic " + base64.b64encode(OLD.encode()).decode(), id="basic-no-colon"),
    pytest.param("Basic " + OLD, id="basic-not-base64"),
    pytest.param("Basic " + base64.urlsafe_b64encode(f"u:{OLD}".encode()).decode() + "!", id="basic-garbage"),
    pytest.param(f"Bearer {NEW}", id="not-yet-active"),
]


@pytest.mark.parametrize("authorization", REFUSED)
def test_a_request_without_a_valid_token_is_refused_and_nothing_is_queued(
    ingest: Ingest, authorization: str | None
) -> None:
    # Given the active token list ["old"]
    # When a request arrives with a missing, wrong or wrongly presented credential
    status, body, headers = ingest.post(authorization)
    # Then it is refused with 401, a JSON error and a challenge, the credential is not echoed, nothing is queued
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert "Bearer" in headers["WWW-Authenticate"] and "Basic" in headers["WWW-Authenticate"]
    answer = json.dumps(body)
    presented = (authorization or "").strip().partition(" ")[2].strip()
    assert OLD not in answer and (len(presented) < 6 or presented not in answer)
    assert ingest.queued() == 0


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {OLD}", f"bearer {OLD}", f"  Bearer   {OLD}  ", basic("aep", OLD), basic("", OLD)],
    ids=["bearer", "scheme-any-case", "extra-spaces", "basic-password", "basic-empty-user"],
)
def test_the_active_token_is_accepted_as_bearer_or_basic_password(ingest: Ingest, authorization: str) -> None:
    # Given the active token list ["old"]; When it is presented as documented; Then the profile is accepted
    status, body, _ = ingest.post(authorization)
    assert (status, body["accepted"]) == (200, 1)
    assert ingest.queued() == 1


def test_rotation_old_token_works_during_and_is_refused_after(ingest: Ingest) -> None:
    # Given AEP uses the old token
    assert ingest.post(f"Bearer {OLD}")[0] == 200
    # When the new token is added: both work (AEP can be switched without an outage)
    ingest.set_tokens(OLD, NEW)
    assert ingest.post(f"Bearer {OLD}")[0] == 200
    assert ingest.post(f"Bearer {NEW}")[0] == 200
    # When the old token is removed: the old one is refused from the next request on, the new one works
    ingest.set_tokens(NEW)
    assert ingest.post(f"Bearer {OLD}")[0] == 401
    assert ingest.post(basic("aep", OLD))[0] == 401
    assert ingest.post(f"Bearer {NEW}")[0] == 200
    assert ingest.queued() == 4


@pytest.mark.parametrize(
    "secret",
    [{"tokens": []}, {"tokens": [""]}, {"tokens": "not-a-list"}, {"tokens": [None]}, {}, ["a-list"]],
    ids=["no-token", "empty-token", "not-a-list", "null-token", "no-tokens-key", "not-an-object"],
)
def test_an_unusable_token_secret_fails_closed(ingest: Ingest, secret: Any) -> None:
    # Given the token secret holds no usable token
    ingest.secrets.put_secret_value(SecretId=INGEST_SECRET_NAME, SecretString=json.dumps(secret))
    # When requests arrive with an empty credential or the previous token
    for authorization in ("Bearer ", f"Bearer {OLD}", basic("aep", ""), None):
        status, body, _ = ingest.post(authorization)
        # Then nothing is accepted: 503 (AEP retries; the secret gets fixed) or 401, never 200
        assert status in (401, 503), (authorization, body)
        assert "error" in body
    assert ingest.queued() == 0


def test_a_missing_token_secret_fails_closed(ingest: Ingest) -> None:
    # Given the token secret was deleted
    ingest.secrets.delete_secret(SecretId=INGEST_SECRET_NAME, ForceDeleteWithoutRecovery=True)
    # When a request arrives with the token that used to be valid
    status, body, headers = ingest.post(f"Bearer {OLD}")
    # Then it is not accepted: 503 with Retry-After, and the error does not show the token
    assert status == 503 and headers["Retry-After"] == "15"
    assert body["error"]["code"] == "auth_unavailable"
    assert OLD not in json.dumps(body)
    assert ingest.queued() == 0


def test_a_source_outside_the_allowed_cidrs_is_refused_even_with_a_valid_token(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given only 192.0.2.0/24 may call (the event comes from 192.0.2.10) and then only 198.51.100.0/24
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "192.0.2.0/24")
    reset_ingest_caches()
    assert ingest.post(f"Bearer {OLD}")[0] == 200
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "198.51.100.0/24")
    reset_ingest_caches()
    # When the same request comes from outside; Then 403, before any token is looked at
    status, body, _ = ingest.post(f"Bearer {OLD}")
    assert (status, body["error"]["code"]) == (403, "forbidden_source")
    assert ingest.queued() == 1


# ----------------------------------------------------------------------------------------------- timing safety


def _comparisons(tree: ast.AST, source: str) -> list[tuple[int, str]]:
    """Every ==, !=, in, not in whose operands mention a secret-like name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            text = ast.get_source_segment(source, node) or ""
            if SECRET_NAMES.search(text):
                found.append((node.lineno, text))
    return found


def test_no_product_code_compares_a_secret_with_an_ordinary_operator() -> None:
    # Given every module of the layer and the functions
    assert len(PRODUCT_SOURCES) > 10
    offenders = []
    for path in PRODUCT_SOURCES:
        source = path.read_text(encoding="utf-8")
        # When its comparisons are listed; Then none of them touches a token, credential, password, key or secret
        offenders += [
            f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in _comparisons(ast.parse(source), source)
        ]
    assert offenders == []


def test_the_token_check_is_hmac_compare_digest_over_every_active_token() -> None:
    # Given the ingest's authentication module
    source = Path(auth.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "is_authorized")
    calls = [ast.unparse(n.func) for n in ast.walk(function) if isinstance(n, ast.Call)]
    # Then the credential is compared with hmac.compare_digest inside a loop over the tokens, with no early exit
    assert "hmac.compare_digest" in calls
    loop = next(n for n in ast.walk(function) if isinstance(n, ast.For))
    assert any(isinstance(n, ast.Call) and ast.unparse(n.func) == "hmac.compare_digest" for n in ast.walk(loop))
    assert not any(isinstance(n, ast.Return | ast.Break) for n in ast.walk(loop))
    # And the handler path uses it: the service calls is_authorized and nothing else decides
    service = (Path(auth.__file__).parent / "service.py").read_text(encoding="utf-8")
    assert "is_authorized(" in service


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {OLD}", f"Bearer {NEW}", "Bearer x", f"Bearer {OLD}{'y' * 500}", basic("aep", NEW)],
    ids=["first-token", "last-token", "short-wrong", "long-wrong", "basic"],
)
def test_every_request_compares_against_every_token_in_constant_time(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch, authorization: str
) -> None:
    # Given three active tokens and a spy on hmac.compare_digest
    ingest.set_tokens(OLD, "middle-token-77aa31c0d2e9", NEW)
    calls: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    # When a request arrives, right or wrong, whichever token it matches
    ingest.post(authorization)
    # Then exactly one constant-time comparison per active token was made, on bytes, whatever the outcome
    assert len(calls) == 3
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    assert sorted(b for _, b in calls) == sorted(t.encode() for t in (OLD, "middle-token-77aa31c0d2e9", NEW))
