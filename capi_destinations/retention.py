"""Retention: delete what is older than ``RETENTION_DAYS``, keeping what someone may still need.

One purge (:func:`purge_old_records`) serves the daily task and ``manage.py capi_purge``:
delivered, expired, rejected and suppressed events, delivery attempts, hourly counters and
health checks older than the retention period go; failed events stay as long as Meta could still
take them (someone may fix and redeliver them), and go once its longest window has closed on
them; each destination keeps its latest health check and latest status change however old
(:func:`purge_old_checks`). Alerts sent or failed go with their attempts; waiting ones stay.
Finished CSV import runs go too, except each destination's latest (its mapping is remembered),
and invitations (each holds an email address): used or revoked ones once closed that long ago,
pending ones once expired that long ago.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber

from capi_destinations import clock, counters, diagnostics
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AlertDelivery,
    AlertDeliveryStatus,
    ClickIdSighting,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    HealthCheck,
    ImportRun,
    ImportStatus,
    Invitation,
    InvitationState,
)

logger = logging.getLogger("capi_destinations.tasks")

# Rows deleted per statement by the purge, so memory and lock time stay bounded.
PURGE_CHUNK = 5000


def purge_old_records() -> dict[str, int]:
    """Delete events that are done with and attempts older than ``RETENTION_DAYS``.

    Failed events stay while Meta could still take them (someone may fix and redeliver them).
    Pending events are never purged: they expire by Meta's window first. Old health checks go
    too, keeping each destination's last status change (:func:`purge_old_checks`). Returns
    how many rows of each kind were deleted.
    """
    now = clock.now()
    cutoff = now - timedelta(days=int(app_settings.RETENTION_DAYS))
    purged = {
        "attempts": _delete_in_chunks(DeliveryAttempt.objects.filter(started_at__lt=cutoff)),
        "events": _purge_events(cutoff, now),
    }
    purged["health_checks"] = purge_old_checks(now=now)
    purged["hourly_counts"] = counters.purge(cutoff)
    purged["refused_calls"] = counters.purge_refused(cutoff)
    purged["click_id_sightings"] = _delete_in_chunks(
        ClickIdSighting.objects.filter(last_seen_at__lt=cutoff)
    )
    # Alerts sent or given up on, with their attempts; those still waiting stay.
    purged["alert_deliveries"] = _delete_in_chunks(
        AlertDelivery.objects.filter(
            status__in=(AlertDeliveryStatus.SENT, AlertDeliveryStatus.FAILED),
            created_at__lt=cutoff,
        )
    )
    purged["import_runs"] = purge_old_import_runs(cutoff)
    expired_before = cutoff - timedelta(seconds=float(app_settings.INVITATION_MAX_AGE))
    purged["invitations"] = _delete_in_chunks(
        Invitation.objects.filter(
            Q(state__in=(InvitationState.ACCEPTED, InvitationState.REVOKED), closed_at__lt=cutoff)
            | Q(state=InvitationState.PENDING, sent_at__lt=expired_before)
        )
    )
    logger.info("Purged records older than %s: %s", cutoff, purged)
    return purged


def _purge_events(cutoff: datetime, now: datetime) -> int:
    """Delete the events that are done with and whose last change is older than ``cutoff``.

    Delivered, expired, rejected and suppressed events: nothing more will happen to them.
    Failed ones only once Meta's longest window (62 days for store events) has closed on them:
    before that a fix and a Redeliver may still get them accepted; after it, nothing can.

    The event table has no index on ``status`` or ``updated_at`` (the delivery's UPDATE must
    stay a HOT update: docs/BENCHMARKS.md, issue 21), so the purge goes one destination at a
    time through the (destination, created_at) index: an event changes after it is recorded,
    so ``created_at < cutoff`` holds for every event purged and only bounds the index scan.
    """
    # Ingest refuses an event_time more than MAX_CLOCK_SKEW after it records the event.
    beyond_every_window = now - diagnostics.MAX_STORE_EVENT_AGE - diagnostics.MAX_CLOCK_SKEW
    done_with = Q(
        status__in=(
            EventStatus.DELIVERED,
            EventStatus.EXPIRED,
            EventStatus.REJECTED,
            EventStatus.SUPPRESSED,
        )
    ) | Q(status=EventStatus.FAILED, created_at__lt=beyond_every_window)
    deleted = 0
    for destination_id in Destination.objects.order_by("pk").values_list("pk", flat=True):
        deleted += _delete_in_chunks(
            Event.objects.filter(
                done_with,
                destination_id=destination_id,
                created_at__lt=cutoff,
                updated_at__lt=cutoff,
            )
        )
    return deleted


def purge_old_import_runs(cutoff: datetime) -> int:
    """Delete finished CSV import runs created before ``cutoff``.

    Each destination keeps its latest run that got past the mapping step, whatever its age:
    its mapping pre-fills the next import. A run still queued or running is never touched.
    """
    latest = (
        ImportRun.objects.exclude(status=ImportStatus.UPLOADED)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("destination_id")],
                order_by=[F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(rank=1)
        .values_list("pk", flat=True)
    )
    return _delete_in_chunks(
        ImportRun.objects.filter(
            status__in=(ImportStatus.DONE, ImportStatus.FAILED), created_at__lt=cutoff
        ).exclude(pk__in=list(latest))
    )


def _delete_in_chunks(queryset: Any) -> int:
    model = queryset.model
    deleted = 0
    while True:
        pks = list(queryset.values_list("pk", flat=True)[:PURGE_CHUNK])
        if not pks:
            return deleted
        with transaction.atomic():
            _, per_model = model.objects.filter(pk__in=pks).delete()
        deleted += per_model.get(model._meta.label, 0)


def purge_old_checks(now: datetime | None = None) -> int:
    """Delete HealthChecks older than ``RETENTION_DAYS``; returns how many were deleted.

    Each destination keeps at least its latest status change and its latest check, however
    old, so its page can always say since when it has been in its current state.
    """
    now = now or clock.now()
    cutoff = now - timedelta(days=app_settings.RETENTION_DAYS)
    old_checks = HealthCheck.objects.filter(checked_at__lt=cutoff)
    keep: set[int] = set()
    for only_changes in (True, False):
        latest = HealthCheck.objects.all()
        if only_changes:
            latest = latest.filter(status_changed=True)
        ranked = (
            latest.filter(destination_id__in=old_checks.values("destination_id"))
            .annotate(
                rank=Window(
                    RowNumber(),
                    partition_by=[F("destination_id")],
                    order_by=[F("checked_at").desc(), F("pk").desc()],
                )
            )
            .filter(rank=1)
            .values_list("pk", flat=True)
        )
        keep.update(ranked)
    deleted, _ = old_checks.exclude(pk__in=keep).delete()
    return deleted
