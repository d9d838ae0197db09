"""MoEngage Data API request models and the rules MoEngage enforces (reference/moengage.md has the sources).

MoEngage's bulk endpoint answers 200 and silently drops an element it finds invalid, so every element is
validated against these rules before it is sent.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

# Data center -> REST API host. "An unknown one is a configuration error."
DATA_CENTER_HOSTS: dict[str, str] = {
    dc: f"https://api-{dc}.moengage.com" for dc in ("01", "02", "03", "04", "05", "06", "101")
}
_DATA_CENTER_SPELLING = re.compile(r"^(?:dc[-_ ]?)?0*(\d{1,3})$", re.IGNORECASE)

# customer_id values MoEngage rejects (compared case-insensitively, surrounding blanks ignored).
BLOCKED_CUSTOMER_IDS = frozenset(
    {
        "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id", "", "na", "n/a",
        "dummy_seller_code", "user_id", "id", "customer_id", "uid", "userid", "none", "-2", "-1", "2", "''",
    }
)  # fmt: skip
# Attribute names MoEngage forbids or reserves (case-insensitive), and forbidden prefixes.
FORBIDDEN_ATTRIBUTE_NAMES = frozenset({"id", "_id", "status", "source", "user_id", "install", "update"})
FORBIDDEN_ATTRIBUTE_PREFIXES = ("moe_", "user_attribute_")
# MoEngage's documented system attributes that start with moe_ (subscription and consent flags): allowed.
SYSTEM_MOE_ATTRIBUTES = frozenset(
    {
        "moe_unsubscribe", "moe_spam", "moe_hard_bounce", "moe_sms_subscription", "moe_wa_subscription",
        "moe_sub_w", "moe_email_optin_status", "moe_em_unsub_categories",
    }
)  # fmt: skip

MAX_VALUE_LENGTH = 512  # characters; MoEngage truncates longer values
MAX_ARRAY_ITEMS = 50
MAX_NAME_LENGTH = 200

ADD_TO_ARRAY = "addValueToArrayField"
REMOVE_FROM_ARRAY = "removeValueFromArrayField"
ARRAY_OPERATORS = (ADD_TO_ARRAY, REMOVE_FROM_ARRAY)


def normalize_data_center(value: str) -> str:
    """'DC-01', 'dc-01', '01', '1' -> '01'; 'DC-101' -> '101'. Raises ValueError for an unknown data center."""
    match = _DATA_CENTER_SPELLING.match(value.strip())
    if match:
        number = int(match.group(1))
        code = f"{number:02d}" if number < 100 else str(number)
        if code in DATA_CENTER_HOSTS:
            return code
    known = ", ".join(f"DC-{dc}" for dc in DATA_CENTER_HOSTS)
    raise ValueError(f"unknown MoEngage data center {value!r} (expected one of {known})")


def data_center_base_url(value: str) -> str:
    return DATA_CENTER_HOSTS[normalize_data_center(value)]


def is_blocked_customer_id(customer_id: str) -> bool:
    return customer_id.strip().lower() in BLOCKED_CUSTOMER_IDS


def is_forbidden_attribute_name(name: str) -> bool:
    if name in SYSTEM_MOE_ATTRIBUTES:
        return False
    lowered = name.lower()
    return lowered in FORBIDDEN_ATTRIBUTE_NAMES or lowered.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES)


def value_problem(value: JsonValue) -> str | None:
    """Why MoEngage would reject or alter this attribute value (a short reason code), or None if it is fine."""
    if isinstance(value, list):
        if len(value) > MAX_ARRAY_ITEMS:
            return "array_too_long"
        if len({_scalar_kind(item) for item in value}) > 1:
            return "array_not_homogeneous"
        for item in value:
            if _scalar_kind(item) == "other":
                return "array_of_objects"
            problem = value_problem(item)
            if problem:
                return problem
        return None
    kind = _scalar_kind(value)
    if kind == "other":
        return "object_value" if isinstance(value, dict) else "null_value"
    if kind == "string" and len(value) > MAX_VALUE_LENGTH:  # type: ignore[arg-type]
        return "value_too_long"
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        return "invalid_number"
    return None


def _scalar_kind(value: JsonValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


class CustomerElement(BaseModel):
    """One user in a bulk request: `{"type": "customer", "customer_id", "attributes", "update_existing_only"?}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["customer"] = "customer"
    customer_id: str
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    update_existing_only: bool | None = None

    @field_validator("customer_id")
    @classmethod
    def _customer_id_accepted(cls, value: str) -> str:
        if is_blocked_customer_id(value):
            raise ValueError("customer_id is a value MoEngage rejects")
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes_accepted(cls, attributes: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for name, value in attributes.items():
            if name in ARRAY_OPERATORS:
                continue
            _check_attribute(name, value)
        modified: dict[str, set[str]] = {}
        for operator in ARRAY_OPERATORS:
            fields = attributes.get(operator)
            if fields is None:
                continue
            if not isinstance(fields, dict):
                raise ValueError(f"{operator} must be an object")
            for name, values in fields.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"{operator}.{name} must be a non-empty array")
                _check_attribute(name, values)
                if name in attributes:
                    raise ValueError(f"attribute {name!r} is both set and modified")
                modified.setdefault(name, set()).add(operator)
        if any(len(operators) > 1 for operators in modified.values()):
            raise ValueError("one element adds to and removes from the same attribute")
        return attributes


def _check_attribute(name: str, value: JsonValue) -> None:
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError("attribute name is empty or too long")
    if is_forbidden_attribute_name(name):
        raise ValueError(f"attribute name {name!r} is reserved by MoEngage")
    problem = value_problem(value)
    if problem:
        raise ValueError(f"attribute {name!r}: {problem}")


class EventAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1)
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    current_time: str | None = None  # ISO-8601 UTC; MoEngage fills it in when absent


class EventElement(BaseModel):
    """One user's events in a bulk request: `{"type": "event", "customer_id", "actions": [...]}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["event"] = "event"
    customer_id: str
    actions: list[EventAction] = Field(min_length=1)

    @field_validator("customer_id")
    @classmethod
    def _customer_id_accepted(cls, value: str) -> str:
        return CustomerElement._customer_id_accepted(value)


class BulkRequest(BaseModel):
    """`POST /v1/transition/{workspace_id}` body."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["transition"] = "transition"
    elements: list[CustomerElement | EventElement] = Field(min_length=1)


class MoEngageErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    message: str | None = None
    attribute: str | None = None


class MoEngageErrorBody(BaseModel):
    """`{"status": "fail", "error": {"type", "message", ...}}`; some endpoints use `{"title", "description"}`."""

    model_config = ConfigDict(extra="ignore")

    status: str | None = None
    error: MoEngageErrorDetail | None = None
    title: str | None = None
    description: str | None = None
    type: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _fill_error(self) -> MoEngageErrorBody:
        if self.error is None:
            self.error = MoEngageErrorDetail(
                type=self.type or self.title, message=self.message or self.description, attribute=None
            )
        return self
