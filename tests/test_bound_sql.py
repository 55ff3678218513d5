"""bound_sql: the app's bulk statements carry their parameters bound by the server (issue 21)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from capi_destinations import bound_sql

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
