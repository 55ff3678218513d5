"""Click IDs remembered per person, to fill later events that arrive without a browser.

A payment webhook, a CRM status change or a worker records a conversion with no browser, so no
``fbc``/``fbp`` cookie. When such an event names a person the site has seen (by external_id, or
by the hashed email or phone), ingestion fills in the most recent ``fbc`` and ``fbp`` seen with
that person within ``CLICK_ID_FILL_DAYS`` before the event (:func:`recall`), and records the
``fbc``/``fbp`` each event carries (:func:`remember`). Per client (tenant): one client's
sightings never fill another's events. Identifiers are the SHA-256 digests sent to Meta; only
sightings on events whose consent allowed ad storage are kept, and only events whose consent
allows it are filled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field

from capi_destinations import bound_sql, normalize
from capi_destinations.conf import app_settings
from capi_destinations.models import ClickIdSighting, Tenant

#: The keys that name a person, strongest first (a match by external_id is preferred).
IDENTIFIER_KEYS: tuple[str, ...] = ("external_id", "em", "ph")
#: The keys remembered and filled.
CLICK_KEYS: tuple[str, ...] = ("fbc", "fbp")
# A sighting may follow the conversion by this much (the browser's event recorded a moment
# after the server's), never more: a click after the conversion did not lead to it.
_LATER_SIGHTING = timedelta(minutes=1)
# At most this many values of one identifier key are looked at per event.
_VALUES_PER_KEY = 3
_IDENTIFIER_NAMES = {"external_id": "external_id", "em": "email", "ph": "phone"}


class Recalled(NamedTuple):
    """A remembered value to fill into one event's ``key``."""

    key: str
    value: str
    seen_at: datetime
    matched_by: str  # "external_id", "email" or "phone"


class Sighting(NamedTuple):
    """An ``fbc``/``fbp`` an event carried, with one identifier of the person."""

    identifier: str
    identifier_key: str
    key: str
    value: str
    seen_at: datetime
    ad_storage: str  # "granted" or "default"


def identifiers(user_data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, digest) of the person in a *normalized* user_data, strongest key first."""
    found = []
    for key in IDENTIFIER_KEYS:
        values = user_data.get(key)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            continue
        for value in values[:_VALUES_PER_KEY]:
            # A digest with the parameter builder's appendix names the same person.
            digest = value.split(".", 1)[0] if isinstance(value, str) else ""
            if len(digest) == 64:
                found.append((key, digest))
    return found


def recall(
    tenant_id: int, wanted: Mapping[int, tuple[datetime, list[tuple[str, str]], tuple[str, ...]]]
) -> dict[int, list[Recalled]]:
    """What to fill into each event, in one query for the batch.

    ``wanted`` maps an event's index to (its time, its identifiers, the keys it lacks).
    Each event gets, per key it lacks, the most recent value seen with one of its identifiers
    inside its window; between equals, the strongest identifier.
    """
    return recall_started(tenant_id, wanted, background=False)()


def recall_started(
    tenant_id: int,
    wanted: Mapping[int, tuple[datetime, list[tuple[str, str]], tuple[str, ...]]],
    *,
    background: bool = True,
) -> Callable[[], dict[int, list[Recalled]]]:
    """``recall``, returning once its query is started; the function returned waits for it.

    On PostgreSQL, with ``background``, the query runs in a thread on the connection
    (``bound_sql.fetch_all_started``) while the caller goes on with Python work; until the
    function returned has been called, the caller must send nothing else on that connection.
    Elsewhere the query runs here and the function only hands its answer over.
    """
    if not wanted:
        return dict
    window = timedelta(days=float(app_settings.CLICK_ID_FILL_DAYS))
    # One lookup per distinct (identifier, key, moment): events of one person at one moment
    # (a batch sent twice, an order's several events) share it.
    lookups: dict[tuple[str, str, datetime], list[tuple[int, int]]] = {}
    for index, (moment, found, lacking) in wanted.items():
        for rank, (_, digest) in enumerate(found):
            for key in lacking:
                lookups.setdefault((digest, key, moment), []).append((index, rank))
    connection = connections[router.db_for_read(ClickIdSighting)]
    if connection.vendor == "postgresql":
        best = _best_on_postgresql(connection, tenant_id, list(lookups), window, background)
    else:
        answer = _best_in_python(tenant_id, list(lookups), window)
        best = lambda: answer  # noqa: E731
    return lambda: _filled(wanted, lookups, best())


def _filled(
    wanted: Mapping[int, tuple[datetime, list[tuple[str, str]], tuple[str, ...]]],
    lookups: dict[tuple[str, str, datetime], list[tuple[int, int]]],
    best: list[_Best | None],
) -> dict[int, list[Recalled]]:
    """Per event, what to fill, from each lookup's best sighting (``best``, in lookup order)."""
    chosen: dict[tuple[int, str], tuple[tuple[datetime, int], _Best]] = {}
    for lookup, sighting in zip(lookups, best, strict=True):
        if sighting is None:
            continue
        key = lookup[1]
        for index, rank in lookups[lookup]:
            order = (sighting.last_seen_at, -rank)
            current = chosen.get((index, key))
            if current is None or current[0] < order:
                chosen[(index, key)] = (order, sighting)
    filled: dict[int, list[Recalled]] = {}
    for index, (moment, _, lacking) in wanted.items():
        for key in lacking:
            if (index, key) not in chosen:
                continue
            sighting = chosen[(index, key)][1]
            filled.setdefault(index, []).append(
                Recalled(
                    key=key,
                    value=sighting.value,
                    seen_at=min(sighting.last_seen_at, moment),
                    matched_by=_IDENTIFIER_NAMES.get(
                        sighting.identifier_key, sighting.identifier_key
                    ),
                )
            )
    return filled


class _Best(NamedTuple):
    """The sighting a lookup chose."""

    value: str
    identifier_key: str
    last_seen_at: datetime


def _qualifies(moment: datetime, window: timedelta, first: datetime, last: datetime) -> bool:
    """Whether a sighting seen from ``first`` to ``last`` may fill an event at ``moment``."""
    return moment - window <= last and first <= moment + _LATER_SIGHTING


def _best_in_python(
    tenant_id: int, lookups: list[tuple[str, str, datetime]], window: timedelta
) -> list[_Best | None]:
    """Each lookup's most recent qualifying sighting, chosen here (SQLite has no LATERAL)."""
    digests = {digest for digest, _, _ in lookups}
    keys = {key for _, key, _ in lookups}
    earliest = min(moment for _, _, moment in lookups) - window
    by_person: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for sighting in ClickIdSighting.objects.filter(
        tenant_id=tenant_id, identifier__in=digests, key__in=keys, last_seen_at__gte=earliest
    ).values_list("identifier", "key", "value", "identifier_key", "first_seen_at", "last_seen_at"):
        by_person.setdefault((sighting[0], sighting[1]), []).append(sighting)
    best: list[_Best | None] = []
    for digest, key, moment in lookups:
        candidates = [
            sighting
            for sighting in by_person.get((digest, key), ())
            if _qualifies(moment, window, sighting[4], sighting[5])
        ]
        if not candidates:
            best.append(None)
            continue
        top = max(candidates, key=lambda sighting: sighting[5])
        best.append(_Best(value=top[2], identifier_key=top[3], last_seen_at=top[5]))
    return best


def _best_on_postgresql(
    connection: BaseDatabaseWrapper,
    tenant_id: int,
    lookups: list[tuple[str, str, datetime]],
    window: timedelta,
    background: bool,
) -> Callable[[], list[_Best | None]]:
    """Each lookup's most recent qualifying sighting, chosen by PostgreSQL (the function
    returned waits for them; the query runs in the ``background`` as ``recall_started`` says).

    One statement: the lookups as arrays, each answered by an index scan that stops at its
    first qualifying row. Its cost follows the batch, not how many sightings a person has
    gathered (a shared or placeholder email can gather thousands).
    """
    # A batch's events mostly share a handful of moments: each written once.
    moments: dict[datetime, str] = {}
    for _, _, moment in lookups:
        if moment not in moments:
            moments[moment] = moment.isoformat()
    # Prepared where the site allows it: every lookup's identifier and key come from the
    # arrays, so the generic plan is the custom one (tests/test_click_memory.py checks both).
    sql = _recall_sql(connection)
    params = [
        bound_sql.text_array([digest for digest, _, _ in lookups]),
        bound_sql.text_array([key for _, key, _ in lookups]),
        bound_sql.text_array([moments[moment] for _, _, moment in lookups]),
        tenant_id,
        window,
        _LATER_SIGHTING,
    ]
    if background:
        rows_of = bound_sql.fetch_all_started(connection, sql, params, prepare=True)
    else:
        rows = bound_sql.fetch_all(connection, sql, params, prepare=True)
        rows_of = lambda: rows  # noqa: E731

    def best() -> list[_Best | None]:
        chosen: list[_Best | None] = [None] * len(lookups)
        for slot, value, identifier_key, last_seen_at in rows_of():
            chosen[slot - 1] = _Best(value, identifier_key, last_seen_at)
        return chosen

    return best


def _field(name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", ClickIdSighting._meta.get_field(name))


_RECALL_SQL: dict[str, str] = {}


def _recall_sql(connection: BaseDatabaseWrapper) -> str:
    """``recall``'s SELECT on PostgreSQL: the lookups as arrays, one LATERAL row each.

    Each lookup compares ``identifier`` and ``key`` with scalars, so the planner puts both in
    the index condition of ``capi_click_sighting_recall`` whatever the table's statistics (an
    ``= ANY(array)`` here was planned, on a table not analyzed yet, as a scan of the client's
    whole key range per row).
    """
    sql = _RECALL_SQL.get(connection.alias)
    if sql is None:
        quote = connection.ops.quote_name
        column = {
            name: quote(_field(name).column)
            for name in (
                "tenant",
                "identifier",
                "identifier_key",
                "key",
                "value",
                "first_seen_at",
                "last_seen_at",
            )
        }
        # Only the model's own table and column names are formatted in; values are parameters.
        sql = _RECALL_SQL[connection.alias] = (  # noqa: S608
            "SELECT lookup.slot, best.value, best.identifier_key, best.last_seen_at "
            # The arrays are array literals in text parameters (bound_sql.text_array); the
            # slot is the lookup's position, from 1.
            "FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY "
            "AS lookup(identifier, key, moment, slot), "
            "LATERAL (SELECT sighting.{value} AS value, "
            "sighting.{identifier_key} AS identifier_key, "
            "sighting.{last_seen_at} AS last_seen_at "
            "FROM {table} AS sighting "
            "WHERE sighting.{tenant} = %s::bigint AND sighting.{identifier} = lookup.identifier "
            "AND sighting.{key} = lookup.key "
            "AND sighting.{last_seen_at} >= lookup.moment - %s::interval "
            "AND sighting.{first_seen_at} <= lookup.moment + %s::interval "
            # The index's own order, so that the scan stops at the first row. Between sightings
            # seen at the same microsecond, either is right.
            "ORDER BY sighting.{last_seen_at} DESC "
            "LIMIT 1) AS best"
        ).format(table=quote(ClickIdSighting._meta.db_table), **column)
    return sql


def remember(tenant_id: int, sightings: Iterable[Sighting]) -> None:
    """Record sightings in one statement: new ones inserted, known ones seen again."""
    latest = _latest(sightings)
    if not latest:
        return
    connection = connections[router.db_for_write(ClickIdSighting)]
    if connection.vendor == "postgresql":
        sql, params = _remember_on_postgresql(connection, tenant_id, latest.values())
        bound_sql.execute(connection, sql, params)
        return
    rows = list(latest.values())
    # SQLite: the same UPSERT with the rows as VALUES, in chunks its variable limit allows.
    for start in range(0, len(rows), _SQLITE_ROWS):
        chunk = rows[start : start + _SQLITE_ROWS]
        sql, params = _remember_with_values(connection, tenant_id, chunk)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


# Rows per UPSERT on SQLite: 8 parameters each, under SQLite's default limit of 32,766.
_SQLITE_ROWS = 500


def _remember_with_values(
    connection: BaseDatabaseWrapper, tenant_id: int, rows: list[Sighting]
) -> tuple[str, list[Any]]:
    """``remember``'s UPSERT with the rows as VALUES (SQLite)."""
    quote = connection.ops.quote_name
    names = ("tenant", *_SIGHTING_COLUMNS, "first_seen_at", "last_seen_at")
    columns = ", ".join(quote(_field(name).column) for name in names)
    values = ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * len(rows))
    params: list[Any] = []
    for sighting in rows:
        seen_at = connection.ops.adapt_datetimefield_value(sighting.seen_at)
        params += [tenant_id, *(getattr(sighting, name) for name in _SIGHTING_COLUMNS)]
        params += [seen_at, seen_at]
    # Only the model's own table and column names are formatted in; values are parameters.
    sql = (
        f"INSERT INTO {quote(ClickIdSighting._meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {values} {_seen_again_clause(connection, 'max', 'min')}"
    )
    return sql, params


def _seen_again_clause(connection: BaseDatabaseWrapper, greatest: str, least: str) -> str:
    """What a sighting already remembered becomes when it is seen again.

    Its span only widens: an event sent late (an import, a retried webhook) carrying a click
    seen since must not move the last sighting back (the click would drop out of the window
    for every later event), and one sent early moves the first sighting back. The consent
    state is the latest sighting's. A sighting that changes nothing is not written again (a
    batch sent twice, an order's several events at one moment).
    """
    quote = connection.ops.quote_name
    table = quote(ClickIdSighting._meta.db_table)
    tenant, identifier, key, value, first, last, ad_storage = (
        quote(_field(name).column)
        for name in (
            "tenant",
            "identifier",
            "key",
            "value",
            "first_seen_at",
            "last_seen_at",
            "ad_storage",
        )
    )
    return (
        f"ON CONFLICT ({tenant}, {identifier}, {key}, {value}) DO UPDATE SET "
        f"{last} = {greatest}({table}.{last}, EXCLUDED.{last}), "
        f"{first} = {least}({table}.{first}, EXCLUDED.{first}), "
        f"{ad_storage} = CASE WHEN EXCLUDED.{last} >= {table}.{last} "
        f"THEN EXCLUDED.{ad_storage} ELSE {table}.{ad_storage} END "
        f"WHERE EXCLUDED.{last} > {table}.{last} OR EXCLUDED.{first} < {table}.{first} "
        f"OR (EXCLUDED.{last} = {table}.{last} AND EXCLUDED.{ad_storage} <> {table}.{ad_storage})"
    )


def remember_statement(
    alias: str, tenant_id: int, sightings: Iterable[Sighting]
) -> tuple[str, list[Any]] | None:
    """``remember`` as one PostgreSQL statement (SQL, parameters) for a caller to run inside
    another one (the event INSERT, as a data-modifying CTE: the sightings are kept exactly when
    the events are written), if the sightings are stored on the database ``alias`` and it is
    PostgreSQL. None when there is nothing to remember, or it must run apart (``remember``).
    """
    if router.db_for_write(ClickIdSighting) != alias:
        return None
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    latest = _latest(sightings)
    if not latest:
        return None
    return _remember_on_postgresql(connection, tenant_id, latest.values())


def _latest(sightings: Iterable[Sighting]) -> dict[tuple[str, str, str], Sighting]:
    """The latest sighting of each (identifier, key, value)."""
    latest: dict[tuple[str, str, str], Sighting] = {}
    for sighting in sightings:
        unique = (sighting.identifier, sighting.key, sighting.value)
        if unique not in latest or latest[unique].seen_at < sighting.seen_at:
            latest[unique] = sighting
    return latest


# The UPSERT per database alias, built once (the columns never change at run time).
_REMEMBER_SQL: dict[str, str] = {}
_SIGHTING_COLUMNS = ("identifier", "identifier_key", "key", "value", "ad_storage")


def _remember_on_postgresql(
    connection: BaseDatabaseWrapper, tenant_id: int, sightings: Iterable[Sighting]
) -> tuple[str, list[Any]]:
    """``remember``'s UPSERT with each column of the rows as ONE array parameter.

    What ``bulk_create(update_conflicts=True)`` sends, without its thousands of parameters
    escaped into the SQL text (on a batch of 1,000 events that was a third of ingestion's
    time), and with each column as an array literal (``bound_sql.text_array``): the rows as
    JSON objects cost as much again to write.
    """
    sql = _REMEMBER_SQL.get(connection.alias)
    if sql is None:
        quote = connection.ops.quote_name
        meta = ClickIdSighting._meta
        column = {name: quote(_field(name).column) for name in _SIGHTING_COLUMNS}
        tenant, first, last = (
            quote(_field(name).column) for name in ("tenant", "first_seen_at", "last_seen_at")
        )
        listed = ", ".join(column[name] for name in _SIGHTING_COLUMNS)
        arrays = ", ".join("%s::text[]" for _ in _SIGHTING_COLUMNS)
        # Only the model's own table and column names are formatted in; values are parameters.
        sql = _REMEMBER_SQL[connection.alias] = (
            f"INSERT INTO {quote(meta.db_table)} ({tenant}, {listed}, {first}, {last}) "  # noqa: S608
            f"SELECT %s, {listed}, seen_at, seen_at "
            f"FROM unnest({arrays}, %s::timestamptz[]) AS sighting({listed}, seen_at) "
            f"{_seen_again_clause(connection, 'GREATEST', 'LEAST')}"
        )
    rows = list(sightings)
    # A batch's sightings mostly share a handful of moments: each written once.
    moments: dict[datetime, str] = {}
    for sighting in rows:
        if sighting.seen_at not in moments:
            moments[sighting.seen_at] = sighting.seen_at.isoformat()
    columns = [
        bound_sql.text_array([getattr(sighting, name) for sighting in rows])
        for name in _SIGHTING_COLUMNS
    ]
    seen = bound_sql.text_array([moments[sighting.seen_at] for sighting in rows])
    return sql, [tenant_id, *columns, seen]


def forget(
    tenant: Tenant,
    *,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
    country: str | None = None,
) -> int:
    """Erase everything remembered about one person of ``tenant``; returns how many sightings.

    Give what the erasure request names (raw or already hashed, as ``track()`` accepts them);
    ``country`` reads a phone number without a country code.
    """
    given = {"em": email, "ph": phone, "external_id": external_id}
    naming = {key: value for key, value in given.items() if value}
    if not naming:
        raise ValueError("Name the person: email=, phone= or external_id=.")
    digests = [
        digest for _, digest in identifiers(normalize.normalize_user_data(naming, country=country))
    ]
    if not digests:
        raise ValueError("None of the values given can name a person (check their format).")
    deleted, _ = ClickIdSighting.objects.filter(tenant=tenant, identifier__in=digests).delete()
    return deleted
