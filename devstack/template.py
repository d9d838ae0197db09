"""Read the local stack's settings from template.yaml, so the laptop runs what `sam deploy` would create.

Only what the local stack needs is read: the queue's and DLQ's attributes, the SQS event source of the delivery
function, the functions' timeouts and environment variables. `!Ref` to a parameter resolves to its default;
anything that only exists in AWS (ARNs, URLs, conditions) resolves to None and is supplied by the local stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)  # type: ignore[no-untyped-call]


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # type: ignore[no-any-return]  # noqa: S506


@dataclass(frozen=True)
class FunctionSettings:
    timeout_seconds: float
    environment: dict[str, str]  # only the variables whose value is known without AWS


@dataclass(frozen=True)
class LocalSettings:
    queue_attributes: dict[str, str]
    dlq_attributes: dict[str, str]
    max_receive_count: int
    batch_size: int
    batching_window_seconds: float
    max_concurrency: int
    ingest: FunctionSettings
    delivery: FunctionSettings
    parameters: dict[str, Any] = field(default_factory=dict)


def _parameter_defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    """A literal, or a !Ref to a parameter: its default. Anything else is AWS-only: None."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in parameters:
            return parameters[value["Ref"]]
        return None
    return value


def _function(resource: dict[str, Any], globals_: dict[str, Any], parameters: dict[str, Any]) -> FunctionSettings:
    properties = resource.get("Properties", {})
    variables = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **properties.get("Environment", {}).get("Variables", {}),
    }
    environment = {}
    for name, raw in variables.items():
        value = _resolve(raw, parameters)
        if value is not None:
            environment[name] = str(value)
    timeout = _resolve(properties.get("Timeout", globals_.get("Timeout", 3)), parameters)
    return FunctionSettings(timeout_seconds=float(timeout), environment=environment)


def local_settings(template: dict[str, Any] | None = None) -> LocalSettings:
    template = template or load_template()
    parameters = _parameter_defaults(template)
    resources: dict[str, Any] = template["Resources"]
    function_globals = template.get("Globals", {}).get("Function", {})

    queue_id, queue = next(
        (name, r)
        for name, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]
    )
    redrive = queue["Properties"]["RedrivePolicy"]
    dlq_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]

    def attributes(properties: dict[str, Any]) -> dict[str, str]:
        names = ("VisibilityTimeout", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds")
        return {name: str(_resolve(properties[name], parameters)) for name in names if properties.get(name) is not None}

    delivery, event = next(
        (r, e["Properties"])
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
        for e in r["Properties"].get("Events", {}).values()
        if e["Type"] == "SQS" and e["Properties"]["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    )
    ingest = next(
        r
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
        and any(e["Type"] == "HttpApi" for e in r["Properties"].get("Events", {}).values())
    )
    return LocalSettings(
        queue_attributes=attributes(queue["Properties"]),
        dlq_attributes=attributes(resources[dlq_id]["Properties"]),
        max_receive_count=int(_resolve(redrive["maxReceiveCount"], parameters)),
        batch_size=int(_resolve(event.get("BatchSize", 10), parameters)),
        batching_window_seconds=float(_resolve(event.get("MaximumBatchingWindowInSeconds", 0), parameters)),
        max_concurrency=int(_resolve(event.get("ScalingConfig", {}).get("MaximumConcurrency", 2), parameters)),
        ingest=_function(ingest, function_globals, parameters),
        delivery=_function(delivery, function_globals, parameters),
        parameters=parameters,
    )
