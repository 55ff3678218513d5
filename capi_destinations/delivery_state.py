"""The delivery state of a destination: blocked, paused, its canary, and lifting them.

A destination may send unless it is disabled, paused by a rate limit (``paused_until``) or
blocked (``blocked_reason``, with its :class:`~capi_destinations.models.BlockKind`). Every change
of that state is written here, each as a compare-and-set (``UPDATE … WHERE`` the state as read)
so two processes never both act on one change:

- :func:`write_block` — Meta refused the token, or every request whatever its events; the block
  names the refused token by fingerprint and schedules the first canary;
- :func:`pause` — Meta asked to slow down;
- :func:`take_canary`, :func:`give_back_canary`, :func:`lift_after_canary`,
  :func:`postpone_canary` — the dispatcher's canary (one of the destination's own waiting events
  sent alone) claimed, given back, accepted, or refused again;
- :func:`request_canary` — a health check found that Meta accepts the token again;
- :func:`clear_block`, :func:`release_outlived_block`, :func:`resume_destination` — a working or
  new token lifts the block.

Lifting a block queues a dispatch of the held events after commit
(:func:`capi_destinations.queueing.dispatch_after_commit`). The delivery engine
(:mod:`capi_destinations.dispatch`) and the health checks (:mod:`capi_destinations.health`) both
use this module; it uses neither.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from capi_destinations import clock, problems, queueing, tokens
from capi_destinations.models import BlockKind, Destination

# The dispatcher's logger: a block lifted is news of the delivery engine.
logger = logging.getLogger("capi_destinations.dispatch")

#: How a block set because Meta refuses every request, whatever its events, begins (the
#: dispatcher sets it; the reason and fix say it is no single event's fault).
REFUSED_WHATEVER_THE_EVENTS = (
    "Meta refuses every request for this destination, whatever the events: "
)
REFUSED_WHATEVER_THE_EVENTS_FIX = problems.EVERY_REQUEST_REFUSED.fix

# A blocked destination's first canary (one of its own waiting events, sent alone) goes this
# long after the block; each next one waits as long as the block has lasted, up to the maximum.
CANARY_FIRST_DELAY = timedelta(minutes=1)
CANARY_MAX_DELAY = timedelta(hours=1)

# The fields that say "not blocked".
_UNBLOCKED = {
    "blocked_reason": "",
    "blocked_at": None,
    "block_kind": "",
    "blocked_token_fingerprint": "",
    "canary_due_at": None,
}


def canary_delay(blocked_at: datetime, now: datetime) -> timedelta:
    """How long a blocked destination waits before its next canary: as long as it has been
    blocked, at least :data:`CANARY_FIRST_DELAY` and at most :data:`CANARY_MAX_DELAY`."""
    return min(max(now - blocked_at, CANARY_FIRST_DELAY), CANARY_MAX_DELAY)


def refuses_every_request(destination: Destination) -> bool:
    """Whether the destination is blocked because Meta refuses every request, not the token."""
    return bool(destination.blocked_reason) and destination.block_kind == BlockKind.EVERY_REQUEST


def held_reason(destination: Destination) -> str:
    """The status reason of an event held because its destination may not send now."""
    if refuses_every_request(destination):
        return f"Waiting: {destination.blocked_reason}"
    if destination.blocked_reason:
        return f"Waiting for a working token: {destination.blocked_reason}"
    return destination.pause_reason or "Waiting: sending to this destination is paused."


def _forget_block(destination: Destination) -> None:
    for name, value in _UNBLOCKED.items():
        if name != "canary_due_at":
            setattr(destination, name, value)


# --- set by the delivery engine ----------------------------------------------------------------


def write_block(destination: Destination, reason: str, kind: str, now: datetime) -> bool:
    """Block ``destination`` for the token its refused request carried; returns whether it did.

    Only if that token is still the one saved (a token saved while the request was in flight
    must not be blocked by the old one's refusal). The block names the token by fingerprint,
    so that one written with ``QuerySet.update()`` meanwhile lifts it at the next pass.
    """
    fingerprint = tokens.token_fingerprint(destination.access_token)
    # A block that holds on (a canary refused again) keeps its start, so the wait before the
    # next canary grows.
    blocked_at = (
        destination.blocked_at
        if destination.blocked_reason and destination.blocked_at is not None
        else now
    )
    canary_due_at = now + canary_delay(blocked_at, now)
    blocked = Destination.objects.filter(
        pk=destination.pk, token_fingerprint=destination.token_fingerprint
    ).update(
        blocked_reason=reason,
        blocked_at=blocked_at,
        block_kind=kind,
        blocked_token_fingerprint=fingerprint,
        canary_due_at=canary_due_at,
    )
    if blocked:
        destination.blocked_reason = reason
        destination.blocked_at = blocked_at
        destination.block_kind = kind
        destination.blocked_token_fingerprint = fingerprint
        destination.canary_due_at = canary_due_at
    return bool(blocked)


def pause(destination: Destination, until: datetime, reason: str) -> None:
    """Pause sending to ``destination`` until ``until`` (Meta's rate limit)."""
    destination.paused_until = until
    destination.pause_reason = reason
    Destination.objects.filter(pk=destination.pk).update(paused_until=until, pause_reason=reason)


def take_canary(pk: int, due_at: datetime | None, provisional: datetime) -> bool:
    """Claim a due canary: move its time from ``due_at`` to ``provisional``; whether it did.

    Compare-and-set: of two passes running at once, one sends the canary.
    """
    return bool(
        Destination.objects.filter(pk=pk, canary_due_at=due_at).update(canary_due_at=provisional)
    )


def give_back_canary(pk: int, provisional: datetime, due_at: datetime | None) -> None:
    """Nothing waited to be sent: the canary stays due, for the next event that arrives."""
    Destination.objects.filter(pk=pk, canary_due_at=provisional).update(canary_due_at=due_at)


def lift_after_canary(destination: Destination, blocked_at: datetime | None) -> bool:
    """Lift the block Meta's answer to a canary disproved; returns whether it was lifted.

    Compare-and-set on the block's start: a block earned again meanwhile stays.
    """
    lifted = (
        Destination.objects.filter(pk=destination.pk, blocked_at=blocked_at)
        .exclude(blocked_reason="")
        .update(**_UNBLOCKED, updated_at=clock.now(), sending_resumed_at=clock.now())
    )
    if lifted:
        logger.info("Destination %s unblocked: Meta accepted a canary", destination.pk)
    return bool(lifted)


def postpone_canary(destination: Destination, blocked_at: datetime | None) -> None:
    """No verdict on the canary (an outage, a rate limit): the next one waits the backoff."""
    later = clock.now()
    Destination.objects.filter(pk=destination.pk, blocked_at=blocked_at).update(
        canary_due_at=later + canary_delay(blocked_at or later, later)
    )


# --- lifted by a working token -----------------------------------------------------------------


def clear_block(destination: Destination) -> bool:
    """Let a blocked destination send again (its token works now); returns whether it was.

    The held events are dispatched right away (after the current transaction commits).
    """
    cleared = (
        Destination.objects.filter(pk=destination.pk)
        .exclude(blocked_reason="")
        .update(**_UNBLOCKED, sending_resumed_at=clock.now())
    )
    _forget_block(destination)
    if cleared:
        queueing.dispatch_after_commit(destination.pk)
    return bool(cleared)


def request_canary(destination: Destination) -> bool:
    """Make a blocked destination's canary due now (its token may work again); returns whether.

    Called when a health check finds Meta accepts the token again: the next dispatch pass
    sends one of the destination's own waiting events alone, and lifts the block if Meta
    accepts it. Nothing synthetic is sent.
    """
    now = clock.now()
    requested = (
        Destination.objects.filter(pk=destination.pk)
        .exclude(blocked_reason="")
        .update(canary_due_at=now)
    )
    if requested:
        destination.canary_due_at = now
        queueing.dispatch_after_commit(destination.pk)
    return bool(requested)


# Error reports print local variables, of the frames called from here too: never the token.
@sensitive_variables()
def release_outlived_block(destination: Destination, *, dispatch_waiting: bool = True) -> bool:
    """Lift ``destination``'s block if the token that earned it is no longer stored.

    For a token written with ``QuerySet.update()`` (``save()`` lifts the block itself): the
    stored hint and fingerprint are brought up to date too. A compare-and-set on the block
    as read, so a block earned meanwhile by the new token stays. With ``dispatch_waiting`` the
    held events are dispatched after commit (a dispatch pass sends them itself). Returns
    whether it lifted a block.
    """
    if not destination.block_outlived_token:
        return False
    now = clock.now()
    token = destination.access_token
    released = Destination.objects.filter(
        pk=destination.pk,
        blocked_at=destination.blocked_at,
        blocked_token_fingerprint=destination.blocked_token_fingerprint,
    ).update(
        **_UNBLOCKED,
        token_hint=tokens.token_hint(token),
        token_fingerprint=tokens.token_fingerprint(token),
        # A new version, so a pass that loaded the destination before reads it again.
        updated_at=now,
        sending_resumed_at=now,
    )
    _forget_block(destination)
    if released:
        logger.info("Destination %s unblocked: its token was replaced", destination.pk)
        if dispatch_waiting:
            queueing.dispatch_after_commit(destination.pk)
    return bool(released)


def release_outlived_blocks(*, only: int | None = None) -> int:
    """Lift the blocks of every blocked destination (or ``only`` one) whose token was replaced.

    Blocked destinations are few; their tokens are read here only to compare fingerprints. A
    token that cannot be decrypted keeps its block (the health check reports it).
    """
    blocked = Destination.objects.exclude(blocked_reason="").exclude(blocked_token_fingerprint="")
    if only is not None:
        blocked = blocked.filter(pk=only)
    released = 0
    for pk in blocked.values_list("pk", flat=True):
        try:
            destination = Destination.objects.get(pk=pk)
        except (Destination.DoesNotExist, InvalidToken):
            continue
        released += release_outlived_block(destination, dispatch_waiting=False)
    return released


def resume_destination(destination: Destination) -> None:
    """Clear a destination's block and pause and dispatch its waiting events (token replaced).

    Events held by the block or the pause count as due from now (``sending_resumed_at``), so
    the health check that runs at once does not take them for a stalled queue.
    """
    Destination.objects.filter(pk=destination.pk).filter(
        Q(blocked_reason__gt="") | Q(paused_until__isnull=False)
    ).update(sending_resumed_at=clock.now())
    Destination.objects.filter(pk=destination.pk).update(
        **_UNBLOCKED, paused_until=None, pause_reason=""
    )
    _forget_block(destination)
    destination.paused_until = None
    destination.pause_reason = ""
    queueing.dispatch_after_commit(destination.pk)
