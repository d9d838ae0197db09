"""Cold start: import time of each handler in a fresh interpreter, as a ratio to `import boto3` measured the same
way in the same run; resident memory after import; where the import time goes; the size of what `sam build` built.

Two conditions, because Lambda cannot write bytecode caches (its code directories are read-only):
- "no bytecode": the standard library is compiled (as in Lambda's runtime) but nothing else: every module of the
  layer and the functions is compiled from source on each import. This is what `sam build` ships today: no `.pyc`
  (counted below; aws-lambda-builders unpacks wheels without compiling), and the layer pins boto3 and botocore,
  which shadow the runtime's compiled copies.
- "bytecode": every module already compiled, as a layer precompiled at build time would give.
Each run imports one module in a new interpreter; the modules take turns within each round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import DELIVER_DIR, INGEST_DIR, ROOT, layer_dir

MODULES = ("boto3", "ingest_app", "deliver_app")
RUNS = {"no_bytecode": 5, "bytecode": 7}
POOR_RATIO = 2.0
# The child prints the import time and its peak resident size in KiB: VmHWM, which starts afresh with the new
# program (ru_maxrss would carry over the benchmark's own peak from before the fork).
_CHILD = (
    "import re, time\n"
    "started = time.perf_counter()\n"
    "import {module}\n"
    "elapsed = time.perf_counter() - started\n"
    "status = open('/proc/self/status').read()\n"
    "print(elapsed, re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
)


def _environment(layer: Path, cache_dir: str, *, write_bytecode: bool) -> dict[str, str]:
    """A clean environment like the function's: the template's Powertools settings, the code on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(p) for p in (INGEST_DIR, DELIVER_DIR, layer)),
            "PYTHONPYCACHEPREFIX": cache_dir,  # a private cache: the venv's own __pycache__ (if any) is not used
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_SERVICE_NAME": "aep-moengage",
            "POWERTOOLS_METRICS_NAMESPACE": "AepMoEngage",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
    )
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# Compiles, into the private cache, only the standard-library modules the handlers import.
_STDLIB_CHILD = (
    "import importlib.util, py_compile, sys, sysconfig\n"
    "import boto3, ingest_app, deliver_app\n"
    "stdlib = sysconfig.get_paths()['stdlib']\n"
    "for module in list(sys.modules.values()):\n"
    "    path = getattr(module, '__file__', None) or ''\n"
    "    if path.startswith(stdlib) and path.endswith('.py') and 'site-packages' not in path:\n"
    "        py_compile.compile(path, cfile=importlib.util.cache_from_source(path), doraise=True)\n"
)


def _import_once(module: str, env: dict[str, str], *extra: str) -> tuple[float, int, str]:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, *extra, "-c", _CHILD.format(module=module)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seconds, maxrss_kib = completed.stdout.split()
    return float(seconds), int(maxrss_kib), completed.stderr


def import_times(runs: dict[str, int] | None = None) -> dict[str, Any]:
    runs = runs or RUNS
    code = layer_dir()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pyc-") as cache:
        for condition, count in runs.items():
            cached = condition == "bytecode"
            cache_dir = os.path.join(cache, condition)
            env = _environment(code, cache_dir, write_bytecode=cached)
            if cached:
                for module in MODULES:
                    _import_once(module, env)  # fills the cache
            else:
                subprocess.run(  # noqa: S603 - our own interpreter and code
                    [sys.executable, "-c", _STDLIB_CHILD], env=env, cwd=ROOT, timeout=120, check=True
                )
            seconds: dict[str, list[float]] = {module: [] for module in MODULES}
            rss: dict[str, list[int]] = {module: [] for module in MODULES}
            for number in range(count):
                order = MODULES[number % len(MODULES) :] + MODULES[: number % len(MODULES)]
                for module in order:
                    elapsed, maxrss, _ = _import_once(module, env)
                    seconds[module].append(elapsed)
                    rss[module].append(maxrss)
            medians = {module: statistics.median(values) * 1000 for module, values in seconds.items()}
            results[condition] = {
                "runs": count,
                "median_ms": {module: round(ms, 1) for module, ms in medians.items()},
                "ratio_to_boto3": {
                    module: round(medians[module] / medians["boto3"], 2) for module in MODULES if module != "boto3"
                },
                "peak_rss_mib": {module: round(statistics.median(rss[module]) / 1024, 1) for module in MODULES},
            }
        ratios = [ratio for condition in runs for ratio in results[condition]["ratio_to_boto3"].values()]
        if any(ratio > POOR_RATIO for ratio in ratios):
            env = _environment(code, os.path.join(cache, "bytecode"), write_bytecode=True)
            results["import_profile"] = {module: _import_profile(module, env) for module in MODULES[1:]}
    return results


# After a cold start (handler imported, its clients built): a full collection's pause, then the same after
# gc.freeze() (which moves every object alive at that point out of the collector's reach).
_GC_CHILD = (
    "import gc, statistics, time, boto3, requests\n"
    "import {module}\n"
    "clients = boto3.client('sqs'), boto3.client('secretsmanager'), requests.Session()\n"
    "def pause():\n"
    "    times = []\n"
    "    for _ in range(5):\n"
    "        started = time.perf_counter(); gc.collect(); times.append(time.perf_counter() - started)\n"
    "    return statistics.median(times)\n"
    "objects = len(gc.get_objects()); before = pause(); gc.freeze(); after = pause()\n"
    "print(objects, before, after)\n"
)


def gc_pauses() -> dict[str, Any]:
    """The longest pause the collector can add to an invocation (a full collection), per handler."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pyc-") as cache:
        env = _environment(layer_dir(), cache, write_bytecode=True)
        for module in MODULES[1:]:
            completed = subprocess.run(  # noqa: S603 - our own interpreter and code
                [sys.executable, "-c", _GC_CHILD.format(module=module)],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            objects, before, after = completed.stdout.split()
            results[module] = {
                "tracked_objects": int(objects),
                "full_collection_ms": round(float(before) * 1000, 1),
                "after_gc_freeze_ms": round(float(after) * 1000, 2),
            }
    return results


def _import_profile(module: str, env: dict[str, str], top: int = 8) -> dict[str, Any]:
    """`python -X importtime`: the modules with the most time of their own, and the cost of the big packages."""
    _, _, stderr = _import_once(module, env, "-X", "importtime")
    own: list[tuple[int, str]] = []
    cumulative: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, self_us, cumulative_us, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
        if not self_us.isdigit():
            continue
        own.append((int(self_us), name))
        cumulative[name] = int(cumulative_us)
    own.sort(reverse=True)
    packages = (
        "boto3",
        "aws_xray_sdk.core",
        "pydantic",
        "requests",
        "aws_lambda_powertools.utilities.batch",
        "aws_lambda_powertools.utilities.parameters",
        "aep_moengage.models.queue",
    )
    return {
        "total_ms": round(cumulative.get(module, 0) / 1000, 1),
        "own_time_ms": {name: round(us / 1000, 1) for us, name in own[:top]},
        "package_ms": {name: round(cumulative[name] / 1000, 1) for name in packages if name in cumulative},
    }


def build_sizes() -> dict[str, Any]:
    """Bytes of each artifact `sam build` left in .aws-sam/build (what Lambda unzips), and what the layer holds."""
    build = ROOT / ".aws-sam" / "build"
    if not build.is_dir():
        return {"built": False, "note": "not built: run `make build` (sam build) first"}
    artifacts: dict[str, Any] = {}
    for artifact in sorted(path for path in build.iterdir() if path.is_dir()):
        files = [path for path in artifact.rglob("*") if path.is_file()]
        artifacts[artifact.name] = {
            "mib": round(sum(path.stat().st_size for path in files) / 1024 / 1024, 2),
            "files": len(files),
            "pyc_files": sum(1 for path in files if path.suffix == ".pyc"),
        }
    layer_packages: dict[str, float] = {}
    site = build / "CommonLayer" / "python"
    if site.is_dir():
        for entry in site.iterdir():
            if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
                size = sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())
                layer_packages[entry.name] = round(size / 1024 / 1024, 2)
    newest = max((path.stat().st_mtime for path in build.rglob("*.py")), default=0.0)
    return {
        "built": True,
        "artifacts": artifacts,
        "layer_top_packages_mib": dict(sorted(layer_packages.items(), key=lambda item: -item[1])[:6]),
        "built_at_epoch": round(newest),
    }
