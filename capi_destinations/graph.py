"""The Graph API client: the only code that talks to Meta.

Three calls: :func:`send_events` (``POST /{version}/{pixel_id}/events``), :func:`get_pixel`
(``GET /{version}/{pixel_id}``) and :func:`get_dataset_quality` (``GET
/{version}/dataset_quality?dataset_id={pixel_id}``, Meta's own Event Match Quality). Every
answer becomes a result object or a :class:`GraphError` whose ``category`` tells the caller
what to do (see :mod:`capi_destinations.graph_errors`).

Secrets: the access token travels in the JSON body of a POST and in the ``Authorization``
header of a GET, never in a URL. ``appsecret_proof`` is sent when the destination has an app
secret; it is HMAC-SHA256 of the token keyed with the app secret (what Meta's official SDK
sends), or, with the ``GRAPH_APPSECRET_TIME`` setting, of ``token|unix time`` together with
``appsecret_time`` (Meta's current Login Security page). Neither the token nor the proof ever
reaches a log line, an exception message, a repr or a record: :func:`redact` removes them.
Django's error reports print the local variables of every frame; the functions that hold a
secret are marked ``sensitive_variables()``, which hides every local of their frame and of the
frames they call (the JSON encoder's, requests' and urllib3's, which hold the body and headers).

Connections: one pooled :class:`requests.Session` per process, shared by all threads. Its
cookie jar refuses every cookie and nothing else on it changes after creation, so concurrent
requests only share urllib3's thread-safe connection pool, which is sized for the health
check fan-out. A forked worker (django-q2) builds its own session instead of sharing sockets
with its parent.
"""

from __future__ import annotations

import hashlib
import hmac
import http.cookiejar
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol, cast
from urllib.parse import quote, quote_plus

import requests
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from capi_destinations import __version__, clock
from capi_destinations.conf import app_settings
from capi_destinations.graph_errors import (
    AUTH,
    CATEGORIES,
    CONNECTION_FAILED,
    CONNECTION_LOST,
    INVALID,
    NOT_GRAPH_API,
    PERMANENT_CATEGORIES,
    PERMISSION,
    RATE_LIMIT,
    SERVER_ERROR,
    TIMEOUT,
    TOO_MANY_REQUESTS,
    TRANSIENT,
    UNEXPECTED_ANSWER,
    UNKNOWN,
    UNPARSEABLE,
    ErrorInfo,
    classify,
)

__all__ = [
    "AUTH",
    "CATEGORIES",
    "INVALID",
    "MAX_EVENTS_PER_REQUEST",
    "PERMISSION",
    "RATE_LIMIT",
    "TRANSIENT",
    "UNKNOWN",
    "BusinessUseCaseUsage",
    "DatasetQuality",
    "ErrorInfo",
    "EventMatchQuality",
    "GraphError",
    "MatchKeyCoverage",
    "PixelInfo",
    "RateLimitUsage",
    "SendResult",
    "appsecret_proof",
    "classify",
    "close_session",
    "get_dataset_quality",
    "get_pixel",
    "get_session",
    "parse_rate_limit_headers",
    "redact",
    "send_events",
]

logger = logging.getLogger("capi_destinations.graph")

USER_AGENT = f"django-capi-destinations/{__version__}"
# Meta asks partners to send a unique string naming their platform with every event request,
# "less than 23 characters" with "at least two alphabetical characters"; the PARTNER_AGENT
# setting replaces it.
PARTNER_AGENT = f"django-capi-{__version__}"
MAX_EVENTS_PER_REQUEST = 1000
# Only what the product uses: the pixel's name, shown beside its ID. Reading the pixel is a
# bonus: a send-only token (made in the dataset's settings) may not read it at all.
PIXEL_FIELDS = ("id", "name")
# Meta's Dataset Quality API: per web event name, the Event Match Quality score and the share of
# events carrying each match key. No ``agent_name``: Meta then scores "all events regardless of
# whether they were sent by an agent or not" (conversions-api/dataset-quality-api).
DATASET_QUALITY_FIELDS = (
    "web{event_name,event_match_quality{composite_score,"
    "match_key_feedback{identifier,coverage{percentage}}}}"
)
# Connections kept per host: enough for the health check fan-out to run in parallel.
CONNECTION_POOL_SIZE = 64
REDACTED = "[redacted]"
# Shorter "secrets" are not replaced in text: blanking every "a" would garble the message.
_MIN_SECRET_LENGTH = 4
_ERROR_SNIPPET_LENGTH = 200

# Field sizes of DeliveryAttempt, so to_record() always fits.
_RECORD_LIMITS = {"fbtrace_id": 100, "error_type": 100, "error_user_title": 255}


class GraphDestination(Protocol):
    """What the client needs of a destination (``models.Destination`` provides it)."""

    pixel_id: str
    access_token: str
    app_secret: str
    test_event_code: str

    @property
    def graph_api_version(self) -> str: ...


# --- redaction -----------------------------------------------------------------------------

_SECRET_PARAMETER = re.compile(
    r"""(?ix)
    (access_token|appsecret_proof|client_secret|app_secret)   # the parameter's name
    ( = | %3D | ["']?\s*:\s*["']? )                            # query, encoded or JSON form
    ([^&\s"',;}]+)                                             # its value
    """
)
_AUTHORIZATION = re.compile(r"(?i)\b(Bearer|OAuth)\s+[A-Za-z0-9._~+/=-]{8,}")
# Meta's user and system-user tokens start with EAA; a stray one is removed even unnamed.
_TOKEN_SHAPE = re.compile(r"\bEAA[A-Za-z0-9]{16,}")


@sensitive_variables()
def redact(text: str, *secrets: str | None) -> str:
    """``text`` with each secret, and anything shaped like a token or proof, replaced.

    Use it on every URL, body or exception text before it is logged, raised or stored.
    """
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
            encoded = quote_plus(secret)
            if encoded != secret:
                text = text.replace(encoded, REDACTED)
    text = _SECRET_PARAMETER.sub(lambda match: f"{match[1]}{match[2]}{REDACTED}", text)
    text = _AUTHORIZATION.sub(lambda match: f"{match[1]} {REDACTED}", text)
    return _TOKEN_SHAPE.sub(REDACTED, text)


class _RedactingFilter(logging.Filter):
    """Removes secrets from urllib3's request lines (a GET's query holds appsecret_proof)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def _install_log_redaction() -> None:
    urllib3_logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(item, _RedactingFilter) for item in urllib3_logger.filters):
        urllib3_logger.addFilter(_RedactingFilter())


_install_log_redaction()


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessUseCaseUsage:
    """One entry of ``x-business-use-case-usage``: percentages of a business's limit."""

    business_id: str
    type: str
    call_count: int
    total_cputime: int
    total_time: int
    # Minutes until access returns; 0 while not throttled.
    estimated_time_to_regain_access: int


@dataclass(frozen=True)
class RateLimitUsage:
    """Meta's usage headers: how close this app and business are to their limits (percent)."""

    app: Mapping[str, int] | None = None
    business_use_cases: tuple[BusinessUseCaseUsage, ...] = ()
    ad_account: Mapping[str, Any] | None = None

    @property
    def highest_percent(self) -> int:
        """The highest usage percentage any header reports (100 = throttled)."""
        values = list((self.app or {}).values())
        for usage in self.business_use_cases:
            values += [usage.call_count, usage.total_cputime, usage.total_time]
        if self.ad_account:
            percent = self.ad_account.get("acc_id_util_pct")
            if isinstance(percent, int | float):
                values.append(int(percent))
        return max(values, default=0)

    @property
    def retry_after(self) -> timedelta | None:
        """How long until Meta gives access back, when it says so."""
        minutes = max(
            (usage.estimated_time_to_regain_access for usage in self.business_use_cases),
            default=0,
        )
        if minutes > 0:
            return timedelta(minutes=minutes)
        if self.ad_account and _number(self.ad_account.get("acc_id_util_pct")) >= 100:
            seconds = _number(self.ad_account.get("reset_time_duration"))
            if seconds > 0:
                return timedelta(seconds=seconds)
        return None


@dataclass(frozen=True)
class SendResult:
    """Meta's answer to a successful ``send_events`` call."""

    events_received: int
    messages: tuple[str, ...]
    fbtrace_id: str
    http_status: int
    duration_ms: int
    rate_limit: RateLimitUsage | None = None


@dataclass(frozen=True)
class PixelInfo:
    """What Meta says about a pixel: its name (the token may read it)."""

    id: str
    name: str
    duration_ms: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MatchKeyCoverage:
    """One entry of Meta's ``match_key_feedback``: a match key and the share of events with it.

    ``identifier`` is Meta's name (``email``, ``phone``, ``external_id``, ``ip_address``, …);
    ``coverage`` is a percentage (0-100), None when Meta gave none.
    """

    identifier: str
    coverage: float | None


@dataclass(frozen=True)
class EventMatchQuality:
    """Meta's Event Match Quality of one event name: its score (0-10) and per-key feedback."""

    event_name: str
    composite_score: float | None
    match_key_feedback: tuple[MatchKeyCoverage, ...] = ()


@dataclass(frozen=True)
class DatasetQuality:
    """Meta's answer to ``GET /dataset_quality``: one entry per web event name."""

    events: tuple[EventMatchQuality, ...]
    duration_ms: int = 0


class GraphError(Exception):
    """A failed Graph API call, classified; never carries the token or the proof.

    ``category`` is one of ``auth``, ``permission``, ``rate_limit``, ``invalid``, ``transient``
    or ``unknown``; ``explanation`` and ``fix`` are plain language for people.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        error_subcode: int | None = None,
        type: str = "",
        error_user_title: str = "",
        error_user_msg: str = "",
        fbtrace_id: str = "",
        is_transient: bool | None = None,
        info: ErrorInfo | None = None,
        retry_after: timedelta | None = None,
        rate_limit: RateLimitUsage | None = None,
        duration_ms: int | None = None,
        error_data: Any = None,
        secrets: Sequence[str | None] = (),
    ) -> None:
        if info is None:
            info = classify(http_status, code, error_subcode, is_transient, message=message)
        self.message = redact(message, *secrets)
        self.http_status = http_status
        self.code = code
        self.error_subcode = error_subcode
        self.type = redact(type, *secrets)
        self.error_user_title = redact(error_user_title, *secrets)
        self.error_user_msg = redact(error_user_msg, *secrets)
        self.fbtrace_id = fbtrace_id
        self.is_transient = is_transient
        self.category = info.category
        self.explanation = info.explanation
        self.fix = info.fix
        self.problem = info.problem
        self.retry_after = retry_after
        self.rate_limit = rate_limit
        self.duration_ms = duration_ms
        # Meta's "error_data" (with "blame_field_specs" when Meta names the field), kept whole.
        self.error_data = _redacted_json(error_data, secrets)
        super().__init__(self.message)

    @property
    def permanent(self) -> bool:
        """True when resending the same request cannot succeed (auth, permission, invalid)."""
        return self.category in PERMANENT_CATEGORIES

    def __str__(self) -> str:
        code = ""
        if self.code is not None:
            code = (
                f" (#{self.code}" + (f"/{self.error_subcode}" if self.error_subcode else "") + ")"
            )
        status = f" HTTP {self.http_status}" if self.http_status is not None else ""
        return f"[{self.category}]{code}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"GraphError(category={self.category!r}, http_status={self.http_status!r}, "
            f"code={self.code!r}, error_subcode={self.error_subcode!r}, "
            f"message={self.message!r}, fbtrace_id={self.fbtrace_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle through their args; ours has keyword-only fields (django-q2
        # pickles task outcomes), so rebuild from the attributes instead.
        return (_restore_graph_error, (dict(self.__dict__),))

    def to_record(self) -> dict[str, Any]:
        """The fields a ``DeliveryAttempt`` stores about this error (names match its fields)."""
        record: dict[str, Any] = {
            "http_status": self.http_status,
            "fbtrace_id": self.fbtrace_id,
            "category": self.category,
            "error_code": self.code,
            "error_subcode": self.error_subcode,
            "error_type": self.type,
            "error_message": self.message,
            "error_user_title": self.error_user_title,
            "error_user_msg": self.error_user_msg,
            "error_data": getattr(self, "error_data", None),
        }
        for name, limit in _RECORD_LIMITS.items():
            record[name] = record[name][:limit]
        return record


def _redacted_json(value: Any, secrets: Sequence[str | None]) -> Any:
    """A JSON value from Meta with every secret replaced, or None when there is none."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return redact(value, *secrets)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return None
    redacted = redact(text, *secrets)
    try:
        return json.loads(redacted)
    except ValueError:
        return redacted


def _restore_graph_error(state: dict[str, Any]) -> GraphError:
    error = GraphError.__new__(GraphError)
    error.__dict__.update(state)
    error.args = (state.get("message", ""),)
    return error


# --- session -------------------------------------------------------------------------------

_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def get_session() -> requests.Session:
    """The process's pooled session (a new one after a fork)."""
    global _session, _session_pid
    pid = os.getpid()
    session = _session
    if session is not None and _session_pid == pid:
        return session
    with _session_lock:
        if _session is None or _session_pid != pid:
            _session = _new_session()
            _session_pid = pid
        return _session


def close_session() -> None:
    """Close the pooled session's connections; the next call opens a new one."""
    global _session, _session_pid
    with _session_lock:
        if _session is not None and _session_pid == os.getpid():
            _session.close()
        _session = None
        _session_pid = None


# The proxies of each origin (scheme://host:port) the session reaches, read from the environment
# once per session (see _new_session).
_proxies_of_origin: dict[str, dict[str, str]] = {}


def _new_session() -> requests.Session:
    session = requests.Session()
    # The environment is read once, here, not on every request: requests' trust_env looks up
    # the proxy variables (HTTPS_PROXY, NO_PROXY, …), a CA bundle and ~/.netrc for each call,
    # system calls that give up the interpreter lock; the dispatcher's sender thread then waited
    # to get it back before its request went out (milliseconds per request, docs/BENCHMARKS.md).
    # Proxies and the CA bundle keep working (``_proxies_for``); ~/.netrc is not read: Graph
    # requests carry their token, and netrc credentials would replace a GET's Authorization.
    session.trust_env = False
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    _proxies_of_origin.clear()
    # Graph answers need no cookies, and a shared jar would carry one client's into another's.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    # No automatic retries: a retried POST could deliver a batch twice behind our back.
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=CONNECTION_POOL_SIZE, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# --- the two calls -------------------------------------------------------------------------


@sensitive_variables()
def appsecret_proof(access_token: str, app_secret: str, *, at: int | None = None) -> str:
    """HMAC-SHA256 (hex) of the token keyed with the app secret; over ``token|at`` if ``at``."""
    message = access_token if at is None else f"{access_token}|{at}"
    return hmac.new(app_secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@sensitive_variables()
def send_events(
    destination: GraphDestination,
    events: Sequence[Mapping[str, Any]] | Sequence[str],
    *,
    test_event_code: str | None = None,
) -> SendResult:
    """POST Meta-ready server events (1 to 1000, dicts or each one's JSON text) to the pixel.

    ``test_event_code`` None uses the destination's own code (blank = live events); pass a
    code, or ``""`` to force live events. Raises :class:`GraphError` for every failure,
    including timeouts and connection errors (category ``transient``).
    """
    if not 1 <= len(events) <= MAX_EVENTS_PER_REQUEST:
        raise ValueError(f"send 1 to {MAX_EVENTS_PER_REQUEST} events per request")
    token = destination.access_token or ""
    app_secret = destination.app_secret or ""
    secrets = _secrets_of(token, app_secret)
    if not token:
        raise _no_token_error()
    code = destination.test_event_code if test_event_code is None else test_event_code
    data = events if isinstance(events, list) else list(events)
    # Events given as JSON text (the dispatcher passes the stored payloads) are spliced into
    # the body as they are, instead of being decoded and encoded again.
    encoded = isinstance(data[0], str)
    body: dict[str, Any] = {
        "data": [] if encoded else data,
        "access_token": token,
        "partner_agent": app_settings.PARTNER_AGENT or PARTNER_AGENT,
    }
    if code:
        body["test_event_code"] = code
    proof = _appsecret_parameters(token, app_secret)
    body.update(proof)
    secrets += (str(proof.get("appsecret_proof", "")),)
    # Serialized once, compactly: this is the hot path of the dispatcher.
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    if encoded:
        text = text.replace('"data":[]', '"data":[' + ",".join(cast("list[str]", data)) + "]", 1)
    payload = text.encode()
    url = f"{_node_url(destination)}/events"
    response, duration_ms = _request(
        "POST",
        url,
        secrets,
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    answer = _decode_answer(response, duration_ms, secrets)
    events_received = answer.get("events_received")
    if not isinstance(events_received, int) or isinstance(events_received, bool):
        raise _unexpected(response, duration_ms, secrets, "the answer has no events_received")
    messages = answer.get("messages") or []
    result = SendResult(
        events_received=events_received,
        # Kept on the attempt and shown: never with a secret in it.
        messages=tuple(
            redact(message if isinstance(message, str) else json.dumps(message), *secrets)
            for message in (messages if isinstance(messages, list) else [messages])
        ),
        fbtrace_id=str(answer.get("fbtrace_id") or response.headers.get("x-fb-trace-id", "")),
        http_status=response.status_code,
        duration_ms=duration_ms,
        rate_limit=parse_rate_limit_headers(response.headers),
    )
    logger.info(
        "Sent %d events to pixel %s: %d received in %d ms (fbtrace_id %s)%s",
        len(events),
        destination.pixel_id,
        result.events_received,
        duration_ms,
        result.fbtrace_id,
        " [test events]" if code else "",
    )
    return result


@sensitive_variables()
def get_pixel(
    destination: GraphDestination,
    *,
    access_token: str | None = None,
    app_secret: str | None = None,
) -> PixelInfo:
    """Ask Meta for the destination's pixel name (``id`` and ``name``, nothing else).

    A success proves the token is valid and may read the pixel. A refusal does not prove the
    token cannot send: Meta says tokens made in a dataset's Conversions API settings "can't be
    used to run API GET data requests" (see ``health.py``).

    ``access_token`` / ``app_secret`` check credentials that are not saved yet (the
    "validate as you type" form). Raises :class:`GraphError` on failure.
    """
    token = destination.access_token if access_token is None else access_token
    secret = destination.app_secret if app_secret is None else app_secret
    token = token or ""
    secret = secret or ""
    secrets = _secrets_of(token, secret)
    if not token:
        raise _no_token_error()
    params: dict[str, Any] = {"fields": ",".join(PIXEL_FIELDS)}
    proof = _appsecret_parameters(token, secret)
    params.update(proof)
    secrets += (str(proof.get("appsecret_proof", "")),)
    response, duration_ms = _request(
        "GET",
        _node_url(destination),
        secrets,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = _decode_answer(response, duration_ms, secrets)
    pixel_id = answer.get("id")
    if not pixel_id:
        raise _unexpected(response, duration_ms, secrets, "the answer has no pixel id")
    info = PixelInfo(
        id=str(pixel_id),
        name=str(answer.get("name") or ""),
        duration_ms=duration_ms,
        raw=answer,
    )
    logger.info("Pixel %s is %r (%d ms)", info.id, info.name, duration_ms)
    return info


@sensitive_variables()
def get_dataset_quality(destination: GraphDestination) -> DatasetQuality:
    """Ask Meta's Dataset Quality API for the pixel's Event Match Quality per web event name.

    ``GET /{version}/dataset_quality?dataset_id={pixel_id}&fields=web{…}`` with the token in
    the ``Authorization`` header and ``appsecret_proof`` when the destination has an app secret.
    Meta says the token generated in Events Manager "will be able to fetch quality data"; a
    token made in a dataset's Conversions API settings "can't be used to run API GET data
    requests", so a refusal here is normal and says nothing about sending. Raises
    :class:`GraphError` on failure (a refusal is category ``permission``).
    """
    token = destination.access_token or ""
    secret = destination.app_secret or ""
    secrets = _secrets_of(token, secret)
    if not token:
        raise _no_token_error()
    params: dict[str, Any] = {
        "dataset_id": str(destination.pixel_id),
        "fields": DATASET_QUALITY_FIELDS,
    }
    proof = _appsecret_parameters(token, secret)
    params.update(proof)
    secrets += (str(proof.get("appsecret_proof", "")),)
    response, duration_ms = _request(
        "GET",
        f"{_version_url(destination)}/dataset_quality",
        secrets,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = _decode_answer(response, duration_ms, secrets)
    web = answer.get("web", [])
    if not isinstance(web, list):
        raise _unexpected(response, duration_ms, secrets, 'the answer\'s "web" is not a list')
    quality = DatasetQuality(
        events=tuple(
            _event_match_quality(entry)
            for entry in web
            if isinstance(entry, dict) and isinstance(entry.get("event_name"), str)
        ),
        duration_ms=duration_ms,
    )
    logger.info(
        "Dataset quality of pixel %s: %d event names (%d ms)",
        destination.pixel_id,
        len(quality.events),
        duration_ms,
    )
    return quality


def _event_match_quality(entry: Mapping[str, Any]) -> EventMatchQuality:
    """One ``web`` entry of a Dataset Quality answer; parts Meta left out become None/empty."""
    emq = entry.get("event_match_quality")
    emq = emq if isinstance(emq, Mapping) else {}
    feedback = emq.get("match_key_feedback")
    keys = []
    for item in feedback if isinstance(feedback, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("identifier"), str):
            continue
        coverage = item.get("coverage")
        percentage = coverage.get("percentage") if isinstance(coverage, Mapping) else None
        keys.append(MatchKeyCoverage(str(item["identifier"]), _optional_number(percentage)))
    return EventMatchQuality(
        event_name=str(entry["event_name"]),
        composite_score=_optional_number(emq.get("composite_score")),
        match_key_feedback=tuple(keys),
    )


# --- plumbing ------------------------------------------------------------------------------


def _secrets_of(token: str, app_secret: str) -> tuple[str, ...]:
    return tuple(secret for secret in (token, app_secret) if secret)


def _version_url(destination: GraphDestination) -> str:
    base = str(app_settings.GRAPH_API_BASE_URL).rstrip("/")
    return f"{base}/{quote(str(destination.graph_api_version), safe='')}"


def _node_url(destination: GraphDestination) -> str:
    return f"{_version_url(destination)}/{quote(str(destination.pixel_id), safe='')}"


@sensitive_variables()
def _appsecret_parameters(token: str, app_secret: str) -> dict[str, Any]:
    if not app_secret:
        return {}
    if app_settings.GRAPH_APPSECRET_TIME:
        at = int(clock.now().timestamp())
        return {"appsecret_proof": appsecret_proof(token, app_secret, at=at), "appsecret_time": at}
    return {"appsecret_proof": appsecret_proof(token, app_secret)}


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@sensitive_variables()
def _request(
    method: str, url: str, secrets: tuple[str, ...], **kwargs: Any
) -> tuple[requests.Response, int]:
    timeout = (float(app_settings.GRAPH_CONNECT_TIMEOUT), float(app_settings.GRAPH_READ_TIMEOUT))
    started = time.perf_counter()
    error: GraphError | None = None
    try:
        session = get_session()
        response = session.request(
            method,
            url,
            timeout=timeout,
            allow_redirects=False,
            proxies=_proxies_for(url),
            **kwargs,
        )
    except requests.RequestException as exc:
        error = _network_error(exc, secrets, _elapsed_ms(started), timeout)
    if error is not None:
        # Raised outside the except block so the original exception, whose text holds the
        # URL and its query string, is not attached as __context__.
        logger.warning("Graph API %s failed: %s", method, error)
        raise error
    return response, _elapsed_ms(started)


def _proxies_for(url: str) -> dict[str, str]:
    """The environment's proxies for ``url`` (none where NO_PROXY exempts its host), as
    requests' trust_env finds them, read once per origin and session."""
    scheme, _, rest = url.partition("://")
    origin = f"{scheme}://{rest.split('/', 1)[0]}"
    proxies = _proxies_of_origin.get(origin)
    if proxies is None:
        proxies = _proxies_of_origin[origin] = requests.utils.get_environ_proxies(origin)
    return proxies


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _network_error(
    exc: requests.RequestException,
    secrets: tuple[str, ...],
    duration_ms: int,
    timeout: tuple[float, float],
) -> GraphError:
    detail = redact(str(exc), *secrets)
    if isinstance(exc, requests.ConnectTimeout):
        info, message = CONNECTION_FAILED, f"No connection within {timeout[0]:g} s: {detail}"
    elif isinstance(exc, requests.Timeout):
        info, message = TIMEOUT, f"No answer within {timeout[1]:g} s: {detail}"
    elif _is_connect_failure(exc):
        info, message = CONNECTION_FAILED, f"Could not connect: {detail}"
    elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        info, message = CONNECTION_LOST, f"Connection lost before an answer: {detail}"
    elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        info, message = NOT_GRAPH_API, f"Invalid Graph API address: {detail}"
    else:
        info, message = CONNECTION_FAILED, f"{type(exc).__name__}: {detail}"
    return GraphError(message, info=info, duration_ms=duration_ms, secrets=secrets)


def _is_connect_failure(exc: requests.RequestException) -> bool:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(exc.args[0], NewConnectionError)


def _decode_answer(
    response: requests.Response, duration_ms: int, secrets: tuple[str, ...]
) -> dict[str, Any]:
    """The JSON object of a 2xx answer; a :class:`GraphError` for anything else."""
    try:
        answer = json.loads(response.content)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser follows is as unreadable as a cut.
        answer = None
    rate_limit = parse_rate_limit_headers(response.headers)
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        raise _error_from_body(response, answer["error"], duration_ms, secrets, rate_limit)
    status = response.status_code
    if not isinstance(answer, dict) or not 200 <= status < 300:
        if answer is None:
            info = _info_for_unreadable(status)
            reason = "an answer that is not JSON" if status != 200 else "an unreadable answer"
        else:
            info = classify(status, None, None, None) if status >= 300 else UNEXPECTED_ANSWER
            reason = "an answer without an error object"
        snippet = _snippet(response, secrets)
        error = GraphError(
            f"HTTP {status} with {reason}: {snippet}",
            http_status=status,
            info=info,
            fbtrace_id=response.headers.get("x-fb-trace-id", ""),
            retry_after=_retry_after(response, rate_limit),
            rate_limit=rate_limit,
            duration_ms=duration_ms,
            secrets=secrets,
        )
        logger.warning("Graph API answer not understood: %s", error)
        raise error
    if answer.get("success") is False:
        raise _unexpected(response, duration_ms, secrets, 'the answer says "success": false')
    return answer


def _snippet(response: requests.Response, secrets: tuple[str, ...]) -> str:
    """The start of a body for an error message, redacted before it is cut (a cut secret
    would no longer be recognised)."""
    text = response.content[: _ERROR_SNIPPET_LENGTH * 50].decode("utf-8", "replace")
    return redact(text, *secrets)[:_ERROR_SNIPPET_LENGTH]


def _info_for_unreadable(status: int) -> ErrorInfo:
    """What an answer that is not JSON means, by its HTTP status."""
    if status == 429:
        return TOO_MANY_REQUESTS
    if status >= 500:
        return SERVER_ERROR
    if 200 <= status < 300 or status == 408:
        return UNPARSEABLE
    # Meta answers every 3xx/4xx with a JSON error: a page means the base URL is wrong.
    return NOT_GRAPH_API


def _error_from_body(
    response: requests.Response,
    error: Mapping[str, Any],
    duration_ms: int,
    secrets: tuple[str, ...],
    rate_limit: RateLimitUsage | None,
) -> GraphError:
    graph_error = GraphError(
        str(error.get("message") or ""),
        http_status=response.status_code,
        code=_integer(error.get("code")),
        error_subcode=_integer(error.get("error_subcode")),
        type=str(error.get("type") or ""),
        error_user_title=str(error.get("error_user_title") or ""),
        error_user_msg=str(error.get("error_user_msg") or ""),
        fbtrace_id=str(error.get("fbtrace_id") or response.headers.get("x-fb-trace-id", "")),
        is_transient=error.get("is_transient")
        if isinstance(error.get("is_transient"), bool)
        else None,
        retry_after=_retry_after(response, rate_limit),
        rate_limit=rate_limit,
        duration_ms=duration_ms,
        error_data=_error_data_of(error),
        secrets=secrets,
    )
    logger.warning("Graph API error: %s (fbtrace_id %s)", graph_error, graph_error.fbtrace_id)
    return graph_error


def _error_data_of(error: Mapping[str, Any]) -> Any:
    """Meta's ``error_data``, with a top-level ``blame_field_specs`` folded into it."""
    data = error.get("error_data")
    blame = error.get("blame_field_specs")
    if blame is None:
        return data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            data = {"error_data": data}
    return {**(data if isinstance(data, dict) else {}), "blame_field_specs": blame}


def _unexpected(
    response: requests.Response, duration_ms: int, secrets: tuple[str, ...], reason: str
) -> GraphError:
    snippet = _snippet(response, secrets)
    error = GraphError(
        f"Unexpected Graph API answer ({reason}): {snippet}",
        http_status=response.status_code,
        info=UNEXPECTED_ANSWER,
        fbtrace_id=response.headers.get("x-fb-trace-id", ""),
        duration_ms=duration_ms,
        secrets=secrets,
    )
    logger.warning("Graph API answer not understood: %s", error)
    return error


def _no_token_error() -> GraphError:
    return GraphError(
        "No access token is stored for this destination.",
        info=ErrorInfo(
            AUTH,
            "This destination has no access token, so nothing can be sent.",
            "Paste the pixel's Conversions API access token into the destination.",
        ),
    )


def _retry_after(
    response: requests.Response, rate_limit: RateLimitUsage | None
) -> timedelta | None:
    if rate_limit is not None and rate_limit.retry_after is not None:
        return rate_limit.retry_after
    header = response.headers.get("Retry-After", "")
    if header.strip().isdigit():
        return timedelta(seconds=int(header.strip()))
    return None


# --- headers and values --------------------------------------------------------------------


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitUsage | None:
    """Meta's ``x-app-usage``, ``x-business-use-case-usage`` and ``x-ad-account-usage``.

    Returns None when none of them is present; malformed header values are ignored.
    """
    lowered = {str(name).lower(): value for name, value in headers.items()}
    app = _json_header(lowered.get("x-app-usage"))
    business = _json_header(lowered.get("x-business-use-case-usage"))
    ad_account = _json_header(lowered.get("x-ad-account-usage"))
    if app is None and business is None and ad_account is None:
        return None
    app_usage = None
    if isinstance(app, dict):
        app_usage = {str(key): _integer(value) or 0 for key, value in app.items()}
    business_usages: list[BusinessUseCaseUsage] = []
    if isinstance(business, dict):
        for business_id, entries in business.items():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    business_usages.append(
                        BusinessUseCaseUsage(
                            business_id=str(business_id),
                            type=str(entry.get("type", "")),
                            call_count=_integer(entry.get("call_count")) or 0,
                            total_cputime=_integer(entry.get("total_cputime")) or 0,
                            total_time=_integer(entry.get("total_time")) or 0,
                            estimated_time_to_regain_access=_integer(
                                entry.get("estimated_time_to_regain_access")
                            )
                            or 0,
                        )
                    )
    return RateLimitUsage(
        app=app_usage,
        business_use_cases=tuple(business_usages),
        ad_account=ad_account if isinstance(ad_account, dict) else None,
    )


def _json_header(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _optional_number(value: object) -> float | None:
    """A JSON number as a float; None for anything else (Meta leaves values out)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0
