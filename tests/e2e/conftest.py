"""The local stack (`python -m devstack`, what `make local` runs) on free ports, for end-to-end tests."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests

from devstack.process import StackProcess

TOKEN = "e2e-token"


class RunningStack(StackProcess):
    """The local stack in a subprocess, with what the tests ask of it."""

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
    """Times at 1/100 of the template's (LOCAL_TIME_SCALE), so that redelivery and the DLQ take seconds."""
    stack = RunningStack(
        {"LOCAL_TIME_SCALE": "0.01", "POWERTOOLS_METRICS_DISABLED": "true", **(extra_env or {})}, token=TOKEN
    )
    stack.start(timeout=60)
    return stack
