"""bound_sql: the app's bulk statements carry their parameters bound by the server (issue 21)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from capi_destinations import bound_sql
from capi_destinations.models import ClickIdSighting, Destination, Event
from tests.conftest import FROZEN_AT, terminate_backend

pytestmark = pytest.mark.django_db


def test_a_parameter_is_bound_by_postgresql_not_written_into_the_sql_text() -> None:
    value = "a 'quoted' value " * 100

    with CaptureQueriesContext(connection) as queries:
        rows = bound_sql.fetch_all(connection, "SELECT %s, %s", [value, 7])

    assert rows == [(value, 7)]
    # Counted and logged as any other query (query-count limits still hold).
    assert len(queries.captured_queries) == 1
    if connection.vendor == "postgresql":
        assert "'quoted'" not in queries.captured_queries[0]["sql"]
        assert "$1" in queries.captured_queries[0]["sql"]


def test_execute_runs_the_statement_in_the_callers_transaction() -> None:
    bound_sql.execute(connection, "CREATE TEMPORARY TABLE bound_sql_check (value integer)", [])
    bound_sql.execute(connection, "INSERT INTO bound_sql_check (value) VALUES (%s)", [41])

    with connection.cursor() as cursor:
        cursor.execute("SELECT value + 1 FROM bound_sql_check")
        assert cursor.fetchall() == [(42,)]


def test_timestamps_are_read_in_the_connections_time_zone() -> None:
    rows = bound_sql.fetch_all(
        connection, "SELECT CAST(%s AS timestamp with time zone)", ["2026-12-06 12:00:00+02:00"]
    )
    (moment,) = rows[0]
    if connection.vendor == "postgresql":
        assert moment.utcoffset().total_seconds() == 0
        assert moment.hour == 10


@pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's cursors")
def test_the_connections_cursor_is_reused_and_statements_are_still_recorded() -> None:
    bound_sql.fetch_all(connection, "SELECT %s", [1])
    with CaptureQueriesContext(connection) as queries:
        rows = bound_sql.fetch_all(connection, "SELECT %s + 1", [1])
    bound_sql.fetch_all(connection, "SELECT %s + 2", [1])

    assert rows == [(2,)]
    # Recorded as any other query, although the cursor was made before recording began.
    assert [query["sql"] for query in queries.captured_queries] == ["SELECT $1 + 1"]
    with bound_sql._cursor(connection, prepare=False) as first:
        pass
    with bound_sql._cursor(connection, prepare=False) as second:
        pass
    assert first.cursor is second.cursor  # the driver's cursor, made once per connection


# --- array literals -------------------------------------------------------------------------------

_AWKWARD_TEXTS = [
    "plain",
    "NULL",
    "",
    "  spaced  ",
    'a "quoted" one',
    "back\\slash\\",
    "comma, {brace} and }",
    "ünïcødé ✓",
]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="array literals are PostgreSQL's")
@pytest.mark.parametrize(
    "texts",
    [_AWKWARD_TEXTS, ["a" * 64, "NULL", "fbc", "fb.1.1732449600000.IwAR2xYz_AbC-123dEf"], ["x"]],
    ids=["awkward", "plain", "one"],
)
def test_a_text_array_literal_reads_back_as_the_same_texts_in_order(texts: list[str]) -> None:
    rows = bound_sql.fetch_all(
        connection,
        "SELECT item, position FROM unnest(%s::text[]) WITH ORDINALITY AS t(item, position)",
        [bound_sql.text_array(texts)],
    )

    assert rows == [(text, position) for position, text in enumerate(texts, start=1)]


def test_an_empty_text_array_literal_is_an_empty_array() -> None:
    assert bound_sql.text_array([]) == "{}"


# --- prepared statements (PostgreSQL) ----------------------------------------------------------

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


@pytest.fixture
def prepare_threshold() -> Iterator[Callable[[int | None], None]]:
    """Set the connection's psycopg ``prepare_threshold`` as the site's OPTIONS would."""
    connection.ensure_connection()
    raw = connection.connection
    before = raw.prepare_threshold

    def set_threshold(value: int | None) -> None:
        raw.prepare_threshold = value

    yield set_threshold
    raw.prepare_threshold = before


@postgresql_only
def test_a_statement_that_asks_is_prepared_on_its_first_run_where_the_site_allows_it(
    prepare_threshold: Callable[[int | None], None],
) -> None:
    prepare_threshold(5)

    assert bound_sql.fetch_all(connection, "SELECT %s::int + 100", [1], prepare=True) == [(101,)]

    assert "SELECT $1::int + 100" in prepared_statements()


@postgresql_only
def test_a_statement_that_does_not_ask_is_never_prepared_whatever_the_threshold(
    prepare_threshold: Callable[[int | None], None],
) -> None:
    # psycopg would prepare it after five runs; its generic plan may be far worse (the recall).
    prepare_threshold(1)

    for _ in range(10):
        bound_sql.fetch_all(connection, "SELECT %s::int + 200", [1])

    assert "SELECT $1::int + 200" not in prepared_statements()


@postgresql_only
def test_a_threshold_set_after_a_statement_ran_applies_to_the_next_one(
    prepare_threshold: Callable[[int | None], None],
) -> None:
    # The connection's cursor is reused: made while nothing was prepared, it must not keep
    # statements unprepared once the connection allows them.
    prepare_threshold(None)
    bound_sql.fetch_all(connection, "SELECT %s::int + 400", [1], prepare=True)
    prepare_threshold(5)

    bound_sql.fetch_all(connection, "SELECT %s::int + 400", [1], prepare=True)

    assert "SELECT $1::int + 400" in prepared_statements()


@postgresql_only
def test_nothing_is_prepared_where_the_site_leaves_djangos_default(
    prepare_threshold: Callable[[int | None], None],
) -> None:
    # Django's default (None): a proxy pooling by transaction may not know prepared statements.
    prepare_threshold(None)

    for _ in range(10):
        bound_sql.fetch_all(connection, "SELECT %s::int + 300", [1], prepare=True)

    assert "SELECT $1::int + 300" not in prepared_statements()


@postgresql_only
def test_an_ingest_request_prepares_its_lookup_recall_and_insert(
    client: Client,
    clock: Any,
    make_destination: Callable[..., Destination],
    prepare_threshold: Callable[[int | None], None],
) -> None:
    prepare_threshold(5)
    destination = make_destination()
    secret = destination.set_ingest_secret()
    destination.save()
    url = reverse("capi_destinations:ingest_events", args=[destination.ingest_key])
    event = {
        "event_name": "Purchase",
        "event_time": int(FROZEN_AT.timestamp()) - 60,
        "event_id": "prepared-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "email": "jane@example.com",
            "fbp": "fb.1.1700000000000.123456789",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"value": 10, "currency": "EUR"},
        # A valid event, ad storage granted: the click memory looks up the fbc it lacks.
        "consent": {"ad_storage": "granted"},
    }

    # Six requests: prepared from the first (bound_sql asks for it), past psycopg's threshold.
    for number in range(6):
        response = client.post(
            url,
            data=json.dumps({**event, "event_id": f"prepared-{number}"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        assert response.status_code == 202

    statements = prepared_statements()
    destination_table = Destination._meta.db_table
    event_table = Event._meta.db_table
    sighting_table = ClickIdSighting._meta.db_table
    assert any(f'FROM "{destination_table}"' in sql for sql in statements)
    assert any(f'INSERT INTO "{event_table}"' in sql for sql in statements)
    # The recall (its generic plan is its custom one: tests/test_click_memory.py).
    assert any(sql.startswith("SELECT") and sighting_table in sql for sql in statements)
    assert Event.objects.filter(event_id__startswith="prepared-", status="pending").count() == 6


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_replaced_before_the_first_statement() -> None:
    # CONN_HEALTH_CHECKS: the ingest endpoint's statements all come here, so here is where a
    # request's first statement must check the connection it reuses, as Django's cursor() does.
    connection.ensure_connection()
    enabled = connection.health_check_enabled
    connection.health_check_enabled = True
    try:
        (old_pid,) = bound_sql.fetch_all(connection, "SELECT pg_backend_pid()", [])[0]
        terminate_backend(old_pid)
        connection.health_check_done = False  # a new request (close_old_connections)

        (new_pid,) = bound_sql.fetch_all(connection, "SELECT pg_backend_pid()", [])[0]
    finally:
        connection.health_check_enabled = enabled

    assert new_pid != old_pid


@pytest.fixture
def health_checks_on() -> Iterator[None]:
    connection.ensure_connection()
    enabled = connection.health_check_enabled
    connection.health_check_enabled = True
    try:
        yield
    finally:
        connection.health_check_enabled = enabled


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_read_only_first_statement_on_a_dropped_connection_is_run_again_on_a_new_one(
    health_checks_on: None,
) -> None:
    (old_pid,) = bound_sql.fetch_all(connection, "SELECT pg_backend_pid()", [])[0]
    terminate_backend(old_pid)
    connection.health_check_done = False  # a new request (close_old_connections)

    rows = bound_sql.fetch_all(connection, "SELECT pg_backend_pid(), %s", [7], read_only=True)

    ((new_pid, seven),) = rows
    assert new_pid != old_pid
    assert seven == 7
    assert connection.health_check_done


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_read_only_first_statement_is_the_requests_health_check(
    health_checks_on: None, tmp_path: Any
) -> None:
    bound_sql.fetch_all(connection, "SELECT 2", [])
    connection.health_check_done = False  # a new request
    trace = tmp_path / "protocol.trace"
    raw = connection.connection
    with trace.open("w") as handle:
        raw.pgconn.trace(handle.fileno())
        try:
            bound_sql.fetch_all(connection, "SELECT %s::integer + 40", [2], read_only=True)
            bound_sql.fetch_all(connection, "SELECT 3", [])
        finally:
            raw.pgconn.untrace()

    sent = [line for line in trace.read_text().splitlines() if "\tF\t" in line or "F " in line]
    assert any("+ 40" in line for line in sent)
    assert any("SELECT 3" in line for line in sent)
    # No health-check statement of Django's: the connection was checked by the statement itself.
    assert not any('"SELECT 1"' in line for line in sent)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_read_only_statements_own_error_is_raised_on_a_sound_connection(
    health_checks_on: None,
) -> None:
    (pid,) = bound_sql.fetch_all(connection, "SELECT pg_backend_pid()", [])[0]
    connection.health_check_done = False

    with pytest.raises(DatabaseError):
        bound_sql.fetch_all(connection, "SELECT * FROM no_such_table_anywhere", [], read_only=True)

    assert bound_sql.fetch_all(connection, "SELECT pg_backend_pid()", [])[0] == (pid,)
