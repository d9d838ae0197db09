"""Mapping of canonical profiles to MoEngage bulk elements: every AEP sample, then MoEngage's rules, table-driven."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import JsonValue

from aep_moengage.delivery.elements import ProfileRef, build_elements
from aep_moengage.delivery.mapping import (
    MappedProfile,
    MappingError,
    MappingRules,
    UnmappedProfile,
    load_mapping_table,
    map_profile,
    to_iso_date,
)
from aep_moengage.ingest.normalize import normalize_body
from aep_moengage.models.queue import AudienceChange, AudienceStatus, CanonicalProfile
from tests.conftest import AEP_SAMPLES_DIR

TABLE = load_mapping_table()
RULES = MappingRules(table=TABLE)

ADD = "addValueToArrayField"
REMOVE = "removeValueFromArrayField"
A1, A2, A3 = (
    "36a51c13-9dd6-4d2c-8aa3-07d785ea5075",
    "788d8874-8007-4253-92b7-ee6b6c20c6f3",
    "8f812592-3f06-416b-bd50-e7831848a31a",
)


def sample_profiles(name: str) -> list[CanonicalProfile]:
    """The sample as ingest normalizes it into the queue model."""
    return normalize_body(json.loads((AEP_SAMPLES_DIR / name).read_text(encoding="utf-8"))).profiles


def elements_for(profiles: list[CanonicalProfile], rules: MappingRules = RULES, **options: bool) -> list[Any]:
    mapped = []
    for position, profile in enumerate(profiles):
        result = map_profile(profile, rules)
        assert isinstance(result, MappedProfile), result
        mapped.append((ProfileRef("m1", position), result))
    elements, invalid = build_elements(mapped, **options)
    assert invalid == []
    return [json.loads(element.body) for element in elements]


def profile(
    identities: dict[str, list[str]] | None = None,
    attributes: dict[str, JsonValue] | None = None,
    audiences: list[AudienceChange] | None = None,
) -> CanonicalProfile:
    return CanonicalProfile(
        index=0,
        identities=identities if identities is not None else {"user_id": ["u-1"]},
        attributes=attributes or {},
        audiences=audiences or [],
    )


def change(audience_id: str, status: str, at: str | None = None, name: str | None = None) -> AudienceChange:
    when = datetime.fromisoformat(at).replace(tzinfo=UTC) if at else None
    return AudienceChange(
        audience_id=audience_id, status=AudienceStatus(status), name=name, last_qualification_time=when
    )


# ------------------------------------------------------------------------------------------- every AEP sample

SAMPLE_CASES: list[tuple[str, int, list[dict[str, Any]]]] = [
    (
        "http_api_destination_sample.json",
        0,
        [
            {
                "type": "customer",
                "customer_id": "CUST-000123",  # crmid: the configured user namespace; ecid is anonymous
                "attributes": {
                    "birthday": "1985-03-14",
                    "first_name": "Zoë",
                    "last_name": "Ångström",
                    "email": "zoe.angstrom@example.com",
                    "aep_anonymous_id": "14575006536349286404619648085736425115",  # the first of two ECIDs
                    ADD: {"AEPSegments": ["Cart abandoners – 7 days", "354e086f-2e11-49a2-9e39-e5d9a76be683"]},
                },
            },
            {
                "type": "customer",
                "customer_id": "CUST-000123",
                "attributes": {REMOVE: {"AEPSegments": ["Frequent buyers"]}},
            },
        ],
    ),
    (
        "sdk_default_two_profiles.json",
        0,
        [
            {
                "type": "customer",
                "customer_id": "CUST-000123",
                "attributes": {
                    "first_name": "Hermione",
                    "last_name": "Granger",
                    "aep_anonymous_id": "e86fb215-0921-4537-bc77-969ff775752c",
                    ADD: {"AEPSegments": [A1, A2]},
                },
            },
            {"type": "customer", "customer_id": "CUST-000123", "attributes": {REMOVE: {"AEPSegments": [A3]}}},
        ],
    ),
    (
        "sdk_default_two_profiles.json",
        1,
        [
            {
                "type": "customer",
                "customer_id": "47bd00a9-8fc6-434e-a118-0b7f24f1a976",  # anonymous only: delivered, and marked
                "attributes": {
                    "first_name": "José",
                    "last_name": "Müller-Łukasiewicz",
                    "birth_date": "1980/07/31",  # named by AEP's mapping step: passes through as given
                    "aep_anonymous_profile": True,
                    ADD: {"AEPSegments": [A1]},
                },
            }
        ],
    ),
    (
        "sdk_sample_template_output_three_profiles.json",
        0,
        [
            {
                "type": "customer",
                "customer_id": "CUST-000123",
                "attributes": {
                    "aep_anonymous_id": "e86fb215-0921-4537-bc77-969ff775752c",
                    ADD: {"AEPSegments": [A1, A2]},
                },
            },
            {"type": "customer", "customer_id": "CUST-000123", "attributes": {REMOVE: {"AEPSegments": [A3]}}},
        ],
    ),
    (
        "sdk_sample_template_output_three_profiles.json",
        1,
        [
            {
                "type": "customer",
                "customer_id": "anon-7f3c9b2e",  # two anonymous ids: the first one
                "attributes": {"aep_anonymous_profile": True, ADD: {"AEPSegments": [A1]}},
            }
        ],
    ),
    (
        "sdk_sample_template_output_three_profiles.json",
        2,
        [
            {
                "type": "customer",
                "customer_id": "u-1004",
                "attributes": {REMOVE: {"AEPSegments": ["354e086f-2e11-49a2-9e39-e5d9a76be683"]}},
            }
        ],
    ),
]


def test_every_sample_file_is_covered() -> None:
    covered = {(name, index) for name, index, _ in SAMPLE_CASES}
    for path in sorted(Path(AEP_SAMPLES_DIR).glob("*.json")):
        for index in range(len(sample_profiles(path.name))):
            assert (path.name, index) in covered


@pytest.mark.parametrize(("sample", "index", "expected"), SAMPLE_CASES, ids=lambda v: str(v)[:40])
def test_sample_profile_maps_to_expected_elements(sample: str, index: int, expected: list[dict[str, Any]]) -> None:
    # Given the sample normalized into the queue model
    given = sample_profiles(sample)[index]
    # When it is mapped and built into bulk elements
    elements = elements_for([given])
    # Then the elements are exactly MoEngage's shapes
    assert elements == expected


def test_anonymous_profile_is_skipped_when_configured() -> None:
    rules = MappingRules(table=TABLE, skip_anonymous=True)
    result = map_profile(sample_profiles("sdk_default_two_profiles.json")[1], rules)
    assert result == UnmappedProfile(True, "anonymous_profile", result.detail)  # type: ignore[union-attr]


def test_configured_audience_names_replace_ids_but_not_names_sent_by_aep() -> None:
    rules = MappingRules(
        table=TABLE, audience_names={A1: "Loyal customers", "7841ba61-23c1-4bb3-a495-00d3a5fe1e93": "x"}
    )
    sdk = elements_for(sample_profiles("sdk_default_two_profiles.json")[:1], rules)
    assert sdk[0]["attributes"][ADD] == {"AEPSegments": ["Loyal customers", A2]}
    http = elements_for(sample_profiles("http_api_destination_sample.json"), rules)
    assert http[1]["attributes"][REMOVE] == {"AEPSegments": ["Frequent buyers"]}


# --------------------------------------------------------------------------------------------------- identities

IDENTITY_CASES = [
    ({"CRMID": ["c-1"]}, "c-1"),  # namespaces match case-insensitively
    ({"crmid": ["c-1"], "user_id": ["u-1"]}, "u-1"),  # configured order, not AEP's
    ({"user_id": ["u-1", "u-2"]}, "u-1"),  # several ids: the first
    ({"ECID": ["e-1", "e-2"], "email": ["x"]}, "e-1"),  # anonymous only
    ({"user_id": [""], "crmid": ["c-1"]}, "c-1"),  # an empty id is no id
]


@pytest.mark.parametrize(("identities", "customer_id"), IDENTITY_CASES)
def test_customer_id_choice(identities: dict[str, list[str]], customer_id: str) -> None:
    result = map_profile(profile(identities), RULES)
    assert isinstance(result, MappedProfile)
    assert result.customer_id == customer_id


@pytest.mark.parametrize(
    "blocked", ["null", "NULL", " none ", "0", "1", "2", "-1", "-2", "true", "Unknown", "n/a", "uid"]
)
@pytest.mark.parametrize("namespace", ["user_id", "ecid"])
def test_ids_moengage_rejects_are_permanent_failures(blocked: str, namespace: str) -> None:
    result = map_profile(profile({namespace: [blocked]}), RULES)
    assert isinstance(result, UnmappedProfile)
    assert (result.skipped, result.reason) == (False, "rejected_customer_id")
    assert blocked.strip() not in result.detail or len(blocked.strip()) < 3  # the id itself is never reported


def test_profile_without_a_configured_namespace_has_no_identity() -> None:
    result = map_profile(profile({"email_lc_sha256": ["abc"]}), RULES)
    assert isinstance(result, UnmappedProfile)
    assert (result.skipped, result.reason) == (False, "no_identity")


# --------------------------------------------------------------------------------------------------- attributes

RENAME_CASES = [
    ("id", "aep_id"),
    ("_id", "aep__id"),
    ("Status", "aep_Status"),
    ("source", "aep_source"),
    ("user_id", "aep_user_id"),
    ("moe_score", "aep_moe_score"),
    ("MOE_Flag", "aep_MOE_Flag"),
    ("moe_unsubscribe", "moe_unsubscribe"),  # a documented MoEngage system attribute (consent): kept
    ("MOE_UNSUBSCRIBE", "aep_MOE_UNSUBSCRIBE"),  # ... only in MoEngage's spelling
    ("USER_ATTRIBUTE_X", "aep_USER_ATTRIBUTE_X"),
    ("AEPSegments", "aep_AEPSegments"),  # the connector's own array
    ("addValueToArrayField", "aep_addValueToArrayField"),
    ("loyalty.tier", "loyalty.tier"),  # other XDM leaves keep their dotted path
    ("first_name", "first_name"),  # named by AEP's mapping step
]


@pytest.mark.parametrize(("name", "sent_as"), RENAME_CASES)
def test_forbidden_names_are_renamed_with_the_aep_prefix(name: str, sent_as: str) -> None:
    result = map_profile(profile(attributes={name: "v"}), RULES)
    assert isinstance(result, MappedProfile)
    assert result.attributes == {sent_as: "v"}


VALUE_CASES: list[tuple[JsonValue, JsonValue | None, str | None]] = [
    # value, sent as (None = not sent), reason reported
    ("a" * 512, "a" * 512, None),
    ("a" * 513, None, "value_too_long"),
    (["x"] * 50, ["x"] * 50, None),
    (["x"] * 51, None, "array_too_long"),
    ([1, "a"], None, "array_not_homogeneous"),
    ([True, 1], None, "array_not_homogeneous"),
    ([1, 2.5], [1, 2.5], None),
    ([], [], None),
    ([{"a": 1}], None, "array_of_objects"),
    (["a" * 513], None, "value_too_long"),
    (0, 0, None),
    (False, False, None),
    ('Tom & "Jerry" <b>😀</b> 東京', 'Tom & "Jerry" <b>😀</b> 東京', None),
]


@pytest.mark.parametrize(("value", "sent", "reason"), VALUE_CASES, ids=lambda v: str(v)[:20])
def test_values_are_sent_as_given_or_dropped_with_a_reason(
    value: JsonValue, sent: JsonValue | None, reason: str | None
) -> None:
    result = map_profile(profile(attributes={"custom": value}), RULES)
    assert isinstance(result, MappedProfile)
    assert result.attributes.get("custom") == sent
    assert [d.reason for d in result.dropped] == ([reason] if reason else [])


def test_values_are_serialized_without_escaping() -> None:
    value = 'Tom & "Jerry" <b>😀</b> 東京'
    mapped = map_profile(profile(attributes={"custom": value}), RULES)
    assert isinstance(mapped, MappedProfile)
    [element], _ = build_elements([(ProfileRef("m", 0), mapped)])
    assert json.loads(element.body)["attributes"]["custom"] == value
    assert "<b>😀</b> 東京".encode() in element.body  # UTF-8 as is: no \\u escapes, no HTML entities


def test_null_and_empty_objects_are_not_sent_and_nested_objects_are_flattened() -> None:
    result = map_profile(profile(attributes={"a": None, "b": {}, "c": {"d": {"e": 1}, "f": None}}), RULES)
    assert isinstance(result, MappedProfile)
    assert result.attributes == {"c.d.e": 1}


def test_a_name_sent_by_aep_wins_over_one_produced_by_the_table() -> None:
    result = map_profile(
        profile(attributes={"first_name": "A", "person.name.firstName": "B", "aep_id": 1, "id": 2}), RULES
    )
    assert isinstance(result, MappedProfile)
    assert result.attributes == {"first_name": "A", "aep_id": 1}


DATE_CASES: list[tuple[JsonValue, str | None]] = [
    ("1985-03-14", "1985-03-14"),
    ("1985/03/14", "1985-03-14"),
    ("19850314", "1985-03-14"),
    ("1985-03-14T10:00:00Z", "1985-03-14"),
    ("1985-03-14T23:30:00-05:00", "1985-03-14"),  # the date as written, not shifted to UTC
    ("1985-03-14T23:30:00+0000", "1985-03-14"),
    ("14/03/1985", None),  # ambiguous day/month order: never guessed
    ("1985-02-30", None),
    ("", None),
    (19850314, None),
]


@pytest.mark.parametrize(("value", "expected"), DATE_CASES)
def test_dates_are_iso_or_dropped(value: JsonValue, expected: str | None) -> None:
    assert to_iso_date(value) == expected
    result = map_profile(profile(attributes={"person.birthDate": value}), RULES)
    assert isinstance(result, MappedProfile)
    assert result.attributes.get("birthday") == expected
    assert [d.reason for d in result.dropped] == ([] if expected else ["invalid_date"])


def test_standard_xdm_fields_use_moengage_standard_names() -> None:
    attributes: dict[str, JsonValue] = {
        "person.name.firstName": "F",
        "person.name.lastName": "L",
        "personalEmail.address": "e@example.com",
        "mobilePhone.number": "+4912345",
        "person.gender": "female",
        "person.birthDate": "2000-01-02",
    }
    result = map_profile(profile(attributes=attributes), RULES)
    assert isinstance(result, MappedProfile)
    assert result.attributes == {
        "first_name": "F",
        "last_name": "L",
        "email": "e@example.com",
        "mobile": "+4912345",
        "gender": "female",
        "birthday": "2000-01-02",
    }


# ------------------------------------------------------------------------------------------ merging, audiences

MERGE_CASES = [
    # changes of one audience in arrival order -> expected add, remove
    ([("realized", "2024-01-02"), ("exited", "2024-01-01")], ["A"], []),  # older exit arrives later: ignored
    ([("exited", "2024-01-02"), ("realized", "2024-01-01")], [], ["A"]),
    ([("realized", "2024-01-01"), ("exited", "2024-01-01")], [], ["A"]),  # same time: arrival order
    ([("exited", None), ("existing", None)], ["A"], []),  # no time: arrival order
]


@pytest.mark.parametrize(("changes", "adds", "removes"), MERGE_CASES)
def test_latest_change_per_user_and_audience_wins_across_messages(
    changes: list[tuple[str, str | None]], adds: list[str], removes: list[str]
) -> None:
    profiles = [profile(audiences=[change("a-1", status, at, name="A")]) for status, at in changes]
    [element] = elements_for(profiles)
    operations = {key: value["AEPSegments"] for key, value in element["attributes"].items()}
    assert operations == ({ADD: adds} if adds else {REMOVE: removes})


def test_profiles_of_one_user_merge_into_one_element_later_attributes_winning() -> None:
    first = profile(attributes={"tier": "gold", "city": "Oslo"})
    second = profile({"crmid": ["x"], "user_id": ["u-1"]}, attributes={"tier": "silver"})
    assert elements_for([first, second]) == [
        {"type": "customer", "customer_id": "u-1", "attributes": {"tier": "silver", "city": "Oslo"}}
    ]


def test_more_than_50_audience_changes_are_split_never_truncated() -> None:
    audiences = [change(f"a-{n:03d}", "realized") for n in range(120)]
    elements = elements_for([profile(audiences=audiences)])
    sizes = [len(element["attributes"][ADD]["AEPSegments"]) for element in elements]
    assert sizes == [50, 50, 20]


def test_update_existing_only_is_set_on_customer_elements() -> None:
    elements = elements_for(
        [profile(audiences=[change("a", "realized"), change("b", "exited")])], update_existing_only=True
    )
    assert [element["update_existing_only"] for element in elements] == [True, True]


def test_audience_events_for_entries_and_exits() -> None:
    audiences = [
        change("a", "realized", "2024-05-01T10:00:00", name="A"),
        change("b", "exited", "2024-05-02T10:00:00"),
        change("c", "existing"),
    ]
    elements = elements_for([profile(audiences=audiences)], audience_events=True)
    assert elements[-1] == {
        "type": "event",
        "customer_id": "u-1",
        "actions": [
            {
                "action": "AEP Audience Entered",
                "attributes": {"audience_id": "a", "audience_name": "A"},
                "current_time": "2024-05-01T10:00:00Z",
            },
            {
                "action": "AEP Audience Exited",
                "attributes": {"audience_id": "b", "audience_name": "b"},
                "current_time": "2024-05-02T10:00:00Z",
            },
        ],
    }


# ------------------------------------------------------------------------------------------------ mapping table

BAD_TABLES = [
    {"version": 2, "attributes": {}},
    {"version": 1, "attributes": {"x": {"to": "id"}}},
    {"version": 1, "attributes": {"x": {"to": "moe_x"}}},
    {"version": 1, "attributes": {"x": {"to": "AEPSegments"}}},
    {"version": 1, "attributes": {"x": {"to": "a"}, "y": {"to": "a"}}},
    {"version": 1, "attributes": {"x": {"to": "a", "type": "datetime"}}},
    {"version": 1, "attributes": {"x": {"to": "a", "unknown": 1}}},
]


@pytest.mark.parametrize("table", BAD_TABLES, ids=lambda t: json.dumps(t)[:50])
def test_an_invalid_mapping_table_fails_at_cold_start(table: dict[str, Any]) -> None:
    with pytest.raises(MappingError):
        load_mapping_table(json.dumps(table))


def test_the_packaged_table_is_version_1_with_the_standard_fields() -> None:
    assert TABLE.version == 1
    assert TABLE.attributes["person.birthDate"].type == "date"
    assert {rule.to for rule in TABLE.attributes.values()} == {
        "first_name",
        "last_name",
        "email",
        "mobile",
        "gender",
        "birthday",
    }
