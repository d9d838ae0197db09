"""The ingest handler served over real HTTP, as API Gateway's HTTP API (payload format 2.0) would call it."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.esm import InvokeContext

ROUTE = ("POST", "/v1/profiles")
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # HTTP API payload quota


def api_gateway_event(method: str, path: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict[str, Any]:
    """An HTTP API v2 event: lower-case header names, text bodies as strings, others base64-encoded."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    now = datetime.now(UTC)
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip},
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class IngestServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], handler: Callable[[dict[str, Any], Any], dict[str, Any]], timeout: float
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.lambda_handler = handler
        self.function_timeout = timeout
        # One Lambda execution environment handles one request at a time: so does the local one.
        self.environment_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="ingest-api", daemon=True
        ).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RequestHandler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args: Any) -> None:  # the handlers' JSON logs are the access log
        return

    def _serve(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("content-length") or 0)
        if length > API_GATEWAY_MAX_BODY:
            self._send(413, {"message": "Request Entity Too Large"}, {})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if (method, path) != ROUTE:
            self._send(404, {"message": "Not Found"}, {})
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        event = api_gateway_event(method, path, headers, body, self.client_address[0])
        with self.server.environment_lock:
            started = time.monotonic()
            try:
                response = self.server.lambda_handler(
                    event, InvokeContext("IngestFunction", self.server.function_timeout)
                )
            except Exception:  # what API Gateway answers when the function crashes
                self._send(500, {"message": "Internal Server Error"}, {})
                return
            if time.monotonic() - started > self.server.function_timeout:
                self._send(503, {"message": "Service Unavailable"}, {})
                return
        self._send(response["statusCode"], response.get("body", ""), response.get("headers", {}))

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        payload = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if "content-type" not in {name.lower() for name in headers}:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
