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

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

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


@dataclass(frozen=True)
class Recalled:
    """A remembered value to fill into one event's ``key``."""

    key: str
    value: str
    seen_at: datetime
    matched_by: str  # "external_id", "email" or "phone"


@dataclass(frozen=True)
class Sighting:
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
    """
    if not wanted:
        return {}
    window = timedelta(days=float(app_settings.CLICK_ID_FILL_DAYS))
    digests = {digest for _, found, _ in wanted.values() for _, digest in found}
    keys = {key for _, _, lacking in wanted.values() for key in lacking}
    earliest = min(moment for moment, _, _ in wanted.values()) - window
    connection = connections[router.db_for_read(ClickIdSighting)]
    sightings: list[tuple[Any, ...]]
    if connection.vendor == "postgresql":
        sightings = bound_sql.fetch_all(
            connection,
            _recall_sql(connection),
            [tenant_id, sorted(digests), sorted(keys), earliest],
        )
    else:
        sightings = list(
            ClickIdSighting.objects.filter(
                tenant_id=tenant_id,
                identifier__in=digests,
                key__in=keys,
                last_seen_at__gte=earliest,
            ).values_list(*_RECALLED_FIELDS)
        )
    # By (key, identifier): each event looks only at its own person's sightings, so a batch
    # costs in proportion to its size, not to its size times the sightings found.
    by_person: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for sighting in sightings:
        by_person.setdefault((sighting[2], sighting[0]), []).append(sighting)
    filled: dict[int, list[Recalled]] = {}
    for index, (moment, found, lacking) in wanted.items():
        rank = {digest: position for position, (_, digest) in enumerate(found)}
        for key in lacking:
            candidates = [
                sighting
                for digest in rank
                for sighting in by_person.get((key, digest), ())
                if moment - window <= sighting[5] and sighting[4] <= moment + _LATER_SIGHTING
            ]
            if not candidates:
                continue
            # The most recent value; between equals, the strongest identifier.
            best = max(candidates, key=lambda sighting: (sighting[5], -rank[sighting[0]]))
            filled.setdefault(index, []).append(
                Recalled(
                    key=key,
                    value=best[3],
                    seen_at=min(best[5], moment),
                    matched_by=_IDENTIFIER_NAMES.get(best[1], best[1]),
                )
            )
    return filled


def _field(name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", ClickIdSighting._meta.get_field(name))


_RECALLED_FIELDS = ("identifier", "identifier_key", "key", "value", "first_seen_at", "last_seen_at")
_RECALL_SQL: dict[str, str] = {}


def _recall_sql(connection: BaseDatabaseWrapper) -> str:
    """``recall``'s SELECT on PostgreSQL: the digests as ONE array parameter, not thousands."""
    sql = _RECALL_SQL.get(connection.alias)
    if sql is None:
        quote = connection.ops.quote_name
        meta = ClickIdSighting._meta
        column = {name: quote(_field(name).column) for name in (*_RECALLED_FIELDS, "tenant")}
        # Only the model's own table and column names are formatted in; values are parameters.
        sql = _RECALL_SQL[connection.alias] = (
            f"SELECT {', '.join(column[name] for name in _RECALLED_FIELDS)} "  # noqa: S608
            f"FROM {quote(meta.db_table)} WHERE {column['tenant']} = %s "
            f"AND {column['identifier']} = ANY(%s) AND {column['key']} = ANY(%s) "
            f"AND {column['last_seen_at']} >= %s"
        )
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
    ClickIdSighting.objects.bulk_create(
        [
            ClickIdSighting(
                tenant_id=tenant_id,
                identifier=sighting.identifier,
                identifier_key=sighting.identifier_key,
                key=sighting.key,
                value=sighting.value,
                first_seen_at=sighting.seen_at,
                last_seen_at=sighting.seen_at,
                ad_storage=sighting.ad_storage,
            )
            for sighting in latest.values()
        ],
        update_conflicts=True,
        unique_fields=["tenant", "identifier", "key", "value"],
        update_fields=["last_seen_at", "ad_storage"],
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
    """``remember``'s UPSERT with the rows as ONE jsonb parameter bound by the server.

    What ``bulk_create(update_conflicts=True)`` sends, without its thousands of parameters
    escaped into the SQL text: on a batch of 1,000 events that was a third of ingestion's time.
    """
    sql = _REMEMBER_SQL.get(connection.alias)
    if sql is None:
        quote = connection.ops.quote_name
        meta = ClickIdSighting._meta
        column = {name: quote(_field(name).column) for name in _SIGHTING_COLUMNS}
        types = ", ".join(
            f"{column[name]} {_field(name).db_type(connection)}" for name in _SIGHTING_COLUMNS
        )
        tenant, first, last = (
            quote(_field(name).column) for name in ("tenant", "first_seen_at", "last_seen_at")
        )
        listed = ", ".join(column[name] for name in _SIGHTING_COLUMNS)
        unique = ", ".join((tenant, column["identifier"], column["key"], column["value"]))
        # Only the model's own table and column names are formatted in; values are parameters.
        sql = _REMEMBER_SQL[connection.alias] = (
            f"INSERT INTO {quote(meta.db_table)} ({tenant}, {listed}, {first}, {last}) "  # noqa: S608
            f"SELECT %s, {listed}, seen_at, seen_at FROM jsonb_to_recordset(%s::jsonb) "
            f"AS sighting({types}, seen_at timestamp with time zone) "
            f"ON CONFLICT ({unique}) DO UPDATE SET {last} = EXCLUDED.{last}, "
            f"{column['ad_storage']} = EXCLUDED.{column['ad_storage']}"
        )
    rows = json.dumps(
        [
            {
                "identifier": sighting.identifier,
                "identifier_key": sighting.identifier_key,
                "key": sighting.key,
                "value": sighting.value,
                "ad_storage": sighting.ad_storage,
                "seen_at": sighting.seen_at.isoformat(),
            }
            for sighting in sightings
        ],
        ensure_ascii=False,
    )
    return sql, [tenant_id, rows]


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
