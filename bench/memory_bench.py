"""Memory: the peak RSS of one worker process dispatching 1,000,000 pending events.

Two dispatch runs, each in a fresh process (peak RSS is per process): a small one (10% of
the events) and the full one. The worker's peak must stay under 200 MB, and must not grow
with the number of events: the two peaks are compared. The events are loaded by this
process beforehand (set-up is not measured); the dispatching process does nothing else.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.harness import (
    Result,
    analyze,
    current_rss_mb,
    empty_tables,
    peak_rss_mb,
    run_in_fresh_process,
    sized,
)

GOAL_PEAK_MB = 200.0
# Growth between the small and the full run still called constant: allocator noise.
CONSTANT_TOLERANCE_MB = 15.0


def dispatch_in_this_process(sandbox_url: str) -> dict[str, Any]:
    """Set up Django, dispatch everything pending, report counts and memory (the child)."""
    from bench.harness import setup_django

    setup_django()
    from django.conf import settings
    from django.test import override_settings

    from capi_destinations import dispatch

    ready_mb = current_rss_mb()
    with override_settings(
        CAPI_DESTINATIONS={**settings.CAPI_DESTINATIONS, "GRAPH_API_BASE_URL": sandbox_url}
    ):
        report = dispatch.dispatch_pending()
    return {"ready_mb": ready_mb, "peak_mb": peak_rss_mb(), "report": report.to_dict()}


def _dispatch_child(database: str, sandbox_url: str) -> dict[str, Any]:
    return run_in_fresh_process("bench.memory_bench", database, sandbox_url)


def run(mode: str, database: str) -> Result:
    """Dispatch a small and a large backlog in fresh processes; compare their peak RSS."""
    from bench.dispatch_bench import _check_exactly_once
    from bench.fixtures import create_destinations, insert_pending_events
    from bench.sandbox import sandbox_process
    from capi_destinations import clock

    large = sized(mode, full=1_000_000, quick=30_000, smoke=2_000)
    small = large // 10
    runs: dict[int, dict[str, Any]] = {}
    result = Result(row="memory", title="memory", database=database, mode=mode)
    for count in (small, large):
        empty_tables()
        destinations = create_destinations(50, prefix=f"memory{count}")
        insert_pending_events([d.pk for d in destinations], count, now=clock.now(), prefix="m")
        analyze()
        with sandbox_process(database) as sandbox:
            runs[count] = _dispatch_child(database, sandbox.url)
            if count == large:
                _check_exactly_once(result, sandbox, destinations, count)
    small_peak, large_peak = runs[small]["peak_mb"], runs[large]["peak_mb"]
    growth = large_peak - small_peak
    result.summary = (
        f"peak RSS **{large_peak:.0f} MB** dispatching {large:,} events "
        f"({small_peak:.0f} MB for {small:,}; {runs[large]['ready_mb']:.0f} MB after start-up)"
    )
    result.details = {"runs": {str(count): values for count, values in runs.items()}}
    result.goal(
        f"peak RSS, {large:,} events",
        f"≤ {GOAL_PEAK_MB:.0f} MB",
        f"{large_peak:.0f} MB",
        large_peak <= GOAL_PEAK_MB,
    )
    result.goal(
        "constant in the number of events",
        f"{small:,} → {large:,} events: < {CONSTANT_TOLERANCE_MB:.0f} MB more",
        f"{growth:+.0f} MB",
        growth < CONSTANT_TOLERANCE_MB,
    )
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps(dispatch_in_this_process(sys.argv[1])) + "\n")
