"""The local stack (`python -m devstack`, as `make local` runs it) with one benchmark hook: every Data API request the
MoEngage emulator answers is reported on stdout as `BENCH <epoch seconds> <status> <customer elements>`, so that
delivery is timed where MoEngage sees it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from bench import add_handler_paths

_print_lock = threading.Lock()


def _install_hooks() -> None:
    from devstack.moengage_emulator import MoEngageEmulator

    handle = MoEngageEmulator._handle_data_api

    def reported(
        self: MoEngageEmulator, method: str, path: str, kind: str, workspace: str, headers: Any, raw: bytes
    ) -> Any:
        reply = handle(self, method, path, kind, workspace, headers, raw)
        users = raw.count(b'"type":"customer"')
        with _print_lock:
            sys.stdout.write(f"BENCH {time.time():.6f} {reply.status} {users}\n")
            sys.stdout.flush()
        return reply

    MoEngageEmulator._handle_data_api = reported  # type: ignore[method-assign]


def main() -> int:
    add_handler_paths()
    _install_hooks()
    from devstack.__main__ import main as run_stack

    return run_stack()


if __name__ == "__main__":
    sys.exit(main())
