# ruff: noqa: RUF001 - typographic dashes and quotes are part of realistic AEP values
"""Typical AEP profiles, as AEP sends them, and the API Gateway events that carry them.

"Typical" follows AEP's samples (`reference/samples/aep/`): a user id and an ECID, a few person and tenant
attributes, three audiences with names and qualification times; about 1 KB as AEP sends it and about 1 KB as a
MoEngage element (the sizes are measured and reported by the benchmark, not assumed).
"""

from __future__ import annotations

import json
from typing import Any

TOKEN = "bench-token"  # noqa: S105 - the benchmark's own ingest token, in moto only

_NOTES = "Prefers <b>express</b> delivery – “gift wrap” 🎁 & no calls before 10:00; loyalty since 2019 (Göteborg store)"


def _audiences(index: int) -> dict[str, Any]:
    return {
        "ups": {
            f"{n:08x}-9488-4ec3-8d95-fa8338ced49{n}": {
                "lastQualificationTime": f"2026-11-{10 + n:02d}T08:{index % 60:02d}:00Z",
                "status": "realized" if n < 2 else "exited",
                "name": f"Audience number {n} – EU shoppers",
            }
            for n in range(3)
        }
    }


def _identities(index: int) -> dict[str, Any]:
    return {"crmid": [{"id": f"CUST-{index:07d}"}], "ecid": [{"id": f"{index:038d}"}]}


def http_api_profile(index: int) -> dict[str, Any]:
    """One profile as AEP's HTTP API destination sends it: XDM attributes at their paths."""
    return {
        "identityMap": _identities(index),
        "segmentMembership": _audiences(index),
        "person": {"name": {"firstName": "Zoë", "lastName": "Ångström-Löfgren"}, "birthDate": "1985-03-14"},
        "personalEmail": {"address": f"customer.{index:07d}@example.com"},
        "mobilePhone": {"number": f"+46 70 {index:07d}"},
        "homeAddress": {"city": "Göteborg", "countryCode": "SE"},
        "_tenant": {
            "loyalty": {"tier": "gold", "points": 12_345 + index},
            "preferences": {"categories": ["shoes", "bags", "outdoor & travel"]},
            "lastOrder": {"id": f"ORD-{index:010d}", "total": 149.5},
            "notes": _NOTES,
        },
    }


def sdk_profile(index: int) -> dict[str, Any]:
    """One profile of a Destination SDK pass-through template: attributes as `{"value": x}` under AEP-mapped names."""
    values: dict[str, Any] = {
        "first_name": "Zoë",
        "last_name": "Ångström-Löfgren",
        "email": f"customer.{index:07d}@example.com",
        "mobile": f"+46 70 {index:07d}",
        "birth_date": "1985-03-14",
        "city": "Göteborg",
        "country": "SE",
        "loyalty_tier": "gold",
        "loyalty_points": 12_345 + index,
        "preferred_categories": ["shoes", "bags", "outdoor & travel"],
        "last_order_id": f"ORD-{index:010d}",
        "last_order_total": 149.5,
        "notes": _NOTES,
    }
    return {
        "identityMap": _identities(index),
        "segmentMembership": _audiences(index),
        "attributes": {name: {"value": value} for name, value in values.items()} | {"middle_name": {}},
    }


def request_body(profiles: int, *, start: int = 0) -> str:
    """The body AEP posts: one profile object (HTTP API destination) or `{"profiles": [...]}` (Destination SDK)."""
    if profiles == 1:
        return json.dumps(http_api_profile(start), ensure_ascii=False)
    return json.dumps({"profiles": [sdk_profile(start + n) for n in range(profiles)]}, ensure_ascii=False)


def api_gateway_event(body: str, *, request_id: str, token: str = TOKEN) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, like `events/ingest_http_api_profile.json`."""
    return {
        "version": "2.0",
        "routeKey": "POST /v1/profiles",
        "rawPath": "/v1/profiles",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            "user-agent": "Adobe Experience Platform",
            "x-forwarded-for": "192.0.2.10",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "http": {"method": "POST", "path": "/v1/profiles", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10"},
            "requestId": request_id,
            "routeKey": "POST /v1/profiles",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }
