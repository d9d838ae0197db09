"""`make bench`: measure, print the table, write `bench/results/latest.json`.

python -m bench                         # everything (a few minutes on 2 cores)
python -m bench --only ingest,coldstart # some sections (results go to bench/results/partial.json)
BENCH_LAYER_DIR=/tmp/patched/layer python -m bench --only ingest --out /tmp/patched.json
                                        # the same figures for a patched copy of layers/common
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, layer_dir

SECTIONS = ("requests", "ingest", "delivery", "memory", "sustained", "throughput", "coldstart")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def run(sections: set[str], facts: Any) -> dict[str, Any]:
    from bench.harness import InProcessStack

    results: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        timings[name] = round(time.monotonic() - started, 1)
        _say(f"bench: {name} done in {timings[name]} s")

    if sections & {"requests", "ingest", "delivery", "memory", "sustained"}:
        from bench import counts, delivery_cpu, ingest_overhead, memory, sustained

        with InProcessStack(facts) as stack:
            if "requests" in sections:
                started = time.monotonic()
                results["requests"] = {
                    str(size): counts.run_pipeline(stack, size).to_json() for size in (1, 100)
                }  # fmt: skip
                timed("requests", started)
            if "ingest" in sections:
                started = time.monotonic()
                results["ingest"] = ingest_overhead.measure(stack)
                timed("ingest", started)
            if "delivery" in sections:
                started = time.monotonic()
                results["delivery_cpu"] = delivery_cpu.measure()
                timed("delivery", started)
            if "memory" in sections:
                started = time.monotonic()
                results["memory"] = memory.measure(stack)
                timed("memory", started)
            if "sustained" in sections:
                started = time.monotonic()
                results["sustained"] = sustained.measure(stack)
                timed("sustained", started)
    if "throughput" in sections:
        from bench import stack_runs

        started = time.monotonic()
        users = results.get("requests", {}).get("100", {}).get("users_per_profile", 2.0)
        results["throughput"] = stack_runs.throughput(users_per_profile=users)
        timed("throughput", started)
    if "coldstart" in sections:
        from bench import coldstart

        started = time.monotonic()
        results["cold_start"] = coldstart.import_times()
        results["gc_pauses"] = coldstart.gc_pauses()
        results["build_sizes"] = coldstart.build_sizes()
        timed("coldstart", started)
    if {"requests", "ingest"} <= sections:
        results["cost"] = cost_per_million(results, facts)
    results["section_seconds"] = timings
    return results


def cost_per_million(results: dict[str, Any], facts: Any) -> dict[str, Any]:
    """The cost model fed with this run's counts and CPU times, for one-profile and 100-profile AEP requests."""
    from bench.cost import CostInputs, cost_per_million

    costs: dict[str, Any] = {}
    for key in ("1", "100"):
        c, i = results["requests"][key], results["ingest"][key]
        inputs = CostInputs(
            profiles_per_request=c["profiles_per_request"],
            request_bytes=i["request_bytes"],
            ingest_invocations=c["ingest_invocations"],
            ingest_cpu_ms=max(0.0, i["handler_cpu_ms_p50"] - i["bare_cpu_ms_p50"]),
            ingest_sqs_calls=i["sqs_calls"],
            ingest_memory_mb=facts.ingest.memory_mb,
            ingest_log_bytes=c["ingest_log_bytes_per_invocation"],
            sqs_billable_requests=c["sqs_billable"],
            message_bytes=c["message_bytes_avg"],
            profiles_per_message=c["profiles"] / c["messages"],
            batch_size=c["batch_size"],
            delivery_cpu_ms=c["delivery_cpu_ms_total"],
            moengage_requests=c["moengage_requests"],
            delivery_memory_mb=facts.delivery.memory_mb,
            delivery_log_bytes=c["delivery_log_bytes_per_invocation"] * c["delivery_invocations"],
        )
        costs[key] = cost_per_million(inputs)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/latest.json)")
    args = parser.parse_args(argv)
    sections = set(SECTIONS) if not args.only else {name.strip() for name in args.only.split(",")}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    patched = bool(os.environ.get("BENCH_LAYER_DIR"))
    out = args.out or RESULTS_DIR / ("latest.json" if sections == set(SECTIONS) and not patched else "partial.json")

    from bench import report
    from bench.cost import PRICES, PRICES_SOURCE
    from bench.harness import configure_environment, template_facts

    started = time.monotonic()
    measured_at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    info = machine()
    configure_environment()
    facts = template_facts()
    results = run(sections, facts)
    document: dict[str, Any] = {
        "measured_at": measured_at,
        "machine": info,
        "template": dataclasses.asdict(facts),
        "layer_dir": str(layer_dir()),
        "sections": sorted(sections),
        "seconds": round(time.monotonic() - started, 1),
        "prices": PRICES,
        "prices_source": PRICES_SOURCE,
        "results": results,
    }
    document["flags"] = report.flags(results)
    print(report.render(document))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(out)
    _say(f"bench: {document['seconds']} s in all; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
