"""Ingest configuration: environment variables validated once per cold start."""

from __future__ import annotations

import os
from functools import cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# SQS takes 1 MiB per message since 2025, but queues created before, and moto, still stop at 256 KiB.
# 240 KiB leaves room for the message attributes and costs the same: SQS bills per 64 KiB chunk either way.
DEFAULT_QUEUE_MESSAGE_MAX_BYTES = 240 * 1024
# A Lambda synchronous invoke carries at most 6 MB of event (the body plus API Gateway's envelope).
DEFAULT_MAX_BODY_BYTES = 5_000_000


class ConfigurationError(RuntimeError):
    """The function's environment is wrong; the message says which variable and why."""


class IngestSettings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    token_secret_name: str = Field(alias="INGEST_TOKEN_SECRET_NAME", min_length=1)
    queue_url: str = Field(alias="QUEUE_URL", min_length=1)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, alias="MAX_BODY_BYTES", gt=0, le=6_000_000)
    queue_message_max_bytes: int = Field(
        DEFAULT_QUEUE_MESSAGE_MAX_BYTES, alias="QUEUE_MESSAGE_MAX_BYTES", ge=4096, le=1_000_000
    )
    # AEP times out after 2 s: past this budget we stop retrying SQS and answer 503, which AEP retries.
    enqueue_deadline_ms: int = Field(1500, alias="ENQUEUE_DEADLINE_MS", gt=0, le=25_000)
    secret_cache_seconds: int = Field(300, alias="SECRET_CACHE_SECONDS", ge=0)
    allowed_source_cidrs: Annotated[tuple[IPv4Network | IPv6Network, ...], Field(alias="ALLOWED_SOURCE_CIDRS")] = ()

    @field_validator("allowed_source_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())
        return value


@cache
def load_settings() -> IngestSettings:
    try:
        return IngestSettings.model_validate(dict(os.environ))
    except (ValidationError, ValueError) as error:
        raise ConfigurationError(f"invalid ingest configuration: {error}") from None
