"""boto3 clients from small cached factories: nothing is built at import time (moto and cold starts)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# Ingest answers AEP within 2 s, so SQS calls get short timeouts; our own loop retries within a deadline.
_SQS_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "max_attempts": 2})


@cache
def sqs_client() -> SQSClient:
    return boto3.client("sqs", config=_SQS_CONFIG)
