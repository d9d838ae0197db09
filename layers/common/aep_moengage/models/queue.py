"""The canonical queue message: the only contract between ingest and delivery.

Ingest turns every AEP wire shape into this model; delivery knows nothing of AEP's shapes.
Bump ``SCHEMA_VERSION`` (and keep reading the old one) when a change is not backward compatible.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SCHEMA_VERSION: Literal[1] = 1

# SQS message attribute names (strings), read by delivery and the operations tools.
ATTR_CORRELATION_ID = "correlation_id"
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_FAILURE_REASON = "failure_reason"
ATTR_FAILURE_DETAIL = "failure_detail"


class AudienceStatus(StrEnum):
    REALIZED = "realized"  # entered the audience
    EXISTING = "existing"  # already in the audience
    EXITED = "exited"  # left the audience


class AudienceChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    audience_id: str = Field(min_length=1)
    status: AudienceStatus
    # "ups", "CustomerAudienceUpload", ...; None when AEP does not say (Adobe's sample template output).
    namespace: str | None = None
    name: str | None = None
    last_qualification_time: datetime | None = None  # always timezone-aware UTC

    @property
    def is_member(self) -> bool:
        return self.status is not AudienceStatus.EXITED


class CanonicalProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="Position of the profile in the AEP request, for error reports.")
    # Namespace exactly as AEP sent it -> ids in AEP's order (several ids per namespace are normal).
    identities: dict[str, list[str]]
    # Attribute name -> value. AEP-mapped names as sent; XDM attributes flattened to dotted paths
    # ("person.name.firstName"). Never holds null or {} (AEP's "not set").
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    audiences: list[AudienceChange] = Field(default_factory=list)


class QueueMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    correlation_id: str
    received_at: datetime
    profiles: list[CanonicalProfile] = Field(min_length=1)
