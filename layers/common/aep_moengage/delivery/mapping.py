"""Canonical profile -> MoEngage user: identities, attributes and audience values. Pure functions, table-driven.

The attribute table is `mapping.json` (declarative, versioned, validated at cold start). Rules that MoEngage
imposes are applied here so that nothing is silently dropped or altered by MoEngage:

* forbidden names (`id`, `status`, `source`, `user_id`, `moe_*`, ...) and the names this connector writes itself
  are renamed with the prefix `aep_` (`id` -> `aep_id`, `moe_x` -> `aep_moe_x`);
* a value MoEngage would truncate, reject or store differently (over 512 characters, arrays over 50 items or of
  mixed types, arrays of objects, dates that cannot be read) is not sent: the attribute is dropped and reported
  (`DroppedAttribute`, metric `AttributesDropped`), the rest of the profile is delivered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from aep_moengage.delivery.settings import DeliverySettings
from aep_moengage.models.moengage import (
    ARRAY_OPERATORS,
    MAX_NAME_LENGTH,
    is_blocked_customer_id,
    is_forbidden_attribute_name,
    value_problem,
)
from aep_moengage.models.queue import AudienceChange, AudienceStatus, CanonicalProfile

RENAME_PREFIX = "aep_"
SEGMENTS_ATTRIBUTE = "AEPSegments"  # the name MoEngage's own AEP destination uses
ANONYMOUS_ID_ATTRIBUTE = "aep_anonymous_id"  # the anonymous id of a known user
ANONYMOUS_PROFILE_ATTRIBUTE = "aep_anonymous_profile"  # true on a user whose customer_id is an anonymous id
# Names this connector writes: an incoming attribute with one of them is renamed so that it cannot clash.
CONNECTOR_NAMES = frozenset(
    name.lower() for name in (SEGMENTS_ATTRIBUTE, ANONYMOUS_ID_ATTRIBUTE, ANONYMOUS_PROFILE_ATTRIBUTE, *ARRAY_OPERATORS)
)

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_SLASH_DATE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})$")
_BASIC_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


class MappingError(Exception):
    """mapping.json is invalid; raised at cold start."""


class AttributeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    to: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    type: Literal["date"] | None = None  # "date": sent as ISO-8601 YYYY-MM-DD

    @field_validator("to")
    @classmethod
    def _allowed_target(cls, value: str) -> str:
        if is_forbidden_attribute_name(value) or value.lower() in CONNECTOR_NAMES:
            raise ValueError(f"{value!r} is a name MoEngage forbids or this connector reserves")
        return value


class MappingTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    description: str = ""
    attributes: dict[str, AttributeRule]

    @model_validator(mode="after")
    def _unique_targets(self) -> MappingTable:
        targets = [rule.to for rule in self.attributes.values()]
        duplicates = sorted({name for name in targets if targets.count(name) > 1})
        if duplicates:
            raise ValueError(f"several source attributes map to {duplicates}")
        if any(not source for source in self.attributes):
            raise ValueError("empty source attribute name")
        return self


def load_mapping_table(text: str | None = None) -> MappingTable:
    """Parse and validate the attribute table (the packaged mapping.json unless `text` is given)."""
    if text is None:
        text = resources.files("aep_moengage.delivery").joinpath("mapping.json").read_text(encoding="utf-8")
    try:
        return MappingTable.model_validate_json(text)
    except ValidationError as error:
        raise MappingError(f"invalid mapping.json: {error}") from None


@dataclass(frozen=True)
class MappingRules:
    """Everything the mapping needs: the table and the identity/audience settings."""

    table: MappingTable
    user_namespaces: tuple[str, ...] = ("user_id", "crmid")
    anonymous_namespaces: tuple[str, ...] = ("anonymous_id", "ecid")
    skip_anonymous: bool = False
    audience_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: DeliverySettings, table: MappingTable) -> MappingRules:
        return cls(
            table=table,
            user_namespaces=settings.user_id_namespaces,
            anonymous_namespaces=settings.anonymous_id_namespaces,
            skip_anonymous=settings.anonymous_profiles == "skip",
            audience_names=dict(settings.audience_names),
        )


@dataclass(frozen=True)
class DroppedAttribute:
    name: str  # the attribute's name as received (a name, never a value)
    reason: str  # short code: value_too_long, array_too_long, array_not_homogeneous, invalid_date, ...


@dataclass(frozen=True)
class MappedAudience:
    audience_id: str
    value: str  # the element of AEPSegments: the audience name, else the configured name, else the id
    status: AudienceStatus
    last_qualification_time: datetime | None

    @property
    def is_member(self) -> bool:
        return self.status is not AudienceStatus.EXITED


@dataclass
class MappedProfile:
    customer_id: str
    attributes: dict[str, JsonValue]
    audiences: list[MappedAudience]
    dropped: list[DroppedAttribute]


@dataclass(frozen=True)
class UnmappedProfile:
    """A profile that is not sent: skipped by configuration, or a permanent failure."""

    skipped: bool
    reason: str  # anonymous_profile | no_identity | rejected_customer_id
    detail: str


def map_profile(profile: CanonicalProfile, rules: MappingRules) -> MappedProfile | UnmappedProfile:
    identities = _identities_by_lower_namespace(profile.identities)
    user_id = _first_id(identities, rules.user_namespaces)
    anonymous_id = _first_id(identities, rules.anonymous_namespaces)
    if user_id is None and anonymous_id is None:
        return UnmappedProfile(False, "no_identity", "no id in the configured user or anonymous namespaces")
    if user_id is None and rules.skip_anonymous:
        return UnmappedProfile(True, "anonymous_profile", "only an anonymous id and ANONYMOUS_PROFILES=skip")
    customer_id = user_id if user_id is not None else anonymous_id
    assert customer_id is not None  # for mypy: one of the two is set
    if is_blocked_customer_id(customer_id):
        which = "user" if user_id is not None else "anonymous"
        return UnmappedProfile(False, "rejected_customer_id", f"the {which} id is a value MoEngage rejects")

    attributes, dropped = map_attributes(profile.attributes, rules.table)
    if user_id is None:
        attributes[ANONYMOUS_PROFILE_ATTRIBUTE] = True
    elif anonymous_id is not None:
        if value_problem(anonymous_id) is None:
            attributes[ANONYMOUS_ID_ATTRIBUTE] = anonymous_id
        else:
            dropped.append(DroppedAttribute(ANONYMOUS_ID_ATTRIBUTE, "value_too_long"))
    audiences = []
    for change in profile.audiences:
        audience = map_audience(change, rules.audience_names)
        if value_problem(audience.value) is None:
            audiences.append(audience)
        else:
            dropped.append(DroppedAttribute(SEGMENTS_ATTRIBUTE, "value_too_long"))
    return MappedProfile(customer_id, attributes, audiences, dropped)


def map_audience(change: AudienceChange, audience_names: dict[str, str]) -> MappedAudience:
    value = change.name or audience_names.get(change.audience_id) or change.audience_id
    return MappedAudience(change.audience_id, value, change.status, change.last_qualification_time)


def map_attributes(
    attributes: dict[str, JsonValue], table: MappingTable
) -> tuple[dict[str, JsonValue], list[DroppedAttribute]]:
    """Apply the table, renaming and MoEngage's value rules. Values are otherwise sent exactly as given.

    When two source attributes end up with one name, the one AEP sent under that very name wins over one
    produced by the table or by renaming (so the result does not depend on the order of the attributes).
    """
    direct: dict[str, JsonValue] = {}
    derived: dict[str, JsonValue] = {}
    dropped: list[DroppedAttribute] = []
    for name, value in _flatten(attributes).items():
        rule = table.attributes.get(name)
        target = rule.to if rule else safe_attribute_name(name)
        if not name or len(target) > MAX_NAME_LENGTH:
            dropped.append(DroppedAttribute(name, "invalid_name"))
            continue
        if rule is not None and rule.type == "date":
            converted = to_iso_date(value)
            if converted is None:
                dropped.append(DroppedAttribute(name, "invalid_date"))
                continue
            value = converted
        problem = value_problem(value)
        if problem:
            dropped.append(DroppedAttribute(name, problem))
            continue
        (direct if target == name else derived)[target] = value
    return {**derived, **direct}, dropped


def safe_attribute_name(name: str) -> str:
    """Rename a name MoEngage forbids, or one this connector writes itself, by prefixing `aep_`."""
    if is_forbidden_attribute_name(name) or name.lower() in CONNECTOR_NAMES:
        return RENAME_PREFIX + name
    return name


def to_iso_date(value: JsonValue) -> str | None:
    """YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD or an ISO-8601 date-time (its date as written) -> 'YYYY-MM-DD'."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    for pattern in (_ISO_DATE, _SLASH_DATE, _BASIC_DATE):
        match = pattern.match(text)
        if match:
            return _valid_date(*(int(part) for part in match.groups()))
    if "T" not in text and " " not in text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.date().isoformat()


def _valid_date(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _flatten(attributes: dict[str, JsonValue], prefix: str = "") -> dict[str, JsonValue]:
    """Nested objects -> dotted paths (ingest already flattens; kept as a guard). null and {} are not sent."""
    flat: dict[str, JsonValue] = {}
    for name, value in attributes.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        elif value is not None:
            flat[path] = value
    return flat


def _identities_by_lower_namespace(identities: dict[str, list[str]]) -> dict[str, list[str]]:
    by_namespace: dict[str, list[str]] = {}
    for namespace in sorted(identities):  # sorted: namespaces differing only in case merge deterministically
        by_namespace.setdefault(namespace.lower(), []).extend(identities[namespace])
    return by_namespace


def _first_id(identities: dict[str, list[str]], namespaces: tuple[str, ...]) -> str | None:
    """The first id of the first configured namespace that has one (AEP's order within a namespace)."""
    for namespace in namespaces:
        for identity in identities.get(namespace.lower(), []):
            if identity:
                return identity
    return None


def describe_dropped(dropped: list[DroppedAttribute]) -> str:
    """For logs: names and reasons only, never values."""
    return json.dumps([{"attribute": item.name, "reason": item.reason} for item in dropped], ensure_ascii=False)
