"""Starts the local stack (`python -m devstack`, what `make local` runs) on free ports for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests

from tests.conftest import ROOT

TOKEN = "e2e-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStack:
    api_url: str
    emulator_url: str
    aws_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def post(
        self, body: bytes | str, *, token: str = TOKEN, content_type: str = "application/json"
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
        data = body.encode("utf-8") if isinstance(body, str) else body
        return requests.post(self.api_url, data=data, headers=headers, timeout=10)

    def user(self, customer_id: str) -> dict[str, Any] | None:
        response = requests.get(
            f"{self.emulator_url}/_emulator/users/{urllib.parse.quote(customer_id, safe='')}", timeout=5
        )
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return requests.post(f"{self.emulator_url}/_emulator/{path}", json=body or {}, timeout=5).json()

    def requests_log(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.emulator_url}/_emulator/requests", timeout=5).json()["requests"]  # type: ignore[no-any-return]

    def sqs(self) -> Any:
        return boto3.client(
            "sqs", endpoint_url=self.aws_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )

    def queue_depths(self) -> dict[str, int]:
        sqs = self.sqs()
        depths = {}
        for url in sqs.list_queues()["QueueUrls"]:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            depths[url.rsplit("/", 1)[1]] = int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            )
        return depths

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        tail = "\n".join(self.output[-30:])
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; stack output:\n{tail}")

    def wait_idle(self, timeout: float = 30) -> None:
        """Until the main queue is empty (everything delivered or dead-lettered)."""
        self.wait_for(lambda: self.queue_depths()["aep-moengage-profiles"] == 0, timeout, "an empty queue")


def start_stack(extra_env: dict[str, str] | None = None) -> RunningStack:
    api, aws, emulator = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "MOENGAGE_"))},
        "LOCAL_API_PORT": str(api),
        "LOCAL_AWS_PORT": str(aws),
        "MOENGAGE_EMULATOR_PORT": str(emulator),
        "LOCAL_INGEST_TOKEN": TOKEN,
        "LOCAL_TIME_SCALE": "0.01",
        "POWERTOOLS_METRICS_DISABLED": "true",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )
    stack = RunningStack(
        f"http://127.0.0.1:{api}/v1/profiles", f"http://127.0.0.1:{emulator}", f"http://127.0.0.1:{aws}", process
    )
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line.rstrip("\n"))
            if line.strip() == "ready":
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60):
        process.kill()
        raise AssertionError("the local stack did not print 'ready':\n" + "\n".join(stack.output[-40:]))
    return stack


def stop_stack(stack: RunningStack) -> None:
    stack.process.terminate()
    try:
        stack.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        raise


@pytest.fixture(scope="module")
def local_stack() -> Iterator[RunningStack]:
    stack = start_stack()
    yield stack
    stop_stack(stack)
    assert stack.process.returncode == 0, "\n".join(stack.output[-40:])


def json_lines(stack: RunningStack) -> list[dict[str, Any]]:
    lines = []
    for line in stack.output:
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines
