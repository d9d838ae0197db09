"""`make local`: run the whole pipeline in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from types import FrameType

from devstack.stack import LocalStack


def busy_ports(stack: LocalStack) -> list[str]:
    """Ports of the contract that another program holds, with the variable that moves each."""
    config = stack.config
    wanted = {
        "LOCAL_API_PORT": config.api_port,
        "LOCAL_AWS_PORT": config.aws_port,
        "MOENGAGE_EMULATOR_PORT": config.emulator_port if config.real_moengage is None else 0,
    }
    busy = []
    for variable, port in wanted.items():
        if not port:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((config.host, port))
            except OSError:
                busy.append(f"port {port} is in use (set {variable} to another port, or stop the program using it)")
    return busy


def main() -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack()
    busy = busy_ports(stack)
    if busy:
        print("cannot start: " + "; ".join(busy), file=sys.stderr)
        return 1
    try:
        stack.start()
        config = stack.config
        print(f"ingest API      POST {stack.api_url}  (Authorization: Bearer {config.ingest_token})")
        print(f"AWS (moto)      {stack.aws_endpoint}  queue {stack.queue_url}")
        print(f"                dlq {stack.dlq_url}")
        if stack.emulator:
            print(f"MoEngage        {stack.emulator.base_url}  (GET /_emulator/users/<customer_id>)")
        elif config.real_moengage:
            real = config.real_moengage
            print(f"MoEngage        the REAL MoEngage: workspace {real.workspace_id} in {real.data_center}")
        print(f"time scale      {config.time_scale}", flush=True)
        print("ready", flush=True)
        stopping.wait()
    finally:
        print("stopping", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
