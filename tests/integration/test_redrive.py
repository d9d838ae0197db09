"""`python -m ops.redrive` against moto: dry-run counts, leaving the DLQ untouched, and moving everything back.

moto 5.2.5 does not implement StartMessageMoveTask / ListMessageMoveTasks (it raises NotImplementedError, and its
server answers 500). So the SQS move-task path is exercised through `MoveTaskSqs`, which implements those two calls
on top of moto's queues the way SQS documents them, and the plain moto client exercises the automatic client-side
fallback that the local stack relies on.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ops import redrive

REGION = "us-east-1"
STACK = "aep-moengage-test"


@pytest.fixture(autouse=True)
def _short_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers short polls from the whole queue; long polls would only add a second per empty receive."""
    monkeypatch.setattr(redrive, "RECEIVE_WAIT_SECONDS", 0)


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


@pytest.fixture
def queues(sqs: Any) -> dict[str, str]:
    """The template's queue pair: a profile queue whose redrive policy points at the DLQ (maxReceiveCount 1)."""
    dlq_url = sqs.create_queue(QueueName=f"{STACK}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{STACK}-profiles",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})},
    )["QueueUrl"]
    return {"queue": queue_url, "dlq": dlq_url}


def put_failures(sqs: Any, queues: dict[str, str]) -> dict[str, int]:
    """Fill the DLQ the two ways production does; return the expected count per reason."""
    # The delivery function sends permanent failures to the DLQ itself, with their reason.
    sent = {"invalid_customer_id": 3, "moengage_rejected": 1}
    number = 0
    for reason, count in sent.items():
        for _ in range(count):
            number += 1
            sqs.send_message(
                QueueUrl=queues["dlq"],
                MessageBody=json.dumps({"correlation_id": f"c-{number}", "n": number}),
                MessageAttributes={
                    "failure_reason": {"DataType": "String", "StringValue": reason},
                    "failure_detail": {"DataType": "String", "StringValue": f"profile {number}: {reason} <detail>"},
                    "correlation_id": {"DataType": "String", "StringValue": f"c-{number}"},
                },
            )
    # SQS's own redrive: received maxReceiveCount times without being deleted -> moved with no reason attribute.
    for extra in range(2):
        sqs.send_message(QueueUrl=queues["queue"], MessageBody=json.dumps({"correlation_id": f"x-{extra}"}))
    for _ in range(6):
        sqs.receive_message(QueueUrl=queues["queue"], MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert counts(sqs, queues["queue"]) == (0, 0), "moto should have moved both to the DLQ"
    return {**sent, redrive.RETRIES_EXHAUSTED: 2}


def counts(sqs: Any, url: str) -> tuple[int, int]:
    return redrive.queue_counts(sqs, url)


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=300
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def run(*args: str, **kwargs: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = redrive.main(list(args), out=out, sleep=lambda _seconds: None, **kwargs)
    return code, out.getvalue()


def test_dry_run_counts_reasons_and_leaves_every_message_visible(sqs: Any, queues: dict[str, str]) -> None:
    expected = put_failures(sqs, queues)

    code, output = run("--dry-run", "--dlq-url", queues["dlq"], "--queue-url", queues["queue"], sqs=sqs)

    assert code == 0
    assert "Dry run: nothing moved" in output
    for reason, count in expected.items():
        assert any(line.split() == [*reason.split(), str(count)] for line in output.splitlines()), (reason, output)
    assert "invalid_customer_id: profile 1: invalid_customer_id <detail>" in output
    assert f"{redrive.RETRIES_EXHAUSTED}: {redrive.NO_REASON_DETAIL}" in output
    # Nothing consumed, nothing left hidden, nothing sent to the source queue.
    assert counts(sqs, queues["dlq"]) == (6, 0)
    assert counts(sqs, queues["queue"]) == (0, 0)


def test_peek_returns_counts_by_reason(sqs: Any, queues: dict[str, str]) -> None:
    expected = put_failures(sqs, queues)

    summary = redrive.peek_dlq(sqs, queues["dlq"], limit=100)

    assert dict(summary.reasons) == expected
    assert summary.inspected == summary.approximate_visible == 6
    assert summary.restored == 6 and summary.restore_failures == 0
    assert counts(sqs, queues["dlq"]) == (6, 0)


def test_peek_limit_inspects_a_sample(sqs: Any, queues: dict[str, str]) -> None:
    put_failures(sqs, queues)

    summary = redrive.peek_dlq(sqs, queues["dlq"], limit=4)

    assert summary.inspected == 4
    assert summary.approximate_visible == 6
    assert counts(sqs, queues["dlq"]) == (6, 0)


def test_redrive_falls_back_to_a_client_side_move_where_move_tasks_are_missing(
    sqs: Any, queues: dict[str, str]
) -> None:
    put_failures(sqs, queues)
    with pytest.raises(NotImplementedError):  # moto 5.2.5: if this starts passing, MoveTaskSqs can go
        sqs.start_message_move_task(SourceArn="arn:aws:sqs:us-east-1:123456789012:x")

    code, output = run("--dlq-url", queues["dlq"], "--queue-url", queues["queue"], sqs=sqs)

    assert code == 0, output
    assert "moving client-side instead" in output
    assert counts(sqs, queues["dlq"]) == (0, 0)
    moved = drain(sqs, queues["queue"])
    assert len(moved) == 6
    reasons = sorted(m.get("MessageAttributes", {}).get("failure_reason", {}).get("StringValue", "-") for m in moved)
    assert reasons == [
        "-",
        "-",
        "invalid_customer_id",
        "invalid_customer_id",
        "invalid_customer_id",
        "moengage_rejected",
    ]
    assert {json.loads(m["Body"])["correlation_id"] for m in moved} == {"c-1", "c-2", "c-3", "c-4", "x-0", "x-1"}


class MoveTaskSqs:
    """moto's SQS client plus StartMessageMoveTask/ListMessageMoveTasks/CancelMessageMoveTask as SQS documents them.

    The task reports RUNNING on the first ListMessageMoveTasks after the start, then moves the messages to the
    destination (body and attributes kept) and reports COMPLETED. `fail_with` makes it end FAILED instead.
    """

    def __init__(self, client: Any, fail_with: str | None = None) -> None:
        self._client = client
        self.fail_with = fail_with
        self.started: list[dict[str, Any]] = []
        self._task: dict[str, Any] | None = None
        self._polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _url(self, arn: str) -> str:
        return str(self._client.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])

    def start_message_move_task(self, **request: Any) -> dict[str, Any]:
        if self._task and self._task["Status"] == "RUNNING":
            raise AssertionError("SQS allows one active move task per queue")
        self.started.append(request)
        to_move = counts(self._client, self._url(request["SourceArn"]))[0]
        self._task = {
            "TaskHandle": "task-handle-1234567890-abcdefghijklmnop",
            "Status": "RUNNING",
            "SourceArn": request["SourceArn"],
            "DestinationArn": request.get("DestinationArn"),
            "ApproximateNumberOfMessagesMoved": 0,
            "ApproximateNumberOfMessagesToMove": to_move,
        }
        self._polls = 0
        return {"TaskHandle": self._task["TaskHandle"]}

    def list_message_move_tasks(self, SourceArn: str, MaxResults: int = 1) -> dict[str, Any]:
        if self._task is None or self._task["SourceArn"] != SourceArn:
            return {"Results": []}
        self._polls += 1
        if self._task["Status"] == "RUNNING" and self._polls > 1:
            self._finish()
        entry = dict(self._task)
        if entry["Status"] != "RUNNING":
            del entry["TaskHandle"]  # SQS lists the handle of a running task only
        return {"Results": [entry]}

    def cancel_message_move_task(self, TaskHandle: str) -> dict[str, Any]:
        assert self._task is not None and TaskHandle == self._task["TaskHandle"]
        self._task["Status"] = "CANCELLED"
        return {"ApproximateNumberOfMessagesMoved": self._task["ApproximateNumberOfMessagesMoved"]}

    def _finish(self) -> None:
        assert self._task is not None
        if self.fail_with:
            self._task.update(Status="FAILED", FailureReason=self.fail_with)
            return
        source, destination = self._url(self._task["SourceArn"]), self._url(self._task["DestinationArn"])
        for message in drain(self._client, source):
            attributes = {
                name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
                for name, value in message.get("MessageAttributes", {}).items()
            }
            self._client.send_message(QueueUrl=destination, MessageBody=message["Body"], MessageAttributes=attributes)
            self._client.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
            self._task["ApproximateNumberOfMessagesMoved"] += 1
        self._task["Status"] = "COMPLETED"


def test_redrive_with_a_move_task_reports_progress_and_empties_the_dlq(sqs: Any, queues: dict[str, str]) -> None:
    put_failures(sqs, queues)
    client = MoveTaskSqs(sqs)

    code, output = run("--dlq-url", queues["dlq"], "--queue-url", queues["queue"], "--max-per-second", "50", sqs=client)

    assert code == 0, output
    arns = {
        name: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for name, url in queues.items()
    }
    # Destination explicit: messages the delivery function sent to the DLQ have no source queue to return to.
    assert client.started == [
        {"SourceArn": arns["dlq"], "DestinationArn": arns["queue"], "MaxNumberOfMessagesPerSecond": 50}
    ]
    assert "RUNNING: moved 0 of about 6" in output
    assert "COMPLETED: moved 6 of about 6" in output
    assert counts(sqs, queues["dlq"]) == (0, 0)
    assert counts(sqs, queues["queue"]) == (6, 0)


def test_a_failed_move_task_exits_non_zero(sqs: Any, queues: dict[str, str]) -> None:
    put_failures(sqs, queues)

    code, output = run(
        "--dlq-url", queues["dlq"], "--queue-url", queues["queue"], sqs=MoveTaskSqs(sqs, fail_with="AccessDenied")
    )

    assert code == 1
    assert "failure: AccessDenied" in output
    assert counts(sqs, queues["dlq"]) == (6, 0)


def test_cancel_and_status(sqs: Any, queues: dict[str, str]) -> None:
    put_failures(sqs, queues)
    client = MoveTaskSqs(sqs)
    args = ("--dlq-url", queues["dlq"], "--queue-url", queues["queue"])

    assert run(*args, "--no-wait", sqs=client)[0] == 0
    code, output = run(*args, "--cancel", sqs=client)
    assert code == 0 and "Cancelled the move task" in output
    code, output = run(*args, "--status", sqs=client)
    assert code == 0 and "Latest move task: CANCELLED" in output


def test_empty_dlq_is_nothing_to_do(sqs: Any, queues: dict[str, str]) -> None:
    code, output = run("--dlq-url", queues["dlq"], "--queue-url", queues["queue"], sqs=MoveTaskSqs(sqs))

    assert code == 0
    assert "empty: nothing to redrive" in output


class FakeCloudFormation:
    """DescribeStacks only, answering like CloudFormation (moto's CloudFormation takes seconds to import)."""

    def __init__(self, stacks: dict[str, dict[str, str]]) -> None:
        self.stacks = stacks

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if StackName not in self.stacks:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}},
                "DescribeStacks",
            )
        outputs = [{"OutputKey": key, "OutputValue": value} for key, value in self.stacks[StackName].items()]
        return {"Stacks": [{"StackName": StackName, "Outputs": outputs}]}


def test_queue_urls_come_from_the_stack_outputs(
    sqs: Any, queues: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    put_failures(sqs, queues)
    outputs = {"QueueUrl": queues["queue"], "DeadLetterQueueUrl": queues["dlq"], "ApiUrl": "https://x/v1/profiles"}
    monkeypatch.setenv("STACK_NAME", STACK)

    code, output = run("--dry-run", sqs=sqs, cloudformation=FakeCloudFormation({STACK: outputs}))

    assert code == 0, output
    assert f"Dead-letter queue: {queues['dlq']}" in output
    assert "about 6 messages waiting" in output


def test_stack_name_defaults_to_aep_moengage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACK_NAME", raising=False)
    assert redrive.build_parser().parse_args([]).stack_name == "aep-moengage"


@pytest.mark.parametrize(
    ("stacks", "message"),
    [
        ({}, "cannot read stack 'aep-moengage-test': ValidationError"),
        ({STACK: {"QueueUrl": "https://q"}}, "has no output DeadLetterQueueUrl"),
    ],
)
def test_stack_problems_are_clear_errors(
    sqs: Any, capsys: pytest.CaptureFixture[str], stacks: dict[str, dict[str, str]], message: str
) -> None:
    code, _ = run("--dry-run", "--stack-name", STACK, sqs=sqs, cloudformation=FakeCloudFormation(stacks))

    assert code == 2
    assert message in capsys.readouterr().err


def test_move_tasks_are_never_assumed_missing_on_aws() -> None:
    error = ClientError({"Error": {"Code": "500"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "StartMessageMoveTask")
    assert redrive.move_tasks_unsupported(error, "http://127.0.0.1:5000")
    assert not redrive.move_tasks_unsupported(error, "https://sqs.us-east-1.amazonaws.com")
    assert redrive.move_tasks_unsupported(NotImplementedError(), "https://sqs.us-east-1.amazonaws.com")
