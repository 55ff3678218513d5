"""Every signal receiver of the app, connected once by :func:`connect` from ``AppConfig.ready``.

What follows a change, whichever path made it (a page, the admin, the shell, a command):

- a new token (``destination_token_replaced``): a block earned by the old token and a pause are
  lifted and the waiting events dispatched, and the destination is health-checked at once;
- sending switched on or off (``destination_enabled_changed``): the destination is
  health-checked at once, and once enabled its waiting events are dispatched;
- events recorded (``events_recorded``): a dispatch is queued, so they leave within seconds;
- any model saved (``post_save``): the conversion rules a host site registered for it
  (:mod:`capi_destinations.rules`) fire once their condition holds;
- ``migrate`` (``post_migrate``): the django-q2 schedules exist;
- a destination saved or deleted: the ingest endpoint forgets its cached destinations;
- a setting changed (``override_settings`` in tests, key rotation): the app's settings and the
  encrypted fields' keys are read again.

Each receiver is a thin call into the module that owns the work; queueing never fails the
request that sent the signal (:mod:`capi_destinations.queueing`).
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_migrate, post_save

from capi_destinations import delivery_state, health_status, queueing, rules, signals, tasks
from capi_destinations.conf import reload_on_setting_changed
from capi_destinations.models import Destination, forget_fernet_keys
from capi_destinations.views import ingest as ingest_views


def resume_after_token_replaced(sender: Any, destination: Destination, **kwargs: Any) -> None:
    """A new token may work where the old one was refused: resume sending at once."""
    delivery_state.resume_destination(destination)


def dispatch_after_enabled(
    sender: Any, destination: Destination, enabled: bool, **kwargs: Any
) -> None:
    """Events recorded while a destination was disabled go out as soon as it is enabled."""
    if enabled:
        queueing.dispatch_after_commit(destination.pk)


def check_health_after_change(sender: Any, destination: Destination, **kwargs: Any) -> None:
    """A saved token or a flipped switch is checked at once.

    So the card is right within seconds of the save instead of at the next scheduled run; until
    the check has run, the card says "Checking…" rather than the verdict from before the change.
    """
    health_status.request_check(destination)
    queueing.enqueue_health_check(destination.pk)


def dispatch_after_recording(sender: Any, destination_id: int, **kwargs: Any) -> None:
    """Newly recorded events are sent within seconds.

    Recording never waits on Meta: under django-q2's ``sync`` mode (tests, or a site with no
    cluster) the task would run inside the request that recorded the events, so the schedule
    and ``capi_dispatch`` deliver them instead.
    """
    from django_q.conf import Conf  # django-q2's settings exist once the apps are ready

    if Conf.SYNC:
        return
    queueing.enqueue_dispatch(destination_id)


def ensure_schedules_after_migrate(sender: Any, **kwargs: Any) -> None:
    """The schedules exist once the tables do."""
    if not apps.is_installed("django_q"):
        return
    tasks.ensure_schedules()


def connect(app_config: AppConfig) -> None:
    """Connect every receiver of the app (idempotent: each has a ``dispatch_uid``)."""
    # Settings first: the receivers below read them.
    setting_changed.connect(
        reload_on_setting_changed, dispatch_uid="capi_destinations.reload_settings"
    )
    setting_changed.connect(forget_fernet_keys, dispatch_uid="capi_destinations.fernet_keys")
    # Delivery first, then the health check: both run after the change commits.
    signals.destination_token_replaced.connect(
        resume_after_token_replaced, dispatch_uid="capi_destinations.dispatch.on_token_replaced"
    )
    signals.destination_enabled_changed.connect(
        dispatch_after_enabled, dispatch_uid="capi_destinations.dispatch.on_enabled_changed"
    )
    signals.destination_token_replaced.connect(
        check_health_after_change, dispatch_uid="capi_destinations.health_on_token"
    )
    signals.destination_enabled_changed.connect(
        check_health_after_change, dispatch_uid="capi_destinations.health_on_enabled"
    )
    signals.events_recorded.connect(
        dispatch_after_recording, dispatch_uid="capi_destinations.dispatch_on_record"
    )
    # Conversion rules a host site registers: one receiver for every model's saves.
    post_save.connect(rules.on_save, dispatch_uid="capi_destinations.rules")
    post_migrate.connect(
        ensure_schedules_after_migrate,
        sender=app_config,
        dispatch_uid="capi_destinations.ensure_schedules",
    )
    post_save.connect(
        ingest_views.forget_destinations,
        sender=Destination,
        dispatch_uid="capi_ingest_cache_save",
    )
    post_delete.connect(
        ingest_views.forget_destinations,
        sender=Destination,
        dispatch_uid="capi_ingest_cache_delete",
    )
