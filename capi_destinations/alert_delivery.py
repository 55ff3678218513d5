"""Alerts on their way to people: one ``AlertDelivery`` per channel, sent with retries.

:func:`raise_alert` files an alert for every enabled channel of the destination's tenant that
subscribes to its kind, and queues a delivery once the transaction commits (the per-minute
schedule picks up what the queue loses). :func:`deliver_due` claims due deliveries one by one
under a lease (a compare-and-set on the status, so two workers never send one alert), sends
outside any transaction (:mod:`capi_destinations.alert_transport` for Slack and webhooks,
Django's mail connection for email, one message per address) and records every attempt. A
delivery that fails is retried with exponential backoff (``ALERT_RETRY_BASE_SECONDS`` doubling up to
``ALERT_RETRY_MAX_SECONDS``) until ``ALERT_RETRY_FOR_SECONDS`` after the alert: then it is failed
and its channel marked failing. Alerts wait while a channel is down; they are never dropped
before that bound.

A health alert settles first (:func:`alert_health_change`): it is due only once the change has
lasted ``ALERT_HEALTH_SETTLE_SECONDS``, and a change undone sooner takes the settling alert back
instead of filing its own, so a status that flaps sends nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.mail import send_mass_mail
from django.db import connection, transaction
from django.db.models import Q
from django.urls import NoReverseMatch, reverse

from capi_destinations import alert_transport, clock, queueing
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDeliveryStatus,
    ChannelKind,
    Destination,
    Health,
    HealthCheck,
    NotificationChannel,
    Tenant,
)
from capi_destinations.signals import ALERT_KINDS

logger = logging.getLogger("capi_destinations.alerts")

HEALTH_KIND = "health"
TEST_KIND = "test"
SLACK_TEXT_LIMIT = 3000
# How long a worker owns a delivery it claimed; past it another worker may send it.
LEASE = timedelta(minutes=5)

# SQLite runs one writer at a time; threads sharing an in-memory database fail with "table is
# locked" instead of queueing, so on SQLite this process's threads take turns for their short
# steps (as dispatch.py's and access.py's do). Never held across a send.
_SQLITE_TURN = threading.RLock()


def _database_turn() -> AbstractContextManager[Any]:
    return _SQLITE_TURN if connection.vendor == "sqlite" else nullcontext()


# --- what an alert says -----------------------------------------------------------------------


def destination_page_url(destination: Destination) -> str:
    """The destination's page: ``SITE_URL`` + its path (the path alone without ``SITE_URL``)."""
    try:
        path = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    except NoReverseMatch:
        return ""
    return str(app_settings.SITE_URL).rstrip("/") + path


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_payload(
    tenant: Tenant,
    destination: Destination | None,
    *,
    kind: str,
    raised: bool,
    reason: str,
    fix: str,
    old: str | None = None,
    new: str | None = None,
    alert_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The alert as JSON: the webhook body, and what Slack and email messages are made from."""
    return {
        "alert_id": str(alert_id or uuid.uuid4()),
        "kind": kind,
        "raised": raised,
        "tenant": {"name": tenant.name, "slug": tenant.slug},
        "destination": None
        if destination is None
        else {
            "name": destination.name,
            "code": str(destination.code),
            "pixel_id": destination.pixel_id,
        },
        "old_status": old,
        "new_status": new,
        "reason": reason,
        "fix": fix,
        "url": "" if destination is None else destination_page_url(destination),
        "time": _iso(clock.now()),
    }


def _title(payload: dict[str, Any]) -> str:
    destination = (payload.get("destination") or {}).get("name", "")
    kind = payload["kind"]
    if kind == TEST_KIND:
        return f"Test alert for {payload['tenant']['name']}"
    if kind == HEALTH_KIND and payload.get("new_status"):
        return f"{destination} is now {Health(payload['new_status']).label}"
    label = ALERT_KINDS.get(kind, kind)
    return f"{destination}: {label}" + ("" if payload["raised"] else " — resolved")


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: a text fallback and blocks (status, reason, fix, link)."""
    title = _title(payload)
    fields = [f"*Client:* {payload['tenant']['name']}"]
    if payload.get("new_status"):
        fields.append(f"*Status:* {payload.get('old_status')} → {payload['new_status']}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    for label, key in (("Why", "reason"), ("Fix", "fix")):
        if payload.get(key):
            # Slack refuses a section text longer than 3000 characters.
            text = f"*{label}:* {payload[key]}"[:SLACK_TEXT_LIMIT]
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if str(payload.get("url", "")).startswith(("https://", "http://")):
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the destination"},
                        "url": payload["url"],
                    }
                ],
            }
        )
    text = f"{title}. {payload.get('reason', '')}".strip()[:SLACK_TEXT_LIMIT]
    return {"text": text, "blocks": blocks}


def email_message(payload: dict[str, Any]) -> tuple[str, str]:
    """The subject and plain-text body of an alert's email."""
    subject = f"[{payload['tenant']['name']}] {_title(payload)}"
    lines = [_title(payload) + f" ({payload['time']}).", ""]
    destination = payload.get("destination")
    if destination:
        lines.append(f"Destination: {destination['name']} (pixel {destination['pixel_id']})")
    if payload.get("new_status"):
        lines.append(f"Status: {payload.get('old_status')} → {payload['new_status']}")
    if payload.get("reason"):
        lines.append(f"Why: {payload['reason']}")
    if payload.get("fix"):
        lines.append(f"Fix: {payload['fix']}")
    if payload.get("url"):
        lines += ["", payload["url"]]
    return subject, "\n".join(lines) + "\n"


# --- filing alerts ----------------------------------------------------------------------------


def channels_for(tenant_id: int, kind: str) -> list[NotificationChannel]:
    """The tenant's enabled channels that subscribe to ``kind``."""
    channels = NotificationChannel.objects.filter(tenant_id=tenant_id, enabled=True)
    return [channel for channel in channels if kind in (channel.alert_kinds or [])]


def raise_alert(
    destination: Destination,
    *,
    kind: str,
    raised: bool,
    reason: str,
    fix: str = "",
    old: str | None = None,
    new: str | None = None,
    channels: list[NotificationChannel] | None = None,
    settle: timedelta = timedelta(0),
) -> list[AlertDelivery]:
    """File one alert for each subscribed channel and queue their delivery after commit.

    ``channels``: these instead of every subscribed one; ``settle``: the alert is due only
    that long from now (a health alert that may yet be undone).
    """
    if channels is None:
        channels = channels_for(destination.tenant_id, kind)
    if not channels:
        return []
    payload = alert_payload(
        destination.tenant,
        destination,
        kind=kind,
        raised=raised,
        reason=reason,
        fix=fix,
        old=old,
        new=new,
    )
    now = clock.now()
    with transaction.atomic():
        deliveries = AlertDelivery.objects.bulk_create(
            AlertDelivery(
                channel=channel,
                alert_id=uuid.UUID(payload["alert_id"]),
                kind=kind,
                payload=payload,
                next_attempt_at=now + settle,
                created_at=now,
            )
            for channel in channels
        )
        queueing.enqueue_alert_delivery()
    return deliveries


def _failed_checks(check: HealthCheck) -> Iterable[dict[str, Any]]:
    return (
        item
        for item in check.checks or []
        if not item.get("ok") and item.get("severity", "error") == "error"
    )


def alert_health_change(
    destination: Destination, *, old: str, new: str, check: HealthCheck
) -> list[AlertDelivery]:
    """One alert per change into or out of Unhealthy (``health_status`` sends each once),
    sent once the change has lasted ``ALERT_HEALTH_SETTLE_SECONDS``.

    A change that undoes one whose alert is still settling takes that alert back on each
    channel and files none there: a status that flips and flips back sends nothing, while
    every change that lasts is sent exactly once.
    """
    if Health.UNHEALTHY not in (old, new):
        return []
    undone = _take_back_settling_health_alerts(destination)
    channels = [
        channel
        for channel in channels_for(destination.tenant_id, HEALTH_KIND)
        if channel.pk not in undone
    ]
    failed = list(_failed_checks(check))
    if new == Health.UNHEALTHY:
        reason = " ".join(item["message"] for item in failed) or "A health check failed."
        fix = " ".join(item["fix"] for item in failed if item.get("fix"))
    elif new == Health.HEALTHY:
        reason, fix = "Every health check passes again.", ""
    else:
        # Out of Unhealthy but not proven healthy (a token Meta lets send but not read, before
        # its first delivery): say so, with what the card says, rather than "passes again".
        kept = [item for item in destination.health_reasons or [] if isinstance(item, dict)]
        reason = " ".join(
            ["No health check fails any more, but it is not known yet to be healthy."]
            + [str(item.get("message", "")) for item in kept if item.get("message")]
        )
        fix = " ".join(str(item["fix"]) for item in kept if item.get("fix"))
    return raise_alert(
        destination,
        kind=HEALTH_KIND,
        raised=new == Health.UNHEALTHY,
        reason=reason,
        fix=fix,
        old=old,
        new=new,
        channels=channels,
        settle=timedelta(seconds=float(app_settings.ALERT_HEALTH_SETTLE_SECONDS)),
    )


def _take_back_settling_health_alerts(destination: Destination) -> set[int]:
    """Delete the destination's health alerts not due yet; returns their channels' ids.

    Each is first taken like a worker's claim (a compare-and-set on its status), so one a
    worker claimed meanwhile is left to be sent, and its channel hears of the undoing too.
    """
    now = clock.now()
    settling = {
        "kind": HEALTH_KIND,
        "is_test": False,
        "status": AlertDeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at__gt": now,
    }
    taken: set[int] = set()
    with _database_turn():
        rows = list(
            AlertDelivery.objects.filter(
                **settling, payload__destination__code=str(destination.code)
            ).values_list("pk", "channel_id")
        )
        for pk, channel_id in rows:
            lease = uuid.uuid4()
            claimed = AlertDelivery.objects.filter(pk=pk, **settling).update(
                status=AlertDeliveryStatus.SENDING, lease_token=lease, lease_expires_at=now + LEASE
            )
            if claimed:
                AlertDelivery.objects.filter(pk=pk, lease_token=lease).delete()
                taken.add(channel_id)
    return taken


# --- sending ----------------------------------------------------------------------------------


def _send_email(channel: NotificationChannel, payload: dict[str, Any]) -> alert_transport.Answer:
    subject, text = email_message(payload)
    started = time.monotonic()
    # One message per address, over one connection: a channel may list an agency's people and
    # its client's, who must not see each other's addresses. (send_mass_mail, not
    # get_connection(), which Django 6.1 deprecates.)
    try:
        send_mass_mail([(subject, text, None, [address]) for address in channel.email_addresses])
    except Exception as error:  # any mail backend, any failure
        raise alert_transport.TransportError(
            f"The mail server refused it ({type(error).__name__})."
        ) from None
    took = int((time.monotonic() - started) * 1000)
    return alert_transport.Answer(None, "Accepted by the mail server.", took, ok=True)


def _send(channel: NotificationChannel, payload: dict[str, Any]) -> alert_transport.Answer:
    """Send ``payload`` once to ``channel``; raises ``TransportError`` when nothing answered."""
    if channel.kind == ChannelKind.EMAIL:
        return _send_email(channel, payload)
    if channel.kind == ChannelKind.SLACK:
        return alert_transport.post(channel.target, json.dumps(slack_message(payload)).encode())
    body = webhook_body(payload)
    headers = alert_transport.signed_headers(
        str(channel.signing_secret), body, timestamp=int(clock.now().timestamp())
    )
    return alert_transport.post(channel.target, body, headers)


def attempt_send(delivery: AlertDelivery) -> AlertAttempt:
    """Send a delivery once; the attempt (not saved yet) says how it went."""
    started = clock.now()
    try:
        answer = _send(delivery.channel, delivery.payload)
    except alert_transport.TransportError as error:
        ok, status_code, text, error_text, took = False, None, "", error.message, error.duration_ms
    else:
        ok, status_code, text, took = answer.ok, answer.status_code, answer.body, answer.duration_ms
        error_text = "" if ok else f"The receiver answered {status_code}."
    return AlertAttempt(
        delivery=delivery,
        channel=delivery.channel,
        started_at=started,
        duration_ms=max(0, took),
        ok=ok,
        status_code=status_code,
        answer=text,
        error=error_text,
    )


def retry_delay(attempts: int) -> timedelta:
    """The wait before the next try after ``attempts`` failed ones (exponential, capped)."""
    base = float(app_settings.ALERT_RETRY_BASE_SECONDS)
    ceiling = float(app_settings.ALERT_RETRY_MAX_SECONDS)
    return timedelta(seconds=min(ceiling, base * 2 ** max(0, attempts - 1)))


def _record(delivery: AlertDelivery, attempt: AlertAttempt, lease: uuid.UUID) -> bool:
    """Save the attempt, and the outcome under the lease; returns whether this worker held it.

    The attempt is kept either way (it happened); a worker whose lease was taken back writes
    no outcome over the new holder's.
    """
    now = clock.now()
    attempts = delivery.attempts + 1
    updates: dict[str, Any] = {"attempts": attempts, "lease_token": None, "lease_expires_at": None}
    deadline = delivery.created_at + timedelta(seconds=float(app_settings.ALERT_RETRY_FOR_SECONDS))
    gave_up = False
    if attempt.ok:
        updates |= {"status": AlertDeliveryStatus.SENT, "sent_at": now, "next_attempt_at": None}
    elif delivery.is_test or now >= deadline:
        updates |= {"status": AlertDeliveryStatus.FAILED, "next_attempt_at": None}
        gave_up = not delivery.is_test
    else:
        next_at = min(now + retry_delay(attempts), deadline)
        updates |= {"status": AlertDeliveryStatus.PENDING, "next_attempt_at": next_at}
    with _database_turn(), transaction.atomic():
        attempt.save()
        written = AlertDelivery.objects.filter(pk=delivery.pk, lease_token=lease).update(**updates)
        if not written:
            return False
        channels = NotificationChannel.objects.filter(pk=delivery.channel_id)
        if attempt.ok:
            channels.update(failing_since=None, last_error="")
        elif gave_up:
            channels.filter(failing_since__isnull=True).update(failing_since=now)
            channels.update(last_error=attempt.error)
    for name, value in updates.items():
        setattr(delivery, name, value)
    return True


def _claim(delivery_id: int, now: datetime) -> tuple[AlertDelivery, uuid.UUID] | None:
    lease = uuid.uuid4()
    with _database_turn():
        claimed = (
            AlertDelivery.objects.filter(pk=delivery_id)
            .filter(_due(now))
            .update(
                status=AlertDeliveryStatus.SENDING, lease_token=lease, lease_expires_at=now + LEASE
            )
        )
        if not claimed:
            return None
        delivery = AlertDelivery.objects.select_related("channel").get(pk=delivery_id)
    return delivery, lease


def _due(now: datetime) -> Q:
    return Q(status=AlertDeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=AlertDeliveryStatus.SENDING, lease_expires_at__lt=now
    )


def deliver_due(*, limit: int = 200) -> int:
    """Send every due delivery once (each claimed under a lease); returns how many were tried.

    A channel switched off keeps its alerts waiting, as a channel that is down does, until
    ``ALERT_RETRY_FOR_SECONDS`` after each alert: then it is failed unsent (switched on again
    days later, a channel gets no stale alerts). Waiting alerts of switched-off channels are
    not claimed, so however many there are, they never hold back other channels' alerts.
    """
    now = clock.now()
    deadline = now - timedelta(seconds=float(app_settings.ALERT_RETRY_FOR_SECONDS))
    with _database_turn():
        AlertDelivery.objects.filter(
            status=AlertDeliveryStatus.PENDING,
            is_test=False,
            channel__enabled=False,
            created_at__lte=deadline,
        ).update(status=AlertDeliveryStatus.FAILED, next_attempt_at=None)
        due_ids = list(
            AlertDelivery.objects.filter(_due(now), is_test=False, channel__enabled=True)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
    tried = 0
    for delivery_id in due_ids:
        claim = _claim(delivery_id, now)
        if claim is None:
            continue  # another worker took it
        delivery, lease = claim
        if not delivery.channel.enabled:
            # Switched off since the list was read: back to waiting.
            with _database_turn():
                AlertDelivery.objects.filter(pk=delivery.pk, lease_token=lease).update(
                    status=AlertDeliveryStatus.PENDING, lease_token=None, lease_expires_at=None
                )
            continue
        attempt = attempt_send(delivery)
        _record(delivery, attempt, lease)
        tried += 1
    return tried


def send_test_alert(channel: NotificationChannel) -> AlertAttempt:
    """Send a test alert to ``channel`` now, once, and return the attempt (the page shows it)."""
    payload = alert_payload(
        channel.tenant,
        None,
        kind=TEST_KIND,
        raised=True,
        reason=f"A test of the channel “{channel.name}”: alerts will arrive like this.",
        fix="",
    )
    lease = uuid.uuid4()
    delivery = AlertDelivery.objects.create(
        channel=channel,
        alert_id=uuid.UUID(payload["alert_id"]),
        kind=TEST_KIND,
        payload=payload,
        is_test=True,
        status=AlertDeliveryStatus.SENDING,
        lease_token=lease,
        lease_expires_at=clock.now() + LEASE,
    )
    attempt = attempt_send(delivery)
    _record(delivery, attempt, lease)
    return attempt
