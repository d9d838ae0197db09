"""Delivery settings from the environment: defaults, spellings, and clear errors at cold start."""

from __future__ import annotations

import json

import pytest

from aep_moengage.delivery import runtime
from aep_moengage.delivery.service import visibility_backoff
from aep_moengage.delivery.settings import DeliverySettings, SettingsError
from aep_moengage.models.moengage import data_center_base_url, normalize_data_center

REQUIRED = {"MOENGAGE_SECRET_NAME": "aep-moengage/moengage"}


def test_defaults() -> None:
    settings = DeliverySettings.from_env(REQUIRED)
    assert settings.model_dump() == {
        "moengage_secret_name": "aep-moengage/moengage",
        "moengage_base_url": None,
        "moengage_data_center": None,
        "queue_url": None,
        "dlq_url": None,
        "max_receive_count": 10,
        "rate_limit_users_per_minute": 54_000,
        "max_concurrency": 2,
        "update_existing_only": False,
        "user_id_namespaces": ("user_id", "crmid"),
        "anonymous_id_namespaces": ("anonymous_id", "ecid"),
        "anonymous_profiles": "deliver",
        "audience_names": {},
        "audience_events": False,
        "retry_base_seconds": 60,
        "retry_max_seconds": 7_200,
        "secret_cache_seconds": 300,
        "moengage_timeout_seconds": (3.0, 10.0),
    }
    assert settings.users_per_second_share == pytest.approx(450.0)
    assert settings.request_timeout_seconds == 13.0


def test_every_variable_is_read() -> None:
    settings = DeliverySettings.from_env(
        {
            **REQUIRED,
            "MOENGAGE_BASE_URL": "http://127.0.0.1:3100/",
            "MOENGAGE_DATA_CENTER": "dc-101",
            "MAX_RECEIVE_COUNT": "5",
            "RATE_LIMIT_USERS_PER_MINUTE": "9000",
            "MAX_CONCURRENCY": "3",
            "UPDATE_EXISTING_ONLY": "TRUE",
            "USER_ID_NAMESPACES": " CRMID , user_id ",
            "ANONYMOUS_ID_NAMESPACES": "ECID",
            "ANONYMOUS_PROFILES": "Skip",
            "AUDIENCE_NAMES": json.dumps({"a-1": "VIP"}),
            "AUDIENCE_EVENTS": "1",
            "RETRY_BASE_SECONDS": "30",
            "RETRY_MAX_SECONDS": "600",
            "SECRET_CACHE_SECONDS": "60",
            "MOENGAGE_TIMEOUT_SECONDS": "2, 5",
        }
    )
    assert settings.moengage_base_url == "http://127.0.0.1:3100"
    assert settings.moengage_data_center == "101"
    assert settings.user_id_namespaces == ("crmid", "user_id")
    assert settings.anonymous_profiles == "skip"
    assert settings.audience_names == {"a-1": "VIP"}
    assert (settings.update_existing_only, settings.audience_events) == (True, True)
    assert settings.moengage_timeout_seconds == (2.0, 5.0)
    assert settings.users_per_second_share == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "MOENGAGE_SECRET_NAME"),
        ({**REQUIRED, "MOENGAGE_DATA_CENTER": "DC-07"}, "MOENGAGE_DATA_CENTER"),
        ({**REQUIRED, "RATE_LIMIT_USERS_PER_MINUTE": "0"}, "RATE_LIMIT_USERS_PER_MINUTE"),
        ({**REQUIRED, "ANONYMOUS_PROFILES": "drop"}, "ANONYMOUS_PROFILES"),
        ({**REQUIRED, "AUDIENCE_NAMES": "{not json"}, "AUDIENCE_NAMES"),
        ({**REQUIRED, "MOENGAGE_TIMEOUT_SECONDS": "1,2,3"}, "MOENGAGE_TIMEOUT_SECONDS"),
        ({**REQUIRED, "RETRY_MAX_SECONDS": "50000"}, "RETRY_MAX_SECONDS"),
        ({**REQUIRED, "USER_ID_NAMESPACES": "ecid"}, "ANONYMOUS_ID_NAMESPACES"),
        ({**REQUIRED, "MOENGAGE_BASE_URL": "api-01.moengage.com"}, "MOENGAGE_BASE_URL"),
    ],
)
def test_invalid_settings_fail_with_the_variable_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        DeliverySettings.from_env(env)


@pytest.mark.parametrize(
    ("spelling", "code"),
    [("DC-01", "01"), ("dc-01", "01"), ("01", "01"), ("1", "01"), ("DC-6", "06"), ("DC-101", "101"), ("dc_101", "101")],
)
def test_data_center_spellings(spelling: str, code: str) -> None:
    assert normalize_data_center(spelling) == code


@pytest.mark.parametrize("unknown", ["DC-07", "7", "eu", "", "DC-100", "api-01"])
def test_unknown_data_centers_are_errors(unknown: str) -> None:
    with pytest.raises(ValueError, match="unknown MoEngage data center"):
        normalize_data_center(unknown)


def test_data_center_hosts() -> None:
    assert data_center_base_url("DC-03") == "https://api-03.moengage.com"
    assert data_center_base_url("101") == "https://api-101.moengage.com"


@pytest.mark.parametrize(("receives", "low", "high"), [(1, 60, 75), (2, 120, 150), (4, 480, 600), (9, 7200, 9000)])
def test_visibility_backoff_doubles_per_receive_up_to_the_maximum(receives: int, low: int, high: int) -> None:
    settings = DeliverySettings.from_env(REQUIRED)
    assert visibility_backoff(receives, settings, lambda: 0.0) == low
    assert visibility_backoff(receives, settings, lambda: 1.0) == high


def test_an_unknown_data_center_in_the_secret_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    monkeypatch.setenv("MOENGAGE_SECRET_NAME", "mo")
    monkeypatch.delenv("MOENGAGE_BASE_URL", raising=False)
    monkeypatch.delenv("MOENGAGE_DATA_CENTER", raising=False)
    runtime.clear_caches()
    with mock_aws():
        import boto3

        secret = {"workspace_id": "W", "data_api_key": "k", "data_center": "DC-9"}
        boto3.client("secretsmanager").create_secret(Name="mo", SecretString=json.dumps(secret))
        with pytest.raises(SettingsError, match="data_center") as error:
            runtime.moengage_client()
        assert "'k'" not in str(error.value)
    runtime.clear_caches()
