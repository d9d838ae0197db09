"""Small statistics and profiling helpers: percentiles by nearest rank, cProfile summaries."""

from __future__ import annotations

import cProfile
import math
import pstats
import statistics
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 50 samples is the largest one; no interpolation beyond the data)."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of samples in seconds, in milliseconds."""
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
        "n": len(samples),
    }


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else 0.0


# Other threads (the MoEngage emulator's server loop, if in-process): Python 3.12's cProfile sees every thread.
_OTHER_THREADS = ("selectors.py", "socketserver.py", "threading.py")

# A phase: the cumulative time of (file name suffix, function name), optionally only when called from
# (caller file name suffix, caller function name).
Phase = tuple[str, str] | tuple[str, str, str, str]


def profile_summary(
    run: Callable[[], Any], *, repeat: int, total: tuple[str, str], phases: dict[str, Phase], top: int = 10
) -> dict[str, Any]:
    """cProfile `run` `repeat` times. `phases_pct`: the share of `total` (the cumulative time of that function) spent
    in each phase, and in what no phase covers; `top_functions`: the functions with the most time of their own."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        run()
    profiler.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(file_suffix: str, function: str, caller: tuple[str, str] | None = None) -> float:
        seconds = 0.0
        for (filename, _, name), (_, _, _, cum, callers) in raw.items():
            if name != function or not filename.endswith(file_suffix):
                continue
            if caller is None:
                seconds += cum
            else:
                seconds += sum(
                    stats[3]
                    for (caller_file, _, caller_name), stats in callers.items()
                    if caller_name == caller[1] and caller_file.endswith(caller[0])
                )
        return seconds

    whole = cumulative(*total) or 1e-9
    shares: dict[str, float] = {}
    for label, phase in phases.items():
        caller = (phase[2], phase[3]) if len(phase) == 4 else None
        shares[label] = cumulative(phase[0], phase[1], caller) / whole
    shares["other (decorators, event, response)"] = max(0.0, 1.0 - sum(shares.values()))
    own = sorted(
        (
            (stats[2], name, filename, line)
            for (filename, line, name), stats in raw.items()
            if not filename.endswith(_OTHER_THREADS) and "poll" not in name
        ),
        reverse=True,
    )
    return {
        "profiled_ms_per_run": round(whole / repeat * 1000, 3),
        "phases_pct": {label: round(share * 100, 1) for label, share in shares.items()},
        "top_functions": [
            {
                "function": f"{name} ({PurePath(filename).name}:{line})" if filename != "~" else name,
                "own_pct": round(seconds / whole * 100, 1),
            }
            for seconds, name, filename, line in own[:top]
        ],
    }
