"""Turn the three body shapes AEP sends into canonical profiles, refusing bad profiles one by one.

Shapes (see DESIGN.md):
- ``http_api``: one AEP profile object (HTTP API destination): identityMap, segmentMembership, XDM attributes.
- ``sdk_profiles``: ``{"profiles": [...]}`` of profile objects whose ``attributes`` are ``{"value": x}``, ``{}``
  (not set) or bare values (a Destination SDK pass-through template).
- ``sdk_template``: ``{"profiles": [...]}`` in Adobe's sample template output: ``identities`` [{type, id}],
  ``AdobeExperiencePlatformSegments`` {add, remove}, optional bare ``attributes``.

A profile that cannot be used is listed with its index and a reason that never quotes its values (PII).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from aep_moengage.models.queue import AudienceChange, AudienceStatus, CanonicalProfile

MAX_ATTRIBUTE_DEPTH = 32
# Keys of an AEP profile object that are not XDM attributes.
IDENTITY_MAP = "identityMap"
SEGMENT_MEMBERSHIP = "segmentMembership"
SDK_ATTRIBUTES = "attributes"
TEMPLATE_IDENTITIES = "identities"
TEMPLATE_SEGMENTS = "AdobeExperiencePlatformSegments"


class InputShape(StrEnum):
    HTTP_API = "http_api"
    SDK_PROFILES = "sdk_profiles"
    SDK_TEMPLATE = "sdk_template"


class UnrecognizedBodyError(ValueError):
    """The body as a whole is not one of the accepted shapes (answered with 400)."""


class ProfileError(ValueError):
    """One profile cannot be used; the message names the field, never its value."""


@dataclass(frozen=True)
class Rejection:
    index: int
    reason: str


@dataclass
class NormalizationResult:
    profiles: list[CanonicalProfile] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    shape_by_index: dict[int, InputShape] = field(default_factory=dict)

    def count_by_shape(self, indexes: Iterable[int] | None = None) -> Counter[InputShape]:
        """Profiles per input shape: all of them, or those at `indexes`."""
        chosen = self.shape_by_index if indexes is None else indexes
        return Counter(self.shape_by_index[index] for index in chosen)


def normalize_body(body: Any) -> NormalizationResult:
    """Normalize a parsed JSON body. Raises UnrecognizedBodyError when it is none of the shapes."""
    if not isinstance(body, dict):
        raise UnrecognizedBodyError("the body must be a JSON object")
    if "profiles" in body:
        items = body["profiles"]
        if not isinstance(items, list):
            raise UnrecognizedBodyError('"profiles" must be an array of profile objects')
        if not items:
            raise UnrecognizedBodyError('"profiles" is empty: there is nothing to deliver')
    elif IDENTITY_MAP in body or SEGMENT_MEMBERSHIP in body:
        items = [body]
    else:
        raise UnrecognizedBodyError(
            'expected one AEP profile (with "identityMap") or {"profiles": [...]}; '
            f"found keys: {', '.join(sorted(map(str, body))[:10]) or 'none'}"
        )

    result = NormalizationResult()
    single = items is not body.get("profiles")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            result.shape_by_index[index] = InputShape.SDK_PROFILES
            result.rejected.append(Rejection(index, "the profile must be a JSON object"))
            continue
        shape = _shape_of(item, single=single)
        result.shape_by_index[index] = shape
        try:
            result.profiles.append(_normalize_profile(index, item, shape))
        except ProfileError as error:
            result.rejected.append(Rejection(index, str(error)))
    return result


def _shape_of(item: dict[str, Any], *, single: bool) -> InputShape:
    if TEMPLATE_IDENTITIES in item or TEMPLATE_SEGMENTS in item:
        return InputShape.SDK_TEMPLATE
    return InputShape.HTTP_API if single else InputShape.SDK_PROFILES


def _normalize_profile(index: int, item: dict[str, Any], shape: InputShape) -> CanonicalProfile:
    if shape is InputShape.SDK_TEMPLATE:
        identities = _template_identities(item.get(TEMPLATE_IDENTITIES))
        audiences = _template_audiences(item.get(TEMPLATE_SEGMENTS))
        attributes = _sdk_attributes(item.get(SDK_ATTRIBUTES))
    else:
        identities = _identity_map(item.get(IDENTITY_MAP))
        audiences = _segment_membership(item.get(SEGMENT_MEMBERSHIP))
        attributes = _sdk_attributes(item.get(SDK_ATTRIBUTES))
        # Everything else is XDM data at its path (HTTP API destination): flatten to dotted names.
        for key, value in item.items():
            if key not in (IDENTITY_MAP, SEGMENT_MEMBERSHIP, SDK_ATTRIBUTES):
                _flatten(key, value, attributes, depth=1)
    if not identities:
        raise ProfileError("no identity: the profile holds no id in any namespace")
    try:
        return CanonicalProfile(index=index, identities=identities, attributes=attributes, audiences=audiences)
    except ValidationError as error:  # values JSON cannot carry (should not happen after json.loads)
        raise ProfileError(f"invalid profile: {error.error_count()} invalid field(s)") from None


def _identity_id(value: Any, where: str) -> str:
    # Numbers are accepted as ids (some namespaces are numeric); booleans and empty strings are not.
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ProfileError(f"{where} must be a non-empty string")


def _identity_map(value: Any) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{IDENTITY_MAP} must be an object of namespace -> [{{id}}]")
    identities: dict[str, list[str]] = {}
    for namespace, entries in value.items():
        where = f"{IDENTITY_MAP}.{namespace}"
        if not isinstance(entries, list):
            raise ProfileError(f"{where} must be an array of {{id}} objects")
        ids: list[str] = []
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ProfileError(f"{where}[{position}] must be an object with an id")
            ids.append(_identity_id(entry.get("id"), f"{where}[{position}].id"))
        if ids:
            identities[namespace] = ids
    return identities


def _template_identities(value: Any) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ProfileError(f"{TEMPLATE_IDENTITIES} must be an array of {{type, id}} objects")
    identities: dict[str, list[str]] = {}
    for position, entry in enumerate(value):
        where = f"{TEMPLATE_IDENTITIES}[{position}]"
        if not isinstance(entry, dict):
            raise ProfileError(f"{where} must be an object with type and id")
        namespace = entry.get("type")
        if not isinstance(namespace, str) or not namespace:
            raise ProfileError(f"{where}.type must be a non-empty string")
        identities.setdefault(namespace, []).append(_identity_id(entry.get("id"), f"{where}.id"))
    return identities


def _segment_membership(value: Any) -> list[AudienceChange]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ProfileError(f"{SEGMENT_MEMBERSHIP} must be an object of namespace -> audiences")
    changes: list[AudienceChange] = []
    for namespace, audiences in value.items():
        where = f"{SEGMENT_MEMBERSHIP}.{namespace}"
        if not isinstance(audiences, dict):
            raise ProfileError(f"{where} must be an object of audience id -> membership")
        for audience_id, membership in audiences.items():
            changes.append(_membership(namespace, audience_id, membership, f"{where}.{audience_id}"))
    return changes


def _membership(namespace: str, audience_id: str, membership: Any, where: str) -> AudienceChange:
    if not isinstance(membership, dict):
        raise ProfileError(f"{where} must be an object with a status")
    if not audience_id:
        raise ProfileError(f"{where}: the audience id is empty")
    status = membership.get("status")
    try:
        parsed_status = AudienceStatus(status.lower() if isinstance(status, str) else "")
    except ValueError:
        raise ProfileError(f"{where}.status must be one of realized, existing, exited") from None
    name = membership.get("name")
    if name is not None and not isinstance(name, str):
        raise ProfileError(f"{where}.name must be a string")
    qualified = membership.get("lastQualificationTime")
    return AudienceChange(
        audience_id=audience_id,
        status=parsed_status,
        namespace=namespace,
        name=name or None,
        last_qualification_time=None
        if qualified is None
        else parse_timestamp(qualified, f"{where}.lastQualificationTime"),
    )


def _template_audiences(value: Any) -> list[AudienceChange]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ProfileError(f"{TEMPLATE_SEGMENTS} must be an object with add and remove arrays")
    changes: list[AudienceChange] = []
    for key, status in (("add", AudienceStatus.REALIZED), ("remove", AudienceStatus.EXITED)):
        ids = value.get(key, [])
        if not isinstance(ids, list):
            raise ProfileError(f"{TEMPLATE_SEGMENTS}.{key} must be an array of audience ids")
        for position, audience_id in enumerate(ids):
            if not isinstance(audience_id, str) or not audience_id:
                raise ProfileError(f"{TEMPLATE_SEGMENTS}.{key}[{position}] must be a non-empty string")
            changes.append(AudienceChange(audience_id=audience_id, status=status))
    return changes


def _sdk_attributes(value: Any) -> dict[str, Any]:
    """Destination SDK attributes: ``{"value": x}``, ``{}`` (not set) or a bare value."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{SDK_ATTRIBUTES} must be an object of name -> value")
    attributes: dict[str, Any] = {}
    for name, raw in value.items():
        if isinstance(raw, dict) and set(raw) <= {"value"}:
            raw = raw.get("value")  # {"value": x}, or {} which means "not set" and is dropped below
        _flatten(name, raw, attributes, depth=1)
    return attributes


def _flatten(path: str, value: Any, into: dict[str, Any], *, depth: int) -> None:
    """XDM objects become dotted paths; arrays and scalars are leaves; null and {} are 'not set'."""
    if depth > MAX_ATTRIBUTE_DEPTH:
        raise ProfileError(f"attribute {path.split('.')[0]!r} is nested deeper than {MAX_ATTRIBUTE_DEPTH} levels")
    if not path:
        raise ProfileError("an attribute has an empty name")
    if value is None:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(f"{path}.{key}", child, into, depth=depth + 1)
        return
    if not _finite(value):
        # JSON has no Infinity: a number too large for a double would be sent as null, so refuse it instead.
        raise ProfileError(f"attribute {path!r} holds a number out of range")
    into[path] = value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def parse_timestamp(value: Any, where: str) -> datetime:
    """AEP's timestamps: ISO-8601 in several spellings (Z, +0000, .000+0000, µs) or epoch milliseconds."""
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
            parsed = datetime.fromisoformat(text)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        raise ProfileError(f"{where} must be an ISO-8601 timestamp or epoch milliseconds") from None
