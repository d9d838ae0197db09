"""Secrets Manager reads, cached per execution environment (never fetched per request)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters


class SecretUnavailableError(Exception):
    """The secret could not be read or is not the expected JSON object. The message never holds its value."""


def get_json_secret(name: str, *, max_age: int, force_fetch: bool = False) -> dict[str, Any]:
    """Return the secret `name` parsed as a JSON object, from a cache refreshed every `max_age` seconds."""
    try:
        value = parameters.get_secret(name, transform="json", max_age=max_age, force_fetch=force_fetch)
    except Exception as error:  # powertools wraps boto3 and JSON errors in its own exception types
        raise SecretUnavailableError(f"secret {name!r} could not be read ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise SecretUnavailableError(f"secret {name!r} is not a JSON object")
    return value
