"""django-q2 task functions and their schedules.

The tasks are thin: the work lives in :mod:`capi_destinations.dispatch` (and ``health``).
Retries are ours (``Event.attempts``/``next_attempt_at``), never django-q2's: a task that
fails simply runs again at the next schedule tick or enqueue.

Schedules (created by :func:`ensure_schedules`, run after every ``migrate``):

- dispatch every minute, a safety net behind the immediate dispatch that recording events
  enqueues;
- the health checks every ``HEALTH_CHECK_INTERVAL`` seconds (rounded up to whole minutes);
- the purge of old records once a day.
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from capi_destinations import clock, counters, dispatch
from capi_destinations.conf import app_settings
from capi_destinations.models import DeliveryAttempt, Event, EventStatus

logger = logging.getLogger("capi_destinations.tasks")

DISPATCH_TASK = "capi_destinations.tasks.dispatch_due"
PURGE_TASK = "capi_destinations.tasks.purge_old_records"
HEALTH_TASK = "capi_destinations.tasks.run_health_checks"
HEALTH_CHECK_TASK = "capi_destinations.tasks.run_health_check"

DISPATCH_SCHEDULE = "capi_destinations: dispatch due events"
PURGE_SCHEDULE = "capi_destinations: purge old records"
HEALTH_SCHEDULE = "capi_destinations: health checks"

# Rows deleted per statement by the purge, so memory and lock time stay bounded.
PURGE_CHUNK = 5000


def _queued_key(destination_id: int | None) -> str:
    return f"capi_destinations:dispatch-queued:{destination_id or 'all'}"


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def dispatch_due(destination_id: int | None = None, linger_seconds: float = 0) -> dict[str, int]:
    """Task: one dispatch pass over every due destination, or only ``destination_id``.

    ``linger_seconds`` (given by :func:`enqueue_dispatch`) waits briefly before claiming, while
    the "already queued" mark still holds, so a stream of single events recorded in that
    moment leaves in one request instead of one request each.
    """
    if linger_seconds > 0:
        time.sleep(linger_seconds)
    # Forget the "already queued" mark before working: events recorded from now on need a
    # new task, those recorded before are picked up by this pass.
    cache.delete(_queued_key(destination_id))
    report = dispatch.dispatch_pending(destination_id)
    return report.to_dict()


def enqueue_dispatch(destination_id: int | None = None) -> bool:
    """Queue a dispatch for a destination unless one is already queued; returns whether queued.

    Ten thousand events recorded one by one give one task, not ten thousand: a cache mark per
    destination says a task is waiting, and the task removes it when it starts. The mark
    expires after ``DISPATCH_ENQUEUE_DEDUP_SECONDS`` in case the task is lost. Share one cache
    (Redis, Memcached) between web processes to deduplicate across them too.

    Never raises (see :func:`queue_task`). A task the broker refused keeps its mark, so a
    broker that fails slowly costs one request per dedup window, not every request; the
    scheduled dispatch sends the events meanwhile.
    """
    what = f"dispatch of destination {destination_id}" if destination_id else "dispatch"
    ttl = int(app_settings.DISPATCH_ENQUEUE_DEDUP_SECONDS)
    try:
        newly_marked = cache.add(_queued_key(destination_id), True, timeout=ttl)
    except Exception as error:  # a cache server that is down must not fail the recording
        _log_not_queued(what, error)
        return False
    if not newly_marked:
        return False
    return queue_task(
        DISPATCH_TASK,
        destination_id,
        float(app_settings.DISPATCH_LINGER_SECONDS),
        task_name=f"capi dispatch {destination_id or 'all'}",
        group="capi_destinations.dispatch",
        what=what,
    )


def queue_task(func: str, *args: Any, task_name: str, group: str, what: str) -> bool:
    """Hand ``func(*args)`` to django-q2's broker; returns whether it was queued. Never raises.

    Every task the app queues is a shortcut: its work (sending recorded events, checking a
    destination) is also done by the schedules and the ``capi_dispatch`` / ``capi_healthcheck``
    commands. So a broker that cannot take the task — Redis down, its client library not
    installed, ``Q_CLUSTER`` missing or wrong (system check ``capi_destinations.E013`` says
    which) — must not fail the checkout, admin save or ingest request that queued it: the
    failure is logged (``what`` names the task) and nothing is lost.
    """
    try:
        # Imported here: django_q.tasks imports django-q2's models, which exist only once the
        # apps are ready, and not at all without django_q in INSTALLED_APPS (E001 says so).
        from django_q.tasks import async_task

        async_task(func, *args, task_name=task_name, group=group)
    except Exception as error:  # any broker, any failure: see the docstring
        _log_not_queued(what, error)
        return False
    return True


# A URL's credentials (``redis://user:password@host``): a broker's error may quote its address.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def _log_not_queued(what: str, error: Exception) -> None:
    # No traceback: the broker's exceptions may chain messages that carry its address.
    reason = _URL_CREDENTIALS.sub("***@", f"{type(error).__name__}: {error}")
    logger.warning(
        "Could not queue the %s (%s). Nothing is lost: the scheduled tasks of `manage.py "
        "qcluster` (or the capi_dispatch and capi_healthcheck commands) do this work; "
        "`manage.py check` reports a broker that is not set up.",
        what,
        reason,
    )


def purge_old_records() -> dict[str, int]:
    """Task: delete delivered/expired events and attempts older than ``RETENTION_DAYS``.

    Failed events stay (someone may want to fix and redeliver them). Old health checks go
    too, keeping each destination's last status change (``health.purge_old_checks``).
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
    from capi_destinations import health

    purged["health_checks"] = health.purge_old_checks(now=now)
    purged["hourly_counts"] = counters.purge(cutoff)
    logger.info("Purged records older than %s: %s", cutoff, purged)
    return purged


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


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def run_health_checks() -> int:
    """Task: check every destination's health; returns how many were checked."""
    from capi_destinations import health

    return len(health.check_all_destinations())


# Tokens are decrypted and events (customer data) read below this frame.
@sensitive_variables()
def run_health_check(destination_id: int) -> str | None:
    """Task: check one destination's health now; returns its status (None if it is gone)."""
    from capi_destinations import health

    checks = health.check_all_destinations(destination_ids=[destination_id], max_workers=1)
    return checks[0].status if checks else None


def enqueue_health_check(destination_id: int) -> None:
    """Queue a health check of one destination for when the current transaction commits.

    Never raises (see :func:`queue_task`): the scheduled health checks cover a lost one.
    """
    transaction.on_commit(
        lambda: queue_task(
            HEALTH_CHECK_TASK,
            destination_id,
            task_name=f"capi health check {destination_id}",
            group="capi_destinations.health",
            what=f"health check of destination {destination_id}",
        )
    )


def check_health_after_change(sender: Any, destination: Any, **kwargs: Any) -> None:
    """Receiver of ``destination_token_replaced`` and ``destination_enabled_changed``.

    A saved token or a flipped switch is checked at once, so the card is right within
    seconds of the save instead of at the next scheduled run.
    """
    enqueue_health_check(destination.pk)


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
        PURGE_SCHEDULE: {"func": PURGE_TASK, "schedule_type": Schedule.DAILY, "minutes": None},
    }
    with transaction.atomic():
        for name, fields in wanted.items():
            existing = list(Schedule.objects.filter(name=name).order_by("pk"))
            if not existing:
                Schedule.objects.create(name=name, repeats=-1, **fields)
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


def ensure_schedules_after_migrate(sender: Any, **kwargs: Any) -> None:
    """``post_migrate`` receiver: the schedules exist once the tables do."""
    from django.apps import apps

    if not apps.is_installed("django_q"):
        return
    ensure_schedules()


def dispatch_after_recording(sender: Any, destination_id: int, **kwargs: Any) -> None:
    """``events_recorded`` receiver: newly recorded events are sent within seconds.

    Recording never waits on Meta: under django-q2's ``sync`` mode (tests, or a site with no
    cluster) the task would run inside the request that recorded the events, so the schedule
    and ``capi_dispatch`` deliver them instead.
    """
    from django_q.conf import Conf

    if Conf.SYNC:
        return
    enqueue_dispatch(destination_id)
