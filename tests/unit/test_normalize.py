"""Normalization of AEP's three body shapes into canonical profiles (pure, no AWS)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from aep_moengage.ingest.normalize import (
    InputShape,
    ProfileError,
    UnrecognizedBodyError,
    normalize_body,
    parse_timestamp,
)
from aep_moengage.models.queue import AudienceStatus
from tests.conftest import AEP_SAMPLES_DIR


def sample(name: str) -> Any:
    return json.loads((AEP_SAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def test_http_api_sample_flattens_xdm_and_keeps_every_identity() -> None:
    # Given the HTTP API destination's sample profile
    result = normalize_body(sample("http_api_destination_sample"))
    # Then it is one http_api profile with XDM paths, all namespaces and ids in order, and named audiences
    assert result.rejected == []
    assert result.count_by_shape() == {InputShape.HTTP_API: 1}
    (profile,) = result.profiles
    assert profile.identities["ecid"] == [
        "14575006536349286404619648085736425115",
        "66478888669296734530114754794777368480",
    ]
    assert profile.identities["crmid"] == ["CUST-000123"]
    assert profile.attributes == {
        "person.birthDate": "1985-03-14",
        "person.name.firstName": "Zoë",
        "person.name.lastName": "Ångström",
        "personalEmail.address": "zoe.angstrom@example.com",
    }
    by_id = {a.audience_id: a for a in profile.audiences}
    assert by_id["5b998cb9-9488-4ec3-8d95-fa8338ced490"].name == "Cart abandoners – 7 days"
    assert by_id["7841ba61-23c1-4bb3-a495-00d3a5fe1e93"].status is AudienceStatus.EXITED
    assert by_id["354e086f-2e11-49a2-9e39-e5d9a76be683"].last_qualification_time == datetime(
        2020, 4, 15, 2, 41, 50, tzinfo=UTC
    )


def test_sdk_pass_through_unwraps_values_and_drops_unset() -> None:
    result = normalize_body(sample("sdk_default_two_profiles"))
    assert result.count_by_shape() == {InputShape.SDK_PROFILES: 2}
    first, second = result.profiles
    assert first.attributes == {"first_name": "Hermione", "last_name": "Granger"}  # birth_date {} is not set
    assert first.identities == {"user_id": ["CUST-000123"], "anonymous_id": ["e86fb215-0921-4537-bc77-969ff775752c"]}
    assert [a.status for a in first.audiences] == [
        AudienceStatus.REALIZED,
        AudienceStatus.REALIZED,
        AudienceStatus.EXITED,
    ]
    assert second.identities == {"anonymous_id": ["47bd00a9-8fc6-434e-a118-0b7f24f1a976"]}
    assert second.attributes["last_name"] == "Müller-Łukasiewicz"


def test_sample_template_output_maps_add_and_remove() -> None:
    result = normalize_body(sample("sdk_sample_template_output_three_profiles"))
    assert result.count_by_shape() == {InputShape.SDK_TEMPLATE: 3}
    first, anonymous, removal_only = result.profiles
    assert [(a.audience_id[:8], a.status) for a in first.audiences] == [
        ("36a51c13", AudienceStatus.REALIZED),
        ("788d8874", AudienceStatus.REALIZED),
        ("8f812592", AudienceStatus.EXITED),
    ]
    assert anonymous.identities == {"anonymous_id": ["anon-7f3c9b2e", "anon-91d04aa1"]}
    assert [a.status for a in removal_only.audiences] == [AudienceStatus.EXITED]


def test_existing_status_and_customer_audience_upload_namespace() -> None:
    body = {
        "identityMap": {"user_id": [{"id": "u-1"}]},
        "segmentMembership": {
            "CustomerAudienceUpload": {"up-1": {"status": "existing"}},
            "ups": {"s-1": {"status": "realized"}, "s-2": {"status": "exited"}},
        },
    }
    (profile,) = normalize_body(body).profiles
    assert [(a.namespace, a.audience_id, a.status.value, a.is_member) for a in profile.audiences] == [
        ("CustomerAudienceUpload", "up-1", "existing", True),
        ("ups", "s-1", "realized", True),
        ("ups", "s-2", "exited", False),
    ]


def test_template_attributes_are_bare_and_null_is_not_set() -> None:
    body = {"profiles": [{"identities": [{"type": "user_id", "id": "u"}], "attributes": {"a": "x", "b": None}}]}
    (profile,) = normalize_body(body).profiles
    assert profile.attributes == {"a": "x"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({"profiles": {}}, "must be an array"),
        ({"profiles": []}, "is empty"),
        ({"hello": "world"}, "expected one AEP profile"),
    ],
)
def test_bodies_of_no_known_shape_are_refused_whole(body: Any, message: str) -> None:
    with pytest.raises(UnrecognizedBodyError, match=message):
        normalize_body(body)


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ("text", "must be a JSON object"),
        ({"identityMap": {}}, "no identity"),
        ({"identityMap": {"email": []}}, "no identity"),
        ({"identityMap": []}, "identityMap must be an object"),
        ({"identityMap": {"email": {"id": "x"}}}, "identityMap.email must be an array"),
        ({"identityMap": {"email": ["x"]}}, r"identityMap.email\[0\] must be an object"),
        ({"identityMap": {"email": [{"id": ""}]}}, r"identityMap.email\[0\].id must be a non-empty string"),
        ({"identityMap": {"email": [{"id": True}]}}, r"identityMap.email\[0\].id must be a non-empty string"),
        ({"identityMap": {"e": [{"id": "x"}]}, "segmentMembership": []}, "segmentMembership must be an object"),
        ({"identityMap": {"e": [{"id": "x"}]}, "segmentMembership": {"ups": []}}, "segmentMembership.ups must be"),
        ({"identityMap": {"e": [{"id": "x"}]}, "segmentMembership": {"ups": {"s": {"status": "gone"}}}}, "status"),
        (
            {
                "identityMap": {"e": [{"id": "x"}]},
                "segmentMembership": {"ups": {"s": {"status": "realized", "name": 3}}},
            },
            "name must be a string",
        ),
        (
            {
                "identityMap": {"e": [{"id": "x"}]},
                "segmentMembership": {"ups": {"s": {"status": "realized", "lastQualificationTime": "yesterday"}}},
            },
            "lastQualificationTime must be an ISO-8601",
        ),
        ({"identityMap": {"e": [{"id": "x"}]}, "attributes": []}, "attributes must be an object"),
        ({"identities": [{"type": "", "id": "x"}]}, r"identities\[0\].type"),
        ({"identities": {"type": "user_id"}}, "identities must be an array"),
        (
            {"identities": [{"type": "u", "id": "x"}], "AdobeExperiencePlatformSegments": {"add": "s"}},
            "add must be an array",
        ),
    ],
)
def test_unusable_profiles_are_rejected_with_index_and_reason(profile: Any, reason: str) -> None:
    # Given a good profile, a bad one, and another good one
    good = {"identityMap": {"user_id": [{"id": "u-1"}]}}
    result = normalize_body({"profiles": [good, profile, good]})
    # Then the good ones are kept and the bad one is listed with its index
    assert [p.index for p in result.profiles] == [0, 2]
    assert len(result.rejected) == 1
    assert result.rejected[0].index == 1

    assert re.search(reason, result.rejected[0].reason), result.rejected[0].reason


def test_rejection_reasons_never_quote_values() -> None:
    secret_value = "jane.doe@example.com"
    body = {"profiles": [{"identityMap": {"email": [{"id": [secret_value]}]}}]}
    result = normalize_body(body)
    assert secret_value not in result.rejected[0].reason


def test_numeric_ids_become_strings() -> None:
    (profile,) = normalize_body({"identityMap": {"crmid": [{"id": 12345}]}}).profiles
    assert profile.identities == {"crmid": ["12345"]}


def test_deep_nesting_is_a_profile_error() -> None:
    value: Any = "leaf"
    for _ in range(40):
        value = {"n": value}
    result = normalize_body({"profiles": [{"identityMap": {"u": [{"id": "1"}]}, "deep": value}]})
    assert "nested deeper" in result.rejected[0].reason


@pytest.mark.parametrize(
    "text",
    [
        "2019-04-15T02:41:50.000+0000",
        "2019-04-15T02:41:50+0000",
        "2019-04-15T02:41:50Z",
        "2019-04-15T02:41:50.000000Z",
        "2019-04-15T04:41:50+02:00",
        "2019-04-15T02:41:50",
        1555296110000,
        "1555296110000",
    ],
)
def test_timestamp_spellings(text: Any) -> None:
    assert parse_timestamp(text, "t") == datetime(2019, 4, 15, 2, 41, 50, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "soon", True, None, [], 10**30])
def test_bad_timestamps(bad: Any) -> None:
    with pytest.raises(ProfileError, match="ISO-8601"):
        parse_timestamp(bad, "t")


@pytest.mark.parametrize("value", [float("inf"), [1.0, float("-inf")], {"deep": [float("nan")]}])
def test_numbers_json_cannot_carry_reject_the_profile(value: Any) -> None:
    # A double overflow (1e400) parses as inf, which would leave as null: the profile is refused, not mangled
    result = normalize_body({"profiles": [{"identityMap": {"u": [{"id": "1"}]}, "attributes": {"score": value}}]})
    assert result.profiles == []
    assert "out of range" in result.rejected[0].reason
