"""Queueing a task never breaks the caller: a broker that is down or missing is logged, not raised.

Recording an event, saving a destination (admin or page), redelivering and the ingest endpoint
all queue django-q2 tasks. When the broker cannot take them — Redis down, its client library not
installed, a misconfigured ``Q_CLUSTER`` — the caller still gets its answer, the failure is
logged without secrets, and the scheduled dispatch delivers the events later.

The brokers here are real: a Redis client connecting to a closed loopback port (connection
refused), and django-q2's MongoDB broker, whose client library (pymongo) is not installed.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django_q.conf import Conf

import capi_destinations
from capi_destinations import destinations, queueing, signals, tasks
from capi_destinations.models import Destination, Event, EventStatus, Role
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

# Real commits: the tasks are queued by on-commit callbacks, which a test transaction never runs.
pytestmark = pytest.mark.django_db(transaction=True)

BROKER_PASSWORD = "broker-password-that-must-not-be-logged"


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


class BrokerQuotingItsAddress:
    """A custom django-q2 broker (``Q_CLUSTER["broker_class"]``) whose server is unreachable and
    whose error quotes the address it was given, credentials included, as some clients do."""

    def __init__(self, list_key: str | None = None) -> None:
        self.list_key = list_key

    def enqueue(self, task: str) -> str:
        address = f"amqp://queue:{BROKER_PASSWORD}@127.0.0.1:{closed_loopback_port()}/"
        raise ConnectionRefusedError(f"cannot reach {address}")


@pytest.fixture(params=["redis_down", "client_library_missing", "broker_quotes_its_address"])
def broken_broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """django-q2 configured with a broker that cannot take tasks (its settings are read once at
    import, so its ``Conf`` is set directly, as a site's settings would have set it)."""
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", None)
    if request.param == "redis_down":
        url = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{closed_loopback_port()}/0"
        monkeypatch.setattr(Conf, "REDIS", url)
    elif request.param == "broker_quotes_its_address":
        monkeypatch.setattr(Conf, "BROKER_CLASS", f"{__name__}.BrokerQuotingItsAddress")
    else:
        monkeypatch.setattr(Conf, "MONGO", {"host": f"mongodb://u:{BROKER_PASSWORD}@127.0.0.1"})
    return request.param


@pytest.fixture
def queue_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="capi_destinations.tasks")
    return caplog


def purchase(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thanks",
        "user_data": {"email": "jane@example.com", "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": 20, "currency": "EUR"},
    }


def assert_logged_without_secrets(caplog: pytest.LogCaptureFixture, what: str) -> None:
    failures = [r for r in caplog.records if r.name == "capi_destinations.tasks"]
    assert failures, f"no log line says the {what} could not be queued"
    assert any(what in record.getMessage() for record in failures)
    for record in failures:
        assert record.levelno == logging.WARNING
        assert BROKER_PASSWORD not in record.getMessage()
        assert record.exc_info is None  # a traceback could carry the broker's address


def test_track_records_the_event_when_the_broker_is_broken(
    broken_broker: str, queue_log: pytest.LogCaptureFixture, destination: Destination
) -> None:
    result = capi_destinations.track(destination, purchase("order-1"))

    assert result.status == "stored"
    assert Event.objects.get().status == EventStatus.PENDING
    assert_logged_without_secrets(queue_log, "dispatch")


def test_track_many_records_every_event_when_the_broker_is_broken(
    broken_broker: str, queue_log: pytest.LogCaptureFixture, destination: Destination
) -> None:
    results = capi_destinations.track_many(destination, [purchase(f"o-{n}") for n in range(3)])

    assert [result.status for result in results] == ["stored"] * 3
    assert Event.objects.filter(status=EventStatus.PENDING).count() == 3


def test_the_scheduled_dispatch_delivers_what_could_not_be_queued(
    broken_broker: str, use_sandbox: Sandbox, destination: Destination
) -> None:
    capi_destinations.track(destination, purchase("order-2"))

    report = tasks.dispatch_due()  # what the every-minute schedule runs

    assert report["delivered"] == 1
    assert Event.objects.get().status == EventStatus.DELIVERED
    assert len(use_sandbox.events(event_id="order-2")) == 1


def test_the_ingest_endpoint_answers_202_when_the_broker_is_broken(
    broken_broker: str, queue_log: pytest.LogCaptureFixture, destination: Destination
) -> None:
    secret = destination.set_ingest_secret()
    destination.save()
    url = reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})

    response = Client().post(
        url,
        data=json.dumps(purchase("order-3")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code == 202, response.content
    assert Event.objects.get().event_id == "order-3"
    assert_logged_without_secrets(queue_log, "dispatch")


def test_saving_a_token_in_the_admin_works_when_the_broker_is_broken(
    broken_broker: str,
    queue_log: pytest.LogCaptureFixture,
    admin_client: Client,
    destination: Destination,
) -> None:
    new_token = make_token("admin-with-broken-broker")
    url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    form = {
        "name": destination.name,
        "pixel_id": destination.pixel_id,
        "access_token": new_token,
        "enabled": "on",
        "consent_policy": destination.consent_policy,
        "missing_consent": destination.missing_consent,
    }

    response = admin_client.post(url, form)

    assert response.status_code == 302, response.content.decode()[:2000]
    destination.refresh_from_db()
    assert destination.access_token == new_token
    assert_logged_without_secrets(queue_log, "health check")


@pytest.fixture
def editor_client(make_user: Callable[..., Any], tenant: Any) -> Client:
    client = Client()
    client.force_login(make_user(tenant, Role.EDITOR))
    return client


def test_replacing_a_token_on_the_page_works_when_the_broker_is_broken(
    broken_broker: str,
    queue_log: pytest.LogCaptureFixture,
    editor_client: Client,
    destination: Destination,
) -> None:
    new_token = make_token("page-with-broken-broker")
    url = reverse("capi_destinations:replace_token", kwargs={"code": destination.code})

    response = editor_client.post(url, {"access_token": new_token})

    assert response.status_code == 302
    destination.refresh_from_db()
    assert destination.access_token == new_token
    assert_logged_without_secrets(queue_log, "health check")


def test_turning_sending_on_and_off_works_when_the_broker_is_broken(
    broken_broker: str, editor_client: Client, destination: Destination
) -> None:
    url = reverse("capi_destinations:set_enabled", kwargs={"code": destination.code})

    assert editor_client.post(url, {"enabled": "false"}).status_code in (200, 302)
    assert editor_client.post(url, {"enabled": "true"}).status_code in (200, 302)
    destination.refresh_from_db()
    assert destination.enabled


def test_redelivery_works_when_the_broker_is_broken(
    broken_broker: str,
    queue_log: pytest.LogCaptureFixture,
    admin_user: Any,
    make_event: Callable[..., Event],
) -> None:
    event = make_event(status=EventStatus.FAILED)

    assert destinations.redeliver([event.pk], actor=admin_user) == 1

    event.refresh_from_db()
    assert event.status == EventStatus.PENDING
    assert_logged_without_secrets(queue_log, "dispatch")


def test_the_signal_receivers_never_raise_when_the_broker_is_broken(
    broken_broker: str, destination: Destination
) -> None:
    signals.events_recorded.send(sender=None, destination_id=destination.pk, count=1)
    signals.destination_token_replaced.send(sender=None, destination=destination, actor=None)
    signals.destination_enabled_changed.send(
        sender=None, destination=destination, enabled=True, actor=None
    )


def test_queue_task_says_whether_the_task_was_queued(
    broken_broker: str, queue_log: pytest.LogCaptureFixture
) -> None:
    queued = queueing.queue_task(tasks.HEALTH_TASK, task_name="probe", group="probe", what="probe")

    assert queued is False
    assert_logged_without_secrets(queue_log, "probe")


def test_a_failed_dispatch_enqueue_is_tried_again_after_the_dedup_window(
    broken_broker: str,
    queue_log: pytest.LogCaptureFixture,
    destination: Destination,
    settings: Any,
) -> None:
    """One failure per window, not one per recorded event: a failing broker that answers slowly
    must not slow every request down; the scheduled dispatch sends the events meanwhile."""
    assert queueing.enqueue_dispatch(destination.pk) is False
    assert queueing.enqueue_dispatch(destination.pk) is False
    assert len(queue_log.records) == 1
    cache.clear()  # the dedup window passed
    assert queueing.enqueue_dispatch(destination.pk) is False
    assert len(queue_log.records) == 2
