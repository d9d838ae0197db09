"""The local stack takes its settings from template.yaml and its environment (no servers started here)."""

from __future__ import annotations

from devstack.stack import StackConfig
from devstack.template import load_template, local_settings


def test_queue_and_event_source_settings_come_from_the_template() -> None:
    # Given the template's parameter defaults
    parameters = {name: spec.get("Default") for name, spec in load_template()["Parameters"].items()}
    # When the local stack reads it
    settings = local_settings()
    # Then the queue, the redrive policy and the event source are the template's, not copies
    assert settings.max_receive_count == parameters["MaxReceiveCount"]
    assert settings.batch_size == parameters["BatchSize"]
    assert settings.batching_window_seconds == parameters["BatchingWindowSeconds"]
    assert int(settings.queue_attributes["VisibilityTimeout"]) >= 6 * settings.delivery.timeout_seconds
    assert settings.queue_attributes["MaximumMessageSize"] == "1048576"
    assert settings.dlq_attributes["MessageRetentionPeriod"] == "1209600"
    assert settings.delivery.environment["RATE_LIMIT_USERS_PER_MINUTE"] == str(parameters["RateLimitUsersPerMinute"])
    assert settings.ingest.environment["MAX_BODY_BYTES"] == "5000000"


def test_defaults_follow_the_design_contract() -> None:
    config = StackConfig.from_env({})
    assert (config.api_port, config.aws_port, config.emulator_port) == (3000, 5000, 3100)
    assert config.ingest_token == "local-dev-token"
    assert config.time_scale == 1.0
    assert config.real_moengage is None


def test_real_moengage_credentials_replace_the_emulator() -> None:
    config = StackConfig.from_env(
        {"MOENGAGE_WORKSPACE_ID": "WS1", "MOENGAGE_DATA_API_KEY": "k", "MOENGAGE_DATA_CENTER": "DC-03"}
    )
    assert config.real_moengage is not None
    assert (config.real_moengage.workspace_id, config.real_moengage.data_center) == ("WS1", "DC-03")


def test_handler_settings_in_the_environment_override_the_template() -> None:
    config = StackConfig.from_env({"RATE_LIMIT_USERS_PER_MINUTE": "600", "UNRELATED": "x", "LOCAL_TIME_SCALE": "0.1"})
    assert config.overrides == {"RATE_LIMIT_USERS_PER_MINUTE": "600"}
    assert config.time_scale == 0.1
