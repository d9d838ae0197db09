"""Delivery settings: environment variables parsed and validated once at cold start, with clear errors."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aep_moengage.models.moengage import normalize_data_center

SQS_MAX_VISIBILITY_SECONDS = 43_200


class SettingsError(Exception):
    """The delivery function is misconfigured; the message names the environment variables at fault."""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip().lower() for part in value.split(",") if part.strip())
    return value


class DeliverySettings(BaseModel):
    """One field per environment variable (the alias is the variable's name)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    moengage_secret_name: str = Field(alias="MOENGAGE_SECRET_NAME", min_length=1)
    moengage_base_url: str | None = Field(default=None, alias="MOENGAGE_BASE_URL")
    moengage_data_center: str | None = Field(default=None, alias="MOENGAGE_DATA_CENTER")
    queue_url: str | None = Field(default=None, alias="QUEUE_URL")
    dlq_url: str | None = Field(default=None, alias="DLQ_URL")
    max_receive_count: int = Field(default=10, alias="MAX_RECEIVE_COUNT", ge=1)
    rate_limit_users_per_minute: int = Field(default=54_000, alias="RATE_LIMIT_USERS_PER_MINUTE", ge=1)
    max_concurrency: int = Field(default=2, alias="MAX_CONCURRENCY", ge=1)
    update_existing_only: bool = Field(default=False, alias="UPDATE_EXISTING_ONLY")
    user_id_namespaces: tuple[str, ...] = Field(default=("user_id", "crmid"), alias="USER_ID_NAMESPACES", min_length=1)
    anonymous_id_namespaces: tuple[str, ...] = Field(default=("anonymous_id", "ecid"), alias="ANONYMOUS_ID_NAMESPACES")
    anonymous_profiles: Literal["deliver", "skip"] = Field(default="deliver", alias="ANONYMOUS_PROFILES")
    audience_names: dict[str, str] = Field(default_factory=dict, alias="AUDIENCE_NAMES")
    audience_events: bool = Field(default=False, alias="AUDIENCE_EVENTS")
    retry_base_seconds: int = Field(default=60, alias="RETRY_BASE_SECONDS", ge=0, le=SQS_MAX_VISIBILITY_SECONDS)
    retry_max_seconds: int = Field(default=7_200, alias="RETRY_MAX_SECONDS", ge=0, le=SQS_MAX_VISIBILITY_SECONDS)
    secret_cache_seconds: int = Field(default=300, alias="SECRET_CACHE_SECONDS", ge=0)
    moengage_timeout_seconds: tuple[float, float] = Field(default=(3.0, 10.0), alias="MOENGAGE_TIMEOUT_SECONDS")

    @field_validator("moengage_base_url", "moengage_data_center", "queue_url", "dlq_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("moengage_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("moengage_data_center")
    @classmethod
    def _data_center(cls, value: str | None) -> str | None:
        return normalize_data_center(value) if value is not None else None

    @field_validator("user_id_namespaces", "anonymous_id_namespaces", mode="before")
    @classmethod
    def _namespaces(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("anonymous_profiles", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("audience_names", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON object of audience id -> name, e.g. {"id": "name"}') from None
        return value

    @field_validator("moengage_timeout_seconds", mode="before")
    @classmethod
    def _timeouts(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if len(parts) == 1:
                parts = parts * 2
            if len(parts) != 2:
                raise ValueError("must be 'connect,read' seconds, e.g. '3,10'")
            return tuple(parts)
        return value

    @field_validator("moengage_timeout_seconds")
    @classmethod
    def _positive_timeouts(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError("timeouts must be positive")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeliverySettings:
        overlap = set(self.user_id_namespaces) & set(self.anonymous_id_namespaces)
        if overlap:
            raise ValueError(f"USER_ID_NAMESPACES and ANONYMOUS_ID_NAMESPACES share {sorted(overlap)}")
        if self.retry_base_seconds > self.retry_max_seconds:
            raise ValueError("RETRY_BASE_SECONDS is larger than RETRY_MAX_SECONDS")
        return self

    @property
    def users_per_second_share(self) -> float:
        """This execution environment's share of the workspace's rate limit."""
        return self.rate_limit_users_per_minute / self.max_concurrency / 60.0

    @property
    def request_timeout_seconds(self) -> float:
        return sum(self.moengage_timeout_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliverySettings:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}"
                for issue in error.errors()
            )
            raise SettingsError(f"invalid delivery settings: {problems}") from None
