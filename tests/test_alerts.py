"""Notification channels end to end, against real HTTP receivers on 127.0.0.1.

Each receiver is ``http.server`` in a thread on a free port, answering a script of status codes
and keeping every request it got. Retries are driven with the app clock and the delivery task
(no sleeps): the request of each attempt is complete when ``deliver_due`` returns.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from capi_destinations import (
    alert_delivery,
    alert_transport,
    alerts,
    health_status,
    signals,
    tasks,
)
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDeliveryStatus,
    Destination,
    Health,
    NotificationChannel,
    Role,
    Tenant,
)
from tests.fixtures.receivers import Receiver
from tests.test_dispatch_concurrency import run_in_threads

SITE_URL = "https://capi.example.com"
LOOPBACK_ALLOWED = {
    "SITE_URL": SITE_URL,
    "ALERT_ALLOW_HTTP": True,
    "ALERT_ALLOW_PRIVATE_ADDRESSES": True,
}


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED


def make_channel(
    tenant: Tenant, target: str, *, kind: str = "webhook", kinds: list[str] | None = None
) -> tuple[NotificationChannel, str]:
    return alerts.create_channel(
        tenant,
        name=f"{kind} channel",
        kind=kind,
        target=target,
        alert_kinds=kinds if kinds is not None else list(signals.ALERT_KINDS),
        enabled=True,
    )


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, exactly as README → Alerts → "Verifying a webhook" shows it."""
    timestamp = headers["X-Capi-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", headers["X-Capi-Signature"])


def raise_traffic_alert(destination: Destination, capture: Any) -> None:
    with capture(execute=True):
        signals.destination_alert.send(
            sender=Destination,
            destination=destination,
            kind="traffic_dropped",
            raised=True,
            reason="No events for 6 hours.",
            fix="Check that your site still calls track().",
        )


def run_delivery() -> int:
    return tasks.deliver_due_alerts()


# --- webhooks: payload and signature -----------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
def test_a_webhook_alert_carries_the_documented_payload_and_a_signature_that_verifies(
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    channel, secret = make_channel(destination.tenant, receiver.url)
    assert secret.startswith("whsec_")

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert verify_signature(secret, got.headers, got.body)
    assert got.headers["X-Capi-Timestamp"] == str(int(clock.now().timestamp()))
    assert not verify_signature("whsec_wrong", got.headers, got.body)
    assert not verify_signature(secret, got.headers, got.body + b" ")
    payload = got.json
    assert payload == {
        "alert_id": payload["alert_id"],
        "kind": "traffic_dropped",
        "raised": True,
        "tenant": {"name": "Acme Shoes", "slug": "acme"},
        "destination": {
            "name": destination.name,
            "code": str(destination.code),
            "pixel_id": destination.pixel_id,
        },
        "old_status": None,
        "new_status": None,
        "reason": "No events for 6 hours.",
        "fix": "Check that your site still calls track().",
        "url": f"{SITE_URL}/capi/d/{destination.code}/",
        "time": clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    delivery = AlertDelivery.objects.get(channel=channel)
    assert (delivery.status, delivery.attempts) == (AlertDeliveryStatus.SENT, 1)
    attempt = AlertAttempt.objects.get(delivery=delivery)
    assert (attempt.ok, attempt.status_code, attempt.answer) == (True, 200, "ok")


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
def test_a_receiver_failing_three_times_then_succeeding_gets_the_alert_exactly_once(
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver.script = [500, 502, 503]
    channel, _ = make_channel(destination.tenant, receiver.url)

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)  # attempt 1: 500
    delivery = AlertDelivery.objects.get(channel=channel)
    waits = []
    for expected_attempts in (1, 2, 3):
        delivery.refresh_from_db()
        assert delivery.status == AlertDeliveryStatus.PENDING
        assert delivery.attempts == expected_attempts
        wait = delivery.next_attempt_at - clock.now()
        waits.append(wait)
        # Not due yet: nothing is sent.
        clock.advance(wait - timedelta(seconds=1))
        assert run_delivery() == 0
        clock.advance(timedelta(seconds=1))
        assert run_delivery() == 1
    # Exponential backoff: each wait twice the one before.
    assert waits == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=240)]

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (AlertDeliveryStatus.SENT, 4)
    clock.advance(timedelta(days=2))
    assert run_delivery() == 0
    statuses = [
        attempt.status_code for attempt in AlertAttempt.objects.order_by("started_at", "pk")
    ]
    assert statuses == [500, 502, 503, 200]
    # Four requests of one alert, and only the last was taken: received exactly once.
    assert len(receiver.requests) == 4
    assert len({request.json["alert_id"] for request in receiver.requests}) == 1
    channel.refresh_from_db()
    assert channel.failing_since is None


@pytest.mark.usefixtures("loopback_allowed")
def test_a_receiver_down_beyond_the_bound_marks_the_channel_failing_and_the_page_says_so(
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
    make_user: Callable[..., Any],
) -> None:
    receiver.default = 503
    channel, _ = make_channel(destination.tenant, receiver.url)
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    delivery = AlertDelivery.objects.get(channel=channel)
    bound = delivery.created_at + timedelta(seconds=int(app_settings.ALERT_RETRY_FOR_SECONDS))

    while True:
        delivery.refresh_from_db()
        if delivery.status != AlertDeliveryStatus.PENDING:
            break
        assert delivery.next_attempt_at <= bound
        clock.advance(delivery.next_attempt_at - clock.now())
        run_delivery()

    assert delivery.status == AlertDeliveryStatus.FAILED
    assert clock.now() == bound
    channel.refresh_from_db()
    assert channel.failing_since == bound
    assert "503" in channel.last_error
    # Capped backoff: an hour apart at most, so about 24 + 7 tries in a day.
    assert 25 <= delivery.attempts <= 35

    admin = make_user(destination.tenant, Role.ADMIN)
    client = Client()
    client.force_login(admin)
    page = client.get(reverse("capi_destinations:alert_channels", kwargs={"tenant_slug": "acme"}))
    assert page.status_code == 200
    # The time in the viewer's zone (pages.js), UTC on hover and as sent.
    assert f'Failing since <time datetime="{bound:%Y-%m-%dT%H:%M:%SZ}"' in page.content.decode()

    # While it is down, new alerts wait; once it answers again they arrive and it recovers.
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    waiting = AlertDelivery.objects.get(channel=channel, status=AlertDeliveryStatus.PENDING)
    page = client.get(reverse("capi_destinations:alert_channels", kwargs={"tenant_slug": "acme"}))
    assert "1 alert waiting to be retried" in page.content.decode()
    receiver.default = 200
    clock.advance(waiting.next_attempt_at - clock.now())
    assert run_delivery() == 1
    waiting.refresh_from_db()
    channel.refresh_from_db()
    assert waiting.status == AlertDeliveryStatus.SENT
    assert (channel.failing_since, channel.last_error) == (None, "")


# --- health changes -----------------------------------------------------------------------------


def _record(destination: Destination, health: str, clock: Any) -> None:
    failed = health_status.CheckResult(
        "meta_accepts_token", False, "Meta refused the token.", "Paste a new one."
    )
    checks = [failed] if health == Health.UNHEALTHY else []
    reasons = [failed.reason()] if health == Health.UNHEALTHY else []
    health_status.record_verdict(
        destination,
        lambda old: health_status.Verdict(health, reasons, checks, 0),
        now=clock.now(),
        duration_ms=5,
        pixel_name=None,
    )


@pytest.mark.usefixtures("loopback_allowed")
def test_flapping_health_sends_nothing_and_a_lasting_change_one_alert_once_it_settles(
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    make_channel(destination.tenant, receiver.url, kinds=["health"])
    assert int(app_settings.ALERT_HEALTH_SETTLE_SECONDS) == 600  # two health-check runs

    def run(health: str) -> None:
        """One health-check run 5 minutes after the last, then the per-minute delivery."""
        clock.advance(timedelta(minutes=5))
        with django_capture_on_commit_callbacks(execute=True):
            _record(destination, health, clock)
        run_delivery()

    # unknown→healthy is no news; then the status flips at every run: each change is undone
    # before it settles, so neither it nor its undoing is sent.
    for health in (Health.HEALTHY, Health.UNHEALTHY, Health.HEALTHY, Health.UNHEALTHY):
        run(health)
        assert receiver.requests == []
    # Settling, it is no alert "waiting to be retried" on the Alerts page.
    assert [row.waiting for row in alerts.channel_rows(destination.tenant)] == [0]
    run(Health.HEALTHY)
    assert receiver.requests == []
    assert not AlertDelivery.objects.exists()

    # A change that lasts is sent once, when it has lasted ALERT_HEALTH_SETTLE_SECONDS.
    run(Health.UNHEALTHY)
    changed_at = clock.now()
    run(Health.UNHEALTHY)
    assert receiver.requests == []
    for health in (Health.UNHEALTHY, Health.UNHEALTHY, Health.UNHEALTHY):
        run(health)
    assert len(receiver.requests) == 1
    alert = receiver.requests[0].json
    assert (alert["old_status"], alert["new_status"], alert["raised"]) == (
        "healthy",
        "unhealthy",
        True,
    )
    assert alert["reason"] == "Meta refused the token."
    assert alert["fix"] == "Paste a new one."
    assert alert["time"] == f"{changed_at:%Y-%m-%dT%H:%M:%SZ}"  # when it changed

    # Recovered, and it lasts: one alert again.
    for health in (Health.HEALTHY, Health.HEALTHY, Health.HEALTHY):
        run(health)
    got = [
        (r.json["old_status"], r.json["new_status"], r.json["raised"]) for r in receiver.requests
    ]
    assert got == [("healthy", "unhealthy", True), ("unhealthy", "healthy", False)]
    assert len({r.json["alert_id"] for r in receiver.requests}) == 2

    # Two processes recording the same change from stale copies: one change, one alert.
    stale_a = Destination.objects.get(pk=destination.pk)
    stale_b = Destination.objects.get(pk=destination.pk)
    for stale in (stale_a, stale_b):
        with django_capture_on_commit_callbacks(execute=True):
            _record(stale, Health.UNHEALTHY, clock)
    clock.advance(timedelta(minutes=10))
    run_delivery()
    assert len(receiver.requests) == 3


@pytest.mark.usefixtures("loopback_allowed")
def test_leaving_unhealthy_for_unknown_is_not_called_passing_again(
    settings: Any,
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {**LOOPBACK_ALLOWED, "ALERT_HEALTH_SETTLE_SECONDS": 0}
    make_channel(destination.tenant, receiver.url, kinds=["health"])
    _record(destination, Health.UNHEALTHY, clock)
    # A send-only token: Meta refuses the read, and no delivery has proven it yet.
    unproven = health_status.CheckResult(
        "meta_accepts_token", False, "Meta lets this token send only.", "Send an event.", "info"
    )
    with django_capture_on_commit_callbacks(execute=True):
        health_status.record_verdict(
            destination,
            lambda old: health_status.Verdict(Health.UNKNOWN, [unproven.reason()], [unproven], 0),
            now=clock.now(),
            duration_ms=5,
            pixel_name=None,
        )
    (alert,) = [r.json for r in receiver.requests if r.json["new_status"] == "unknown"]
    assert alert["raised"] is False
    assert alert["reason"] == (
        "No health check fails any more, but it is not known yet to be healthy. "
        "Meta lets this token send only."
    )
    assert alert["fix"] == "Send an event."


@pytest.mark.usefixtures("loopback_allowed")
def test_a_change_takes_back_only_its_own_destinations_settling_alert(
    destination: Destination,
    make_destination: Callable[..., Destination],
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    other = make_destination(name="Other pixel", pixel_id="2234567890123456")
    make_channel(destination.tenant, receiver.url, kinds=["health"])
    for health in (Health.HEALTHY, Health.UNHEALTHY):
        for each in (destination, other):
            with django_capture_on_commit_callbacks(execute=True):
                _record(each, health, clock)
    # The other destination recovers at once: its own alert is taken back, not this one's.
    with django_capture_on_commit_callbacks(execute=True):
        _record(other, Health.HEALTHY, clock)
    clock.advance(timedelta(minutes=10))
    run_delivery()
    assert [r.json["destination"]["name"] for r in receiver.requests] == [destination.name]


@pytest.mark.usefixtures("loopback_allowed")
def test_health_alerts_go_at_once_when_the_settle_time_is_zero(
    settings: Any,
    destination: Destination,
    receiver: Receiver,
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {**LOOPBACK_ALLOWED, "ALERT_HEALTH_SETTLE_SECONDS": 0}
    make_channel(destination.tenant, receiver.url, kinds=["health"])
    for health in (Health.HEALTHY, Health.UNHEALTHY, Health.HEALTHY):
        clock.advance(timedelta(minutes=5))
        with django_capture_on_commit_callbacks(execute=True):
            _record(destination, health, clock)
    assert [r.json["raised"] for r in receiver.requests] == [True, False]


# --- which channels, and each kind of channel ---------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
def test_only_enabled_channels_of_the_tenant_subscribed_to_the_kind_get_an_alert(
    destination: Destination,
    other_tenant: Tenant,
    make_receiver: Callable[[], Receiver],
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribed, unsubscribed, disabled, other = (make_receiver() for _ in range(4))
    make_channel(destination.tenant, subscribed.url, kinds=["traffic_dropped"])
    make_channel(destination.tenant, unsubscribed.url, kinds=["health", "failure_rate"])
    off, _ = make_channel(destination.tenant, disabled.url)
    alerts.update_channel(off, enabled=False)
    make_channel(other_tenant, other.url)

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    assert [len(r.requests) for r in (subscribed, unsubscribed, disabled, other)] == [1, 0, 0, 0]


@pytest.mark.usefixtures("loopback_allowed")
def test_a_slack_alert_is_a_readable_message_with_a_button_to_the_page(
    destination: Destination, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel(destination.tenant, receiver.url, kind="slack")
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    message = receiver.requests[0].json
    assert "X-Capi-Signature" not in receiver.requests[0].headers
    assert message["text"].startswith(f"{destination.name}: Traffic dropped")
    text = json.dumps(message["blocks"])
    assert "*Why:* No events for 6 hours." in text
    assert "*Fix:* Check that your site still calls track()." in text
    button = message["blocks"][-1]["elements"][0]
    assert button["url"] == f"{SITE_URL}/capi/d/{destination.code}/"


@pytest.mark.usefixtures("loopback_allowed")
def test_an_email_channel_sends_each_address_its_own_message_per_alert(
    destination: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel(destination.tenant, "ops@agency.example, client@shop.example", kind="email")
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    # One message per address and alert: the agency's people and the client's never see each
    # other's addresses.
    assert [message.to for message in mail.outbox] == [
        ["ops@agency.example"],
        ["client@shop.example"],
    ] * 2
    assert not any(message.cc or message.bcc for message in mail.outbox)
    message = mail.outbox[0]
    assert message.subject == f"[Acme Shoes] {destination.name}: Traffic dropped"
    assert "Fix: Check that your site still calls track()." in message.body
    assert f"{SITE_URL}/capi/d/{destination.code}/" in message.body


def test_a_bad_email_address_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ValidationError, match="not an email address"):
        make_channel(tenant, "ops@agency.example, nobody", kind="email")


@pytest.mark.usefixtures("loopback_allowed")
def test_a_redirect_is_never_followed(
    destination: Destination,
    make_receiver: Callable[[], Receiver],
    django_capture_on_commit_callbacks: Any,
) -> None:
    elsewhere = make_receiver()
    redirecting = make_receiver()
    redirecting.default, redirecting.redirect_to = 307, elsewhere.url
    channel, _ = make_channel(destination.tenant, redirecting.url)

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    assert (len(redirecting.requests), len(elsewhere.requests)) == (1, 0)
    attempt = AlertAttempt.objects.get(channel=channel)
    assert (attempt.ok, attempt.status_code) == (False, 307)


# --- URL safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.215.14/hook", "https"),
        ("ftp://93.184.215.14/hook", "https"),
        ("https://127.0.0.1/hook", "private, loopback"),
        ("https://localhost:8443/hook", "private, loopback"),
        ("https://10.1.2.3/hook", "private, loopback"),
        ("https://192.168.0.10/hook", "private, loopback"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback"),
        ("https://[::1]/hook", "private, loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "private, loopback"),
        ("https://224.0.0.1/hook", "private, loopback"),
        ("https://0.0.0.0/hook", "private, loopback"),
        ("https://240.0.0.1/hook", "private, loopback"),
        # Shared address space (carrier-grade NAT, RFC 6598): inside a provider's network.
        ("https://100.64.0.1/hook", "private, loopback"),
        ("https://user:pw@93.184.215.14/hook", "no user name"),
        ("https:///hook", "host name"),
    ],
)
def test_unsafe_urls_are_refused_by_default(url: str, why: str) -> None:
    with pytest.raises(alert_transport.UnsafeURL, match=why):
        alert_transport.refuse_unsafe_url(url)


def test_a_public_https_address_is_allowed() -> None:
    alert_transport.refuse_unsafe_url("https://93.184.215.14/hook")


def test_the_settings_allow_http_and_private_addresses(settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {"ALERT_ALLOW_HTTP": True}
    alert_transport.refuse_unsafe_url("http://93.184.215.14/hook")
    with pytest.raises(alert_transport.UnsafeURL):
        alert_transport.refuse_unsafe_url("http://127.0.0.1/hook")
    settings.CAPI_DESTINATIONS = {"ALERT_ALLOW_PRIVATE_ADDRESSES": True}
    alert_transport.refuse_unsafe_url("https://127.0.0.1/hook")
    with pytest.raises(alert_transport.UnsafeURL):
        alert_transport.refuse_unsafe_url("http://127.0.0.1/hook")


def test_an_unsafe_url_is_refused_when_saved(tenant: Tenant) -> None:
    with pytest.raises(ValidationError, match="loopback"):
        make_channel(tenant, "https://127.0.0.1/hook")
    with pytest.raises(ValidationError, match="https"):
        make_channel(tenant, "http://93.184.215.14/hook", kind="slack")
    assert not NotificationChannel.objects.exists()


def test_an_unsafe_url_is_refused_again_when_sending(
    destination: Destination,
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # Saved while loopback was allowed (or its DNS answer changed since): refused at send time.
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    channel, _ = make_channel(destination.tenant, receiver.url)
    settings.CAPI_DESTINATIONS = {"ALERT_ALLOW_HTTP": True}

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    assert receiver.requests == []
    attempt = AlertAttempt.objects.get(channel=channel)
    assert not attempt.ok
    assert attempt.error.startswith("Not sent: The host 127.0.0.1 resolves to a private")
    assert AlertDelivery.objects.get(channel=channel).status == AlertDeliveryStatus.PENDING


# --- DNS rebinding: the request goes to the address that was checked --------------------------


class FakeDNS:
    """Answers for made-up host names, in turn (the last one repeats); every other name and
    every IP address goes to the machine's own resolver. Stands in for a DNS server whose
    answer changes between two lookups, which no test can make a real one do."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            answers = self.answers.get(host)
            if not answers:
                return real(host, port, *args, **kwargs)
            self.asked.append(host)
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            return real(address, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    return FakeDNS(monkeypatch)


def test_a_name_that_resolves_elsewhere_after_the_check_is_not_followed(
    receiver: Receiver, fake_dns: FakeDNS, settings: Any
) -> None:
    # Public when checked, the site's own loopback a moment later (DNS rebinding).
    settings.CAPI_DESTINATIONS = {"ALERT_ALLOW_HTTP": True, "ALERT_CONNECT_TIMEOUT": 0.5}
    port = receiver.url.split(":")[2].split("/")[0]
    fake_dns.answers["rebind.example"] = ["93.184.215.14", "127.0.0.1"]

    with pytest.raises(alert_transport.TransportError) as raised:
        alert_transport.post(f"http://rebind.example:{port}/hooks/T0SECRETPATH", b"{}")

    # Connected to the address checked (unreachable here), never to the loopback receiver.
    assert receiver.requests == []
    assert fake_dns.asked == ["rebind.example"]
    assert "rebind.example" in raised.value.message
    assert "SECRETPATH" not in raised.value.message


def test_the_checked_address_is_spoken_to_by_the_channels_name_over_tls(
    make_tls_receiver: Callable[[str], tuple[Receiver, Path]],
    fake_dns: FakeDNS,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    receiver, certificate = make_tls_receiver("hooks.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
    port = receiver.url.split(":")[2].split("/")[0]
    fake_dns.answers["hooks.example"] = ["127.0.0.1"]
    fake_dns.answers["other.example"] = ["127.0.0.1"]

    answer = alert_transport.post(f"https://hooks.example:{port}/hooks/T0", b'{"a": 1}')

    # SNI and the certificate check name the channel's host; so does Host.
    assert answer.ok
    assert [request.headers["Host"] for request in receiver.requests] == [f"hooks.example:{port}"]
    assert fake_dns.asked == ["hooks.example"]
    # The same address under a name the certificate does not hold: refused, nothing sent.
    with pytest.raises(alert_transport.TransportError):
        alert_transport.post(f"https://other.example:{port}/hooks/T0", b"{}")
    assert len(receiver.requests) == 1


# --- secrets ------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.usefixtures("loopback_allowed")
def test_the_signing_secret_and_the_slack_path_stay_out_of_reprs_logs_and_errors(
    destination: Destination,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on the port: every attempt fails with a connection error.
    base = f"http://127.0.0.1:{_closed_port()}"
    channel, secret = make_channel(destination.tenant, f"{base}/hooks/T0SECRETPATH")
    slack, _ = make_channel(destination.tenant, f"{base}/services/T0SLACKPATH", kind="slack")
    caplog.set_level(logging.DEBUG)

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)

    attempts = list(AlertAttempt.objects.all())
    assert len(attempts) == 2
    assert {attempt.error for attempt in attempts} == {"Could not connect to 127.0.0.1."}
    stored = NotificationChannel.objects.get(pk=channel.pk)
    assert stored.signing_secret == secret
    texts = [repr(stored), str(stored), repr(slack), str(slack), caplog.text]
    texts += [attempt.error for attempt in attempts]
    texts += [repr(delivery.__dict__) for delivery in AlertDelivery.objects.all()]
    for text in texts:
        assert secret not in text
        assert "SECRETPATH" not in text
        assert "SLACKPATH" not in text
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT signing_secret FROM capi_destinations_notificationchannel WHERE id = %s",
            [channel.pk],
        )
        (raw,) = cursor.fetchone()
    assert secret.encode() not in bytes(raw)  # encrypted at rest, like the destination token


# --- the Alerts page ----------------------------------------------------------------------------


def _admin_client(tenant: Tenant, make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user(tenant, Role.ADMIN))
    return client


def _page_url(tenant: Tenant) -> str:
    return reverse("capi_destinations:alert_channels", kwargs={"tenant_slug": tenant.slug})


@pytest.mark.usefixtures("loopback_allowed")
def test_an_admin_adds_a_webhook_and_sees_its_secret_once(
    tenant: Tenant, receiver: Receiver, make_user: Callable[..., Any]
) -> None:
    client = _admin_client(tenant, make_user)
    created = client.post(
        _page_url(tenant),
        {
            "name": "Ops webhook",
            "kind": "webhook",
            "target": receiver.url,
            "alert_kinds": ["health", "failure_rate"],
            "enabled": "on",
        },
    )
    assert created.status_code == 200
    channel = NotificationChannel.objects.get(tenant=tenant)
    assert channel.alert_kinds == ["health", "failure_rate"]
    secret = str(channel.signing_secret)
    assert secret in created.content.decode()

    later = client.get(_page_url(tenant)).content.decode()
    assert secret not in later
    assert receiver.url in later  # admins see where alerts go
    edit_url = reverse(
        "capi_destinations:alert_channel_edit",
        kwargs={"tenant_slug": tenant.slug, "channel": channel.code},
    )
    assert secret not in client.get(edit_url).content.decode()
    saved = client.post(
        edit_url,
        {"name": "Renamed", "kind": "webhook", "target": receiver.url, "alert_kinds": ["health"]},
    )
    assert saved.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.enabled, channel.alert_kinds) == ("Renamed", False, ["health"])
    assert channel.signing_secret == secret  # editing keeps the secret


@pytest.mark.usefixtures("loopback_allowed")
def test_an_email_or_slack_channel_has_no_secret_and_the_add_redirects(
    tenant: Tenant, make_user: Callable[..., Any]
) -> None:
    client = _admin_client(tenant, make_user)
    created = client.post(
        _page_url(tenant),
        {"name": "Ops", "kind": "email", "target": "ops@agency.example", "alert_kinds": ["health"]},
    )
    assert created.status_code == 302
    assert NotificationChannel.objects.get(tenant=tenant).signing_secret == ""


def test_bad_channel_input_is_refused_on_the_page_not_a_500(
    tenant: Tenant, make_user: Callable[..., Any]
) -> None:
    client = _admin_client(tenant, make_user)
    for data in (
        {"name": "x", "kind": "webhook", "target": "https://127.0.0.1/hook"},
        {"name": "x", "kind": "pigeon", "target": "https://93.184.215.14/"},
        {"name": "x", "kind": "slack", "target": "not a url", "alert_kinds": ["nope"]},
        {"name": "", "kind": "", "target": "", "enabled": "maybe"},
        {"kind": "email", "target": "a" * 5000},
    ):
        answer = client.post(_page_url(tenant), data)
        assert answer.status_code == 400, data
    assert not NotificationChannel.objects.exists()


@pytest.mark.usefixtures("loopback_allowed")
def test_send_test_alert_shows_the_receivers_answer_inline(
    tenant: Tenant, make_receiver: Callable[[], Receiver], make_user: Callable[..., Any]
) -> None:
    client = _admin_client(tenant, make_user)
    working, broken = make_receiver(), make_receiver()
    working.answer = b'{"received": true}'
    broken.default, broken.answer = 410, b"no_service"
    for receiver, kind in ((working, "webhook"), (broken, "slack")):
        channel, _ = make_channel(tenant, receiver.url, kind=kind)
        url = reverse(
            "capi_destinations:alert_channel_test",
            kwargs={"tenant_slug": tenant.slug, "channel": channel.code},
        )
        answer = client.post(url, HTTP_HX_REQUEST="true")
        assert answer.status_code == 200
        fragment = answer.content.decode()
        assert len(receiver.requests) == 1
        if kind == "webhook":
            assert receiver.requests[0].json["kind"] == "test"
        if receiver is working:
            assert 'data-ok="true"' in fragment
            assert 'HTTP <span data-testid="test-alert-status">200</span>' in fragment
            assert "{&quot;received&quot;: true}" in fragment
        else:
            assert 'data-ok="false"' in fragment
            assert "The receiver answered 410." in fragment
            assert "no_service" in fragment
    # A test alert is sent once: never retried, never counted as waiting.
    assert AlertDelivery.objects.filter(status=AlertDeliveryStatus.PENDING).count() == 0
    assert tasks.deliver_due_alerts() == 0


@pytest.mark.usefixtures("loopback_allowed")
def test_the_page_shows_each_attempt_with_its_status_error_and_duration(
    destination: Destination,
    receiver: Receiver,
    make_user: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver.default = 503
    answering, _ = make_channel(destination.tenant, receiver.url)
    unreachable, _ = make_channel(
        destination.tenant, f"http://127.0.0.1:{_closed_port()}/hooks", kind="slack"
    )
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    durations = {attempt.channel_id: attempt.duration_ms for attempt in AlertAttempt.objects.all()}

    page = _admin_client(destination.tenant, make_user).get(_page_url(destination.tenant))
    html = page.content.decode()

    def attempts_of(channel: NotificationChannel) -> str:
        row = html.split(f'data-name="{channel.name}"', 1)[1]
        return row.split('data-testid="channel-attempts"', 1)[1].split("</ul>", 1)[0]

    shown = attempts_of(answering)
    assert "HTTP 503" in shown
    assert "The receiver answered 503." in shown
    assert f"· {durations[answering.pk]} ms" in shown
    shown = attempts_of(unreachable)
    assert "HTTP" not in shown
    assert "Could not connect to 127.0.0.1." in shown
    assert f"· {durations[unreachable.pk]} ms" in shown


@pytest.mark.usefixtures("loopback_allowed")
def test_the_alerts_page_reads_a_fixed_number_of_queries(
    tenant: Tenant,
    destination: Destination,
    receiver: Receiver,
    make_user: Callable[..., Any],
    django_assert_num_queries: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    client = _admin_client(tenant, make_user)
    url = _page_url(tenant)

    def queries_for_page() -> int:
        client.get(url)  # warm the session
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    make_channel(tenant, receiver.url)
    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    few = queries_for_page()
    for _ in range(4):
        make_channel(tenant, receiver.url, kind="slack")
    for _ in range(3):
        raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    assert queries_for_page() == few
    with django_assert_num_queries(few):
        client.get(url)


def test_deleting_a_channel_takes_its_waiting_alerts(
    tenant: Tenant, make_user: Callable[..., Any], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    channel, _ = make_channel(tenant, "ops@agency.example", kind="email")
    AlertDelivery.objects.create(channel=channel, kind="health", payload={})
    client = _admin_client(tenant, make_user)
    url = reverse(
        "capi_destinations:alert_channel_delete",
        kwargs={"tenant_slug": tenant.slug, "channel": channel.code},
    )
    assert client.post(url).status_code == 302
    assert not NotificationChannel.objects.exists()
    assert not AlertDelivery.objects.exists()


# --- claims, leases, retention, checks -----------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
def test_a_delivery_is_claimed_by_one_worker_only_and_a_lost_lease_is_taken_back(
    destination: Destination, receiver: Receiver, clock: Any
) -> None:
    channel, _ = make_channel(destination.tenant, receiver.url)
    delivery = AlertDelivery.objects.create(
        channel=channel, kind="health", payload={"kind": "health"}, next_attempt_at=clock.now()
    )
    first = alert_delivery._claim(delivery.pk, clock.now())
    assert first is not None
    assert alert_delivery._claim(delivery.pk, clock.now()) is None
    assert run_delivery() == 0  # claimed and leased: nobody else sends it
    assert receiver.requests == []

    # The worker died holding it: past the lease, the next run sends it, once.
    clock.advance(alert_delivery.LEASE + timedelta(seconds=1))
    assert run_delivery() == 1
    assert run_delivery() == 0
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert delivery.status == AlertDeliveryStatus.SENT
    # The dead worker's late outcome is not written over the new one.
    _, stale_lease = first
    late = AlertAttempt(delivery=delivery, channel=channel, started_at=clock.now(), error="late")
    assert not alert_delivery._record(delivery, late, stale_lease)
    delivery.refresh_from_db()
    assert delivery.status == AlertDeliveryStatus.SENT
    assert AlertAttempt.objects.filter(error="late").count() == 1  # it happened: kept


@pytest.mark.usefixtures("loopback_allowed")
def test_a_disabled_channel_keeps_its_alerts_waiting(
    destination: Destination, receiver: Receiver, clock: Any
) -> None:
    channel, _ = make_channel(destination.tenant, receiver.url)
    AlertDelivery.objects.create(
        channel=channel, kind="health", payload={"kind": "health"}, next_attempt_at=clock.now()
    )
    alerts.update_channel(channel, enabled=False)
    assert run_delivery() == 0
    assert AlertDelivery.objects.get().status == AlertDeliveryStatus.PENDING
    alerts.update_channel(channel, enabled=True)
    assert run_delivery() == 1
    assert len(receiver.requests) == 1


@pytest.mark.usefixtures("loopback_allowed")
def test_a_switched_off_channels_alerts_fail_unsent_past_the_retry_bound(
    destination: Destination, receiver: Receiver, clock: Any
) -> None:
    channel, _ = make_channel(destination.tenant, receiver.url)
    stale = AlertDelivery.objects.create(
        channel=channel, kind="health", payload={"kind": "health"}, next_attempt_at=clock.now()
    )
    alerts.update_channel(channel, enabled=False)
    clock.advance(timedelta(seconds=float(app_settings.ALERT_RETRY_FOR_SECONDS) + 1))
    recent = AlertDelivery.objects.create(
        channel=channel, kind="health", payload={"kind": "health"}, next_attempt_at=clock.now()
    )

    assert run_delivery() == 0
    stale.refresh_from_db()
    assert (stale.status, stale.attempts) == (AlertDeliveryStatus.FAILED, 0)
    alerts.update_channel(channel, enabled=True)
    assert run_delivery() == 1
    # Switched on again: the alert still inside its bound goes out, the stale one never.
    assert len(receiver.requests) == 1
    recent.refresh_from_db()
    assert recent.status == AlertDeliveryStatus.SENT


@pytest.mark.usefixtures("loopback_allowed")
def test_a_switched_off_channels_waiting_alerts_never_hold_back_anothers(
    destination: Destination, make_receiver: Callable[[], Receiver], clock: Any
) -> None:
    off_receiver, on_receiver = make_receiver(), make_receiver()
    off, _ = make_channel(destination.tenant, off_receiver.url)
    on, _ = make_channel(destination.tenant, on_receiver.url)
    for _ in range(3):  # due first, and more of them than one run takes
        AlertDelivery.objects.create(
            channel=off, kind="health", payload={}, next_attempt_at=clock.now()
        )
    alerts.update_channel(off, enabled=False)
    clock.advance(timedelta(minutes=1))
    AlertDelivery.objects.create(
        channel=on, kind="health", payload={"kind": "health"}, next_attempt_at=clock.now()
    )

    assert alert_delivery.deliver_due(limit=2) == 1

    assert (len(off_receiver.requests), len(on_receiver.requests)) == (0, 1)


def test_old_sent_and_failed_alerts_are_purged_and_waiting_ones_kept(
    tenant: Tenant, clock: Any, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    channel, _ = make_channel(tenant, "ops@agency.example", kind="email")
    for status in AlertDeliveryStatus.values:
        delivery = AlertDelivery.objects.create(
            channel=channel, kind="health", payload={}, status=status, created_at=clock.now()
        )
        AlertAttempt.objects.create(delivery=delivery, channel=channel, started_at=clock.now())
    AlertDelivery.objects.create(channel=channel, kind="health", payload={}, status="sent")
    clock.advance(timedelta(days=int(app_settings.RETENTION_DAYS) + 1))
    AlertDelivery.objects.create(channel=channel, kind="health", payload={}, status="sent")

    purged = tasks.purge_old_records()

    assert purged["alert_deliveries"] == 3  # sent and failed ones past retention
    left = sorted(AlertDelivery.objects.values_list("status", flat=True))
    assert left == ["pending", "sending", "sent"]
    assert AlertAttempt.objects.count() == 2


# Database access allowed: Django 6.1 runs checks that read the database in run_checks().
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ALERT_CONNECT_TIMEOUT", 0),
        ("ALERT_RETRY_BASE_SECONDS", 0),
        ("ALERT_RETRY_FOR_SECONDS", 0),
        ("ALERT_HEALTH_SETTLE_SECONDS", -1),
    ],
)
def test_a_bad_alert_number_setting_is_a_system_check_error(
    key: str, value: int, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {key: value}
    errors = [error for error in run_checks() if error.id == "capi_destinations.E009"]
    assert [key in error.msg for error in errors] == [True]


def test_a_long_reason_is_cut_to_what_slack_takes(destination: Destination) -> None:
    payload = alert_delivery.alert_payload(
        destination.tenant, destination, kind="failure_rate", raised=True, reason="x" * 5000, fix=""
    )
    message = alert_delivery.slack_message(payload)
    assert len(message["text"]) == alert_delivery.SLACK_TEXT_LIMIT
    sections = [block for block in message["blocks"] if block["type"] == "section"]
    assert [len(block["text"]["text"]) for block in sections if "text" in block] == [3000]
    # No SITE_URL: the page's path alone, and no button Slack would refuse.
    assert payload["url"] == f"/capi/d/{destination.code}/"
    assert all(block["type"] != "actions" for block in message["blocks"])


# --- the demo's example receiver ----------------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
def test_the_example_receiver_verifies_the_signature_of_a_test_alert(tenant: Tenant) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "alert_receiver.py"
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/"
    channel, secret = make_channel(tenant, url)
    with subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--secret", secret],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert "Waiting for alerts" in process.stdout.readline()  # listening now
            attempt = alerts.send_test_alert(channel)
            assert (attempt.ok, attempt.answer) == (True, "signature OK")
            channel.signing_secret = "whsec_another"  # in memory only: the receiver refuses it
            attempt = alert_delivery.send_test_alert(channel)
            assert attempt.answer == "BAD signature"
        finally:
            process.terminate()


def test_the_admin_changes_a_channel_through_the_service_and_never_shows_its_secret(
    tenant: Tenant, make_user: Callable[..., Any], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    channel, secret = make_channel(tenant, "http://127.0.0.1:9/hook")
    client = Client()
    client.force_login(make_user(None, is_staff=True, is_superuser=True))
    url = reverse("admin:capi_destinations_notificationchannel_change", args=[channel.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert secret not in page.content.decode()
    saved = client.post(
        url,
        {"name": "Renamed", "target": "http://127.0.0.1:9/other", "alert_kinds": ["health"]},
    )
    assert saved.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.kind, channel.enabled) == ("Renamed", "webhook", False)
    assert channel.signing_secret == secret
    refused = client.post(url, {"name": "Renamed", "target": "ftp://x", "alert_kinds": []})
    assert refused.status_code == 200
    assert b"errornote" in refused.content
    add = reverse("admin:capi_destinations_notificationchannel_add")
    assert client.get(add).status_code == 403  # added on the page, which shows the secret once


@pytest.mark.django_db(transaction=True)
def test_workers_running_at_once_send_each_alert_once(
    tenant: Tenant, make_receiver: Callable[[], Receiver], clock: Any, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = LOOPBACK_ALLOWED
    receivers = [make_receiver() for _ in range(3)]
    for receiver in receivers:
        channel, _ = make_channel(tenant, receiver.url)
        AlertDelivery.objects.bulk_create(
            AlertDelivery(channel=channel, kind="health", payload={}, next_attempt_at=clock.now())
            for _ in range(15)
        )

    tried = run_in_threads(4, alert_delivery.deliver_due)

    assert sum(tried) == 45
    assert [len(receiver.requests) for receiver in receivers] == [15, 15, 15]
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert AlertAttempt.objects.count() == 45


@pytest.mark.usefixtures("loopback_allowed")
def test_a_new_signing_secret_is_shown_once_and_signs_from_then_on(
    destination: Destination,
    receiver: Receiver,
    make_user: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    channel, old = make_channel(destination.tenant, receiver.url)
    client = _admin_client(destination.tenant, make_user)
    url = reverse(
        "capi_destinations:alert_channel_secret",
        kwargs={"tenant_slug": "acme", "channel": channel.code},
    )
    answer = client.post(url)
    channel.refresh_from_db()
    new = str(channel.signing_secret)
    assert new != old
    assert new in answer.content.decode()
    assert new not in client.get(_page_url(destination.tenant)).content.decode()

    raise_traffic_alert(destination, django_capture_on_commit_callbacks)
    got = receiver.requests[0]
    assert verify_signature(new, got.headers, got.body)
    assert not verify_signature(old, got.headers, got.body)

    email, _ = make_channel(destination.tenant, "ops@agency.example", kind="email")
    refused = client.post(
        reverse(
            "capi_destinations:alert_channel_secret",
            kwargs={"tenant_slug": "acme", "channel": email.code},
        )
    )
    assert refused.status_code == 302
    email.refresh_from_db()
    assert email.signing_secret == ""


@pytest.mark.usefixtures("loopback_allowed")
def test_channel_changes_are_audited_without_addresses_or_secrets(
    tenant: Tenant, receiver: Receiver, make_user: Callable[..., Any]
) -> None:
    client = _admin_client(tenant, make_user)
    client.post(
        _page_url(tenant),
        {"name": "Ops", "kind": "webhook", "target": receiver.url, "alert_kinds": ["health"]},
    )
    channel = NotificationChannel.objects.get()
    kwargs = {"tenant_slug": tenant.slug, "channel": channel.code}
    client.post(
        reverse("capi_destinations:alert_channel_edit", kwargs=kwargs),
        {"name": "Ops", "kind": "webhook", "target": receiver.url + "/v2", "enabled": "on"},
    )
    client.post(reverse("capi_destinations:alert_channel_secret", kwargs=kwargs))
    secret = str(NotificationChannel.objects.get().signing_secret)
    client.post(reverse("capi_destinations:alert_channel_delete", kwargs=kwargs))

    entries = list(alerts.channel_history(tenant))
    assert [entry.action for entry in reversed(entries)] == [
        "channel_added",
        "channel_changed",
        "channel_secret",
        "channel_deleted",
    ]
    assert entries[2].detail == {
        "channel": "Ops",
        "kind": "Webhook",
        "changed": ["target", "alert_kinds", "enabled"],
    }
    assert {entry.actor for entry in entries} == {entries[0].actor}
    assert entries[0].actor is not None
    page = client.get(_page_url(tenant)).content.decode()
    assert page.count('data-testid="channel-change"') == 4
    assert "Alert channel&#x27;s signing secret replaced" in page
    assert receiver.url not in page
    assert secret not in page
