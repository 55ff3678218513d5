"""The ingest endpoint: ``POST <mount>/v1/destinations/<ingest_key>/events``.

Two kinds of caller share it. A browser (``capi.js``) presents the destination's public ingest
key alone and is accepted only from the destination's allowed origins, with CORS answered for
them. A server adds ``Authorization: Bearer <secret>`` and is accepted from anywhere. The body is
one event, a list of events, or ``{"data": [...]}`` with up to 1000; the answer is 202 with one
result per event, or a JSON error ``{"error": {"code", "message"}}`` — never a 500.

The view is thin and lean (it is built for thousands of requests a second): the key's
credentials read from the database (one indexed row, so a change made in any process applies at
once) with the destination itself from a per-process cache, cache counters for the rate limits,
then ``ingest.track_many``. The public key proves nothing (anyone can read it and send any
Origin), so the limits keep three budgets apart: the server's per key (``INGEST_RATE_LIMIT``),
spent only by calls with the secret; the sender's address (``INGEST_CLIENT_RATE_LIMIT``), spent
by every other call, empty or refused; and the browsers' per key
(``INGEST_BROWSER_RATE_LIMIT``), spent only by browser calls that bring events.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, cast

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, connections, router
from django.db.models import Field
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables

from capi_destinations import bound_sql, counters, ratelimit
from capi_destinations.conf import app_settings
from capi_destinations.ingest import track_many
from capi_destinations.models import Destination, IngestRefusal

__all__ = ["MAX_EVENTS_PER_REQUEST", "find_destination", "forget_destinations", "ingest_events"]

#: Meta's own limit per request, kept here so one request never becomes two Graph calls' worth.
MAX_EVENTS_PER_REQUEST = 1000

_ALLOWED_METHODS = "POST, OPTIONS"
_KEY_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFLIGHT_MAX_AGE = "86400"
_MAX_CACHED_DESTINATIONS = 4096

# ingest_key → (monotonic expiry, version, destination), per process. The version is what the
# database says on every request (below); an entry whose version no longer matches is read again.
_destinations: dict[str, tuple[float, tuple[Any, ...], Destination]] = {}
# The one statement every request runs before trusting the cache, per database alias.
_VERSION_SQL: dict[str, str] = {}


def _marked(view: Any) -> Any:
    # How middleware.IngestMiddleware knows the view (functools.wraps carries the attribute).
    view.capi_ingest_endpoint = True
    return view


def find_destination(ingest_key: str) -> Destination | None:
    """The destination with this public ingest key, as the database has it now.

    Every call asks the database for the destination's credentials and version (one indexed
    row of three columns), so a key regenerated, a secret replaced or a destination deleted in
    any process is refused at once in every other one; only building the full ``Destination``
    is saved by the per-process cache, for ``INGEST_KEY_CACHE_SECONDS`` while the version
    (id, secret hash, ``updated_at``) stays the same.
    """
    if not _KEY_FORMAT.fullmatch(ingest_key):
        return None
    version = _current_version(ingest_key)
    if version is None:
        _destinations.pop(ingest_key, None)
        return None
    now = time.monotonic()
    cached = _destinations.get(ingest_key)
    if cached is not None and cached[0] > now and cached[1] == version:
        return cached[2]
    try:
        # The token is not needed to record events, so it is neither decrypted nor kept here.
        # With its client: the client's exclusions apply to every event (ingest.routing).
        destination = (
            Destination.objects.defer("access_token", "app_secret")
            .select_related("tenant")
            .get(ingest_key=ingest_key)
        )
    except Destination.DoesNotExist:
        return None
    seconds = app_settings.INGEST_KEY_CACHE_SECONDS
    if seconds and seconds > 0:
        if len(_destinations) >= _MAX_CACHED_DESTINATIONS:
            _destinations.clear()
        # The version read before the row: had the row changed in between, the next request
        # sees a newer version and reads it again; never the other way round.
        _destinations[ingest_key] = (now + seconds, version, destination)
    return destination


def _current_version(ingest_key: str) -> tuple[Any, ...] | None:
    # Plain SQL: this runs on every ingest request, and the ORM's query building would cost
    # more than the round trip.
    alias = router.db_for_read(Destination)
    connection = connections[alias]
    sql = _VERSION_SQL.get(alias)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(
            quote(cast("Field[Any, Any]", Destination._meta.get_field(name)).column)
            for name in ("id", "ingest_secret_hash", "updated_at")
        )
        # Only the model's own table and column names are formatted in; the key is a parameter.
        sql = _VERSION_SQL[alias] = (
            f"SELECT {columns} FROM {quote(Destination._meta.db_table)} "  # noqa: S608
            f"WHERE {quote(Destination._meta.get_field('ingest_key').column)} = %s"
        )
    # Bound by the server and, where the site allows it, prepared: the statement is the same on
    # every request, so PostgreSQL plans it once per connection instead of on each request. The
    # request's first statement: it checks the reused connection itself (read_only), so the
    # request spends no round trip on Django's health check.
    rows = bound_sql.fetch_all(connection, sql, [ingest_key], prepare=True, read_only=True)
    return tuple(rows[0]) if rows else None


def forget_destinations(**kwargs: Any) -> None:
    """Empty the destination cache (``receivers`` connects it to Destination saves and deletes)."""
    _destinations.clear()


# The secret (Authorization), the body and the events with raw customer data are in this frame
# and in every frame it calls; none of them belongs in an error report.
@sensitive_variables()
@csrf_exempt
@_marked
def ingest_events(request: HttpRequest, ingest_key: str) -> HttpResponse:
    """Record the events in the request body for the destination with ``ingest_key``."""
    if request.method not in ("POST", "OPTIONS"):
        return _error(
            405,
            "method_not_allowed",
            "Send events with POST (OPTIONS answers CORS preflight requests).",
            headers={"Allow": _ALLOWED_METHODS},
        )
    destination = find_destination(ingest_key)
    if destination is None:
        return _unknown_key()
    origin = request.META.get("HTTP_ORIGIN")
    cors = _cors_headers(destination, origin)

    if request.method == "OPTIONS":
        if not cors:
            _count(destination, IngestRefusal.ORIGIN_NOT_ALLOWED, origin)
            return _error(403, "origin_not_allowed", _origin_message(origin))
        return HttpResponse(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": _ALLOWED_METHODS,
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
            },
        )

    authorization = request.META.get("HTTP_AUTHORIZATION")
    if authorization is not None and _has_the_secret(destination, authorization):
        # The destination's own server: only its calls spend the key's server budget.
        limited = _over_rate(
            f"ingest:{ingest_key}", app_settings.INGEST_RATE_LIMIT, cors, "key", destination, origin
        )
        if limited is not None:
            return limited
        return _record(request, destination, ingest_key, cors, from_browser=False)

    # Anyone else: a browser, a forged Origin, a wrong secret. Each request costs the sender's
    # address first, so a flood from one address runs out of its own budget, not the key's.
    address = ratelimit.client_address(request) or "unknown"
    limited = _over_rate(
        f"ingest-client:{address}",
        app_settings.INGEST_CLIENT_RATE_LIMIT,
        cors,
        "address",
        destination,
        origin,
    )
    if limited is not None:
        return limited
    if authorization is not None:
        _count(destination, IngestRefusal.WRONG_SECRET, origin)
        return _refuse_authorization(authorization, cors)
    if not cors:
        if origin:
            _count(destination, IngestRefusal.ORIGIN_NOT_ALLOWED, origin)
            return _error(403, "origin_not_allowed", _origin_message(origin))
        _count(destination, IngestRefusal.MISSING_CREDENTIALS, origin)
        return _error(
            401,
            "missing_credentials",
            "Server calls need 'Authorization: Bearer <ingest secret>'; browser calls must come "
            "from one of the destination's allowed origins.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return _record(request, destination, ingest_key, cors, from_browser=True)


@sensitive_variables()
def _has_the_secret(destination: Destination, authorization: str) -> bool:
    scheme, _, secret = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and destination.check_ingest_secret(secret.strip())


@sensitive_variables()
def _refuse_authorization(authorization: str, cors: dict[str, str]) -> HttpResponse:
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _error(
            401,
            "invalid_authorization",
            "The Authorization header must be 'Bearer <ingest secret>'.",
            headers={**cors, "WWW-Authenticate": "Bearer"},
        )
    return _error(
        403,
        "wrong_secret",
        "The ingest secret is not this destination's. Regenerate it on the "
        "destination's page if it was lost.",
        headers=cors,
    )


@sensitive_variables()
def _record(
    request: HttpRequest,
    destination: Destination,
    ingest_key: str,
    cors: dict[str, str],
    *,
    from_browser: bool,
) -> HttpResponse:
    origin = request.META.get("HTTP_ORIGIN")
    body = _read_body(request, cors)
    if isinstance(body, HttpResponse):
        _count(destination, IngestRefusal.BAD_BODY, origin)
        return body
    events = _parse_events(body, cors)
    if isinstance(events, HttpResponse):
        _count(destination, IngestRefusal.BAD_BODY, origin)
        return events
    if from_browser and events:
        # Counted only once a browser call brings events: an empty or refused body has cost its
        # sender's address already and costs the destination nothing.
        limited = _over_rate(
            f"ingest-browser:{ingest_key}",
            app_settings.INGEST_BROWSER_RATE_LIMIT,
            cors,
            "key",
            destination,
            origin,
        )
        if limited is not None:
            return limited

    # Only a browser's own request describes the visitor; a server's request describes the
    # server, whose IP and user agent must not be taken for the customer's.
    try:
        results = track_many(destination, events, request=request if from_browser else None)
    except IntegrityError:
        # Deleted by another process between the lookup above and the insert: the events
        # would reference nothing, and the database refused them all.
        if Destination.objects.filter(pk=destination.pk).exists():
            raise
        forget_destinations()
        return _unknown_key()
    answer: dict[str, Any] = {
        "received": len(results),
        "events": [result.as_dict() for result in results],
    }
    if destination.forward_to and events:
        # Fan-out: each target records the events on its own (its filters, consent, delivery).
        targets = _forward_targets(destination)
        for target in targets:
            track_many(target, events, request=request if from_browser else None)
        answer["also_recorded_for"] = len(targets)
    return JsonResponse(answer, status=202, headers=cors)


def _forward_targets(destination: Destination) -> list[Destination]:
    """The destinations this one forwards to that still exist (one hop, never itself)."""
    return list(
        Destination.objects.defer("access_token", "app_secret")
        .select_related("tenant")
        .filter(pk__in=destination.forward_to)
        .exclude(pk=destination.pk)
        .order_by("pk")
    )


def _unknown_key() -> HttpResponse:
    return _error(
        404,
        "unknown_key",
        "No destination has this ingest key. Copy the endpoint URL from the destination's "
        "page; the key changes when it is regenerated.",
    )


def _cors_headers(destination: Destination, origin: str | None) -> dict[str, str]:
    """CORS headers for an allowed origin; empty when the origin is not allowed (or absent)."""
    if not origin:
        return {}
    wanted = origin.strip().rstrip("/").lower()
    if not any(wanted == allowed.lower() for allowed in destination.allowed_origin_list):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        # Same-site cookies (_fbp, _fbc) may ride along with the browser's request.
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _origin_message(origin: str | None) -> str:
    shown = (origin or "")[:100]
    return (
        f"The origin {shown!r} is not among this destination's allowed origins. Add it on the "
        "destination's page, or call from a server with 'Authorization: Bearer <ingest secret>'."
    )


def _count(destination: Destination, reason: str, origin: str | None) -> None:
    """Count a refused call on the destination its key named (the page shows it with the fix)."""
    counters.add_refused_call(destination.pk, reason, origin=origin or "")


def _over_rate(
    scope: str,
    setting: str | None,
    cors: dict[str, str],
    counted_per: str,
    destination: Destination,
    origin: str | None,
) -> HttpResponse | None:
    """A 429 when ``scope`` is over the rate ``setting`` (None or "" turns it off), else None.

    The first refusal of each window is counted on the destination, not every one: a flood
    costs the database one write per window, and the page still says the limit was reached.
    """
    if not setting:
        return None
    rate = ratelimit.parse_rate(setting)
    result = ratelimit.hit(scope, rate)
    if result.allowed:
        return None
    if result.count == rate.limit + 1:
        _count(destination, IngestRefusal.RATE_LIMITED, origin)
    advice = (
        "or send events in batches ({'data': [...]})"
        if counted_per == "key"
        else "and send only requests that carry events"
    )
    return _error(
        429,
        "rate_limited",
        f"More than {rate.limit} requests in {rate.period} seconds for this {counted_per}; try "
        f"again in {result.retry_after} seconds, {advice}.",
        headers={**cors, "Retry-After": str(max(1, result.retry_after))},
    )


def _read_body(request: HttpRequest, cors: dict[str, str]) -> bytes | HttpResponse:
    limit = app_settings.INGEST_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _too_big(limit, cors)
    try:
        body = request.body
    except RequestDataTooBig:
        return _too_big(limit, cors)
    if len(body) > limit:
        return _too_big(limit, cors)
    return body


def _too_big(limit: int, cors: dict[str, str]) -> HttpResponse:
    return _error(
        413,
        "body_too_large",
        f"The body is larger than {limit} bytes; send fewer events per request.",
        headers=cors,
    )


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON (and the databases) do not have.
    raise ValueError(f"{name} is not valid JSON")


def _float_or_text(text: str) -> float | str:
    # JSON numbers have no limit, Python's floats do: 1e400 would become infinity, which no
    # database stores and no JSON carries. Kept as the text it was, the event is judged (and
    # refused, with the field named) on its own instead of the whole request, and loses nothing.
    number = float(text)
    return number if math.isfinite(number) else text


def _int_or_text(text: str) -> int | str:
    # Python refuses to read integers over 4300 digits (sys.get_int_max_str_digits); the same
    # reasoning as above keeps them as text, so one such number refuses one event, not 999 others.
    try:
        return int(text)
    except ValueError:
        return text


def _parse_events(body: bytes, cors: dict[str, str]) -> list[Any] | HttpResponse:
    try:
        data = json.loads(
            body,
            parse_constant=_refuse_constant,
            parse_float=_float_or_text,
            parse_int=_int_or_text,
        )
    except (ValueError, RecursionError) as error:
        reason = str(error) if isinstance(error, json.JSONDecodeError) else "not readable"
        return _error(
            400, "invalid_json", f"The body is not valid UTF-8 JSON ({reason}).", headers=cors
        )
    if isinstance(data, list):
        events = data
    elif isinstance(data, dict) and "data" in data:
        events = data["data"]
        if not isinstance(events, list):
            return _error(
                400, "invalid_data", '"data" must be a list of event objects.', headers=cors
            )
    elif isinstance(data, dict):
        events = [data]
    else:
        return _error(
            400,
            "invalid_body",
            'The body must be an event object, a list of events or {"data": [...]}.',
            headers=cors,
        )
    if len(events) > MAX_EVENTS_PER_REQUEST:
        return _error(
            400,
            "too_many_events",
            f"{len(events)} events in one request; send at most {MAX_EVENTS_PER_REQUEST}.",
            headers=cors,
        )
    return events


def _error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
