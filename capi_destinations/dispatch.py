"""Delivery: claim due events under a lease, send them to Meta in batches, record Meta's answer.

One dispatch pass (:func:`dispatch_pending`):

1. gives back the events of workers that died mid-batch (their lease ran out),
2. expires waiting events that can no longer reach Meta inside its window (7 days; 62 for
   store events) because their destination is disabled, blocked or paused,
3. then, round after round, claims up to ``BATCH_SIZE`` due events of the destinations that may
   send, sends them (one request per destination, within ``BATCH_SIZE`` and
   ``BATCH_MAX_BYTES``), records every request as a :class:`DeliveryAttempt`, and moves each
   event on according to Meta's answer, until nothing is due.

Claim, send and record are three steps: the claim is one short transaction, the HTTP call runs
with no transaction open, and the outcome is written in another short transaction whose
updates only touch events still holding this worker's lease token. A worker whose lease ran out
(and whose events another worker took over) can therefore never overwrite anything; at worst an
event is sent twice with the same ``event_id``, which Meta deduplicates.

What each answer does:

- success → ``delivered``;
- ``invalid`` for several events → split the request in halves and resend them (depth first)
  until the bad events stand alone: Meta's answer names no event, so only the split finds them.
  A lone event refused after Meta accepted another request of the destination in this pass →
  ``failed`` with Meta's message as a diagnostic. Lone events refused alike with nothing
  accepted (:data:`REQUEST_LEVEL_EVIDENCE`, or two at the end of a claim, or one after the
  destination's previous lone event was refused the same way) mean Meta refuses every request
  (a wrong test event code, Limited Data Use required): the destination is blocked like for a
  refused token and its events wait with their retries unspent, instead of failing one by one;
- ``transient``/``unknown`` → back to ``pending`` on the retry schedule (:data:`RETRY_DELAYS`),
  or ``expired`` once the next attempt would fall outside Meta's window (7 days; 62 for store
  events);
- ``rate_limit`` → the destination pauses until Meta's time (or :data:`RATE_LIMIT_BACKOFF`);
  the events wait without spending their retry budget;
- ``auth``/``permission`` → the destination is blocked and marked Unhealthy; its events wait
  until the token is replaced, or until a canary is accepted.

A blocked destination is released by one of its own waiting events, never a synthetic one: its
newest waiting event is sent alone (the canary) one minute after the block, then after waits
that double up to an hour, or at once when a health check finds that Meta accepts the token
again (``delivery_state.request_canary``). Accepted (or refused for its own content), the block
is lifted and the other events follow; refused like before, the destination stays blocked.

A block belongs to the token that earned it: it records that token's fingerprint
(``Destination.blocked_token_fingerprint``) and its kind (``Destination.block_kind``). Saving a
new token lifts it (``Destination.save``); a token written with ``QuerySet.update()``, which runs
no Python, is found at the start of the next pass (``delivery_state.release_outlived_blocks``,
which reads the tokens of the blocked destinations only, to compare fingerprints) or by the
next health check, and the held events go out.

Every write of a destination's delivery state (block, pause, canary, release) is
:mod:`capi_destinations.delivery_state`'s; a health transition is
:mod:`capi_destinations.health_status`'s; queueing a task is
:mod:`capi_destinations.queueing`'s. This module imports none of ``health``, ``tasks`` or
``destinations``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography.fernet import InvalidToken
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Case, F, Q, QuerySet, Subquery, TextField, Value, When
from django.db.models.functions import Cast, Concat

from capi_destinations import (
    clock,
    counters,
    delivery_state,
    eventstore,
    graph,
    health_status,
    queueing,
)
from capi_destinations.conf import app_settings
from capi_destinations.delivery_state import (
    REFUSED_WHATEVER_THE_EVENTS,
    REFUSED_WHATEVER_THE_EVENTS_FIX,
    canary_delay,
    held_reason,
    release_outlived_blocks,
)
from capi_destinations.diagnostics import (
    ERROR,
    MAX_CLOCK_SKEW,
    MAX_EVENT_AGE,
    MAX_STORE_EVENT_AGE,
    STORE_ACTION_SOURCE,
    Diagnostic,
    max_event_age,
)
from capi_destinations.models import (
    AttemptOutcome,
    BlockKind,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    QueuedEvent,
)
from capi_destinations.problems import EVERY_REQUEST_REFUSED
from capi_destinations.user_data_keys import CUSTOMER_INFO_KEYS

logger = logging.getLogger("capi_destinations.dispatch")

T = TypeVar("T")

# Delay before the next attempt after the 1st, 2nd, … failed attempt; after the last entry
# every further retry waits RETRY_DELAY_AFTER_SCHEDULE. Each delay varies by ±RETRY_JITTER so
# batches that failed together do not all come back at the same second.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=10),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
)
RETRY_DELAY_AFTER_SCHEDULE = timedelta(hours=12)
RETRY_JITTER = 0.2

# A request takes a moment to reach Meta: an event this close to the end of its window (7 days;
# 62 for store events) would be refused (and refuse its whole batch with it), so it is expired
# instead.
SEND_WINDOW_MARGIN = timedelta(minutes=1)

# Lone events refused alike, with nothing of the destination accepted, that show Meta refuses
# every request (a test event code, Limited Data Use): more than two, so that two bad events
# side by side in one batch are not mistaken for it.
REQUEST_LEVEL_EVIDENCE = 3

# How long a destination pauses after a rate-limit answer that does not say how long.
RATE_LIMIT_BACKOFF = timedelta(minutes=1)

# How a request Meta refused is filed among the attempts, by the category of Meta's answer
# (``graph_errors``); any other category is retried. The dispatcher acts on the outcome (an
# ``invalid`` request is split, see the module) and a test event is filed by it too.
OUTCOME_OF_CATEGORY: dict[str, str] = {
    graph.AUTH: AttemptOutcome.BLOCKED,
    graph.PERMISSION: AttemptOutcome.BLOCKED,
    graph.RATE_LIMIT: AttemptOutcome.RATE_LIMITED,
    graph.INVALID: AttemptOutcome.INVALID,
}

DISABLED_REASON = (
    "Not delivered within Meta's window (7 days, 62 for physical_store events): sending was "
    "disabled."
)
TOO_OLD_REASON = (
    "Not delivered within Meta's window: Meta refuses events whose event_time is more than "
    "7 days old (62 days for physical_store events)."
)
LAST_ERROR_PREFIX = "Not delivered within Meta's window; last error: "
LEASE_RETURNED_REASON = "Returned to the queue: the worker sending it stopped before it finished."

_A_SECOND = timedelta(seconds=1)

# Extra bytes of a request besides its events (token, partner agent, test code, proof).
_REQUEST_OVERHEAD_BYTES = 2048

# Meta's subcodes that name the field at fault.
_FIELD_OF_SUBCODE = {
    2804003: "event_time",
    2804016: "user_data",
    2804030: "data_processing_options",
    2804050: "user_data",
}
# A field named in Meta's message ("data[3].user_data.em must be …").
_FIELD_IN_MESSAGE = re.compile(
    r"\b((?:user_data|custom_data)(?:\.[a-z_]+)?|event_name|event_time|event_source_url|"
    r"action_source|event_id|data_processing_options)\b"
)

# Meta's text for people names a user_data key ("The ct parameter isn't hashed", FACTS §11).
_KEY_IN_USER_MESSAGE = re.compile(r"\bThe ([a-z_]+) parameter\b")


# --- the retry schedule ----------------------------------------------------------------------


def attempt_outcome(error: graph.GraphError) -> str:
    """The :class:`AttemptOutcome` of a request Meta refused (:data:`OUTCOME_OF_CATEGORY`)."""
    return OUTCOME_OF_CATEGORY.get(error.category, AttemptOutcome.RETRY)


def retry_delay(failures: int, *, rng: random.Random | None = None) -> timedelta:
    """How long to wait after the ``failures``-th failed attempt (1 → about 10 s), with jitter."""
    index = max(failures, 1) - 1
    base = RETRY_DELAYS[index] if index < len(RETRY_DELAYS) else RETRY_DELAY_AFTER_SCHEDULE
    factor = (rng or random).uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return base * factor


def send_deadline(event_time: datetime, action_source: str = "") -> datetime:
    """The last moment an event with this ``event_time`` may still be sent to Meta.

    7 days after it happened, 62 for ``physical_store`` events (Meta's offline events page).
    """
    return event_time + max_event_age(action_source) - SEND_WINDOW_MARGIN


def is_inside_window(
    event_time: datetime, *, now: datetime | None = None, action_source: str = ""
) -> bool:
    """Whether Meta would still accept an event that happened at ``event_time``."""
    return (now or clock.now()) < send_deadline(event_time, action_source)


def _outside_window(now: datetime) -> Q:
    """Events whose window closed: 62 days for store events, 7 days for all others."""
    store = Q(action_source=STORE_ACTION_SOURCE)
    return (store & Q(event_time__lte=now - MAX_STORE_EVENT_AGE + SEND_WINDOW_MARGIN)) | (
        ~store & Q(event_time__lte=now - MAX_EVENT_AGE + SEND_WINDOW_MARGIN)
    )


def may_be_inside_window(now: datetime) -> Q:
    """A bound on ``created_at`` that every event still inside Meta's window meets.

    Ingest refuses an event_time more than ``MAX_CLOCK_SKEW`` after the moment it records the
    event, so an event whose window is open was recorded after the longest window (62 days)
    opened, less that skew. It keeps a search for failed or expired events (Redeliver) on the
    (destination, created_at) index: the event table has no index on ``status``, so that the
    delivery's UPDATE of the event row is a HOT update (docs/BENCHMARKS.md, issue 21).
    """
    return Q(created_at__gt=now - MAX_STORE_EVENT_AGE + SEND_WINDOW_MARGIN - MAX_CLOCK_SKEW)


# --- results ---------------------------------------------------------------------------------


@dataclass
class DispatchReport:
    """What one dispatch pass did, in events (and requests)."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    expired: int = 0
    # Back to pending without spending an attempt: rate limited, or the token was refused.
    held: int = 0
    requests: int = 0
    leases_released: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counts as a plain dict (what the django-q2 task returns)."""
        return asdict(self)


@dataclass(slots=True)
class ClaimedEvent:
    """One event this worker holds a lease on, with the payload it will send (JSON text).

    The payload stays the JSON text the database returns: it is spliced into the request body
    as it is, never decoded and encoded again (the dispatcher's hottest path).
    """

    pk: int
    destination_id: int
    event_time: datetime
    attempts: int
    payload_json: str
    action_source: str = ""


@dataclass
class Claim:
    """The events one claim took, all under one lease token."""

    lease_token: uuid.UUID
    lease_expires_at: datetime
    events: list[ClaimedEvent] = field(default_factory=list)


# --- database turns --------------------------------------------------------------------------

# SQLite has one writer at a time anyway; threads of one process sharing an in-memory database
# (shared cache) do not even wait for each other but fail with "table is locked". So on SQLite
# the threads of a process take turns for each short database step (never across an HTTP call).
_SQLITE_TURN = threading.RLock()


@contextmanager
def _database_turn() -> Iterator[None]:
    if connection.vendor != "sqlite":
        yield
        return
    with _SQLITE_TURN:
        yield


@contextmanager
def _step() -> Iterator[None]:
    """One short transaction (taking its turn on SQLite)."""
    with _database_turn(), transaction.atomic():
        yield


@contextmanager
def _claim_step(store: eventstore.EventStore) -> Iterator[None]:
    """The claim's transaction: its own statement's where it is one statement (PostgreSQL),
    else a short transaction (``_step``)."""
    if store.claims_in_one_statement and connection.get_autocommit():
        yield
        return
    with _step():
        yield


def _queue() -> eventstore.EventStore:
    """The store of the database the dispatcher works on (its queue statements)."""
    return eventstore.store_on(connection)


# --- claiming --------------------------------------------------------------------------------


def sendable_destinations(
    *, now: datetime | None = None, only: int | None = None
) -> QuerySet[Destination]:
    """Destinations whose events may be sent now: enabled, not blocked, not paused."""
    now = now or clock.now()
    destinations = Destination.objects.filter(enabled=True, blocked_reason="").filter(
        Q(paused_until__isnull=True) | Q(paused_until__lte=now)
    )
    if only is not None:
        destinations = destinations.filter(pk=only)
    return destinations


def claim_due_events(
    destination_ids: Collection[int],
    *,
    limit: int | None = None,
    now: datetime | None = None,
) -> Claim:
    """Lease up to ``limit`` due pending events of one of these destinations to this worker.

    The destination whose oldest due event is the oldest goes first, with its due events
    oldest first: one claim fills one request. (Claiming the oldest events across all
    destinations instead cut a claim into as many small requests as there were destinations,
    when their events arrive interleaved: 20 events per request over 50 destinations, at a
    quarter of the throughput; docs/BENCHMARKS.md.) The claim writes only the events'
    ``QueuedEvent`` rows (token and the lease's end, unindexed), never the wide event
    row. On PostgreSQL the candidate entries are locked with ``SKIP LOCKED``, so concurrent
    workers take different events; everywhere, the claim is a conditional UPDATE (still due),
    so even without row locks (SQLite) no event is claimed twice. Only events whose UPDATE
    succeeded are returned (``eventstore``'s ``claim``).
    """
    now = now or clock.now()
    limit = limit or int(app_settings.BATCH_SIZE)
    claim = Claim(
        lease_token=uuid.uuid4(),
        lease_expires_at=now + timedelta(seconds=int(app_settings.LEASE_SECONDS)),
    )
    if not destination_ids:
        return claim
    store = _queue()
    with _claim_step(store):
        rows = store.claim(
            sorted(destination_ids), limit, now, claim.lease_token, claim.lease_expires_at
        )
    claim.events = [ClaimedEvent(*row) for row in rows]
    return claim


def release_expired_leases(*, now: datetime | None = None) -> int:
    """Give the events of workers that died mid-batch back to the queue; returns how many.

    Nothing is lost and nothing is counted as an attempt: the events are due again at once.
    If the dead worker's request did reach Meta, the resend carries the same ``event_id`` and
    Meta keeps one of them.
    """
    now = now or clock.now()
    # An entry whose lease ran out is due already (a claim looks at the lease's end): this only
    # says so on the event and counts it; a claim may take the event first, which is as good.
    returned = QueuedEvent.objects.filter(lease_token__isnull=False, lease_expires_at__lt=now)
    with _step():
        Event.objects.filter(pk__in=Subquery(returned.values("pk"))).update(
            status_reason=LEASE_RETURNED_REASON, updated_at=now
        )
        return returned.update(lease_token=None, lease_expires_at=None)


def expire_unsendable_events(*, now: datetime | None = None, only: int | None = None) -> int:
    """Expire waiting events of disabled, blocked or paused destinations that left the window.

    Events of destinations that may send are checked when they are claimed instead.
    """
    now = now or clock.now()
    destinations = Destination.objects.filter(
        Q(enabled=False) | ~Q(blocked_reason="") | Q(paused_until__gt=now)
    )
    if only is not None:
        destinations = destinations.filter(pk=only)
    expired = 0
    # One UPDATE per destination (those that may not send are few): each one's count goes to
    # its own hourly counter, in the same transaction.
    for pk, enabled, blocked_reason, pause_reason in destinations.values_list(
        "pk", "enabled", "blocked_reason", "pause_reason"
    ):
        if not enabled:
            reason = DISABLED_REASON
        elif blocked_reason:
            reason = LAST_ERROR_PREFIX + blocked_reason
        else:
            reason = LAST_ERROR_PREFIX + (pause_reason or "sending was paused by a rate limit.")
        with _database_turn():
            # Not those a worker holds (a canary): their outcome is the worker's to write.
            too_old = list(
                Event.objects.filter(
                    _outside_window(now),
                    status=EventStatus.PENDING,
                    destination_id=pk,
                    queued__lease_token__isnull=True,
                ).values_list("pk", flat=True)
            )
        if not too_old:
            continue
        with _step():
            left = _queue().leave_queue(too_old, None)
            count = Event.objects.filter(pk__in=left).update(
                status=EventStatus.EXPIRED, status_reason=reason, updated_at=now
            )
            counters.add(pk, failed=count, at=now)
        expired += count
    return expired


# --- one pass --------------------------------------------------------------------------------


def dispatch_pending(
    destination_id: int | None = None, *, max_batches: int | None = None
) -> DispatchReport:
    """Run one dispatch pass (all destinations, or one) until nothing is due; see the module."""
    return _Dispatcher(destination_id, max_batches=max_batches).run()


class _Dispatcher:
    """The state of one pass: the report, the lease in hand, destinations already loaded.

    Requests still go out one at a time, each only after the previous one's answer, but the
    database work around them is pipelined: while a request is on the wire (in the sender
    thread; the interpreter lock is released on the socket), the previous accepted request is
    recorded and, when this request is its claim's only one, the next batch is claimed. On
    PostgreSQL outside a transaction the recording is the recorder thread's, on a connection
    of its own, so the claim does not wait for it (nor for its durable commit); elsewhere the
    worker's thread records before it claims. What that changes, and why every guarantee still
    holds:

    - an accepted request's outcome is written while the next request is in flight, one
      outcome at a time and in order, and always before anything else reads or writes the
      destination's delivery state (an error answer, lone refusals, a canary's verdict) and
      before the end of the pass (``_flush_deferred`` waits for the recorder). It is submitted
      only once Meta's answer is in: an event is never marked delivered before Meta accepted
      it. A worker that dies in between leaves
      both requests' events leased; the lease runs out and they are sent again with the same
      ``event_id`` s, which Meta deduplicates, as for a worker that dies after one request;
    - a claim made ahead (``_prefetched``) is leased like any other, and never holds the
      destination on the wire (whose events could come back to the queue meanwhile, if the
      lease ran out, and be claimed again by the worker sending them); if a destination it
      holds is stopped meanwhile anyway, its events are given back unsent, as the events of a
      stopped destination are within a claim. An empty claim made ahead is forgotten.
    """

    def __init__(self, destination_id: int | None, *, max_batches: int | None) -> None:
        self.only = destination_id
        self.max_batches = max_batches
        self.report = DispatchReport()
        # pk → (updated_at, instance): a destination is decrypted once per pass unless saved.
        self._destinations: dict[int, tuple[datetime, Destination]] = {}
        self._stopped: set[int] = set()
        # Destinations Meta accepted a request of in this pass.
        self._accepted: set[int] = set()
        # True while a canary is sent: its attempts say so.
        self._sending_canary = False
        self._batches = 0
        # The thread a request waits for its answer in (one request at a time; the thread
        # starts with the first request and ends with the pass).
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capi-dispatch")
        # The writing of the last accepted request's outcome: running in the recorder thread
        # (a Future), or, without one, a function run while the next request is sent.
        self._deferred: Future[int] | Callable[[], int] | None = None
        # On PostgreSQL outside a transaction, outcomes are written by a thread of the pass on
        # a database connection of its own, at the same time as the next claim on this one.
        self._recorder = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="capi-record")
            if _may_record_on_another_connection()
            else None
        )
        # Whether it got work (and so a thread and a connection to close).
        self._recorder_started = False
        # The next claim, made while the current claim's only request was on the wire; with
        # the destinations stopped since it was made (their events go back unsent).
        self._prefetched: tuple[Claim, dict[int, Destination]] | None = None
        self._stopped_since_prefetch: set[int] = set()

    def run(self) -> DispatchReport:
        now = clock.now()
        with _database_turn():
            self.report.leases_released = release_expired_leases(now=now)
            # Before expiring anything as blocked: a block whose token was replaced is no block.
            release_outlived_blocks(only=self.only)
            self.report.expired += expire_unsendable_events(now=now, only=self.only)
        with self._sender, self._recording_thread():
            try:
                self._send_canaries()
                while True:
                    if self._prefetched is not None:
                        (claim, destinations), self._prefetched = self._prefetched, None
                        stopped = self._stopped_since_prefetch
                    else:
                        # Nothing was claimed ahead: the last outcome first (it survives a lost
                        # connection). With a recorder the outcome went on its own connection, so
                        # the claim is the first to find this one lost: it reconnects too.
                        self._flush_deferred()
                        claimed = _surviving_reconnect(self._claim_next, "claiming")
                        if claimed is None:
                            break
                        claim, destinations = claimed
                        stopped = set()
                    if not claim.events:
                        break
                    self.report.claimed += len(claim.events)
                    self._deliver(claim, destinations, stopped)
                self._flush_deferred()
            finally:
                # A claim made ahead and never delivered (an error on the way out) would wait
                # for its lease to run out: give it back now if the database still answers.
                self._give_back_prefetched()
        return self.report

    def _claim_ahead(self, on_the_wire: int) -> None:
        """Claim the next batch while a request of ``on_the_wire`` is in flight.

        Never of that destination: its events on the wire could come back to the queue
        meanwhile (a lease that ran out) and be claimed again by the worker sending them. An
        empty claim is forgotten (that destination may have more), and so is a lost database
        connection: the next claim is then made after the answer, on a new one.
        """
        self._stopped_since_prefetch = set()
        try:
            claimed = self._claim_next(excluding=on_the_wire)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise
            logger.warning("Lost the database connection while claiming ahead; claiming later")
            connection.close()
            return
        if claimed is not None and claimed[0].events:
            self._prefetched = claimed

    def _claim_next(
        self, *, excluding: int | None = None
    ) -> tuple[Claim, dict[int, Destination]] | None:
        """Claim the next batch of due events (of any sendable destination but ``excluding``),
        unless the pass's budget of claims is spent or no destination may send."""
        if self.max_batches is not None and self._batches >= self.max_batches:
            return None
        destinations = self._load_sendable()
        if excluding is not None:
            destinations.pop(excluding, None)
        if not destinations:
            return None
        claim = claim_due_events(list(destinations))
        if claim.events:
            self._batches += 1
        return claim, destinations

    def _give_back_prefetched(self) -> None:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is None or not prefetched[0].events:
            return
        claim = prefetched[0]
        try:
            with _step():
                _queue().requeue_owned([e.pk for e in claim.events], claim.lease_token, clock.now())
        except Exception:
            # Already failing (the database, most likely): the lease running out gives them back.
            logger.warning(
                "Could not give back %d claimed events", len(claim.events), exc_info=True
            )

    def _stop(self, destination_id: int) -> None:
        """No more requests of this destination in this pass (paused, blocked)."""
        self._stopped.add(destination_id)
        self._stopped_since_prefetch.add(destination_id)

    @contextmanager
    def _recording_thread(self) -> Iterator[None]:
        """The recorder thread, if any, for the pass: its connection is closed at the end."""
        recorder = self._recorder
        if recorder is None:
            yield
            return
        with recorder:
            try:
                yield
            finally:
                self._wait_for_recorder_after_failure()
                if self._recorder_started:
                    recorder.submit(_close_thread_connections)

    def _wait_for_recorder_after_failure(self) -> None:
        # The pass failed with an outcome still being written: Meta has those events, so it is
        # waited for, and a failure of it is logged (nobody else would see it; the events
        # stay leased and go out again after the lease, as for a worker that died).
        deferred, self._deferred = self._deferred, None
        if not isinstance(deferred, Future):
            return
        try:
            self.report.delivered += deferred.result()
        except Exception:
            logger.exception("Could not record an accepted request's outcome")

    def _flush_deferred(self) -> None:
        """Write the last accepted request's outcome now, or wait until the recorder has."""
        deferred, self._deferred = self._deferred, None
        if isinstance(deferred, Future):
            self.report.delivered += deferred.result()
        elif deferred is not None:
            self.report.delivered += deferred()

    def _start_deferred(self) -> None:
        """While a request is on the wire: write the last outcome unless the recorder is."""
        if not isinstance(self._deferred, Future):
            self._flush_deferred()

    def _defer(self, record: Callable[[], int]) -> None:
        """Have an accepted request's outcome written while the next request is sent."""
        # One outcome at a time, in order: the previous one has had a whole request's time.
        self._flush_deferred()
        if self._recorder is None:
            self._deferred = record
            return
        self._recorder_started = True
        self._deferred = self._recorder.submit(record)

    def _load_sendable(self) -> dict[int, Destination]:
        with _database_turn():
            versions = dict(sendable_destinations(only=self.only).values_list("pk", "updated_at"))
            stale = [
                pk
                for pk, updated_at in versions.items()
                if pk not in self._destinations or self._destinations[pk][0] != updated_at
            ]
            if stale:
                for destination in Destination.objects.filter(pk__in=stale):
                    self._destinations[destination.pk] = (destination.updated_at, destination)
        return {pk: self._destinations[pk][1] for pk in versions if pk in self._destinations}

    def _deliver(
        self, claim: Claim, destinations: dict[int, Destination], stopped: set[int]
    ) -> None:
        # ``stopped``: destinations stopped since the claim was made (a claim made ahead).
        self._stopped = set(stopped)
        now = clock.now()
        groups: dict[int, list[ClaimedEvent]] = defaultdict(list)
        too_old: dict[int, list[int]] = defaultdict(list)
        for event in claim.events:
            if now >= send_deadline(event.event_time, event.action_source):
                too_old[event.destination_id].append(event.pk)
            else:
                groups[event.destination_id].append(event)
        for destination_id, pks in too_old.items():
            with _step():
                expired = _expire_too_old(pks, claim.lease_token, now)
                counters.add(destination_id, failed=expired, at=now)
            self.report.expired += expired
        for destination_id, events in groups.items():
            destination = destinations[destination_id]
            isolation = _Isolation(accepted=destination_id in self._accepted)
            # Last in, first out: the halves of a refused request go before the rest, so single
            # events are reached after about log2(n) requests and Meta's answers to them tell an
            # event's own fault from a refusal of every request.
            waiting = list(_split_by_size(events))
            waiting.reverse()
            # The claim's only request: the next claim is made while it is on the wire.
            claim_ahead = len(groups) == 1 and len(waiting) == 1
            while waiting:
                batch = waiting.pop()
                if destination_id in self._stopped:
                    with _database_turn():
                        self.report.held += _hold(
                            [event.pk for event in batch],
                            claim.lease_token,
                            reason=held_reason(destination),
                        )
                    continue
                # Lone refusals awaiting a verdict stay under this worker's lease too.
                held = [refusal.batch for refusal in isolation.lone]
                self._extend_lease_if_needed(claim, [*waiting, *held], batch)
                halves = self._send(destination, batch, claim, isolation, claim_ahead=claim_ahead)
                claim_ahead = False
                waiting.extend(reversed(halves))
            self._settle_lone_refusals(destination, claim, isolation)

    def _extend_lease_if_needed(
        self, claim: Claim, waiting: list[list[ClaimedEvent]], batch: list[ClaimedEvent]
    ) -> None:
        # Bisecting against a slow Meta can outlast a lease; renew it while half of it is left
        # so no other worker takes these events over while this one still works on them.
        lease = timedelta(seconds=int(app_settings.LEASE_SECONDS))
        now = clock.now()
        if claim.lease_expires_at - now > lease / 2:
            return
        pks = [event.pk for event in batch] + [event.pk for item in waiting for event in item]
        claim.lease_expires_at = now + lease
        with _database_turn():
            _queue().extend_lease(pks, claim.lease_token, claim.lease_expires_at)

    def _send(
        self,
        destination: Destination,
        batch: list[ClaimedEvent],
        claim: Claim,
        isolation: _Isolation,
        *,
        claim_ahead: bool = False,
    ) -> list[list[ClaimedEvent]]:
        """Send one request; returns the halves to send next when Meta refused it as invalid.

        While it is on the wire: the previous accepted request's outcome is written and, with
        ``claim_ahead``, the next batch is claimed (see the class).
        """
        pks = [event.pk for event in batch]
        started_at = clock.now()
        started = time.perf_counter()
        test_event_code = destination.test_event_code
        self.report.requests += 1
        answer = self._request(destination, batch, test_event_code)
        self._start_deferred()
        if claim_ahead:
            self._claim_ahead(destination.pk)
        try:
            result = answer.result()
        except graph.GraphError as error:
            duration_ms = _elapsed_ms(started)
            self._forget_empty_prefetch()
            return self._on_error(
                destination, batch, claim, error, started_at, duration_ms, isolation
            )
        except Exception as error:
            # A bug or an unforeseen failure must not leave the batch leased until expiry, nor
            # crash the worker: treat it as Meta's "unknown" and retry on the schedule.
            logger.exception("Sending %d events to destination %s failed", len(pks), destination.pk)
            self._forget_empty_prefetch()
            unknown = graph.GraphError(
                f"{type(error).__name__} while sending: {error}",
                info=graph.ErrorInfo(graph.UNKNOWN, "Sending failed unexpectedly.", ""),
                secrets=(destination.access_token, destination.app_secret),
            )
            return self._on_error(
                destination, batch, claim, unknown, started_at, _elapsed_ms(started), isolation
            )
        mismatch = result.events_received != len(pks)
        reason = (
            f"Meta reported {result.events_received} events received for a request of {len(pks)}."
            if mismatch
            else ""
        )
        now = clock.now()
        canary = self._sending_canary

        def record_delivery() -> int:
            with _step():
                return _record_delivery(
                    destination,
                    pks,
                    claim,
                    result,
                    reason,
                    started_at,
                    test_event_code,
                    now,
                    canary=canary,
                )

        def record() -> int:
            # Meta has the events now: losing this write to a dropped database connection
            # would send them a second time when the lease ends, so it gets one more try on a
            # new one.
            delivered = _surviving_reconnect(record_delivery)
            # Outside the transaction and at most about once a second: workers delivering for
            # the same destination must not queue up behind each other's lock on its row.
            with _database_turn():
                Destination.objects.filter(pk=destination.pk).filter(
                    Q(last_delivered_at__isnull=True) | Q(last_delivered_at__lt=now - _A_SECOND)
                ).update(last_delivered_at=now)
            return delivered

        # Written while the next request is on the wire; a canary's verdict reads it at once.
        self._defer(record)
        if self._sending_canary:
            self._flush_deferred()
        if mismatch:
            logger.warning(
                "Destination %s: Meta received %d of %d events (fbtrace_id %s)",
                destination.pk,
                result.events_received,
                len(pks),
                result.fbtrace_id,
            )
        # Meta took a request of this destination: a lone event it refused was refused for
        # its own content, not because Meta refuses every request.
        isolation.accepted = True
        self._accepted.add(destination.pk)
        self._fail_lone_refusals(destination, claim, isolation)
        return []

    def _request(
        self, destination: Destination, batch: list[ClaimedEvent], test_event_code: str
    ) -> Future[graph.SendResult]:
        """Put the request on the wire in the sender thread; its answer is the future's."""
        return self._sender.submit(
            graph.send_events,
            destination,
            [event.payload_json for event in batch],
            test_event_code=test_event_code or None,
        )

    def _forget_empty_prefetch(self) -> None:
        # Meta refused the request that was on the wire while the next claim was made: what
        # comes of that (a token replaced meanwhile, events given back) may be due again, so
        # an empty claim made before it does not end the pass.
        if self._prefetched is not None and not self._prefetched[0].events:
            self._prefetched = None

    def _on_error(
        self,
        destination: Destination,
        batch: list[ClaimedEvent],
        claim: Claim,
        error: graph.GraphError,
        started_at: datetime,
        duration_ms: int,
        isolation: _Isolation,
    ) -> list[list[ClaimedEvent]]:
        # What follows reads and writes the destination's delivery state (its attempts among
        # them): the previous accepted request is recorded first.
        self._flush_deferred()
        pks = [event.pk for event in batch]
        record = {
            "started_at": started_at,
            "duration_ms": error.duration_ms if error.duration_ms is not None else duration_ms,
            "test_event_code": destination.test_event_code,
            "canary": self._sending_canary,
            **error.to_record(),
        }
        outcome = attempt_outcome(error)
        if outcome == AttemptOutcome.INVALID:
            return self._on_invalid(destination, batch, claim, error, record, isolation)
        if outcome == AttemptOutcome.RATE_LIMITED:
            self._pause(destination, batch, claim, error, record)
            return []
        if outcome == AttemptOutcome.BLOCKED:
            self._block(destination, batch, claim, error, record)
            return []
        with _step():
            retrying, expired = _retry_later(batch, claim.lease_token, describe_error(error))
            self.report.retrying += retrying
            self.report.expired += expired
            _record_attempt(destination, pks, AttemptOutcome.RETRY, **record)
        return []

    def _on_invalid(
        self,
        destination: Destination,
        batch: list[ClaimedEvent],
        claim: Claim,
        error: graph.GraphError,
        record: dict[str, Any],
        isolation: _Isolation,
    ) -> list[list[ClaimedEvent]]:
        """Split a refused request in halves to send next, or weigh a lone event's refusal.

        Meta's answer names no event (FACTS A3), so only the split finds the bad ones. A lone
        event refused after Meta accepted another request of the destination in this pass is
        at fault itself and fails. Before that, its refusal waits for more answers: refusals
        of unrelated single events that all come back alike, with nothing accepted, mean Meta
        refuses every request (a wrong test event code, Limited Data Use required), and the
        destination is held instead of failing its events one by one.
        """
        if len(batch) > 1:
            with _step():
                _record_attempt(
                    destination, [event.pk for event in batch], AttemptOutcome.BISECTED, **record
                )
            middle = len(batch) // 2
            return [batch[:middle], batch[middle:]]
        isolation.lone.append(_Refusal(batch, error, record))
        if isolation.accepted or len({_answer_of(r.error) for r in isolation.lone}) > 1:
            # Meta answers a refusal of every request alike: different answers are the events'.
            self._fail_lone_refusals(destination, claim, isolation)
        elif len(isolation.lone) >= REQUEST_LEVEL_EVIDENCE:
            self._stop_refused_destination(destination, claim, isolation)
        return []

    def _settle_lone_refusals(
        self, destination: Destination, claim: Claim, isolation: _Isolation
    ) -> None:
        """At the end of a destination's requests: decide on the lone refusals still open.

        Two unrelated events refused alike with nothing accepted hold the destination. One
        alone is the event's fault unless the destination's previous request, of another lone
        event, was refused the same way with nothing accepted since (low traffic sends one
        event per request).
        """
        if not isolation.lone:
            return
        self._flush_deferred()
        if destination.pk in self._stopped:
            # Blocked or paused meanwhile for another reason: they wait with the others.
            refusals, isolation.lone = isolation.lone, []
            with _step():
                for held in refusals:
                    pks = [event.pk for event in held.batch]
                    self.report.held += _hold(
                        pks, claim.lease_token, reason=held_reason(destination)
                    )
                    _record_attempt(destination, pks, AttemptOutcome.INVALID, **held.record)
            return
        earlier = (
            []
            if len(isolation.lone) >= 2
            else _refused_alike_before(destination, isolation.lone[0])
        )
        if len(isolation.lone) >= 2 or earlier:
            self._stop_refused_destination(destination, claim, isolation, requeue=earlier)
        else:
            self._fail_lone_refusals(destination, claim, isolation)

    def _fail_lone_refusals(
        self, destination: Destination, claim: Claim, isolation: _Isolation
    ) -> None:
        """Fail each lone event Meta refused, with Meta's message (its own fault)."""
        if isolation.lone:
            self._flush_deferred()
        refusals, isolation.lone = isolation.lone, []
        for refusal in refusals:
            pks = [event.pk for event in refusal.batch]
            # Read before the transaction: on SQLite a transaction that reads before it
            # writes can fail at once with "database is locked" instead of waiting its turn.
            with _database_turn():
                diagnostics = (
                    _owned_events(claim.lease_token, pks)
                    .values_list("diagnostics", flat=True)
                    .first()
                )
            with _step():
                if diagnostics is not None:
                    failed = _fail(refusal.batch[0], claim.lease_token, refusal.error, diagnostics)
                    counters.add(destination.pk, failed=failed)
                    self.report.failed += failed
                _record_attempt(destination, pks, AttemptOutcome.INVALID, **refusal.record)

    def _stop_refused_destination(
        self,
        destination: Destination,
        claim: Claim,
        isolation: _Isolation,
        *,
        requeue: Sequence[int] = (),
    ) -> None:
        """Meta refuses every request: hold the events, block and mark Unhealthy, as for a token.

        No event is failed and no retry is spent; one waiting event is sent alone later (the
        canary, :meth:`_send_canary`) to see whether the refusal still holds.
        """
        refusals, isolation.lone = isolation.lone, []
        refusal = refusals[-1].error
        now = clock.now()
        reason = REFUSED_WHATEVER_THE_EVENTS + describe_error(refusal)
        self._stop(destination.pk)
        with _step():
            blocked = delivery_state.write_block(destination, reason, BlockKind.EVERY_REQUEST, now)
            for held in refusals:
                pks = [event.pk for event in held.batch]
                self.report.held += _hold(pks, claim.lease_token, reason=f"Waiting: {reason}")
                _record_attempt(destination, pks, AttemptOutcome.INVALID, **held.record)
            # The earlier lone event failed for the same refusal of every request: not its
            # fault either, so it waits with the others.
            Event.objects.filter(pk__in=list(requeue), status=EventStatus.FAILED).update(
                status=EventStatus.PENDING,
                status_reason=f"Waiting: {reason}",
                updated_at=now,
            )
            _queue().enqueue(list(requeue), now)
        if blocked:
            explained = graph.GraphError(
                refusal.message,
                http_status=refusal.http_status,
                code=refusal.code,
                error_subcode=refusal.error_subcode,
                type=refusal.type,
                fbtrace_id=refusal.fbtrace_id,
                info=graph.ErrorInfo(
                    graph.INVALID,
                    f"{EVERY_REQUEST_REFUSED.reason} Meta said: "
                    f"{refusal.error_user_msg or refusal.message}",
                    REFUSED_WHATEVER_THE_EVENTS_FIX,
                    EVERY_REQUEST_REFUSED.key,
                ),
            )
            with _database_turn():
                _mark_unhealthy(destination, explained)
            logger.warning("Destination %s stopped: %s", destination.pk, refusal)
        else:
            self._destinations.pop(destination.pk, None)

    def _send_canaries(self) -> None:
        """For each blocked destination whose canary is due, send one of its waiting events.

        Never a synthetic event: the canary is the destination's newest waiting event, sent
        alone. Accepted, or refused for its own content, the block is lifted and the rest
        follow in this pass; refused like before, the destination stays blocked and the next
        canary waits twice as long (``delivery_state.canary_delay``).
        """
        now = clock.now()
        due = Destination.objects.filter(enabled=True, canary_due_at__lte=now).exclude(
            blocked_reason=""
        )
        if self.only is not None:
            due = due.filter(pk=self.only)
        with _database_turn():
            rows = list(due.values_list("pk", "canary_due_at", "blocked_at"))
        for pk, due_at, blocked_at in rows:
            # Compare-and-set: of two passes running at once, one sends the canary.
            provisional = now + canary_delay(blocked_at or now, now)
            with _database_turn():
                taken = delivery_state.take_canary(pk, due_at, provisional)
            if not taken:
                continue
            try:
                with _database_turn():
                    destination = Destination.objects.get(pk=pk)
            except (Destination.DoesNotExist, InvalidToken):
                continue
            if not self._send_canary(destination, now):
                # Nothing waits: the canary stays due, for the next event that arrives.
                with _database_turn():
                    delivery_state.give_back_canary(pk, provisional, due_at)

    def _send_canary(self, destination: Destination, now: datetime) -> bool:
        """Send the destination's newest waiting event alone; False when none waits."""
        claim = claim_canary(destination.pk, now=now)
        if not claim.events:
            return False
        self.report.claimed += len(claim.events)
        blocked_at = destination.blocked_at
        failed_before = self.report.failed
        isolation = _Isolation()
        self._sending_canary = True
        try:
            self._send(destination, claim.events, claim, isolation)
            self._settle_lone_refusals(destination, claim, isolation)
        finally:
            self._sending_canary = False
        stopped = destination.pk in self._stopped
        self._stopped.discard(destination.pk)
        with _database_turn():
            if stopped:
                return True
            if isolation.accepted or self.report.failed > failed_before:
                # Meta took the event, or refused it for its own content: the token and the
                # request are fine again.
                delivery_state.lift_after_canary(destination, blocked_at)
                return True
            # No verdict (an outage, a rate limit): try again after the backoff.
            delivery_state.postpone_canary(destination, blocked_at)
        return True

    def _pause(
        self,
        destination: Destination,
        batch: list[ClaimedEvent],
        claim: Claim,
        error: graph.GraphError,
        record: dict[str, Any],
    ) -> None:
        now = clock.now()
        wait = error.retry_after or RATE_LIMIT_BACKOFF
        paused_until = now + wait
        reason = f"Rate limited by Meta until {paused_until:%Y-%m-%d %H:%M:%S} UTC: " + (
            describe_error(error)
        )
        self._stop(destination.pk)
        with _step():
            delivery_state.pause(destination, paused_until, reason)
            self.report.held += _hold(
                [event.pk for event in batch], claim.lease_token, reason=reason
            )
            _record_attempt(
                destination, [event.pk for event in batch], AttemptOutcome.RATE_LIMITED, **record
            )
        logger.warning("Destination %s paused until %s: %s", destination.pk, paused_until, error)

    def _block(
        self,
        destination: Destination,
        batch: list[ClaimedEvent],
        claim: Claim,
        error: graph.GraphError,
        record: dict[str, Any],
    ) -> None:
        now = clock.now()
        reason = describe_error(error)
        self._stop(destination.pk)
        with _step():
            blocked = delivery_state.write_block(destination, reason, BlockKind.TOKEN, now)
            self.report.held += _hold(
                [event.pk for event in batch],
                claim.lease_token,
                reason=f"Waiting for a working token: {reason}",
            )
            _record_attempt(
                destination, [event.pk for event in batch], AttemptOutcome.BLOCKED, **record
            )
        if blocked:
            with _database_turn():
                _mark_unhealthy(destination, error)
            logger.warning("Destination %s blocked: %s", destination.pk, error)
        else:
            # The token changed meanwhile: load the new one before sending again.
            self._destinations.pop(destination.pk, None)


@dataclass
class _Refusal:
    """A lone event Meta refused as invalid, whose verdict waits for more of Meta's answers."""

    batch: list[ClaimedEvent]
    error: graph.GraphError
    record: dict[str, Any]


@dataclass
class _Isolation:
    """What Meta's answers for one destination in this pass say about refused lone events."""

    # Meta accepted a request of this destination in this pass.
    accepted: bool = False
    lone: list[_Refusal] = field(default_factory=list)


def _answer_of(error: graph.GraphError) -> tuple[int | None, int | None]:
    return (error.code, error.error_subcode)


def _refused_alike_before(destination: Destination, refusal: _Refusal) -> list[int]:
    """The other lone event of the destination's previous request, if Meta refused it alike.

    Empty unless that request (bisect steps aside) carried one event other than this one and
    was refused with the same code and subcode: then nothing was accepted in between.
    """
    previous = (
        DeliveryAttempt.objects.filter(destination_id=destination.pk)
        .exclude(outcome=AttemptOutcome.BISECTED)
        .order_by("-started_at", "-pk")
        .first()
    )
    if previous is None or previous.outcome != AttemptOutcome.INVALID:
        return []
    if previous.event_count != 1:
        return []
    if (previous.error_code, previous.error_subcode) != _answer_of(refusal.error):
        return []
    return list(previous.events.exclude(pk=refusal.batch[0].pk).values_list("pk", flat=True)[:1])


def claim_canary(destination_id: int, *, now: datetime | None = None) -> Claim:
    """Lease the newest waiting event of a blocked destination that Meta would still accept."""
    now = now or clock.now()
    claim = Claim(
        lease_token=uuid.uuid4(),
        lease_expires_at=now + timedelta(seconds=int(app_settings.LEASE_SECONDS)),
    )
    newest = (
        QueuedEvent.objects.filter(
            Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now),
            destination_id=destination_id,
            event__event_time__gt=now - MAX_EVENT_AGE + SEND_WINDOW_MARGIN,
        )
        .order_by("-pk")
        .values("pk")[:1]
    )
    with _step():
        claimed = QueuedEvent.objects.filter(
            Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now), pk__in=Subquery(newest)
        ).update(lease_token=claim.lease_token, lease_expires_at=claim.lease_expires_at)
    if not claimed:
        return claim
    rows = _owned_events(claim.lease_token).values_list(
        "pk",
        "destination_id",
        "event_time",
        "attempts",
        Cast("payload", output_field=TextField()),
        "action_source",
    )
    with _database_turn():
        claim.events = [ClaimedEvent(*row) for row in rows]
    return claim


# --- outcomes --------------------------------------------------------------------------------


def _record_delivery(
    destination: Destination,
    pks: list[int],
    claim: Claim,
    result: graph.SendResult,
    reason: str,
    started_at: datetime,
    test_event_code: str,
    now: datetime,
    *,
    canary: bool,
) -> int:
    """Record the accepted request and mark its events delivered by it."""
    attempt = _record_attempt(
        destination,
        pks,
        AttemptOutcome.DELIVERED,
        link=False,  # the events point at the attempt instead: no row per event
        started_at=started_at,
        duration_ms=result.duration_ms,
        test_event_code=test_event_code,
        http_status=result.http_status,
        events_received=result.events_received,
        fbtrace_id=result.fbtrace_id[:100],
        messages=list(result.messages),
        canary=canary,
    )
    delivered = _queue().deliver(
        pks, claim.lease_token, attempt_id=attempt.pk, reason=reason, now=now
    )
    counters.add(destination.pk, delivered=delivered, at=now)
    return delivered


def _may_record_on_another_connection() -> bool:
    """Whether outcomes may be written on a connection other than the claim's.

    PostgreSQL only (SQLite has one writer anyway), and only when this connection commits each
    step: inside a caller's transaction (tests) the claims are not committed, and another
    connection would not see them.
    """
    return (
        connection.vendor == "postgresql"
        and connection.get_autocommit()
        and not connection.in_atomic_block
    )


def _close_thread_connections() -> None:
    """The last task of the recorder thread: close the connection it opened."""
    connections.close_all()


def _surviving_reconnect(step: Callable[[], T], doing: str = "recording an outcome") -> T:
    """Run a short step; if the database connection was lost, run it once more on a new one.

    The step is a whole transaction (``_step``), so after a failure nothing of it was kept and
    running it again is safe (a claim whose commit was lost with the connection leaves its
    events leased until the lease runs out, then they are due again). Inside an outer
    transaction (tests) there is nothing to reconnect.
    """
    try:
        return step()
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        logger.warning("Lost the database connection while %s; retrying once", doing)
        connection.close()
        return step()


def _owned_events(lease_token: uuid.UUID, pks: Sequence[int] | None = None) -> QuerySet[Event]:
    """The events (among ``pks``) this worker still holds the lease on."""
    events = Event.objects.filter(queued__lease_token=lease_token)
    return events if pks is None else events.filter(pk__in=pks)


def _leave_queue(pks: Sequence[int], lease_token: uuid.UUID) -> QuerySet[Event]:
    """Take the events among ``pks`` this worker still holds out of the queue; the caller
    writes their outcome on the queryset returned, in the same transaction."""
    return Event.objects.filter(pk__in=_queue().leave_queue(pks, lease_token))


def _hold(pks: Sequence[int], lease_token: uuid.UUID, *, reason: str) -> int:
    """Back in the queue, due now with attempts unchanged, with the reason they wait."""
    now = clock.now()
    held = _queue().requeue_owned(pks, lease_token, now)
    return Event.objects.filter(pk__in=held).update(status_reason=reason, updated_at=now)


def _expire_too_old(pks: Sequence[int], lease_token: uuid.UUID, now: datetime) -> int:
    # The last error, when the event had one, says why it never made it.
    reason = Case(
        When(status_reason="", then=Value(TOO_OLD_REASON)),
        When(status_reason=LEASE_RETURNED_REASON, then=Value(TOO_OLD_REASON)),
        default=Concat(Value(LAST_ERROR_PREFIX), F("status_reason")),
        output_field=TextField(),
    )
    return _leave_queue(pks, lease_token).update(
        status=EventStatus.EXPIRED, status_reason=reason, updated_at=now
    )


def _retry_later(
    batch: Sequence[ClaimedEvent], lease_token: uuid.UUID, reason: str
) -> tuple[int, int]:
    """Schedule the next attempt of each event, or expire it if that would be too late.

    The events of a batch belong to one destination.
    """
    now = clock.now()
    by_failures: dict[int, list[ClaimedEvent]] = defaultdict(list)
    for event in batch:
        by_failures[event.attempts + 1].append(event)
    retrying = expired = 0
    for failures, events in by_failures.items():
        next_attempt_at = now + retry_delay(failures)
        too_late = [
            e.pk for e in events if next_attempt_at >= send_deadline(e.event_time, e.action_source)
        ]
        in_time = [
            e.pk for e in events if next_attempt_at < send_deadline(e.event_time, e.action_source)
        ]
        if in_time:
            scheduled = _queue().requeue_owned(in_time, lease_token, next_attempt_at)
            retrying += Event.objects.filter(pk__in=scheduled).update(
                status_reason=f"Attempt {failures} failed, next at "
                f"{next_attempt_at:%Y-%m-%d %H:%M:%S} UTC: {reason}",
                attempts=F("attempts") + 1,
                updated_at=now,
            )
        if too_late:
            expired += _leave_queue(too_late, lease_token).update(
                status=EventStatus.EXPIRED,
                status_reason=LAST_ERROR_PREFIX + reason,
                attempts=F("attempts") + 1,
                updated_at=now,
            )
    if batch:
        counters.add(batch[0].destination_id, failed=expired, at=now)
    return retrying, expired


def _fail(
    event: ClaimedEvent,
    lease_token: uuid.UUID,
    error: graph.GraphError,
    diagnostics: list[dict[str, Any]],
) -> int:
    """Meta refused this event on its own: ``failed``, with Meta's message as a diagnostic."""
    diagnostic = diagnostic_from_error(error)
    return _leave_queue([event.pk], lease_token).update(
        status=EventStatus.FAILED,
        status_reason=f"Meta rejected this event: {diagnostic.message}",
        diagnostics=[*(diagnostics or []), diagnostic.to_dict()],
        attempts=F("attempts") + 1,
        updated_at=clock.now(),
    )


def _record_attempt(
    destination: Destination,
    pks: Sequence[int],
    outcome: str,
    *,
    link: bool = True,
    **fields: Any,
) -> DeliveryAttempt:
    """One DeliveryAttempt for one request (never the token), linked to the events it carried
    unless ``link`` is off (a delivery: its events name it in ``delivered_by``)."""
    attempt = DeliveryAttempt.objects.create(
        destination_id=destination.pk, event_count=len(pks), outcome=outcome, **fields
    )
    if link:
        _link_events(attempt.pk, pks)
    return attempt


def _link_events(attempt_id: int, pks: Sequence[int]) -> None:
    # The hot path links a thousand events per request: one statement of plain values, without
    # building a model instance per row (which costs more than the insert itself).
    through = DeliveryAttempt.events.through
    quote = connection.ops.quote_name
    table = quote(through._meta.db_table)
    attempt_column = quote(through._meta.get_field("deliveryattempt").column)
    event_column = quote(through._meta.get_field("event").column)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({attempt_column}, {event_column}) "
                "SELECT %s, UNNEST(%s::bigint[])",
                [attempt_id, list(pks)],
            )
        else:
            cursor.executemany(
                f"INSERT INTO {table} ({attempt_column}, {event_column}) VALUES (%s, %s)",  # noqa: S608
                [(attempt_id, pk) for pk in pks],
            )


def _split_by_size(events: list[ClaimedEvent]) -> Iterator[list[ClaimedEvent]]:
    """Requests of at most BATCH_SIZE events and BATCH_MAX_BYTES (a lone huge event still goes)."""
    max_events = int(app_settings.BATCH_SIZE)
    max_bytes = int(app_settings.BATCH_MAX_BYTES) - _REQUEST_OVERHEAD_BYTES
    batch: list[ClaimedEvent] = []
    size = 0
    for event in events:
        text = event.payload_json
        event_size = (len(text) if text.isascii() else len(text.encode())) + 1
        if batch and (len(batch) >= max_events or size + event_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += event_size
    if batch:
        yield batch


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def describe_error(error: graph.GraphError) -> str:
    """One line for a status reason: what went wrong in plain words, and Meta's own words."""
    code = ""
    if error.code is not None:
        code = f"code {error.code}" + (f"/{error.error_subcode}" if error.error_subcode else "")
    status = f"HTTP {error.http_status}" if error.http_status is not None else ""
    where = ", ".join(part for part in (status, code) if part)
    text = error.explanation or error.message
    # Meta's message is often just "Invalid parameter"; its text for people says what is wrong.
    said = error.error_user_msg or error.message
    if said and said != text:
        text = f"{text} Meta said: {said}"
    return f"{text} ({where})" if where else text


def diagnostic_from_error(error: graph.GraphError) -> Diagnostic:
    """Meta's refusal of a lone event as a field diagnostic the event page can show."""
    return Diagnostic(
        code="meta_rejected",
        field=_field_of(error),
        severity=ERROR,
        message=error.error_user_msg or error.message or error.explanation,
        fix=error.fix or error.explanation,
        meta_code=error.code,
        meta_subcode=error.error_subcode,
    )


def _field_of(error: graph.GraphError) -> str:
    named = _FIELD_IN_MESSAGE.search(error.message or "") or _FIELD_IN_MESSAGE.search(
        error.error_user_msg or ""
    )
    key = _KEY_IN_USER_MESSAGE.search(error.error_user_msg or "")
    if key and key.group(1) in CUSTOMER_INFO_KEYS:
        return f"user_data.{key.group(1)}"
    by_subcode = _FIELD_OF_SUBCODE.get(error.error_subcode or 0)
    # The message may name the exact key; the subcode only says which part of the event.
    if named and (by_subcode is None or named.group(1).startswith(by_subcode)):
        return named.group(1)
    return by_subcode or ""


def _mark_unhealthy(destination: Destination, error: graph.GraphError) -> None:
    # health_status.py owns health transitions: the same compare-and-set and signal as a check.
    health_status.mark_unhealthy_from_delivery(destination, error)


# --- redelivery ------------------------------------------------------------------------------


def requeue(events: QuerySet[Event] | Iterable[int], *, reason: str) -> dict[int, int]:
    """Put failed/expired events still inside Meta's window back in the queue.

    ``events`` is a queryset or event ids; ``reason`` becomes their status reason. The retry
    budget starts over, and a dispatch of each destination concerned is queued after commit.
    Returns how many events went back, per destination id. Who asked, and the audit entry, are
    the caller's: :func:`capi_destinations.destinations.redeliver`.
    """
    now = clock.now()
    chosen = events if isinstance(events, QuerySet) else Event.objects.filter(pk__in=list(events))
    eligible = (
        Event.objects.filter(
            pk__in=chosen.values_list("pk", flat=True),
            status__in=(EventStatus.FAILED, EventStatus.EXPIRED),
        )
        .filter(may_be_inside_window(now))
        .exclude(_outside_window(now))
    )
    by_destination: dict[int, list[int]] = defaultdict(list)
    for pk, destination_id in eligible.values_list("pk", "destination_id"):
        by_destination[destination_id].append(pk)
    counts: dict[int, int] = {}
    with transaction.atomic():
        for destination_id, pks in by_destination.items():
            counts[destination_id] = Event.objects.filter(
                pk__in=pks, status__in=(EventStatus.FAILED, EventStatus.EXPIRED)
            ).update(
                status=EventStatus.PENDING,
                status_reason=reason,
                attempts=0,
                updated_at=now,
            )
            _queue().enqueue(pks, now)
            queueing.dispatch_after_commit(destination_id)
    return counts


__all__ = [
    "DISABLED_REASON",
    "LAST_ERROR_PREFIX",
    "LEASE_RETURNED_REASON",
    "OUTCOME_OF_CATEGORY",
    "RATE_LIMIT_BACKOFF",
    "REQUEST_LEVEL_EVIDENCE",
    "RETRY_DELAYS",
    "RETRY_DELAY_AFTER_SCHEDULE",
    "RETRY_JITTER",
    "SEND_WINDOW_MARGIN",
    "TOO_OLD_REASON",
    "Claim",
    "ClaimedEvent",
    "DispatchReport",
    "attempt_outcome",
    "claim_canary",
    "claim_due_events",
    "describe_error",
    "diagnostic_from_error",
    "dispatch_pending",
    "expire_unsendable_events",
    "is_inside_window",
    "may_be_inside_window",
    "release_expired_leases",
    "requeue",
    "retry_delay",
    "send_deadline",
    "sendable_destinations",
]
