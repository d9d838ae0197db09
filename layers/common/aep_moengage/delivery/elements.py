"""Mapped profiles of one invocation -> validated MoEngage bulk elements, merged per customer_id.

Merging: attributes, later profile wins; audiences, the latest change per user and audience wins (by
last_qualification_time, then arrival order), so the array operations are incremental and order-independent.
MoEngage rejects an element that both adds to and removes from one attribute: those are two elements.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, JsonValue, ValidationError

from aep_moengage.delivery.mapping import SEGMENTS_ATTRIBUTE, MappedAudience, MappedProfile
from aep_moengage.models.moengage import (
    ADD_TO_ARRAY,
    MAX_ARRAY_ITEMS,
    REMOVE_FROM_ARRAY,
    CustomerElement,
    EventAction,
    EventElement,
)
from aep_moengage.models.queue import AudienceStatus

AUDIENCE_EVENT_NAMES = {AudienceStatus.REALIZED: "AEP Audience Entered", AudienceStatus.EXITED: "AEP Audience Exited"}
_OLDEST = datetime.min.replace(tzinfo=UTC)


class ProfileRef(NamedTuple):
    """Where a profile came from: the SQS message and its position in the queue message's `profiles`."""

    message_id: str
    position: int


@dataclass
class Element:
    """One bulk element, serialized once, with the profiles it carries (to map outcomes back to messages)."""

    body: bytes
    sources: frozenset[ProfileRef]
    users: int  # what the element costs in MoEngage's users-a-minute limit (events: 0)
    customer_id: str  # only to redact MoEngage's error text; never logged


@dataclass(frozen=True)
class InvalidUser:
    sources: frozenset[ProfileRef]
    detail: str


@dataclass
class _UserUpdate:
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    audiences: dict[str, tuple[tuple[datetime, int], MappedAudience]] = field(default_factory=dict)
    sources: set[ProfileRef] = field(default_factory=set)


def serialize(element: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8, values exactly as given (no ASCII or HTML escaping): what is measured is sent."""
    return json.dumps(element, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build_elements(
    profiles: Iterable[tuple[ProfileRef, MappedProfile]],
    *,
    update_existing_only: bool = False,
    audience_events: bool = False,
) -> tuple[list[Element], list[InvalidUser]]:
    users = _merge(profiles)
    elements: list[Element] = []
    invalid: list[InvalidUser] = []
    for customer_id, update in users.items():
        sources = frozenset(update.sources)
        try:
            models = _user_elements(customer_id, update, update_existing_only, audience_events)
        except ValidationError as error:
            # Only messages, never input values: they may be PII.
            detail = "; ".join(issue["msg"] for issue in error.errors())
            invalid.append(InvalidUser(sources, detail[:500]))
            continue
        for model in models:
            users_cost = 1 if isinstance(model, CustomerElement) else 0
            elements.append(Element(serialize(model.model_dump(exclude_none=True)), sources, users_cost, customer_id))
    return elements, invalid


def _merge(profiles: Iterable[tuple[ProfileRef, MappedProfile]]) -> dict[str, _UserUpdate]:
    users: dict[str, _UserUpdate] = {}
    arrival = 0
    for ref, profile in profiles:
        update = users.setdefault(profile.customer_id, _UserUpdate())
        update.sources.add(ref)
        update.attributes.update(profile.attributes)
        for audience in profile.audiences:
            arrival += 1
            key = (audience.last_qualification_time or _OLDEST, arrival)
            current = update.audiences.get(audience.audience_id)
            if current is None or key > current[0]:
                update.audiences[audience.audience_id] = (key, audience)
    return users


def _user_elements(
    customer_id: str, update: _UserUpdate, update_existing_only: bool, audience_events: bool
) -> list[BaseModel]:
    latest = [audience for _, audience in update.audiences.values()]
    adds = _unique(audience.value for audience in latest if audience.is_member)
    removes = [value for value in _unique(a.value for a in latest if not a.is_member) if value not in set(adds)]
    operations = [(ADD_TO_ARRAY, chunk) for chunk in _chunks(adds)] + [
        (REMOVE_FROM_ARRAY, chunk) for chunk in _chunks(removes)
    ]
    first_attributes: dict[str, JsonValue] = dict(update.attributes)
    if operations:
        operator, values = operations.pop(0)
        first_attributes[operator] = {SEGMENTS_ATTRIBUTE: list(values)}
    flag = True if update_existing_only else None
    models: list[BaseModel] = [
        CustomerElement(customer_id=customer_id, attributes=first_attributes, update_existing_only=flag)
    ]
    for operator, values in operations:
        attributes: dict[str, JsonValue] = {operator: {SEGMENTS_ATTRIBUTE: list(values)}}
        models.append(CustomerElement(customer_id=customer_id, attributes=attributes, update_existing_only=flag))
    if audience_events:
        actions = [_audience_action(audience) for audience in latest if audience.status in AUDIENCE_EVENT_NAMES]
        if actions:
            models.append(EventElement(customer_id=customer_id, actions=actions))
    return models


def _audience_action(audience: MappedAudience) -> EventAction:
    time = audience.last_qualification_time
    return EventAction(
        action=AUDIENCE_EVENT_NAMES[audience.status],
        attributes={"audience_id": audience.audience_id, "audience_name": audience.value},
        current_time=time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if time else None,
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _chunks(values: list[str]) -> list[list[str]]:
    """MoEngage arrays hold at most 50 items: a longer change is several elements, never truncated."""
    return [values[start : start + MAX_ARRAY_ITEMS] for start in range(0, len(values), MAX_ARRAY_ITEMS)]
