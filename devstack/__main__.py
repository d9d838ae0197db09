"""`make local`: run the whole pipeline in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from devstack.stack import LocalStack


def main() -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack()
    try:
        stack.start()
        config = stack.config
        print(f"ingest API      POST {stack.api_url}  (Authorization: Bearer {config.ingest_token})")
        print(f"AWS (moto)      {stack.aws_endpoint}  queue {stack.queue_url}")
        print(f"                dlq {stack.dlq_url}")
        if stack.emulator:
            print(f"MoEngage        {stack.emulator.base_url}  (GET /_emulator/users/<customer_id>)")
        print(f"time scale      {config.time_scale}", flush=True)
        print("ready", flush=True)
        stopping.wait()
    finally:
        print("stopping", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
