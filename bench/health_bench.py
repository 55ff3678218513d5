"""Health fan-out: every destination checked against a sandbox that takes 100 ms per call.

``health.check_all_destinations()`` runs the Graph calls on a bounded thread pool
(``HEALTH_CHECK_CONCURRENCY``) and records each check as its call returns. The baseline is the
same checks one after the other (``check_destination`` in a loop) on a sample, which is what
a loop over destinations without a pool would do. Checks: one HealthCheck per destination,
every destination Healthy with the pixel name Meta (the sandbox) gave.
"""

from __future__ import annotations

from bench.harness import Result, alternate, empty_tables, sized

GOAL_SECONDS = 10.0
LATENCY_MS = 100


def run(mode: str, database: str) -> Result:
    """Check every destination concurrently, and a sample one by one; check the outcome."""
    from django.conf import settings
    from django.test import override_settings

    from bench.fixtures import create_destinations
    from bench.sandbox import sandbox_process
    from capi_destinations import health
    from capi_destinations.conf import app_settings
    from capi_destinations.models import Destination, Health, HealthCheck

    count = sized(mode, full=1000, quick=200, smoke=20)
    sample = sized(mode, full=20, quick=10, smoke=3)
    rounds = sized(mode, full=3, quick=2, smoke=1)

    empty_tables()
    destinations = create_destinations(count, tenants=20 if count >= 20 else 1, prefix="health")
    sequential = destinations[:sample]

    with (
        sandbox_process(database, latency_ms=LATENCY_MS) as sandbox,
        override_settings(
            CAPI_DESTINATIONS={**settings.CAPI_DESTINATIONS, "GRAPH_API_BASE_URL": sandbox.url}
        ),
    ):
        concurrency = int(app_settings.HEALTH_CHECK_CONCURRENCY)
        checked: list[int] = []

        def all_at_once(round_number: int) -> int:
            checks = health.check_all_destinations()
            checked.append(len(checks))
            return len(checks)

        def one_by_one(round_number: int) -> int:
            for destination in sequential:
                health.check_destination(destination)
            return len(sequential)

        timings = alternate(
            {"check_all_destinations": all_at_once, "check_destination in a loop": one_by_one},
            rounds=rounds,
        )
    seconds = timings["check_all_destinations"].median_seconds
    per_check_sequential = 1 / timings["check_destination in a loop"].median_rate
    result = Result(
        row="health",
        title="health fan-out",
        database=database,
        mode=mode,
        summary=(
            f"{count:,} destinations checked in **{seconds:.1f} s** ({concurrency} threads, "
            f"{LATENCY_MS} ms per call); one by one {per_check_sequential * 1000:.0f} ms each, "
            f"{per_check_sequential * count:.0f} s for all"
        ),
        details={
            "destinations": count,
            "concurrency": concurrency,
            "timings": {name: timing.to_dict() for name, timing in timings.items()},
        },
    )
    expected_checks = count * rounds + sample * rounds
    stored = HealthCheck.objects.count()
    result.check(
        "one HealthCheck per destination and run",
        all(number == count for number in checked) and stored == expected_checks,
        f"{checked} checks returned per run; {stored:,} stored (expected {expected_checks:,})",
    )
    healthy = Destination.objects.filter(health=Health.HEALTHY).exclude(pixel_name="").count()
    result.check(
        "every destination Healthy with its pixel name",
        healthy == count,
        f"{healthy:,} of {count:,}",
    )
    result.notes.append(
        f"the floor is {count:,} calls × {LATENCY_MS} ms / {concurrency} threads = "
        f"{count * LATENCY_MS / 1000 / concurrency:.1f} s; the rest is recording the checks"
    )
    result.goal(
        f"{count:,} destinations checked",
        f"≤ {GOAL_SECONDS:.0f} s" if count == 1000 else f"≤ {GOAL_SECONDS * count / 1000:.1f} s",
        f"{seconds:.1f} s",
        seconds <= GOAL_SECONDS * count / 1000,
    )
    return result
