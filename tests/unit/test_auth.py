"""Caller authentication: bearer and Basic, several active tokens, constant-time comparison."""

from __future__ import annotations

import base64
import hmac
from typing import Any

import pytest

from aep_moengage.ingest import auth
from aep_moengage.ingest.auth import TokenSecretError, active_tokens, is_authorized, presented_credential

TOKENS = ("old-token-0123456789", "new-token-9876543210")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer old-token-0123456789", True),
        ("Bearer new-token-9876543210", True),  # both listed tokens are active during a rotation
        ("bearer new-token-9876543210", True),  # the scheme is case-insensitive (RFC 7235)
        ("  Bearer   old-token-0123456789  ", True),
        (basic("aep", "new-token-9876543210"), True),
        (basic("", "old-token-0123456789"), True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer old-token-012345678", False),  # a prefix
        ("Bearer old-token-01234567890", False),  # a longer token
        ("Bearer OLD-TOKEN-0123456789", False),  # tokens are case-sensitive
        ("Token old-token-0123456789", False),  # wrong scheme
        ("old-token-0123456789", False),  # no scheme
        (basic("old-token-0123456789", ""), False),  # the token as user name is not enough
        ("Basic not-base64!", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), False),
        ("Bearer \u00e9t\u00e9", False),
    ],
)
def test_is_authorized(header: str | None, expected: bool) -> None:
    assert is_authorized(header, TOKENS) is expected


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spy on hmac.compare_digest
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    # When the first token matches
    assert is_authorized("Bearer old-token-0123456789", TOKENS)
    # Then every token was still compared (no early exit that times which one matched)
    assert len(calls) == len(TOKENS)


def test_presented_credential_extracts_the_secret_part() -> None:
    assert presented_credential("Bearer abc") == "abc"
    assert presented_credential(basic("u", "p:with:colons")) == "p:with:colons"


@pytest.mark.parametrize(
    "secret",
    [{}, {"tokens": "abc"}, {"tokens": [1, 2]}, {"tokens": []}, {"tokens": ["", ""]}, {"token": "abc"}],
)
def test_a_secret_without_a_token_list_is_an_error_that_never_shows_values(secret: dict[str, Any]) -> None:
    with pytest.raises(TokenSecretError) as raised:
        active_tokens(secret)
    assert "abc" not in str(raised.value)


def test_active_tokens_skips_empty_entries() -> None:
    assert active_tokens({"tokens": ["a", "", "b"]}) == ("a", "b")
