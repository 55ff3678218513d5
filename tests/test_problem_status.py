"""Event.problem_status: the database's copy of a status that needs a look (issue 21).

The event table may hold no index on ``status`` (the delivery writes it, and its UPDATE must
stay HOT). The event log's filter by failed, rejected, suppressed or expired instead reads the
generated column ``problem_status`` through a partial index: the same rows, without walking a
big destination's delivered events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from capi_destinations import reports
from capi_destinations.models import (
    PROBLEM_EVENT_STATUSES,
    Destination,
    Event,
    EventStatus,
    problem_status_of,
)

pytestmark = pytest.mark.django_db


def test_the_database_keeps_problem_status_in_step_with_status(
    make_event: Callable[..., Event],
) -> None:
    event = make_event()
    for status in (*EventStatus.values, EventStatus.PENDING):
        Event.objects.filter(pk=event.pk).update(status=status)
        stored = Event.objects.values_list("problem_status", flat=True).get(pk=event.pk)
        assert stored == problem_status_of(status), status
        assert stored == (status if status in PROBLEM_EVENT_STATUSES else None)


def test_the_log_filtered_by_status_lists_exactly_the_events_of_that_status(
    destination: Destination,
    make_event: Callable[..., Event],
    make_destination: Callable[..., Destination],
) -> None:
    other = make_destination()
    made: dict[str, list[int]] = {status: [] for status in EventStatus.values}
    for status in EventStatus.values:
        for _ in range(2):
            made[status].append(make_event(status=status).pk)
        make_event(status=status, destination=other)

    for status in EventStatus.values:
        listed = list(reports.event_log(destination, status=status).values_list("pk", flat=True))
        assert sorted(listed) == sorted(made[status]), status
    assert reports.event_log(destination, status="no-such-status").count() == 12


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
@pytest.mark.parametrize("status", PROBLEM_EVENT_STATUSES)
def test_the_log_finds_a_status_that_needs_a_look_by_its_partial_index(
    destination: Destination, status: str
) -> None:
    query = reports.event_log(destination, status=status)[:50]
    with connection.cursor() as cursor:
        # Whatever the table's size: can the plan use the index at all?
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "capi_event_dest_problem" in plan, plan


def test_an_event_returned_by_track_holds_the_problem_status_it_was_stored_with(
    destination: Destination,
) -> None:
    from capi_destinations.ingest import track_many

    results = track_many(
        destination,
        [
            {"event_name": "Purchase", "event_id": "bad", "action_source": "website"},
        ],
    )
    (result,) = results
    stored = Event.objects.get(pk=result.event.pk)
    assert result.event.status == EventStatus.REJECTED
    assert result.event.problem_status == stored.problem_status == EventStatus.REJECTED


def test_nothing_else_changes_for_the_delivered_and_pending_filters(
    destination: Destination, make_event: Callable[..., Any]
) -> None:
    delivered = make_event(status=EventStatus.DELIVERED)
    pending = make_event()
    assert list(reports.event_log(destination, status="delivered")) == [delivered]
    assert list(reports.event_log(destination, status="pending")) == [pending]
