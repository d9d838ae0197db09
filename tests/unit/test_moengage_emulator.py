"""The MoEngage emulator answers like MoEngage's Data API (reference/moengage.md, samples/moengage/)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from devstack.moengage_emulator import MoEngageEmulator

WS = "LOCALWS"
KEY = "local-key"
SUCCESS_MESSAGE = "Your request has been accepted and will be processed soon."


@pytest.fixture
def emulator() -> Iterator[MoEngageEmulator]:
    emu = MoEngageEmulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def api(emulator: MoEngageEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = (WS, KEY)
    yield session
    session.close()


def post(api: requests.Session, emulator: MoEngageEmulator, endpoint: str, body: Any) -> requests.Response:
    return api.post(f"{emulator.base_url}/v1/{endpoint}/{WS}", json=body, timeout=5)


def customer(customer_id: Any, **attributes: Any) -> dict[str, Any]:
    return {"type": "customer", "customer_id": customer_id, "attributes": attributes}


def event(customer_id: str, *names: str, **extra: Any) -> dict[str, Any]:
    return {"type": "event", "customer_id": customer_id, "actions": [{"action": n, **extra} for n in names]}


def bulk(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "transition", "elements": list(elements)}


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    for part in (body, body.get("error", {})):
        part.pop("request_id", None)
    return body


# Bodies from reference/samples/moengage/ (MoEngage's OpenAPI, api/data/data.yaml), request_id left out.
SAMPLES: dict[str, dict[str, Any]] = {
    "401_missing_header": {"message": "Authentication Header Required", "type": "Authentication required"},
    "401_bad_key": {
        "message": "App Secret key mismatch. Please login to the dashboard to verify key",
        "type": "Authentication required",
    },
    "400_missing_customer_id": {
        "attribute": "customer_id",
        "message": "customer_id is not found in the payload",
        "type": "MissingAttributeError",
    },
    "400_empty_customer_id": {
        "attribute": "customer_id",
        "message": "customer_id can not be empty Unicode String",
        "type": "MissingAttributeError",
    },
    "400_array_field_error": {
        "attribute": "addValueToArrayField",
        "message": "Cannot add and remove 'first_name' at the same time",
        "type": "ArrayFieldError",
    },
    "429_rate_limit": {"message": "Rate limit exceeded", "type": "RateLimitError"},
    "500_server_error": {"message": "Internal Server Error", "type": "ServerError"},
    "event_429": {
        "message": "Rate limits for customers exceeded. Please Try After Some Time",
        "type": "Rate Limits Exceeded",
    },
    "event_400_empty_actions": {
        "attribute": "actions",
        "message": "actions can not be empty Array",
        "type": "MissingAttributeError",
    },
    "empty_elements": {
        "attribute": "elements",
        "message": "'elements cannot be empty array",
        "type": "MissingAttributeError",
    },
    "invalid_type": {
        "attribute": "type",
        "message": "'type in elements should be customer/event/device",
        "type": "AttributeError",
    },
}
TRACK_USER_BASIC: dict[str, Any] = {
    "type": "customer",
    "customer_id": "john@example.com",
    "attributes": {"name": "JohnDoe", "first_name": "John", "platforms": [{"platform": "ANDROID", "active": "true"}]},
}
TRACK_USER_UPDATE_EXISTING_ONLY: dict[str, Any] = {
    "type": "customer",
    "customer_id": "john@example.com",
    "update_existing_only": True,
    "attributes": {
        "points": 20,
        "expiry_date": "2020-05-31T03:47:35Z",
        "super_user": True,
        "user_persona": "browsers",
        "platforms": [{"platform": "ANDROID", "active": "true"}],
    },
}
TRACK_USER_ARRAY_OPS: dict[str, Any] = {
    "type": "customer",
    "customer_id": "123",
    "attributes": {
        "removeValueFromArrayField": {},
        "addValueToArrayField": {"attribute1": ["abc", "def"], "attribute2": ["a"], "attribute3": ["123"]},
        "platforms": [{"platform": "iOS", "active": "true"}],
    },
}
TRACK_EVENT: dict[str, Any] = {
    "type": "event",
    "customer_id": "john@example.com",
    "actions": [
        {
            "action": "Flight Booked",
            "attributes": {"price": 3999, "departure_date": "2019-05-21T03:47:35Z", "premium_seat": True},
            "platform": "iOS",
            "app_version": "1.2.3",
            "current_time": 1433837969,
            "user_timezone_offset": 19800,
        }
    ],
}
BULK: dict[str, Any] = {
    "type": "transition",
    "elements": [
        {
            "type": "customer",
            "customer_id": "john@example.com",
            "attributes": {"name": "John", "platforms": [{"platform": "ANDROID", "active": "true"}]},
        },
        {
            "type": "event",
            "customer_id": "john@example.com",
            "device_id": "96bd03b6-defc-4203-83d3-dc1c73080232",
            "actions": [
                {
                    "action": "Added to Cart",
                    "attributes": {"product": "Mobile", "color": "white", "Brand": "Apple"},
                    "platform": "iOS",
                    "app_version": "1.2.3",
                    "current_time": "2020-05-31T16:33:35Z",
                    "user_timezone_offset": 19800,
                },
                {
                    "action": "Purchase",
                    "attributes": {"product": "MacBook Air", "Brand": "Apple"},
                    "platform": "iOS",
                    "app_version": "1.2.3",
                    "current_time": 1590404615,
                    "user_timezone_offset": 19800,
                },
            ],
        },
    ],
}


def fail(key: str) -> dict[str, Any]:
    """The documented error body for `key`, without its random request_id."""
    return {"status": "fail", "error": SAMPLES[key]}


# ------------------------------------------------------------------------------------------------ auth


def test_valid_credentials_get_moengage_success_body(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a started emulator and the workspace's credentials
    # When a user is tracked
    response = post(api, emulator, "customer", customer("john@example.com", name="John"))

    # Then MoEngage's success body comes back with an 8-letter request id and the rate-limit headers
    assert response.status_code == 200
    body = response.json()
    assert without_request_id(body) == {"status": "success", "message": SUCCESS_MESSAGE}
    assert len(body["request_id"]) == 8 and body["request_id"].isalpha()
    assert response.headers["x-ratelimit-limit"] == "60000"
    assert response.headers["x-ratelimit-remaining"] == "59999"
    assert response.headers["x-ratelimit-reset"] == "60"
    assert emulator.user("john@example.com") == {"name": "John"}


@pytest.mark.parametrize(
    ("auth", "sample_key"),
    [
        (None, "401_missing_header"),
        ((WS, "wrong-key"), "401_bad_key"),
        (("OTHERWS", KEY), "401_bad_key"),
    ],
)
def test_missing_or_bad_credentials_get_401_like_moengage(
    emulator: MoEngageEmulator, auth: tuple[str, str] | None, sample_key: str
) -> None:
    # Given a request without credentials or with wrong ones
    # When it reaches the Data API
    response = requests.post(f"{emulator.base_url}/v1/customer/{WS}", json=customer("u1"), auth=auth, timeout=5)

    # Then it is refused with the documented body, and nothing is stored
    assert response.status_code == 401
    assert without_request_id(response.json()) == fail(sample_key)
    assert emulator.user("u1") is None


def test_non_basic_authorization_counts_as_missing(emulator: MoEngageEmulator) -> None:
    # Given a bearer token instead of Basic auth
    response = requests.post(
        f"{emulator.base_url}/v1/customer/{WS}",
        json=customer("u1"),
        headers={"Authorization": "Bearer local-key"},
        timeout=5,
    )

    # Then MoEngage asks for its authentication header
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Authentication Header Required"


def test_rotated_key_refuses_the_old_one(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given the Data API key is regenerated
    emulator.rotate_key("new-key")

    # When the old and the new key are used
    old = post(api, emulator, "customer", customer("u1"))
    api.auth = (WS, "new-key")
    new = post(api, emulator, "customer", customer("u1"))

    # Then only the new key is accepted
    assert old.status_code == 401
    assert old.json()["error"]["message"].startswith("App Secret key mismatch")
    assert new.status_code == 200


def test_workspace_in_path_must_match_the_credentials(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # When valid credentials post to another workspace's path
    response = api.post(f"{emulator.base_url}/v1/customer/OTHERWS", json=customer("u1"), timeout=5)

    # Then MoEngage's app-key mismatch answer comes back
    assert response.status_code == 409
    assert response.json()["error"]["message"] == "App key mismatch in params and authentication."


def test_moe_appkey_header_must_match_the_username(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a MOE-APPKEY header for another workspace
    url = f"{emulator.base_url}/v1/customer/{WS}"
    wrong = api.post(url, json=customer("u1"), headers={"MOE-APPKEY": "OTHER"}, timeout=5)
    right = api.post(url, json=customer("u1"), headers={"MOE-APPKEY": WS}, timeout=5)

    # Then only a matching header is accepted
    assert wrong.status_code == 401
    assert right.status_code == 200


# -------------------------------------------------------------------------------------- transport rules


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_gets_415(
    emulator: MoEngageEmulator, api: requests.Session, content_type: str | None
) -> None:
    # Given a JSON body sent without the JSON content type
    headers = {"Content-Type": content_type} if content_type else {}

    # When it is posted
    response = api.post(
        f"{emulator.base_url}/v1/customer/{WS}", data=json.dumps(customer("u1")).encode(), headers=headers, timeout=5
    )

    # Then it is refused as an unsupported media type
    assert response.status_code == 415
    assert response.json()["error"]["type"] == "MediaTypeError"


def test_json_content_type_with_charset_is_accepted(emulator: MoEngageEmulator, api: requests.Session) -> None:
    response = api.post(
        f"{emulator.base_url}/v1/customer/{WS}",
        data=json.dumps(customer("u1")).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert response.status_code == 200


def _padded(body: dict[str, Any], size: int) -> bytes:
    """`body` serialized to exactly `size` bytes, padded with a dummy attribute."""
    body = json.loads(json.dumps(body))
    target = body["elements"][0] if "elements" in body else body
    target.setdefault("attributes", {})["pad"] = ""
    base = len(json.dumps(body).encode())
    target["attributes"]["pad"] = "x" * (size - base)
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


@pytest.mark.parametrize(
    ("endpoint", "body", "size", "status"),
    [
        ("customer", customer("u1"), 131_072, 200),
        ("customer", customer("u1"), 131_073, 413),
        ("transition", bulk(customer("u1")), 102_400, 200),
        ("transition", bulk(customer("u1")), 102_401, 413),
        ("transition", bulk(customer("u1")), 131_073, 413),
        ("event", event("u1", "Bought"), 131_073, 413),
    ],
)
def test_body_size_limits(
    emulator: MoEngageEmulator, api: requests.Session, endpoint: str, body: dict[str, Any], size: int, status: int
) -> None:
    # Given a body of an exact size (128 KB on every endpoint, 100 KB on the bulk one)
    data = _padded(body, size)

    # When it is posted
    response = api.post(
        f"{emulator.base_url}/v1/{endpoint}/{WS}", data=data, headers={"Content-Type": "application/json"}, timeout=5
    )

    # Then only bodies within the limit are accepted
    assert response.status_code == status
    if status == 413:
        assert response.json()["error"]["type"] == "PayloadTooLarge"
        assert emulator.user("u1") is None


@pytest.mark.parametrize("data", [b"{not json", b"", b"[1, 2]", b'"customer"', '{"a": "\xff"}'.encode("latin-1")])
def test_malformed_json_gets_400(emulator: MoEngageEmulator, api: requests.Session, data: bytes) -> None:
    # When a body that is not a JSON object is posted
    response = api.post(
        f"{emulator.base_url}/v1/transition/{WS}", data=data, headers={"Content-Type": "application/json"}, timeout=5
    )

    # Then it is a 400 in MoEngage's error envelope, logged with a null body
    assert response.status_code == 400
    assert response.json()["status"] == "fail"
    assert emulator.requests_log()[-1]["status"] == 400


def test_unknown_path_and_wrong_method(emulator: MoEngageEmulator, api: requests.Session) -> None:
    assert api.post(f"{emulator.base_url}/v1/unknown/{WS}", json={}, timeout=5).status_code == 404
    assert api.get(f"{emulator.base_url}/v1/customer/{WS}", timeout=5).status_code == 405


def test_garbled_request_gets_500_and_the_server_keeps_serving(emulator: MoEngageEmulator) -> None:
    # Given a request whose Content-Length is not a number
    host, port = emulator.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/customer/LOCALWS HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        # When it is read, Then the answer is a 500 and the connection is closed
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 500")
    # And the server still answers
    assert requests.get(f"{emulator.base_url}/_emulator/health", timeout=5).status_code == 200


def test_chunked_request_body_is_read(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a body sent with chunked transfer encoding (a generator makes requests stream it)
    data = json.dumps(customer("chunky", a=1)).encode()
    chunks = (data[i : i + 7] for i in range(0, len(data), 7))

    # When it is posted
    response = api.post(
        f"{emulator.base_url}/v1/customer/{WS}", data=chunks, headers={"Content-Type": "application/json"}, timeout=5
    )

    # Then it is read whole
    assert response.status_code == 200
    assert emulator.user("chunky") == {"a": 1}


# ------------------------------------------------------------------------------------------ Track User


def test_customer_attributes_merge_and_arrays_change_incrementally(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # Given a user with attributes and an audience array
    post(
        api,
        emulator,
        "customer",
        customer("u1", name="John", city="Paris", addValueToArrayField={"AEPSegments": ["a", "b"]}),
    )

    # When later updates overwrite one attribute, add audiences (one already present) and remove one
    post(api, emulator, "customer", customer("u1", city="Lyon", addValueToArrayField={"AEPSegments": ["b", "c", "c"]}))
    post(api, emulator, "customer", customer("u1", removeValueFromArrayField={"AEPSegments": ["a", "zzz"]}))

    # Then attributes are merged and the array holds each value once, in arrival order
    assert emulator.user("u1") == {"name": "John", "city": "Lyon", "AEPSegments": ["b", "c"]}
    shown = requests.get(f"{emulator.base_url}/_emulator/users/u1", timeout=5)
    assert shown.json() == {"customer_id": "u1", "attributes": emulator.user("u1")}


def test_remove_from_unknown_array_and_add_to_scalar(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a user whose "tags" is a plain string
    post(api, emulator, "customer", customer("u1", tags="one"))

    # When values are removed from a missing array and added to the non-array attribute
    post(api, emulator, "customer", customer("u1", removeValueFromArrayField={"segs": ["x"]}))
    post(api, emulator, "customer", customer("u1", addValueToArrayField={"tags": ["two"]}))

    # Then both start from an empty array
    assert emulator.user("u1") == {"tags": ["two"], "segs": []}


def test_adding_and_removing_the_same_attribute_is_an_array_field_error(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # When one element adds to and removes from the same array
    body = customer("u1", addValueToArrayField={"first_name": ["a"]}, removeValueFromArrayField={"first_name": ["b"]})
    response = post(api, emulator, "customer", body)

    # Then MoEngage's documented ArrayFieldError comes back and nothing is applied
    assert response.status_code == 400
    assert without_request_id(response.json()) == fail("400_array_field_error")
    assert emulator.user("u1") is None


def test_setting_and_modifying_the_same_attribute_is_an_array_field_error(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    response = post(api, emulator, "customer", customer("u1", segs=["a"], addValueToArrayField={"segs": ["b"]}))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "ArrayFieldError"
    assert response.json()["error"]["message"] == "Cannot set and modify 'segs' at the same time"


@pytest.mark.parametrize(
    ("body", "sample_key"),
    [
        ({"type": "customer", "attributes": {"a": 1}}, "400_missing_customer_id"),
        ({"type": "customer", "customer_id": "", "attributes": {}}, "400_empty_customer_id"),
        ({"type": "customer", "customer_id": "   ", "attributes": {}}, "400_empty_customer_id"),
    ],
)
def test_missing_or_empty_customer_id_gets_documented_400(
    emulator: MoEngageEmulator, api: requests.Session, body: dict[str, Any], sample_key: str
) -> None:
    response = post(api, emulator, "customer", body)
    assert response.status_code == 400
    assert without_request_id(response.json()) == fail(sample_key)


BLOCKED_IDS = [
    "unknown", "Guest", "NULL", "0", "1", "true", "False", "user_attribute_unique_id", '""', "na", "N/A", "''",
    "dummy_seller_code", "user_id", "id", "customer_id", "uid", "UserID", "none", "-2", "-1", "2", " null ", 0, 1,
]  # fmt: skip


@pytest.mark.parametrize("customer_id", BLOCKED_IDS)
def test_blocked_customer_ids_are_refused(
    emulator: MoEngageEmulator, api: requests.Session, customer_id: str | int
) -> None:
    # When a blocked customer_id is tracked
    response = post(api, emulator, "customer", customer(customer_id, a=1))

    # Then the request is refused and no such user exists
    assert response.status_code == 400
    assert response.json()["error"]["attribute"] == "customer_id"
    assert emulator.user(str(customer_id)) is None


@pytest.mark.parametrize("customer_id", ["3", "nullable", "guest42", "u-1"])
def test_ids_that_only_resemble_blocked_ones_are_accepted(
    emulator: MoEngageEmulator, api: requests.Session, customer_id: str
) -> None:
    assert post(api, emulator, "customer", customer(customer_id, a=1)).status_code == 200
    assert emulator.user(customer_id) == {"a": 1}


@pytest.mark.parametrize("type_", ["Customer", "CUSTOMER", "event", None])
def test_customer_type_must_be_exactly_lowercase(
    emulator: MoEngageEmulator, api: requests.Session, type_: str | None
) -> None:
    response = post(api, emulator, "customer", {"type": type_, "customer_id": "u1", "attributes": {"a": 1}})
    assert response.status_code == 400
    assert emulator.user("u1") is None


def test_documented_track_user_samples_are_accepted(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given MoEngage's own Track User examples
    for body in (TRACK_USER_BASIC, TRACK_USER_UPDATE_EXISTING_ONLY, TRACK_USER_ARRAY_OPS):
        # When each is posted, Then it is accepted
        assert post(api, emulator, "customer", body).status_code == 200

    assert emulator.user("john@example.com") == {
        "name": "JohnDoe",
        "first_name": "John",
        "points": 20,
        "expiry_date": "2020-05-31T03:47:35Z",
        "super_user": True,
        "user_persona": "browsers",
        "platforms": [{"platform": "ANDROID", "active": "true"}],
    }
    assert emulator.user("123") == {
        "attribute1": ["abc", "def"],
        "attribute2": ["a"],
        "attribute3": ["123"],
        "platforms": [{"platform": "iOS", "active": "true"}],
    }


def test_single_api_soft_rules_answer_200_and_drop(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # When a user with a reserved attribute name is tracked through /v1/customer
    response = post(api, emulator, "customer", customer("u1", status="gold"))

    # Then MoEngage accepts the request but drops the element later
    assert response.status_code == 200
    assert emulator.user("u1") is None
    assert emulator.dropped()[0]["reason"] == "attribute name 'status' is reserved"


# ------------------------------------------------------------------------------------------------- bulk


def test_bulk_with_one_bad_element_among_50_applies_the_other_49(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # Given 50 customer elements, the 17th with a blocked customer_id
    elements = [customer(f"user-{i}", n=i) for i in range(50)]
    elements[17] = customer("null", n=17)

    # When they are sent in one bulk request
    response = post(api, emulator, "transition", bulk(*elements))

    # Then MoEngage answers 200, applies 49 and silently drops the bad one
    assert response.status_code == 200
    assert response.json()["status"] == "success"
    assert all(emulator.user(f"user-{i}") == {"n": i} for i in range(50) if i != 17)
    assert emulator.user("null") is None
    dropped = emulator.dropped()
    assert len(dropped) == 1
    assert dropped[0]["element"] == customer("null", n=17)
    assert "blacklisted" in dropped[0]["reason"]
    listed = requests.get(f"{emulator.base_url}/_emulator/dropped", timeout=5).json()
    assert listed == {"dropped": dropped}


@pytest.mark.parametrize(
    ("element", "reason_part"),
    [
        (customer("u1", id="x"), "'id' is reserved"),
        (customer("u1", _id="x"), "'_id' is reserved"),
        (customer("u1", **{"": "x"}), "'' is reserved"),
        (customer("u1", status="x"), "'status' is reserved"),
        (customer("u1", source="x"), "'source' is reserved"),
        (customer("u1", user_id="x"), "'user_id' is reserved"),
        (customer("u1", moe_custom="x"), "moe_ prefix"),
        (customer("u1", addValueToArrayField={"moe_segs": ["a"]}), "moe_ prefix"),
        (customer("u1", tags=["a", 1]), "not homogeneous"),
        (customer("u1", flags=[True, 1]), "not homogeneous"),
        (customer("u1", addValueToArrayField={"tags": ["a", 2]}), "not homogeneous"),
        (customer("u1", tags=[str(i) for i in range(51)]), "51 items"),
        (customer("u1", link="https://example.com/" + "p" * 600), "URL longer than 512"),
        ({"type": "customer", "attributes": {"a": 1}}, "customer_id is not found"),
        (customer("", a=1), "can not be empty"),
        (customer("u1", a=1) | {"type": "Customer"}, "not lowercase"),
        (event("u1", "Bought", current_time=int(time.time()) + 86_400), "in the future"),
        (event("u1", "Bought", current_time=str(int(time.time() * 1000) + 86_400_000)), "in the future"),
        (event("u1", "Bought", current_time="2999-01-01T00:00:00Z"), "in the future"),
        ({"type": "event", "customer_id": "u1", "actions": []}, "actions can not be empty"),
        ({"type": "event", "customer_id": "u1", "actions": [{"attributes": {}}]}, "action is not found"),
        (
            {"type": "customer", "customer_id": "u1", "update_existing_only": True, "attributes": {"a": 1}},
            "not created",
        ),
        (customer("u1", addValueToArrayField={"a": ["x"]}, removeValueFromArrayField={"a": ["y"]}), "add and remove"),
    ],
)
def test_bulk_drops_invalid_elements_silently(
    emulator: MoEngageEmulator, api: requests.Session, element: dict[str, Any], reason_part: str
) -> None:
    # Given a bad element next to a good one
    # When they are sent in bulk
    response = post(api, emulator, "transition", bulk(element, customer("good", a=1)))

    # Then the request is accepted, the good element applied and the bad one dropped with its reason
    assert response.status_code == 200
    assert emulator.user("good") == {"a": 1}
    assert emulator.user("u1") is None
    (dropped,) = emulator.dropped()
    assert dropped["element"] == element
    assert reason_part in dropped["reason"]


def test_documented_moe_system_attributes_are_allowed(emulator: MoEngageEmulator, api: requests.Session) -> None:
    attributes = {"moe_unsubscribe": False, "moe_email_optin_status": "OPTED_OUT", "moe_gaid": "g-1"}
    assert post(api, emulator, "transition", bulk(customer("u1", **attributes))).status_code == 200
    assert emulator.user("u1") == attributes
    assert emulator.dropped() == []


def test_long_strings_are_stored_truncated_and_reported(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given attribute values longer than 512 characters
    long = "é" * 600
    response = post(api, emulator, "transition", bulk(customer("u1", bio=long, tags=[long, "ok"])))

    # Then they are stored cut to 512 characters and reported as truncated
    assert response.status_code == 200
    assert emulator.user("u1") == {"bio": "é" * 512, "tags": ["é" * 512, "ok"]}
    reasons = [d["reason"] for d in emulator.dropped()]
    assert reasons == [
        "truncated: attribute 'bio' cut to 512 characters",
        "truncated: attribute 'tags' cut to 512 characters",
    ]
    # And the request log keeps the body as it was sent
    assert emulator.requests_log()[0]["body"]["elements"][0]["attributes"]["bio"] == long


def test_array_growing_beyond_50_items_is_dropped(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a user already in 50 audiences
    post(api, emulator, "customer", customer("u1", addValueToArrayField={"AEPSegments": [f"s{i}" for i in range(50)]}))

    # When one more is added
    response = post(api, emulator, "transition", bulk(customer("u1", addValueToArrayField={"AEPSegments": ["s50"]})))

    # Then MoEngage accepts the request but the element is dropped
    assert response.status_code == 200
    assert len(emulator.user("u1")["AEPSegments"]) == 50  # type: ignore[index]
    assert "51 items" in emulator.dropped()[0]["reason"]


def test_update_existing_only_updates_known_users(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given an existing user, created earlier in the same batch
    update = {"type": "customer", "customer_id": "u1", "update_existing_only": True, "attributes": {"b": 2}}

    # When update_existing_only elements arrive for it
    post(api, emulator, "transition", bulk(customer("u1", a=1), update))

    # Then they are applied
    assert emulator.user("u1") == {"a": 1, "b": 2}
    assert emulator.dropped() == []


@pytest.mark.parametrize(
    ("body", "sample_key"),
    [
        ({"type": "transition", "elements": []}, "empty_elements"),
        ({"type": "transition", "elements": [{"type": "profile", "customer_id": "u1"}]}, "invalid_type"),
        ({"type": "transition", "elements": [customer("u1"), "not an object"]}, "invalid_type"),
        ({"type": "transition", "elements": [{"customer_id": "u1"}]}, "invalid_type"),
    ],
)
def test_bulk_structure_errors_get_documented_400(
    emulator: MoEngageEmulator, api: requests.Session, body: dict[str, Any], sample_key: str
) -> None:
    response = post(api, emulator, "transition", body)
    assert response.status_code == 400
    assert without_request_id(response.json()) == fail(sample_key)
    assert emulator.user("u1") is None


@pytest.mark.parametrize(
    "body", [{"elements": [customer("u1")]}, {"type": "transition"}, {"type": "transition", "elements": {}}]
)
def test_bulk_without_transition_type_or_elements_gets_400(
    emulator: MoEngageEmulator, api: requests.Session, body: dict[str, Any]
) -> None:
    assert post(api, emulator, "transition", body).status_code == 400


def test_documented_bulk_sample_applies_users_and_events(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given MoEngage's own bulk example (one user, two events) plus a device element
    body = json.loads(json.dumps(BULK))
    body["elements"].append({"type": "device", "customer_id": "john@example.com", "device_id": "d-1", "attributes": {}})

    # When it is posted
    response = post(api, emulator, "transition", body)

    # Then the user and the events are stored
    assert response.status_code == 200
    assert emulator.user("john@example.com") == body["elements"][0]["attributes"]
    events = requests.get(f"{emulator.base_url}/_emulator/events/{quote('john@example.com')}", timeout=5).json()
    assert events["customer_id"] == "john@example.com"
    assert [e["action"] for e in events["events"]] == ["Added to Cart", "Purchase"]
    assert emulator.dropped() == []


# ----------------------------------------------------------------------------------------------- events


def test_track_event_stores_actions_per_user(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given MoEngage's documented Track Event example
    body = TRACK_EVENT

    # When it is posted twice
    post(api, emulator, "event", body)
    response = post(api, emulator, "event", body)

    # Then both events are kept for that user, who now exists
    assert response.status_code == 200
    events = requests.get(f"{emulator.base_url}/_emulator/events/john@example.com", timeout=5).json()
    assert events == {"customer_id": "john@example.com", "events": body["actions"] * 2}
    assert emulator.events("john@example.com") == body["actions"] * 2
    assert emulator.user("john@example.com") == {}


def test_track_event_validation(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # When the event body has no actions
    response = post(api, emulator, "event", {"type": "event", "customer_id": "u1", "actions": []})

    # Then MoEngage's documented 400 comes back
    assert response.status_code == 400
    assert without_request_id(response.json()) == fail("event_400_empty_actions")
    assert post(api, emulator, "event", event("null", "Bought")).status_code == 400
    assert (
        post(api, emulator, "event", {"type": "Event", "customer_id": "u1", "actions": [{"action": "x"}]}).status_code
        == 400
    )


def test_future_event_on_track_event_is_accepted_then_dropped(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # When an event dated tomorrow is tracked
    response = post(api, emulator, "event", event("u1", "Bought", current_time=int(time.time()) + 86_400))

    # Then MoEngage accepts the request but never stores the event
    assert response.status_code == 200
    assert emulator.events("u1") is None
    assert "in the future" in emulator.dropped()[0]["reason"]


def test_unknown_user_has_no_events(emulator: MoEngageEmulator) -> None:
    response = requests.get(f"{emulator.base_url}/_emulator/events/nobody", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert emulator.events("nobody") is None


# ------------------------------------------------------------------------------------------ rate limit


def test_rate_limit_429_headers_and_window_reset(api: requests.Session) -> None:
    # Given a workspace allowed 2 users per (short) window
    with MoEngageEmulator(users_per_minute=2, window_seconds=0.6) as emulator:
        # When three users are tracked
        first = post(api, emulator, "customer", customer("u1"))
        second = post(api, emulator, "customer", customer("u2"))
        third = post(api, emulator, "customer", customer("u3"))

        # Then the third is refused with MoEngage's body and headers, and not applied
        assert [first.headers["x-ratelimit-remaining"], second.headers["x-ratelimit-remaining"]] == ["1", "0"]
        assert third.status_code == 429
        assert without_request_id(third.json()) == fail("429_rate_limit")
        assert third.headers["x-ratelimit-limit"] == "2"
        assert third.headers["x-ratelimit-remaining"] == "0"
        assert third.headers["x-ratelimit-reset"] == "1"
        assert "Retry-After" not in third.headers
        assert emulator.user("u3") is None

        # And once the window has passed, it is accepted
        time.sleep(0.7)
        again = post(api, emulator, "customer", customer("u3"))
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining"] == "1"
        assert emulator.user("u3") == {}


def test_bulk_counts_users_and_event_actions_and_429_applies_nothing(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # Given 3 users and 3 events per window
    emulator.set_rate_limit(3, 3, window_seconds=30)

    # When a bulk request holds 2 users and 2 events, then another one holds 1 user and 2 more events
    ok = post(api, emulator, "transition", bulk(customer("a"), customer("b"), event("a", "x", "y")))
    too_many = post(api, emulator, "transition", bulk(customer("c"), event("c", "x", "y")))

    # Then the second exceeds the event budget: 429 on the events dimension, nothing of it applied
    assert ok.status_code == 200
    assert too_many.status_code == 429
    assert too_many.headers["x-ratelimit-limit"] == "3"
    assert too_many.headers["x-ratelimit-remaining"] == "1"
    assert int(too_many.headers["x-ratelimit-reset"]) in range(29, 31)
    assert emulator.user("c") is None
    # And a request that fits the remaining budget still passes
    assert post(api, emulator, "transition", bulk(customer("c"), event("c", "x"))).status_code == 200


def test_event_endpoint_429_uses_its_documented_body(emulator: MoEngageEmulator, api: requests.Session) -> None:
    emulator.set_rate_limit(None, 1)
    assert post(api, emulator, "event", event("u1", "x")).status_code == 200
    response = post(api, emulator, "event", event("u1", "x"))
    assert response.status_code == 429
    assert without_request_id(response.json()) == fail("event_429")


def test_unlimited_rate_limit_sends_no_headers(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given no limits at all (set over HTTP)
    answer = requests.post(
        f"{emulator.base_url}/_emulator/rate_limit",
        json={"users_per_minute": None, "events_per_minute": None},
        timeout=5,
    )
    assert answer.status_code == 200

    # When many users are tracked, Then none is refused and no rate-limit headers are sent
    responses = [post(api, emulator, "customer", customer(f"u{i}")) for i in range(20)]
    assert {r.status_code for r in responses} == {200}
    assert "x-ratelimit-limit" not in responses[0].headers


def test_rate_limit_set_over_http(emulator: MoEngageEmulator, api: requests.Session) -> None:
    requests.post(f"{emulator.base_url}/_emulator/rate_limit", json={"users_per_minute": 1}, timeout=5)
    assert post(api, emulator, "customer", customer("u1")).status_code == 200
    assert post(api, emulator, "customer", customer("u2")).status_code == 429


def test_invalid_control_requests_get_400(emulator: MoEngageEmulator) -> None:
    base = emulator.base_url
    assert requests.post(f"{base}/_emulator/rate_limit", json={"users_per_minute": -1}, timeout=5).status_code == 400
    assert requests.post(f"{base}/_emulator/faults", json={"status": 500, "rate": 2}, timeout=5).status_code == 400
    assert (
        requests.post(f"{base}/_emulator/faults", json={"status": 500, "reset_header": "x"}, timeout=5).status_code
        == 400
    )
    assert requests.post(f"{base}/_emulator/down", json={"down": "yes"}, timeout=5).status_code == 400
    assert requests.post(f"{base}/_emulator/faults", data=b"{", timeout=5).status_code == 400
    assert requests.post(f"{base}/_emulator/unknown", json={}, timeout=5).status_code == 404
    with pytest.raises(ValueError, match="unknown fault options"):
        emulator.set_faults(500, 1.0, colour="red")


# ---------------------------------------------------------------------------------------------- faults


def test_fault_at_rate_1_answers_the_status_and_applies_nothing(
    emulator: MoEngageEmulator, api: requests.Session
) -> None:
    # Given every Data API request fails with 500 (set over HTTP)
    requests.post(f"{emulator.base_url}/_emulator/faults", json={"status": 500, "rate": 1.0}, timeout=5)

    # When users are tracked
    responses = [post(api, emulator, "transition", bulk(customer(f"u{i}"))) for i in range(5)]

    # Then all fail like MoEngage's 500, nothing is stored, and the requests are logged with their status
    assert {r.status_code for r in responses} == {500}
    assert without_request_id(responses[0].json()) == fail("500_server_error")
    assert emulator.user("u0") is None
    assert [r["status"] for r in emulator.requests_log()] == [500] * 5
    # And the inspection endpoints are not affected
    assert requests.get(f"{emulator.base_url}/_emulator/requests", timeout=5).status_code == 200


def test_fault_at_rate_0_or_null_status_clears(emulator: MoEngageEmulator, api: requests.Session) -> None:
    emulator.set_faults(503, 1.0)
    assert post(api, emulator, "customer", customer("u1")).status_code == 503
    emulator.set_faults(503, 0)
    assert post(api, emulator, "customer", customer("u1")).status_code == 200
    emulator.set_faults(503, 1.0)
    requests.post(f"{emulator.base_url}/_emulator/faults", json={"status": None}, timeout=5)
    assert post(api, emulator, "customer", customer("u1")).status_code == 200


def test_fault_rate_is_a_probability(emulator: MoEngageEmulator, api: requests.Session) -> None:
    emulator.set_faults(500, 0.5)
    statuses = [post(api, emulator, "customer", customer("u1")).status_code for _ in range(200)]
    assert 40 < statuses.count(500) < 160
    assert set(statuses) == {200, 500}


def test_injected_429_carries_rate_limit_headers(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given injected 429s
    emulator.set_faults(429, 1.0)

    # When a request is made
    response = post(api, emulator, "transition", bulk(customer("u1")))

    # Then it looks like MoEngage's rate limiting: body and x-ratelimit-* headers (reset in seconds)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "RateLimitError"
    assert response.headers["x-ratelimit-limit"] == "60000"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "60"


def test_reset_header_can_be_an_epoch_timestamp(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given the "epoch" reading of x-ratelimit-reset
    requests.post(
        f"{emulator.base_url}/_emulator/faults", json={"status": 429, "rate": 1, "reset_header": "epoch"}, timeout=5
    )

    # When a request is rate limited
    response = post(api, emulator, "customer", customer("u1"))

    # Then the header is an absolute time about a window from now
    assert response.status_code == 429
    assert abs(int(response.headers["x-ratelimit-reset"]) - (time.time() + 60)) <= 2


def test_delay_slows_every_data_api_answer(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given a 300 ms delay and no errors
    emulator.set_faults(None, 0, delay_ms=300)

    # When a request is made
    started = time.monotonic()
    response = post(api, emulator, "customer", customer("u1"))

    # Then it succeeds, late
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    # And a client timeout shorter than the delay fires
    with pytest.raises(requests.Timeout):
        api.post(f"{emulator.base_url}/v1/customer/{WS}", json=customer("u1"), timeout=0.1)


def test_down_drops_connections_until_up(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given the Data API is down
    assert requests.post(f"{emulator.base_url}/_emulator/down", json={"down": True}, timeout=5).json()["down"] is True

    # When a request is made, Then the connection closes without an answer
    with pytest.raises(requests.ConnectionError):
        post(api, emulator, "customer", customer("u1"))
    assert emulator.user("u1") is None
    assert emulator.requests_log()[-1]["status"] is None
    assert requests.get(f"{emulator.base_url}/_emulator/health", timeout=5).json() == {"status": "ok", "down": True}

    # And once it is up again, requests succeed
    requests.post(f"{emulator.base_url}/_emulator/down", json={"down": False}, timeout=5)
    assert post(api, emulator, "customer", customer("u1")).status_code == 200


# -------------------------------------------------------------------------------------- inspection/reset


def test_requests_log_records_every_data_api_request(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given an accepted request, a refused one and a malformed one
    post(api, emulator, "customer", customer("u1", a=1))
    requests.post(f"{emulator.base_url}/v1/event/{WS}", json=event("u1", "x"), timeout=5)
    api.post(f"{emulator.base_url}/v1/transition/{WS}?x=1", data=b"{", headers={"Content-Type": "application/json"})
    requests.get(f"{emulator.base_url}/_emulator/users/u1", timeout=5)

    # When the log is read
    logged = requests.get(f"{emulator.base_url}/_emulator/requests", timeout=5).json()

    # Then it holds the Data API requests only, with method, path, status and parsed body
    assert logged == {
        "requests": [
            {"method": "POST", "path": f"/v1/customer/{WS}", "status": 200, "body": customer("u1", a=1)},
            {"method": "POST", "path": f"/v1/event/{WS}", "status": 401, "body": event("u1", "x")},
            {"method": "POST", "path": f"/v1/transition/{WS}?x=1", "status": 400, "body": None},
        ]
    }
    assert emulator.requests_log() == logged["requests"]


def test_request_log_can_be_bounded(api: requests.Session) -> None:
    with MoEngageEmulator(max_logged_requests=3) as emulator:
        for i in range(5):
            post(api, emulator, "customer", customer(f"u{i}"))
        assert [r["body"]["customer_id"] for r in emulator.requests_log()] == ["u2", "u3", "u4"]


def test_reset_returns_to_the_constructed_state(emulator: MoEngageEmulator, api: requests.Session) -> None:
    # Given users, dropped elements, faults, a rotated key, limits and a down API
    post(api, emulator, "transition", bulk(customer("u1", a=1), customer("null")))
    emulator.set_rate_limit(1)
    emulator.rotate_key("other")
    emulator.set_faults(500, 1.0, delay_ms=10)
    emulator.set_down(True)

    # When the emulator is reset over HTTP
    assert requests.post(f"{emulator.base_url}/_emulator/reset", timeout=5).status_code == 200

    # Then everything is as constructed
    assert emulator.user("u1") is None
    assert emulator.requests_log() == []
    assert emulator.dropped() == []
    assert requests.get(f"{emulator.base_url}/_emulator/users/u1", timeout=5).status_code == 404
    responses = [post(api, emulator, "customer", customer(f"u{i}")) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].headers["x-ratelimit-remaining"] == "59999"


def test_unknown_user_is_404(emulator: MoEngageEmulator) -> None:
    response = requests.get(f"{emulator.base_url}/_emulator/users/nobody", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert emulator.user("nobody") is None


VALUES: dict[str, Any] = {
    "quotes": "He said \"hi\" and 'bye'",
    "markup": "<b>Tom & Jerry</b> &amp; <script>",
    "emoji": "🎉👩‍👩‍👧‍👦🇫🇷",
    "scripts": "Ünïcødé / 日本語 / العربية / עברית / हिन्दी",
    "escapes": "back\\slash\ttab\nnewline\u0000nul",
    "list": ["é", "😀", "<&>"],
}


@pytest.mark.parametrize("customer_id", ["plain", "josé@example.com", "a/b?c=d&e#f", "😀 + space"])
def test_any_script_and_punctuation_is_stored_exactly(
    emulator: MoEngageEmulator, api: requests.Session, customer_id: str
) -> None:
    # When values with quotes, markup, emoji and any script are tracked
    response = post(api, emulator, "customer", customer(customer_id, **VALUES))

    # Then they are stored exactly, read back through Python and through HTTP (URL-encoded id)
    assert response.status_code == 200
    assert emulator.user(customer_id) == VALUES
    shown = requests.get(f"{emulator.base_url}/_emulator/users/{quote(customer_id, safe='')}", timeout=5)
    assert shown.status_code == 200
    assert shown.json() == {"customer_id": customer_id, "attributes": VALUES}
    assert (
        json.dumps(shown.json()["attributes"], ensure_ascii=False).encode()
        == json.dumps(VALUES, ensure_ascii=False).encode()
    )


def test_returned_state_is_a_copy(emulator: MoEngageEmulator, api: requests.Session) -> None:
    post(api, emulator, "customer", customer("u1", tags=["a"]))
    emulator.user("u1")["tags"].append("b")  # type: ignore[index]
    assert emulator.user("u1") == {"tags": ["a"]}


# ------------------------------------------------------------------------------------ concurrency & CLI


def test_concurrent_requests_are_all_applied(emulator: MoEngageEmulator) -> None:
    # Given 10 clients, each adding 5 audiences to the same user over its own keep-alive connection
    def client(n: int) -> None:
        with requests.Session() as session:
            session.auth = (WS, KEY)
            for i in range(5):
                body = customer("shared", addValueToArrayField={"segs": [f"{n}-{i}"]})
                assert post(session, emulator, "customer", body).status_code == 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]

    # When they run at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then no update is lost
    assert len(emulator.requests_log()) == 50
    stored = emulator.user("shared") or {}
    assert sorted(stored["segs"]) == sorted(f"{n}-{i}" for n in range(10) for i in range(5))
    assert emulator.dropped() == []


def test_concurrent_distinct_users_are_all_stored(emulator: MoEngageEmulator) -> None:
    def client(n: int) -> None:
        with requests.Session() as session:
            session.auth = (WS, KEY)
            for i in range(25):
                assert post(session, emulator, "customer", customer(f"{n}-{i}", n=n, i=i)).status_code == 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(emulator.user(f"{n}-{i}") == {"n": n, "i": i} for n in range(16) for i in range(25))


def test_base_url_requires_start_and_start_is_idempotent() -> None:
    emulator = MoEngageEmulator()
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    url = emulator.start()
    assert emulator.start() == url
    assert url.startswith("http://127.0.0.1:")
    emulator.stop()
    emulator.stop()


def test_main_serves_until_sigterm() -> None:
    # Given the emulator started as a program on a free port (MOENGAGE_EMULATOR_PORT=0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOENGAGE_EMULATOR_PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.moengage_emulator", "--users-per-minute", "5"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert process.stdout.readline().strip() == "ready"
        url = banner.split(" on ")[1].split()[0]

        # When it is used
        response = requests.post(f"{url}/v1/customer/{WS}", json=customer("u1"), auth=(WS, KEY), timeout=5)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"

        # Then SIGTERM stops it cleanly
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
