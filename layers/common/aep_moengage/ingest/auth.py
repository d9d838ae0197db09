"""Caller authentication: a bearer token (or HTTP Basic password) from the list of active tokens."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

WWW_AUTHENTICATE = 'Bearer realm="aep-moengage", Basic realm="aep-moengage", charset="UTF-8"'


class TokenSecretError(ValueError):
    """The token secret does not hold a usable token list (the message never holds a token)."""


def active_tokens(secret: Mapping[str, Any]) -> tuple[str, ...]:
    """Tokens listed in the ingest secret `{"tokens": [...]}`; several are active at once for rotation."""
    tokens = secret.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise TokenSecretError('the ingest secret must be {"tokens": ["...", ...]}')
    usable = tuple(token for token in tokens if token)
    if not usable:
        raise TokenSecretError("the ingest secret lists no token")
    return usable


def presented_credential(authorization: str | None) -> str | None:
    """The secret part of an `Authorization` header: a bearer token, or the password of HTTP Basic.

    Destination SDK destinations configured for Basic auth send `user:password`; the user name is not
    checked, the password must be an active token.
    """
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return None
    if scheme.lower() == "bearer":
        return credential
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, separator, password = decoded.partition(":")
        return password if separator and password else None
    return None


def is_authorized(authorization: str | None, tokens: Iterable[str]) -> bool:
    """Constant-time check against every active token (no early exit that would time which one matched)."""
    credential = presented_credential(authorization)
    if credential is None:
        return False
    presented = credential.encode("utf-8")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token.encode("utf-8"))
    return matched
