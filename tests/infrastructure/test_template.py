"""Invariants of template.yaml and samconfig.toml that a later edit must not quietly break.

The template is read as plain YAML with CloudFormation's short tags turned into their long form
(`!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]}, `!Sub s` -> {"Fn::Sub": s}, ...).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from devstack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

FOUR_HOURS = 4 * 3600
FOURTEEN_DAYS = 14 * 24 * 3600
ONE_MIB = 1024 * 1024


@cache
def template() -> dict[str, Any]:
    loaded = load_template(TEMPLATE)
    assert isinstance(loaded, dict)
    return loaded


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        name: resource for name, resource in template()["Resources"].items() if kind is None or resource["Type"] == kind
    }


def props(name: str) -> dict[str, Any]:
    return dict(template()["Resources"][name].get("Properties", {}))


def default(parameter: str) -> Any:
    return template()["Parameters"][parameter]["Default"]


def function_setting(function: str, key: str) -> Any:
    """A function's property, or the Globals' value when the function does not set it."""
    return props(function).get(key, template().get("Globals", {}).get("Function", {}).get(key))


def function_env(function: str) -> dict[str, Any]:
    merged = dict(template().get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    merged.update(props(function).get("Environment", {}).get("Variables", {}))
    return merged


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def iam_statements() -> list[dict[str, Any]]:
    """Every IAM-like statement anywhere in the template, including both branches of an Fn::If."""
    return [node for node in walk(template()["Resources"]) if isinstance(node, dict) and "Effect" in node]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def retry_window_seconds(base: int, cap: int, max_receive_count: int) -> int:
    """Seconds a message spends backing off before its last receive: after receive n (1..mrc-1) it waits
    min(cap, base * 2^(n-1)); receive number mrc is the last try before the DLQ."""
    return sum(min(cap, base * 2 ** (n - 1)) for n in range(1, max_receive_count))


# --- Queues, retries, DLQ ----------------------------------------------------------------------------------------


def test_retry_window_before_the_dlq_is_at_least_four_hours() -> None:
    window = retry_window_seconds(default("RetryBaseSeconds"), default("RetryMaxSeconds"), default("MaxReceiveCount"))

    assert window >= FOUR_HOURS
    # The arithmetic in the template comment: 1+2+4+8+16+32+64+120+120 min = 367 min ~ 6.1 h.
    assert window == 367 * 60
    assert "1 + 2 + 4 + 8 + 16 + 32 + 64 + 120 + 120 min = 367 min" in TEMPLATE.read_text(encoding="utf-8")


def test_retry_parameters_feed_both_the_queue_and_the_delivery_function() -> None:
    redrive = props("Queue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    env = function_env("DeliveryFunction")
    assert env["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    assert env["RETRY_BASE_SECONDS"] == {"Ref": "RetryBaseSeconds"}
    assert env["RETRY_MAX_SECONDS"] == {"Ref": "RetryMaxSeconds"}
    parameters = template()["Parameters"]
    assert parameters["MaxReceiveCount"]["MinValue"] >= 5  # AWS: maxReceiveCount >= 5 for Lambda event sources
    assert parameters["RetryMaxSeconds"]["MaxValue"] <= 43_200  # SQS's visibility timeout ceiling


def test_visibility_timeout_covers_six_delivery_timeouts_plus_the_batching_window() -> None:
    timeout = props("DeliveryFunction")["Timeout"]
    largest_window = template()["Parameters"]["BatchingWindowSeconds"]["MaxValue"]

    assert largest_window >= default("BatchingWindowSeconds")
    assert props("Queue")["VisibilityTimeout"] >= 6 * timeout + largest_window


@pytest.mark.parametrize("queue", ["Queue", "DeadLetterQueue"])
def test_both_queues_are_encrypted_keep_14_days_and_take_1_mib(queue: str) -> None:
    queue_props = props(queue)

    assert queue_props["SqsManagedSseEnabled"] is True
    assert queue_props["MessageRetentionPeriod"] == FOURTEEN_DAYS
    assert queue_props["MaximumMessageSize"] == ONE_MIB


def test_the_dlq_is_named_dlq_and_is_not_a_dlq_source_itself() -> None:
    assert "dlq" in props("DeadLetterQueue")["QueueName"]["Fn::Sub"]
    assert "RedrivePolicy" not in props("DeadLetterQueue")
    assert len(resources("AWS::SQS::Queue")) == 2


def test_event_source_mapping() -> None:
    events = props("DeliveryFunction")["Events"]
    (sqs_event,) = [event["Properties"] for event in events.values() if event["Type"] == "SQS"]

    assert sqs_event["Queue"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert sqs_event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs_event["BatchSize"] == {"Ref": "BatchSize"}
    assert sqs_event["MaximumBatchingWindowInSeconds"] == {"Ref": "BatchingWindowSeconds"}
    assert sqs_event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaxConcurrency"}
    # The code divides the rate limit by the same concurrency the event source enforces.
    assert function_env("DeliveryFunction")["MAX_CONCURRENCY"] == {"Ref": "MaxConcurrency"}
    parameters = template()["Parameters"]
    assert parameters["MaxConcurrency"]["MinValue"] == 2 and default("MaxConcurrency") == 2
    assert default("BatchSize") == 100
    assert default("BatchingWindowSeconds") == 5
    if default("BatchSize") > 10:  # SQS event sources refuse BatchSize > 10 without a batching window
        assert default("BatchingWindowSeconds") >= 1


def test_rate_limit_default_is_90_percent_of_moengages_default_limit() -> None:
    assert default("RateLimitUsersPerMinute") == 54_000
    assert function_env("DeliveryFunction")["RATE_LIMIT_USERS_PER_MINUTE"] == {"Ref": "RateLimitUsersPerMinute"}


# --- Functions and layer ---------------------------------------------------------------------------------------


FUNCTIONS = {
    "IngestFunction": ("functions/ingest/", "ingest_app.lambda_handler", 512, 5),
    "DeliveryFunction": ("functions/deliver/", "deliver_app.lambda_handler", 512, 60),
}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_functions_run_python312_on_arm64_with_the_layer(function: str) -> None:
    code_uri, handler, memory, timeout = FUNCTIONS[function]

    assert function_setting(function, "Runtime") == "python3.12"
    assert function_setting(function, "Architectures") == ["arm64"]
    assert function_setting(function, "Layers") == [{"Ref": "CommonLayer"}]
    assert props(function)["CodeUri"] == code_uri
    assert props(function)["Handler"] == handler
    assert props(function)["MemorySize"] == memory
    assert props(function)["Timeout"] == timeout
    assert (ROOT / code_uri / f"{handler.split('.')[0]}.py").is_file()


def test_the_layer_is_built_for_the_functions_runtime_and_architecture() -> None:
    layer = template()["Resources"]["CommonLayer"]
    runtimes = {function_setting(name, "Runtime") for name in resources("AWS::Serverless::Function")}
    architectures = {
        arch for name in resources("AWS::Serverless::Function") for arch in function_setting(name, "Architectures")
    }

    assert layer["Properties"]["ContentUri"] == "layers/common/"
    # A layer built for the wrong architecture passes validate, lint and build, and fails at import in Lambda.
    assert (
        {layer["Metadata"]["BuildArchitecture"]} == architectures == set(layer["Properties"]["CompatibleArchitectures"])
    )
    assert {layer["Metadata"]["BuildMethod"]} == runtimes == set(layer["Properties"]["CompatibleRuntimes"])
    assert (ROOT / "layers/common/requirements.txt").is_file()


def test_ingest_environment_contract() -> None:
    env = function_env("IngestFunction")

    assert env["INGEST_TOKEN_SECRET_NAME"] == {
        "Fn::If": ["CreateIngestTokenSecret", {"Ref": "IngestTokenSecret"}, {"Ref": "IngestTokenSecretArn"}]
    }
    assert env["QUEUE_URL"] == {"Ref": "Queue"}
    assert env["ALLOWED_SOURCE_CIDRS"] == {"Ref": "AllowedSourceCidrs"}
    assert default("AllowedSourceCidrs") == ""
    assert {key: env[key] for key in ("MAX_BODY_BYTES", "QUEUE_MESSAGE_MAX_BYTES", "ENQUEUE_DEADLINE_MS")} == {
        "MAX_BODY_BYTES": "5000000",
        "QUEUE_MESSAGE_MAX_BYTES": "245760",
        "ENQUEUE_DEADLINE_MS": "1500",
    }
    assert env["SECRET_CACHE_SECONDS"] == "300"


def test_delivery_environment_contract() -> None:
    env = function_env("DeliveryFunction")

    assert env["MOENGAGE_SECRET_NAME"] == {
        "Fn::If": ["CreateMoEngageSecret", {"Ref": "MoEngageSecret"}, {"Ref": "MoEngageSecretArn"}]
    }
    assert env["QUEUE_URL"] == {"Ref": "Queue"}
    assert env["DLQ_URL"] == {"Ref": "DeadLetterQueue"}
    expected_names = {
        "MOENGAGE_DATA_CENTER",
        "UPDATE_EXISTING_ONLY",
        "USER_ID_NAMESPACES",
        "ANONYMOUS_ID_NAMESPACES",
        "ANONYMOUS_PROFILES",
        "AUDIENCE_EVENTS",
        "SECRET_CACHE_SECONDS",
    }
    assert expected_names <= env.keys()
    assert default("UserIdNamespaces") == "user_id,crmid"
    assert default("AnonymousIdNamespaces") == "anonymous_id,ecid"
    assert set(template()["Parameters"]["AnonymousProfiles"]["AllowedValues"]) == {"deliver", "skip"}
    assert (default("RetryBaseSeconds"), default("RetryMaxSeconds")) == (60, 7200)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_powertools_settings(function: str) -> None:
    env = function_env(function)

    assert env["POWERTOOLS_SERVICE_NAME"] == "aep-moengage"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "AepMoEngage"
    assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}


# --- API -------------------------------------------------------------------------------------------------------


def test_http_api_route_throttling_and_access_logs() -> None:
    api = props("HttpApi")
    (event,) = props("IngestFunction")["Events"].values()

    assert template()["Resources"]["HttpApi"]["Type"] == "AWS::Serverless::HttpApi"
    assert event["Type"] == "HttpApi"
    assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    assert (event["Properties"]["Method"], event["Properties"]["Path"]) == ("POST", "/v1/profiles")
    assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    assert api["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }
    log_group = api["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert resources()[log_group]["Type"] == "AWS::Logs::LogGroup"
    json.loads(api["AccessLogSettings"]["Format"])  # access log lines are JSON
    assert "Why an HTTP API" in TEMPLATE.read_text(encoding="utf-8")


# --- IAM -------------------------------------------------------------------------------------------------------


def test_no_iam_statement_has_a_wildcard_action() -> None:
    statements = iam_statements()

    assert statements
    for statement in statements:
        assert "NotAction" not in statement, statement
        for action in as_list(statement["Action"]):
            assert isinstance(action, str) and "*" not in action, statement


def test_only_xray_statements_use_a_wildcard_resource() -> None:
    for statement in iam_statements():
        if statement.get("Effect") == "Allow" and "*" in as_list(statement.get("Resource")):
            # X-Ray has no resource-level permissions.
            assert all(action.startswith("xray:") for action in as_list(statement["Action"])), statement


def test_functions_use_their_own_roles_without_managed_policies() -> None:
    # SAM-generated roles would attach AWSLambdaBasicExecutionRole and AWSLambdaSQSQueueExecutionRole (any log
    # group, any queue), so each function has its own role with exact actions on exact resources.
    for function in FUNCTIONS:
        role = props(function)["Role"]["Fn::GetAtt"][0]
        assert resources()[role]["Type"] == "AWS::IAM::Role"
        assert "ManagedPolicyArns" not in props(role)
        assert "Policies" not in props(function)


def _allowed(role: str) -> dict[str, Any]:
    """Action -> resource of a role's unconditional statements."""
    allowed: dict[str, Any] = {}
    for policy in props(role)["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Effect" in statement:
                for action in as_list(statement["Action"]):
                    allowed[action] = statement["Resource"]
    return allowed


def test_ingest_role_is_least_privilege() -> None:
    assert _allowed("IngestFunctionRole") == {
        "logs:CreateLogStream": {"Fn::GetAtt": ["IngestLogGroup", "Arn"]},
        "logs:PutLogEvents": {"Fn::GetAtt": ["IngestLogGroup", "Arn"]},
        "sqs:SendMessage": {"Fn::GetAtt": ["Queue", "Arn"]},
        "secretsmanager:GetSecretValue": {
            "Fn::If": ["CreateIngestTokenSecret", {"Ref": "IngestTokenSecret"}, {"Ref": "IngestTokenSecretArn"}]
        },
    }


def test_delivery_role_is_least_privilege() -> None:
    queue = {"Fn::GetAtt": ["Queue", "Arn"]}
    assert _allowed("DeliveryFunctionRole") == {
        "logs:CreateLogStream": {"Fn::GetAtt": ["DeliveryLogGroup", "Arn"]},
        "logs:PutLogEvents": {"Fn::GetAtt": ["DeliveryLogGroup", "Arn"]},
        "sqs:ReceiveMessage": queue,
        "sqs:DeleteMessage": queue,
        "sqs:GetQueueAttributes": queue,
        "sqs:ChangeMessageVisibility": queue,  # the per-message retry backoff
        "sqs:SendMessage": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "secretsmanager:GetSecretValue": {
            "Fn::If": ["CreateMoEngageSecret", {"Ref": "MoEngageSecret"}, {"Ref": "MoEngageSecretArn"}]
        },
    }


# --- Secrets ---------------------------------------------------------------------------------------------------


def test_ingest_token_secret_is_generated_in_the_tokens_list_shape() -> None:
    seed = props("IngestTokenSeed")["GenerateSecretString"]
    secret_string = props("IngestTokenSecret")["SecretString"]["Fn::Sub"]
    reference = "{{resolve:secretsmanager:${IngestTokenSeed}:SecretString:::}}"

    assert seed["ExcludePunctuation"] is True  # no quote or backslash can break the JSON
    assert seed["PasswordLength"] >= 32
    assert reference in secret_string
    assert json.loads(secret_string.replace(reference, "generated")) == {"tokens": ["generated"]}
    for name in ("IngestTokenSeed", "IngestTokenSecret"):
        assert template()["Resources"][name]["Condition"] == "CreateIngestTokenSecret"
    # Properties that change would make CloudFormation rewrite the secret and drop rotated tokens: none may
    # depend on a parameter.
    text = json.dumps(props("IngestTokenSecret"))
    assert '"Ref"' not in text
    assert set(re.findall(r"\$\{([^}]+)\}", text)) <= {"AWS::StackName", "IngestTokenSeed"}


def test_moengage_secret_placeholder_shape() -> None:
    placeholder = props("MoEngageSecret")["SecretString"]["Fn::Sub"]

    assert json.loads(placeholder.replace("${DataCenter}", "DC-01")) == {
        "workspace_id": "",
        "data_api_key": "",
        "data_center": "DC-01",
    }
    assert template()["Resources"]["MoEngageSecret"]["Condition"] == "CreateMoEngageSecret"
    assert "put-secret-value" in props("MoEngageSecret")["Description"]["Fn::Sub"]


# --- Logs, alarms, dashboard -------------------------------------------------------------------------------------


def test_every_log_group_has_a_retention_and_functions_log_to_them() -> None:
    for name, log_group in resources("AWS::Logs::LogGroup").items():
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    for function in FUNCTIONS:
        log_group = props(function)["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources()[log_group]["Type"] == "AWS::Logs::LogGroup"


def test_every_alarm_notifies_the_alarm_topic() -> None:
    alarms = resources("AWS::CloudWatch::Alarm")

    assert len(alarms) >= 7
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["Properties"].get("TreatMissingData") == "notBreaching", name
    assert resources()["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert props("AlarmEmailSubscription")["Endpoint"] == {"Ref": "AlarmEmail"}


def _alarm_on(namespace: str, metric: str) -> list[dict[str, Any]]:
    return [
        alarm["Properties"]
        for alarm in resources("AWS::CloudWatch::Alarm").values()
        if (alarm["Properties"].get("Namespace"), alarm["Properties"].get("MetricName")) == (namespace, metric)
    ]


@pytest.mark.parametrize(
    ("namespace", "metric", "dimension"),
    [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["Queue", "QueueName"]}),
        ("AWS/Lambda", "Errors", {"Ref": "DeliveryFunction"}),
        ("AWS/Lambda", "Throttles", {"Ref": "DeliveryFunction"}),
        ("AWS/ApiGateway", "5xx", {"Ref": "HttpApi"}),
        ("AepMoEngage", "MoEngageAuthFailures", "aep-moengage"),
        ("AepMoEngage", "ProfilesFailedPermanently", "aep-moengage"),
    ],
)
def test_required_alarms_exist(namespace: str, metric: str, dimension: Any) -> None:
    (alarm,) = _alarm_on(namespace, metric)

    assert dimension in [entry["Value"] for entry in alarm["Dimensions"]]


def test_business_alarms_use_the_code_metrics_dimension_and_thresholds() -> None:
    (auth,) = _alarm_on("AepMoEngage", "MoEngageAuthFailures")
    (permanent,) = _alarm_on("AepMoEngage", "ProfilesFailedPermanently")

    for alarm in (auth, permanent):
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "aep-moengage"}]
        assert alarm["Statistic"] == "Sum"
    assert (auth["Threshold"], auth["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert permanent["EvaluationPeriods"] >= 2 and permanent["DatapointsToAlarm"] == permanent["EvaluationPeriods"]
    (api_5xx,) = _alarm_on("AWS/ApiGateway", "5xx")
    assert {"Name": "Stage", "Value": "$default"} in api_5xx["Dimensions"]


BUSINESS_METRICS = [
    "ProfilesReceived",
    "ProfilesEnqueued",
    "ProfilesRejected",
    "RequestsRefused",
    "EnqueueFailures",
    "ProfilesDelivered",
    "ProfilesSkipped",
    "ProfilesFailedPermanently",
    "ProfilesRetried",
    "MoEngageAuthFailures",
    "MoEngageCalls",
    "MoEngageRateLimited",
]


def test_dashboard_is_valid_json_with_every_business_metric() -> None:
    body = props("Dashboard")["DashboardBody"]["Fn::Sub"]
    substituted = json.loads(re.sub(r"\$\{[A-Za-z0-9:.]+\}", "x", body))
    metric_rows = [row for widget in substituted["widgets"] for row in widget["properties"].get("metrics", [])]
    names = {row[1] for row in metric_rows}

    assert set(BUSINESS_METRICS) <= names
    assert ["AepMoEngage", "ProfilesReceived", "service", "aep-moengage"] in metric_rows
    (alarm_widget,) = [widget for widget in substituted["widgets"] if widget["type"] == "alarm"]
    assert len(alarm_widget["properties"]["alarms"]) == len(resources("AWS::CloudWatch::Alarm"))


# --- Outputs and parameters ----------------------------------------------------------------------------------


def test_outputs_operators_and_tools_rely_on() -> None:
    outputs = template()["Outputs"]

    for name in (
        "ApiUrl",
        "QueueUrl",
        "DeadLetterQueueUrl",
        "IngestTokenSecretName",
        "MoEngageSecretName",
        "AlarmTopicArn",
        "DashboardName",
    ):
        assert name in outputs, name
    api_url = json.dumps(outputs["ApiUrl"]["Value"])
    assert "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1/profiles" in api_url
    assert outputs["QueueUrl"]["Value"] == {"Ref": "Queue"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "DeadLetterQueue"}


def test_every_parameter_has_a_description_and_is_used() -> None:
    text = json.dumps({key: value for key, value in template().items() if key != "Parameters"})
    for name, parameter in template()["Parameters"].items():
        assert len(parameter.get("Description", "")) > 20, name
        assert re.search(rf'"Ref": "{name}"|\$\{{{name}\}}', text), f"parameter {name} is not used"


# --- samconfig.toml ----------------------------------------------------------------------------------------


@cache
def samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))


@pytest.mark.parametrize("environment", ["default", "dev", "prod"])
def test_samconfig_environments_are_complete(environment: str) -> None:
    config = samconfig()[environment]

    assert config["global"]["parameters"]["stack_name"].startswith("aep-moengage")
    assert config["global"]["parameters"]["region"] == "us-east-1"
    assert config["build"]["parameters"]["cached"] is True
    assert config["validate"]["parameters"]["lint"] is True
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert f'Stage="{"dev" if environment == "default" else environment}"' in deploy["parameter_overrides"]


def test_samconfig_prod_confirms_changesets_and_stacks_are_distinct() -> None:
    assert samconfig()["prod"]["deploy"]["parameters"]["confirm_changeset"] is True
    stacks = [samconfig()[env]["global"]["parameters"]["stack_name"] for env in ("default", "dev", "prod")]
    assert len(set(stacks)) == 3
    assert samconfig()["default"]["global"]["parameters"]["stack_name"] == "aep-moengage"  # ops.redrive's default


# --- the README's operations section stays in step with the template ------------------------------------------


def test_operations_doc_lists_every_parameter_and_alarm() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    doc = readme[readme.index("## Operations") :]

    for name in template()["Parameters"]:
        assert f"| `{name}` |" in doc, f"parameter {name} is missing from the parameter table"
    for alarm in resources("AWS::CloudWatch::Alarm").values():
        suffix = alarm["Properties"]["AlarmName"]["Fn::Sub"].removeprefix("${AWS::StackName}-")
        assert f"| `{suffix}` |" in doc, f"alarm {suffix} has no runbook row"
