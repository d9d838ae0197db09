"""Move the dead-letter queue's messages back to the profile queue, after the cause has been fixed.

    make redrive ARGS="--dry-run"                  # how many messages, and why they failed; moves nothing
    make redrive                                   # move them all back, wait and report progress
    make redrive ARGS="--stack-name aep-moengage-prod --max-per-second 50"
    make redrive ARGS="--cancel"                   # stop a running move

Queue URLs come from `--dlq-url`/`--queue-url` or from the CloudFormation stack's outputs `DeadLetterQueueUrl` and
`QueueUrl` (`--stack-name`, default `$STACK_NAME` or `aep-moengage`). boto3 picks credentials, the region and
`AWS_ENDPOINT_URL` (the local stack's moto server) from the environment as usual.

The move is SQS's own `StartMessageMoveTask` (progress from `ListMessageMoveTasks`), with the profile queue as an
explicit destination: the delivery function sends permanent failures to the DLQ itself, so those messages have no
"original source queue" for SQS to return them to. Endpoints that do not implement message move tasks (moto, hence
the local stack) get a client-side move instead: receive, send to the queue with the same body and attributes,
then delete. `--method` forces either way.

Why a message is in the DLQ is its message attribute `failure_reason` (detail in `failure_detail`), set by the
delivery function; a message without it was moved by SQS after maxReceiveCount receives: "retries exhausted".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from aep_moengage.models.queue import ATTR_FAILURE_DETAIL, ATTR_FAILURE_REASON

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        ListMessageMoveTasksResultEntryTypeDef,
        MessageAttributeValueOutputTypeDef,
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

DEFAULT_STACK_NAME = "aep-moengage"
RETRIES_EXHAUSTED = "retries exhausted"
NO_REASON_DETAIL = "no failure_reason attribute: SQS moved it after maxReceiveCount receives"

# While the dry run scans the DLQ, each received message stays hidden so the next receive returns other ones;
# at the end every one of them is made visible again at once (and SQS would do so itself after this long).
PEEK_HIDE_SECONDS = 120
# A client-side move hides a message this long between receiving it and deleting it from the DLQ.
MANUAL_MOVE_HIDE_SECONDS = 60
SQS_BATCH = 10
# Long polling (>= 1 s) asks every SQS server, so an empty answer means the queue is empty (short polling samples).
RECEIVE_WAIT_SECONDS = 1
EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 200
TERMINAL_STATUSES = frozenset({"COMPLETED", "CANCELLED", "FAILED"})

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class RedriveError(Exception):
    """A problem the operator must fix (wrong stack, missing output, queue not found); the message says which."""


@dataclass
class QueuePair:
    queue_url: str
    dlq_url: str
    queue_arn: str = ""
    dlq_arn: str = ""


@dataclass
class DlqSummary:
    """What a dry run saw in the DLQ."""

    approximate_visible: int
    approximate_in_flight: int
    inspected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    restored: int = 0  # messages made visible again after the scan
    restore_failures: int = 0


@dataclass
class MoveResult:
    method: str  # "move-task" or "client-side"
    status: str  # COMPLETED, FAILED, CANCELLED, RUNNING (not waited for)
    moved: int
    to_move: int | None = None
    failure_reason: str | None = None


# ------------------------------------------------------------------------------------------------------------------
# Queue lookup
# ------------------------------------------------------------------------------------------------------------------


def stack_queue_urls(cloudformation: Any, stack_name: str) -> tuple[str, str]:
    """(QueueUrl, DeadLetterQueueUrl) from the stack's outputs."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        raise RedriveError(f"cannot read stack {stack_name!r}: {_error_text(error)}") from None
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}
    missing = [key for key in ("QueueUrl", "DeadLetterQueueUrl") if key not in outputs]
    if missing:
        raise RedriveError(f"stack {stack_name!r} has no output {', '.join(missing)} (is it this connector's stack?)")
    return outputs["QueueUrl"], outputs["DeadLetterQueueUrl"]


def queue_counts(sqs: SQSClient, url: str) -> tuple[int, int]:
    """(visible, in flight) approximate message counts."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)), int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def describe_pair(sqs: SQSClient, pair: QueuePair, out: TextIO) -> QueuePair:
    """Fill in both ARNs; warn when the queue's redrive policy points at another DLQ."""
    try:
        queue = sqs.get_queue_attributes(QueueUrl=pair.queue_url, AttributeNames=["QueueArn", "RedrivePolicy"])
        dlq = sqs.get_queue_attributes(QueueUrl=pair.dlq_url, AttributeNames=["QueueArn"])
    except ClientError as error:
        raise RedriveError(f"cannot read the queues: {_error_text(error)}") from None
    pair.queue_arn = queue["Attributes"]["QueueArn"]
    pair.dlq_arn = dlq["Attributes"]["QueueArn"]
    if pair.dlq_arn not in queue["Attributes"].get("RedrivePolicy", ""):
        print(f"warning: {pair.queue_url} does not use {pair.dlq_url} as its dead-letter queue", file=out)
    return pair


# ------------------------------------------------------------------------------------------------------------------
# Dry run: count the DLQ's messages by failure reason, leaving every message visible
# ------------------------------------------------------------------------------------------------------------------


def _string_attribute(message: MessageTypeDef, name: str) -> str:
    attribute = message.get("MessageAttributes", {}).get(name)
    return attribute.get("StringValue", "").strip() if attribute else ""


def failure_reason(message: MessageTypeDef) -> str:
    return _string_attribute(message, ATTR_FAILURE_REASON) or RETRIES_EXHAUSTED


def failure_detail(message: MessageTypeDef) -> str:
    detail = _string_attribute(message, ATTR_FAILURE_DETAIL)
    if not detail and ATTR_FAILURE_REASON not in message.get("MessageAttributes", {}):
        detail = NO_REASON_DETAIL
    return detail[:EXAMPLE_CHARS] + ("..." if len(detail) > EXAMPLE_CHARS else "")


def peek_dlq(sqs: SQSClient, dlq_url: str, *, limit: int) -> DlqSummary:
    """Receive up to `limit` messages without consuming them: count reasons, then make all visible again.

    Receiving raises each message's receive count; in a DLQ (no redrive policy of its own) that is harmless.
    A message is hidden while the scan runs (so the next receive returns other messages; a visibility of 0
    at once would return the same few messages again) and made visible again as soon as the scan ends, also
    when it ends with an error or Ctrl-C.
    """
    visible, in_flight = queue_counts(sqs, dlq_url)
    summary = DlqSummary(approximate_visible=visible, approximate_in_flight=in_flight)
    handles: dict[str, str] = {}  # message id -> latest receipt handle
    idle_receives = 0
    try:
        # Stop at the limit, once every message SQS counted has been seen, or after two receives with nothing new.
        while len(handles) < min(limit, max(visible + in_flight, 1)) and idle_receives < 2:
            response = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=min(SQS_BATCH, limit - len(handles)),
                VisibilityTimeout=PEEK_HIDE_SECONDS,
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
            new = [message for message in response.get("Messages", []) if message["MessageId"] not in handles]
            for message in response.get("Messages", []):
                handles[message["MessageId"]] = message["ReceiptHandle"]
            idle_receives = 0 if new else idle_receives + 1
            for message in new:
                reason = failure_reason(message)
                summary.reasons[reason] += 1
                examples = summary.examples.setdefault(reason, [])
                detail = failure_detail(message)
                if len(examples) < EXAMPLES_PER_REASON and detail not in examples:
                    examples.append(detail)
    finally:
        summary.restored, summary.restore_failures = _make_visible(sqs, dlq_url, handles.values())
    summary.inspected = sum(summary.reasons.values())
    return summary


def _make_visible(sqs: SQSClient, url: str, receipt_handles: Iterable[str]) -> tuple[int, int]:
    handles = list(receipt_handles)
    restored = failed = 0
    for start in range(0, len(handles), SQS_BATCH):
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for index, handle in enumerate(handles[start : start + SQS_BATCH])
        ]
        response = sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
        restored += len(response.get("Successful", []))
        failed += len(response.get("Failed", []))
    return restored, failed


def print_summary(summary: DlqSummary, pair: QueuePair, out: TextIO) -> None:
    print(f"Dead-letter queue: {pair.dlq_url}", file=out)
    print(
        f"  about {summary.approximate_visible} messages waiting"
        + (
            f", {summary.approximate_in_flight} in flight (being read elsewhere)"
            if summary.approximate_in_flight
            else ""
        )
        + f"; inspected {summary.inspected}",
        file=out,
    )
    if not summary.reasons:
        return
    width = max(len("reason"), *(len(reason) for reason in summary.reasons))
    print(f"\n  {'reason'.ljust(width)}  messages", file=out)
    for reason, count in summary.reasons.most_common():
        print(f"  {reason.ljust(width)}  {count:>8}", file=out)
    print("\n  examples:", file=out)
    for reason, details in summary.examples.items():
        for detail in details:
            print(f"    {reason}: {detail or '(no detail)'}", file=out)
    if summary.restore_failures:
        print(
            f"\nwarning: {summary.restore_failures} messages could not be made visible at once;"
            f" they reappear within {PEEK_HIDE_SECONDS} s",
            file=out,
        )


# ------------------------------------------------------------------------------------------------------------------
# Move with SQS message move tasks
# ------------------------------------------------------------------------------------------------------------------


def latest_task(sqs: SQSClient, dlq_arn: str) -> ListMessageMoveTasksResultEntryTypeDef | None:
    results = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results", [])
    return results[0] if results else None


def move_with_task(
    sqs: SQSClient,
    pair: QueuePair,
    *,
    max_per_second: int | None,
    wait: bool,
    poll_seconds: float,
    timeout_seconds: float,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> MoveResult:
    current = latest_task(sqs, pair.dlq_arn)
    if current is not None and current.get("Status") == "RUNNING":
        print("A move task is already running on this DLQ (SQS allows one at a time): following it.", file=out)
    else:
        request: dict[str, Any] = {"SourceArn": pair.dlq_arn, "DestinationArn": pair.queue_arn}
        if max_per_second:
            request["MaxNumberOfMessagesPerSecond"] = max_per_second
        handle = sqs.start_message_move_task(**request)["TaskHandle"]
        rate = f"{max_per_second}/s" if max_per_second else "a rate SQS chooses"
        print(f"Started moving messages to {pair.queue_url} at {rate} (task {handle[:24]}...).", file=out)
    if not wait:
        print("Not waiting (--no-wait): follow it with `make redrive ARGS=--status`.", file=out)
        return MoveResult(method="move-task", status="RUNNING", moved=0)
    return wait_for_task(
        sqs, pair, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds, out=out, sleep=sleep, clock=clock
    )


def wait_for_task(
    sqs: SQSClient,
    pair: QueuePair,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> MoveResult:
    deadline = clock() + timeout_seconds if timeout_seconds > 0 else None
    last_line = ""
    while True:
        task = latest_task(sqs, pair.dlq_arn)
        if task is None:
            raise RedriveError("SQS lists no move task for this DLQ")
        status = task.get("Status", "UNKNOWN")
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        to_move = task.get("ApproximateNumberOfMessagesToMove")
        line = f"  {status}: moved {moved}" + (f" of about {to_move}" if to_move is not None else "")
        if line != last_line:
            print(line, file=out)
            last_line = line
        if status in TERMINAL_STATUSES:
            return MoveResult(
                method="move-task",
                status=status,
                moved=moved,
                to_move=int(to_move) if to_move is not None else None,
                failure_reason=task.get("FailureReason"),
            )
        if deadline is not None and clock() >= deadline:
            print(f"Stopped waiting after {timeout_seconds:g} s; the move goes on (see --status).", file=out)
            return MoveResult(method="move-task", status=status, moved=moved)
        sleep(poll_seconds)


def cancel_task(sqs: SQSClient, pair: QueuePair, out: TextIO) -> int:
    task = latest_task(sqs, pair.dlq_arn)
    if task is None or task.get("Status") != "RUNNING" or "TaskHandle" not in task:
        print("No running move task on this DLQ.", file=out)
        return EXIT_OK
    moved = sqs.cancel_message_move_task(TaskHandle=task["TaskHandle"]).get("ApproximateNumberOfMessagesMoved", 0)
    print(f"Cancelled the move task after about {moved} messages; the rest stay in the DLQ.", file=out)
    return EXIT_OK


def print_status(sqs: SQSClient, pair: QueuePair, out: TextIO) -> int:
    task = latest_task(sqs, pair.dlq_arn)
    if task is None:
        print("No move task has run on this DLQ recently.", file=out)
        return EXIT_OK
    to_move = task.get("ApproximateNumberOfMessagesToMove")
    print(
        f"Latest move task: {task.get('Status')}, moved {task.get('ApproximateNumberOfMessagesMoved', 0)}"
        + (f" of about {to_move}" if to_move is not None else "")
        + (f", failure: {task['FailureReason']}" if task.get("FailureReason") else ""),
        file=out,
    )
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------------
# Client-side move (endpoints without message move tasks, e.g. moto for the local stack)
# ------------------------------------------------------------------------------------------------------------------


def move_client_side(sqs: SQSClient, pair: QueuePair, out: TextIO) -> MoveResult:
    """Receive from the DLQ, send each message to the queue with the same body and attributes, then delete it.

    At least once: a message is deleted only after SQS accepted its copy, so an interruption can duplicate a
    message but never lose one (delivery is idempotent). A message whose copy failed reappears in the DLQ
    after MANUAL_MOVE_HIDE_SECONDS and is reported.
    """
    moved = failed = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=pair.dlq_url,
            MaxNumberOfMessages=SQS_BATCH,
            VisibilityTimeout=MANUAL_MOVE_HIDE_SECONDS,
            WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for index, message in enumerate(messages):
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(index), "MessageBody": message["Body"]}
            attributes = _copyable_attributes(message.get("MessageAttributes", {}))
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=pair.queue_url, Entries=entries)
        sent = {int(result["Id"]) for result in response.get("Successful", [])}
        failed += len(response.get("Failed", []))
        if sent:
            sqs.delete_message_batch(
                QueueUrl=pair.dlq_url,
                Entries=[{"Id": str(index), "ReceiptHandle": messages[index]["ReceiptHandle"]} for index in sent],
            )
        moved += len(sent)
        if not sent:  # every copy failed: stop rather than spin on the same messages
            break
    print(f"  moved {moved} messages" + (f", {failed} copies failed (still in the DLQ)" if failed else ""), file=out)
    return MoveResult(method="client-side", status="FAILED" if failed else "COMPLETED", moved=moved)


def _copyable_attributes(
    attributes: dict[str, MessageAttributeValueOutputTypeDef],
) -> dict[str, MessageAttributeValueTypeDef]:
    """What SendMessage takes back: DataType and the value (the list fields are reserved and refused)."""
    copied: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in attributes.items():
        kept: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        copied[name] = kept
    return copied


def move_tasks_unsupported(error: BaseException, endpoint_url: str) -> bool:
    """True when the endpoint does not implement message move tasks (never assumed of AWS itself)."""
    if isinstance(error, NotImplementedError):  # moto in-process
        return True
    if not isinstance(error, ClientError) or _is_aws_endpoint(endpoint_url):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return status in (500, 501) or code in {"InvalidAction", "NotImplemented", "UnsupportedOperation", "500", "501"}


def _is_aws_endpoint(endpoint_url: str) -> bool:
    host = urlparse(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


# ------------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops.redrive",
        description="Move the DLQ's messages back to the profile queue after a fix (SQS StartMessageMoveTask).",
    )
    parser.add_argument(
        "--stack-name",
        default=os.environ.get("STACK_NAME") or DEFAULT_STACK_NAME,
        help="stack whose outputs give the queue URLs (default: $STACK_NAME or %(default)s)",
    )
    parser.add_argument("--queue-url", help="the profile queue (destination); default: stack output QueueUrl")
    parser.add_argument("--dlq-url", help="the dead-letter queue (source); default: stack output DeadLetterQueueUrl")
    parser.add_argument("--region", help="AWS region (default: from the environment / profile)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--dry-run", action="store_true", help="count the messages and their failure reasons; move nothing"
    )
    action.add_argument("--status", action="store_true", help="show the latest move task and exit")
    action.add_argument("--cancel", action="store_true", help="cancel the running move task")
    parser.add_argument(
        "--limit", type=int, default=10_000, help="dry run: inspect at most this many messages (default %(default)s)"
    )
    parser.add_argument(
        "--max-per-second",
        type=int,
        choices=range(1, 501),
        metavar="1-500",
        help="move at most this many messages a second (default: SQS decides)",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "move-task", "client-side"),
        default="auto",
        help="auto (default): SQS move task, or a client-side move where the endpoint has none (moto)",
    )
    parser.add_argument("--no-wait", action="store_true", help="start the move task and return at once")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="progress poll interval (default 5)")
    parser.add_argument(
        "--timeout-seconds", type=float, default=0, help="stop waiting after this long (default 0: until done)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    sqs: SQSClient | None = None,
    cloudformation: Any = None,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    args = build_parser().parse_args(argv)
    if args.limit < 1:
        print("--limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    region = {"region_name": args.region} if args.region else {}
    sqs = sqs or boto3.client("sqs", **region)
    try:
        if args.queue_url and args.dlq_url:
            pair = QueuePair(queue_url=args.queue_url, dlq_url=args.dlq_url)
        else:
            queue_url, dlq_url = stack_queue_urls(
                cloudformation or boto3.client("cloudformation", **region), args.stack_name
            )
            pair = QueuePair(queue_url=args.queue_url or queue_url, dlq_url=args.dlq_url or dlq_url)
        describe_pair(sqs, pair, out)

        if args.status:
            return print_status(sqs, pair, out)
        if args.cancel:
            return cancel_task(sqs, pair, out)
        if args.dry_run:
            print_summary(peek_dlq(sqs, pair.dlq_url, limit=args.limit), pair, out)
            print(f"\nDry run: nothing moved. Without --dry-run the messages go back to {pair.queue_url}.", file=out)
            return EXIT_OK

        visible, in_flight = queue_counts(sqs, pair.dlq_url)
        if visible == 0 and in_flight == 0:
            print(f"The dead-letter queue {pair.dlq_url} is empty: nothing to redrive.", file=out)
            return EXIT_OK
        print(f"Moving about {visible} messages from {pair.dlq_url} to {pair.queue_url}.", file=out)
        result = _move(sqs, pair, args, out, sleep, clock)
    except RedriveError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, BotoCoreError, NotImplementedError) as error:
        print(f"error: {_error_text(error)}", file=sys.stderr)
        return EXIT_FAILED

    after_dlq, _ = queue_counts(sqs, pair.dlq_url)
    after_queue, after_queue_in_flight = queue_counts(sqs, pair.queue_url)
    print(
        f"{result.status} ({result.method}): moved {result.moved}. Now about {after_dlq} in the DLQ,"
        f" {after_queue + after_queue_in_flight} in the queue.",
        file=out,
    )
    if result.failure_reason:
        print(f"failure: {result.failure_reason}", file=out)
    return EXIT_OK if result.status in ("COMPLETED", "RUNNING") else EXIT_FAILED


def _move(
    sqs: SQSClient,
    pair: QueuePair,
    args: argparse.Namespace,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> MoveResult:
    if args.method == "client-side":
        return move_client_side(sqs, pair, out)
    try:
        return move_with_task(
            sqs,
            pair,
            max_per_second=args.max_per_second,
            wait=not args.no_wait,
            poll_seconds=args.poll_seconds,
            timeout_seconds=args.timeout_seconds,
            out=out,
            sleep=sleep,
            clock=clock,
        )
    except (NotImplementedError, ClientError) as error:
        if args.method == "auto" and move_tasks_unsupported(error, sqs.meta.endpoint_url):
            print(f"{sqs.meta.endpoint_url} has no SQS message move tasks: moving client-side instead.", file=out)
            return move_client_side(sqs, pair, out)
        raise


def _error_text(error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".strip()
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
