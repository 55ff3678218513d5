"""Handing work to django-q2's broker: the shortcuts that run a dispatch or a check at once.

Every task queued here is a shortcut: its work is also done by the schedules of
:mod:`capi_destinations.tasks` and by the ``capi_dispatch`` / ``capi_healthcheck`` commands, so
a broker that cannot take a task never fails the request that queued it. Tasks are named by
their dotted path, so this module imports neither the engine nor the task functions: the
delivery engine, the health checks and the services all queue through it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.core.cache import cache
from django.db import transaction

from capi_destinations.conf import app_settings

logger = logging.getLogger("capi_destinations.tasks")

DISPATCH_TASK = "capi_destinations.tasks.dispatch_due"
PURGE_TASK = "capi_destinations.tasks.purge_old_records"
DIGEST_TASK = "capi_destinations.tasks.send_daily_digests"
HEALTH_TASK = "capi_destinations.tasks.run_health_checks"
HEALTH_CHECK_TASK = "capi_destinations.tasks.run_health_check"
ALERT_TASK = "capi_destinations.tasks.deliver_due_alerts"
MATCH_QUALITY_TASK = "capi_destinations.tasks.fetch_match_quality"
IMPORT_TASK = "capi_destinations.tasks.import_csv_run"
STALLED_IMPORTS_TASK = "capi_destinations.tasks.resume_stalled_imports"


def queued_key(destination_id: int | None) -> str:
    """The cache key that says a dispatch of ``destination_id`` (or of all) is queued."""
    return f"capi_destinations:dispatch-queued:{destination_id or 'all'}"


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
        newly_marked = cache.add(queued_key(destination_id), True, timeout=ttl)
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


def dispatch_after_commit(destination_id: int) -> None:
    """Queue a dispatch of the destination once the current transaction commits."""
    transaction.on_commit(lambda: enqueue_dispatch(destination_id))


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


def enqueue_alert_delivery() -> None:
    """Queue a delivery of the due alerts for when the current transaction commits.

    Never raises (see :func:`queue_task`): the per-minute schedule delivers them otherwise.
    """
    transaction.on_commit(
        lambda: queue_task(
            ALERT_TASK,
            task_name="capi alert delivery",
            group="capi_destinations.alerts",
            what="delivery of alerts",
        )
    )


def enqueue_import(run_id: int) -> bool:
    """Queue the import of an uploaded CSV file (an ``ImportRun``); returns whether queued.

    Unlike the other tasks, nothing else runs an import: a refusal is logged and the run stays
    queued, and the page offers to start it again.
    """
    return queue_task(
        IMPORT_TASK,
        run_id,
        task_name=f"capi import {run_id}",
        group="capi_destinations.imports",
        what=f"import run {run_id}",
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
