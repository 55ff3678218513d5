"""Retention: delete what is older than ``RETENTION_DAYS``, keeping what someone may still need.

One purge (:func:`purge_old_records`) serves the daily task and ``manage.py capi_purge``:
delivered and expired events, delivery attempts, hourly counters and health checks older than
the retention period go; failed events stay (someone may want to fix and redeliver them), and
each destination keeps its latest health check and latest status change however old
(:func:`purge_old_checks`). Alerts sent or failed go with their attempts; waiting ones stay.
Finished CSV import runs go too, except each destination's latest (its mapping is remembered).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from capi_destinations import clock, counters
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AlertDelivery,
    AlertDeliveryStatus,
    ClickIdSighting,
    DeliveryAttempt,
    Event,
    EventStatus,
    HealthCheck,
    ImportRun,
    ImportStatus,
)

logger = logging.getLogger("capi_destinations.tasks")

# Rows deleted per statement by the purge, so memory and lock time stay bounded.
PURGE_CHUNK = 5000


def purge_old_records() -> dict[str, int]:
    """Delete delivered/expired events and attempts older than ``RETENTION_DAYS``.

    Failed events stay (someone may want to fix and redeliver them). Old health checks go
    too, keeping each destination's last status change (:func:`purge_old_checks`). Returns
    how many rows of each kind were deleted.
    """
    now = clock.now()
    cutoff = now - timedelta(days=int(app_settings.RETENTION_DAYS))
    purged = {
        "attempts": _delete_in_chunks(DeliveryAttempt.objects.filter(started_at__lt=cutoff)),
        "events": _delete_in_chunks(
            Event.objects.filter(
                status__in=(EventStatus.DELIVERED, EventStatus.EXPIRED), updated_at__lt=cutoff
            )
        ),
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
    logger.info("Purged records older than %s: %s", cutoff, purged)
    return purged


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
