"""MoEngage Data API adapter: the only module that speaks HTTP. One call, classified by a table.

Retrying, splitting and bisecting are decided by `sending.py` from the classification returned here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from requests.adapters import HTTPAdapter

from aep_moengage.models.moengage import MoEngageErrorBody

EPOCH_THRESHOLD = 1e9  # x-ratelimit-reset below this is seconds to wait, above it an epoch time
MAX_DETAIL_LENGTH = 300


class MoEngageCredentials(BaseModel):
    """The MoEngage secret: `{"workspace_id", "data_api_key", "data_center"}`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workspace_id: str = Field(min_length=1)
    data_api_key: SecretStr = Field(min_length=1)
    data_center: str | None = None


class CredentialsSource(Protocol):
    def __call__(self, *, force: bool = False) -> MoEngageCredentials: ...


class CallKind(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"  # retry after x-ratelimit-reset or a backoff
    TRANSIENT = "transient"  # 5xx, timeout, connection reset: retry with backoff
    AUTH = "auth"  # 401/403: re-read the secret once, else hand back to SQS
    TOO_LARGE = "too_large"  # 413: split the request
    BAD_REQUEST = "bad_request"  # 400: bisect to isolate the bad elements
    PERMANENT = "permanent"  # any other 4xx


# The classification table: status -> kind. 2xx is OK, 5xx TRANSIENT, any other status PERMANENT.
STATUS_KINDS: dict[int, CallKind] = {
    400: CallKind.BAD_REQUEST,
    401: CallKind.AUTH,
    403: CallKind.AUTH,
    408: CallKind.TRANSIENT,
    413: CallKind.TOO_LARGE,
    429: CallKind.RATE_LIMITED,
}


def classify_status(status: int) -> CallKind:
    if 200 <= status < 300:
        return CallKind.OK
    if status >= 500:
        return CallKind.TRANSIENT
    return STATUS_KINDS.get(status, CallKind.PERMANENT)


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "network"


@dataclass(frozen=True)
class CallResult:
    kind: CallKind
    status: int | None  # None: no HTTP answer (timeout, connection error)
    latency_ms: float
    retry_after_seconds: float | None = None  # from x-ratelimit-reset
    error_type: str = ""
    error_message: str = ""  # scrubbed of credentials; may still echo data, so redact before logging

    @property
    def detail(self) -> str:
        status = f"HTTP {self.status}" if self.status else "no response"
        text = ": ".join(part for part in (self.error_type, self.error_message) if part)
        return f"{status} {text}".strip()[:MAX_DETAIL_LENGTH]


def retry_after_seconds(reset_header: str | None, now: float) -> float | None:
    """x-ratelimit-reset holds seconds to wait (MoEngage's overview) or a UTC epoch (its rate-limit page)."""
    if not reset_header:
        return None
    try:
        value = float(reset_header.strip())
    except ValueError:
        return None
    wait = value - now if value >= EPOCH_THRESHOLD else value
    return max(0.0, wait)


def new_session(pool_size: int = 4) -> requests.Session:
    """A session that keeps connections open between calls and invocations; retries are ours, not urllib3's."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class MoEngageClient:
    def __init__(
        self,
        *,
        session: requests.Session,
        base_url: str,
        credentials: CredentialsSource,
        timeout: tuple[float, float] = (3.0, 10.0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._credentials_source = credentials
        self._credentials = credentials()
        self._timeout = timeout
        self._clock = clock

    @property
    def timeout_seconds(self) -> float:
        return sum(self._timeout)

    def refresh_credentials(self) -> None:
        """Re-read the secret (after a 401/403: the key may have been rotated)."""
        self._credentials = self._credentials_source(force=True)

    def post_bulk(self, elements: Sequence[bytes]) -> CallResult:
        """POST /v1/transition/{workspace_id} with already serialized elements."""
        credentials = self._credentials
        url = f"{self._base_url}/v1/transition/{quote(credentials.workspace_id, safe='')}"
        body = bulk_body(elements)
        auth = (credentials.workspace_id, credentials.data_api_key.get_secret_value())
        started = time.perf_counter()
        try:
            response = self._session.post(
                url,
                data=body,
                auth=auth,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except requests.Timeout as error:
            return CallResult(CallKind.TRANSIENT, None, _since(started), None, type(error).__name__, "timeout")
        except requests.RequestException as error:  # connection refused/reset, TLS, ...
            return CallResult(CallKind.TRANSIENT, None, _since(started), None, type(error).__name__, "connection error")
        latency = _since(started)
        kind = classify_status(response.status_code)
        if kind is CallKind.OK:
            return CallResult(kind, response.status_code, latency)
        error_type, error_message = _error_text(response.text)
        # The key itself and the Basic header value (base64 of workspace:key) MoEngage may echo back.
        secrets = (auth[1], base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        return CallResult(
            kind,
            response.status_code,
            latency,
            retry_after_seconds(response.headers.get("x-ratelimit-reset"), self._clock()),
            scrub(error_type, *secrets),
            scrub(error_message, *secrets),
        )


def bulk_body(elements: Sequence[bytes]) -> bytes:
    return b'{"type":"transition","elements":[' + b",".join(elements) + b"]}"


def bulk_body_size(element_sizes: int, count: int) -> int:
    """Size of `bulk_body` for `count` elements whose bodies add up to `element_sizes` bytes."""
    return len(bulk_body([])) + element_sizes + max(0, count - 1)


def scrub(text: str, *secrets: str) -> str:
    """Remove secrets and Authorization values from text that may be logged or sent to the DLQ."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    lowered = text.lower()
    marker = lowered.find("authorization")
    if marker >= 0:
        text = text[:marker] + "authorization: ***"
    return text[:MAX_DETAIL_LENGTH]


def _error_text(body: str) -> tuple[str, str]:
    try:
        parsed = MoEngageErrorBody.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return "", ""
    error = parsed.error
    if error is None:
        return "", ""
    return error.type or "", error.message or ""


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
