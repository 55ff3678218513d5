"""django-q2 task functions and their schedules.

The tasks are thin: the work lives in :mod:`capi_destinations.dispatch`, ``health`` and
``retention``; queueing a task at once is :mod:`capi_destinations.queueing`'s job, and the
signal receivers that do it are in :mod:`capi_destinations.receivers`. Retries are ours
(``Event.attempts``/``next_attempt_at``), never django-q2's: a task that fails simply runs again
at the next schedule tick or enqueue.

Schedules (created by :func:`ensure_schedules`, run after every ``migrate``):

- dispatch every minute, a safety net behind the immediate dispatch that recording events
  enqueues;
- the health checks every ``HEALTH_CHECK_INTERVAL`` seconds (rounded up to whole minutes);
- Meta's own Event Match Quality (the Dataset Quality API) every hour;
- the purge of old records once a day;
- the delivery of due alerts (new ones and retries) every minute.
- the daily digest once a day, first at ``DIGEST_HOUR`` (UTC);
- every five minutes, CSV imports whose worker died mid-slice are queued again.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from capi_destinations import (
    alert_delivery,
    clock,
    digest,
    dispatch,
    health,
    imports,
    match_quality,
    retention,
)
from capi_destinations.conf import app_settings
from capi_destinations.queueing import (
    ALERT_TASK,
    DIGEST_TASK,
    DISPATCH_TASK,
    HEALTH_CHECK_TASK,
    HEALTH_TASK,
    MATCH_QUALITY_TASK,
    PURGE_TASK,
    STALLED_IMPORTS_TASK,
    queued_key,
)

DISPATCH_SCHEDULE = "capi_destinations: dispatch due events"
PURGE_SCHEDULE = "capi_destinations: purge old records"
HEALTH_SCHEDULE = "capi_destinations: health checks"
ALERT_SCHEDULE = "capi_destinations: deliver alerts"
DIGEST_SCHEDULE = "capi_destinations: daily digest"
MATCH_QUALITY_SCHEDULE = "capi_destinations: Meta's match quality"
STALLED_IMPORTS_SCHEDULE = "capi_destinations: resume stalled imports"


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def dispatch_due(destination_id: int | None = None, linger_seconds: float = 0) -> dict[str, int]:
    """Task: one dispatch pass over every due destination, or only ``destination_id``.

    ``linger_seconds`` (given by :func:`~capi_destinations.queueing.enqueue_dispatch`) waits
    briefly before claiming, while the "already queued" mark still holds, so a stream of single
    events recorded in that moment leaves in one request instead of one request each.
    """
    if linger_seconds > 0:
        time.sleep(linger_seconds)
    # Forget the "already queued" mark before working: events recorded from now on need a
    # new task, those recorded before are picked up by this pass.
    cache.delete(queued_key(destination_id))
    report = dispatch.dispatch_pending(destination_id)
    return report.to_dict()


def purge_old_records() -> dict[str, int]:
    """Task: delete what is older than ``RETENTION_DAYS`` (:mod:`~capi_destinations.retention`)."""
    return retention.purge_old_records()


def send_daily_digests() -> int:
    """Task: send the daily digest emails (:mod:`~capi_destinations.digest`); returns how many."""
    return digest.send_daily_digests()


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def run_health_checks() -> int:
    """Task: check every destination's health; returns how many were checked."""
    return len(health.check_all_destinations())


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def run_health_check(destination_id: int) -> str | None:
    """Task: check one destination's health now; returns its status (None if it is gone)."""
    checks = health.check_all_destinations(destination_ids=[destination_id], max_workers=1)
    return checks[0].status if checks else None


def deliver_due_alerts() -> int:
    """Task: send the alerts that are due (new ones and retries); returns how many were tried."""
    return alert_delivery.deliver_due()


# Tokens are decrypted below this frame.
@sensitive_variables()
def fetch_match_quality() -> dict[str, int]:
    """Task: fetch Meta's Event Match Quality of every enabled destination; counts by outcome."""
    return match_quality.fetch_all_match_quality()


def import_csv_run(run_id: int) -> dict[str, int] | None:
    """Task: carry out an uploaded CSV import (:func:`~capi_destinations.imports.run_import`)."""
    run = imports.run_import(run_id)
    if run is None:
        return None
    return {"rows_read": run.rows_read, "stored": run.stored, "rejected": run.rejected}


def resume_stalled_imports() -> int:
    """Task: queue again the CSV imports whose worker died mid-slice; returns how many."""
    return imports.resume_stalled_runs()


def ensure_schedules() -> list[str]:
    """Create or update the app's django-q2 schedules; each exists exactly once afterwards.

    Idempotent: safe to run after every ``migrate`` (the app does) and from a deploy script.
    Returns the names of the schedules.
    """
    from django_q.models import Schedule

    interval_minutes = max(1, math.ceil(int(app_settings.HEALTH_CHECK_INTERVAL) / 60))
    wanted = {
        DISPATCH_SCHEDULE: {"func": DISPATCH_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1},
        HEALTH_SCHEDULE: {
            "func": HEALTH_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": interval_minutes,
        },
        MATCH_QUALITY_SCHEDULE: {
            "func": MATCH_QUALITY_TASK,
            "schedule_type": Schedule.HOURLY,
            "minutes": None,
        },
        PURGE_SCHEDULE: {"func": PURGE_TASK, "schedule_type": Schedule.DAILY, "minutes": None},
        ALERT_SCHEDULE: {"func": ALERT_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1},
        DIGEST_SCHEDULE: {"func": DIGEST_TASK, "schedule_type": Schedule.DAILY, "minutes": None},
        STALLED_IMPORTS_SCHEDULE: {
            "func": STALLED_IMPORTS_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 5,
        },
    }
    with transaction.atomic():
        for name, fields in wanted.items():
            existing = list(Schedule.objects.filter(name=name).order_by("pk"))
            if not existing:
                first_run = {"next_run": _next_digest_run()} if name == DIGEST_SCHEDULE else {}
                Schedule.objects.create(name=name, repeats=-1, **fields, **first_run)
                continue
            # A duplicate left by two concurrent migrates is removed.
            Schedule.objects.filter(pk__in=[item.pk for item in existing[1:]]).delete()
            schedule = existing[0]
            changed = [key for key, value in fields.items() if getattr(schedule, key) != value]
            if changed or schedule.repeats != -1:
                for key in changed:
                    setattr(schedule, key, fields[key])
                schedule.repeats = -1
                schedule.save()
    return list(wanted)


def _next_digest_run() -> datetime:
    """The next ``DIGEST_HOUR`` o'clock (UTC): when the daily digest schedule first runs."""
    now = clock.now()
    hour = int(app_settings.DIGEST_HOUR) % 24
    run = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)


__all__ = [
    "ALERT_SCHEDULE",
    "ALERT_TASK",
    "DIGEST_SCHEDULE",
    "DIGEST_TASK",
    "DISPATCH_SCHEDULE",
    "DISPATCH_TASK",
    "HEALTH_CHECK_TASK",
    "HEALTH_SCHEDULE",
    "HEALTH_TASK",
    "MATCH_QUALITY_SCHEDULE",
    "MATCH_QUALITY_TASK",
    "PURGE_SCHEDULE",
    "PURGE_TASK",
    "deliver_due_alerts",
    "dispatch_due",
    "ensure_schedules",
    "fetch_match_quality",
    "purge_old_records",
    "run_health_check",
    "run_health_checks",
    "send_daily_digests",
]
