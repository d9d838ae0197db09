"""Benchmarks of the AEP -> MoEngage connector (`make bench`, i.e. `python -m bench`).

Every figure is measured in one run on this machine and, where it is a time, reported as a median (or p99) and as
a ratio to a reference measured side by side in the same run (a bare SQS send, `import boto3`), so that the noise
of a shared machine hits both. What each figure means: the README, section Benchmarks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
INGEST_DIR = ROOT / "functions" / "ingest"
DELIVER_DIR = ROOT / "functions" / "deliver"
LAYER_DIR = ROOT / "layers" / "common"


def layer_dir() -> Path:
    """The layer's source: the project's, or a patched copy (env BENCH_LAYER_DIR) to measure a change."""
    return Path(os.environ.get("BENCH_LAYER_DIR") or LAYER_DIR)


def add_handler_paths() -> None:
    """Make `ingest_app` and `deliver_app` importable, as the Lambda runtime does from each function's CodeUri."""
    for folder in (INGEST_DIR, DELIVER_DIR, layer_dir()):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
