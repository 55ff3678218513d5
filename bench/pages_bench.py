"""Pages: the overview with 500 destinations across 20 tenants, SQL queries and server time.

Two users open the overview: a superuser (every tenant) and an agency user who is a member
of all 20 tenants (the membership join). The destinations have a day of traffic behind them
(delivered and failed events in the last 24 hours) so the per-card counts are real work.
Server time is the time Django takes for the request, in process, from the request to the
rendered page (no network), for the overview's first page (30 cards, what a person opens).
Checks: every page answers 200 and the pages together show all 500 cards, once each, with the
counts the database holds.
"""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta

from bench.harness import Result, analyze, empty_tables, percentile, sized

GOAL_QUERIES = 15
_DELIVERED = re.compile(r'data-testid="delivered-24h"[^>]*>(\d+) delivered<')
_FAILED = re.compile(r'data-testid="failed-24h"[^>]*>(\d+) failed<')
GOAL_MS = 150.0
DESTINATIONS = 500
TENANTS = 20
# The overview's page size (capi_destinations/views/overview.py).
CARDS_PER_PAGE = 30
_CARD_CODE = re.compile(r'data-testid="destination-card" data-code="([^"]+)"')


def run(mode: str, database: str) -> Result:
    """Render the overview repeatedly for both users; count queries, time it, check cards."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from bench.fixtures import create_destinations, insert_pending_events
    from capi_destinations import clock, counters, reports
    from capi_destinations.models import Destination, Event, EventStatus, Membership, Role, Tenant

    events = sized(mode, full=200_000, quick=20_000, smoke=2_000)
    requests = sized(mode, full=30, quick=10, smoke=3)

    empty_tables()
    get_user_model().objects.filter(username__in=["bench-admin", "bench-agency"]).delete()
    destinations = create_destinations(DESTINATIONS, tenants=TENANTS, prefix="pages")
    now = clock.now()
    insert_pending_events([d.pk for d in destinations], events, now=now, prefix="page")
    # A day of traffic: most delivered, some failed, the rest still pending.
    Event.objects.filter(pk__in=Event.objects.order_by().values("pk")[: events * 8 // 10]).update(
        status=EventStatus.DELIVERED, updated_at=now - timedelta(hours=3)
    )
    Event.objects.filter(status=EventStatus.PENDING).filter(
        pk__in=Event.objects.filter(status=EventStatus.PENDING)
        .order_by()
        .values("pk")[: events // 10]
    ).update(status=EventStatus.FAILED, updated_at=now - timedelta(hours=2))
    # The hourly counters as delivery would have written them (one row per destination-hour).
    counters.rebuild()
    analyze(vacuum=True)

    user_model = get_user_model()
    superuser = user_model.objects.create_superuser("bench-admin", "a@example.com", "x")
    agency = user_model.objects.create_user("bench-agency", "b@example.com", "x")
    Membership.objects.bulk_create(
        Membership(user=agency, tenant=tenant, role=Role.VIEWER) for tenant in Tenant.objects.all()
    )

    url = reverse("capi_destinations:overview")
    result = Result(row="pages", title="pages", database=database, mode=mode)
    worst_queries = 0
    medians: dict[str, float] = {}
    for label, user in (("superuser", superuser), ("agency user, 20 tenants", agency)):
        client = Client(HTTP_HOST="localhost")  # a host the demo site's settings allow
        client.force_login(user)
        client.get(url)  # warm: templates compiled, connection open
        durations: list[float] = []
        query_counts: list[int] = []
        response = None
        for _ in range(requests):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                durations.append((time.perf_counter() - started) * 1000)
            query_counts.append(len(queries.captured_queries))
        assert response is not None
        medians[label] = statistics.median(durations)
        worst_queries = max(worst_queries, *query_counts)
        result.details[label] = {
            "median_ms": round(medians[label], 1),
            "p95_ms": round(percentile(durations, 0.95), 1),
            "queries": sorted(set(query_counts)),
        }
        # The overview shows 30 cards a page: every page, walked once, shows each card once.
        statuses, bodies = [response.status_code], [response.content.decode()]
        for number in range(2, -(-DESTINATIONS // CARDS_PER_PAGE) + 1):
            page = client.get(url, {"page": number})
            statuses.append(page.status_code)
            bodies.append(page.content.decode())
        names = [name for body in bodies for name in _CARD_CODE.findall(body)]
        result.check(
            f"{label}: every page 200, all {DESTINATIONS} cards once",
            set(statuses) == {200} and len(names) == len(set(names)) == DESTINATIONS,
            f"{len(bodies)} pages, statuses {sorted(set(statuses))}, {len(names)} cards "
            f"({len(set(names))} distinct)",
        )
    body = "".join(bodies)
    delivered = Event.objects.filter(status=EventStatus.DELIVERED).count()
    failed = Event.objects.filter(status=EventStatus.FAILED).count()
    shown_delivered = sum(int(n) for n in _DELIVERED.findall(body))
    shown_failed = sum(int(n) for n in _FAILED.findall(body))
    result.check(
        "the cards add up to the day's counts",
        (shown_delivered, shown_failed) == (delivered, failed),
        f"cards: {shown_delivered:,} delivered, {shown_failed:,} failed; database: "
        f"{delivered:,} and {failed:,}",
    )
    # What the 24-hour counts cost by themselves: the counters' rows, not the day's events.
    ids = list(Destination.objects.values_list("pk", flat=True))
    count_ms = []
    for _ in range(5):
        started = time.perf_counter()
        reports.counts_last_24h(ids)
        count_ms.append((time.perf_counter() - started) * 1000)
    result.details["counts_last_24h_ms"] = round(statistics.median(count_ms), 1)
    result.notes.append(
        f"of the server time, the cards' 24-hour counts (summed from hourly counters, "
        f"{delivered + failed:,} events behind them) take {statistics.median(count_ms):.0f} ms"
    )
    slowest = max(medians.values())
    result.summary = (
        f"{worst_queries} queries; median server time "
        + ", ".join(f"{label} {ms:.0f} ms" for label, ms in medians.items())
        + f" ({DESTINATIONS} destinations, {TENANTS} tenants, {events:,} events)"
    )
    result.goal(
        "SQL queries", f"≤ {GOAL_QUERIES}", str(worst_queries), worst_queries <= GOAL_QUERIES
    )
    result.goal(
        "server time (median)", f"≤ {GOAL_MS:.0f} ms", f"{slowest:.0f} ms", slowest <= GOAL_MS
    )
    return result
