"""The local stack in a subprocess on free ports, for end-to-end tests, `make chaos` and `make bench`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class StackProcess:
    """`python -m devstack` (what `make local` runs) in a subprocess on free ports; keeps every line it prints.

    `module` runs a variant (the benchmark's hooked stack); `on_line` sees each line first and returns True to keep
    it out of `output`.
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        token: str = "local-dev-token",  # noqa: S107 - the documented local token
        module: str = "devstack",
        on_line: Callable[[str], bool] | None = None,
    ) -> None:
        self.api_port, self.aws_port, self.emulator_port = free_port(), free_port(), free_port()
        self.module = module
        self._on_line = on_line
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "MOENGAGE_"))},
            "LOCAL_API_PORT": str(self.api_port),
            "LOCAL_AWS_PORT": str(self.aws_port),
            "MOENGAGE_EMULATOR_PORT": str(self.emulator_port),
            "LOCAL_INGEST_TOKEN": token,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.output: list[str] = []
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}/v1/profiles"

    @property
    def emulator_url(self) -> str:
        return f"http://{HOST}:{self.emulator_port}"

    @property
    def aws_url(self) -> str:
        return f"http://{HOST}:{self.aws_port}"

    def start(self, timeout: float = 90) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter and a module of the project
            [sys.executable, "-m", self.module],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        threading.Thread(target=self._pump, name="stack-output", daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("the local stack did not print 'ready':\n" + "\n".join(self.output[-40:]))

    def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if self._on_line is not None and self._on_line(line):
                continue
            self.output.append(line.rstrip("\n"))
            if line.strip() == "ready":
                self._ready.set()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def sqs(self) -> SQSClient:
        return boto3.client(
            "sqs",
            endpoint_url=self.aws_url,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto's placeholder credentials
        )

    def aws_env(self) -> dict[str, str]:
        """Environment for `ops.redrive` against the stack's moto server."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {
            **base,
            "AWS_ENDPOINT_URL": self.aws_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
        }
