"""Token secrecy across the whole product.

One known token is stored on several destinations (one of them with an app secret, so requests
carry an ``appsecret_proof``). Everything that can show or keep text is then searched for the
token, its first 20 characters, the proof and the app secret: every page and HTMX fragment
(every URL the app registers, walked from the resolver), form pages re-rendered with errors,
JSON answers of the ingest endpoint, every admin page (list, add, change, history, delete
confirmation), forced error pages and the error reports Django mails to ``ADMINS``, every log
record at DEBUG level, and the raw rows of every database table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import django
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils.log import AdminEmailHandler
from django_q.models import OrmQ, Schedule, Task

import capi_destinations
from capi_destinations import (
    destinations,
    digest,
    dispatch,
    graph,
    health,
    invitations,
    match_quality,
    signals,
)
from capi_destinations.models import (
    DeliveryAttempt,
    Destination,
    Event,
    HealthCheck,
    ImportRun,
    ImportStatus,
    MatchQualityReport,
    Membership,
    NotificationChannel,
    Role,
    Tenant,
)
from tests.conftest import make_token
from tests.test_isolation import admin_routes, app_routes

SECRET_TOKEN = make_token("the-secret-under-test")
APP_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PIXEL_IDS = ("1111111111111111", "2222222222222222", "3333333333333333")
# A notification channel's webhook signing secret: the app keeps it (encrypted) to sign with.
CHANNEL_SECRET = "whsec_the-channel-secret-under-test-0123456789"


def forbidden_strings(now_seconds: int) -> dict[str, str]:
    """What must never be shown or kept, by name (the proof in both of Meta's forms)."""
    return {
        "the token": SECRET_TOKEN,
        "the token's first 20 characters": SECRET_TOKEN[:20],
        "the appsecret_proof": graph.appsecret_proof(SECRET_TOKEN, APP_SECRET),
        "the timed appsecret_proof": graph.appsecret_proof(
            SECRET_TOKEN, APP_SECRET, at=now_seconds
        ),
        "the app secret": APP_SECRET,
        "the channel's signing secret": CHANNEL_SECRET,
    }


@dataclass
class SecretWorld:
    tenant: Tenant
    destinations: list[Destination]
    admin_user: Any
    superuser: Any
    forbidden: dict[str, str]

    def assert_clean(self, text: str, where: str) -> None:
        """Fail naming what leaked and where."""
        for label, secret in self.forbidden.items():
            assert secret not in text, f"{label} appears in {where}"


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger, at DEBUG level, with tracebacks."""
    caplog.set_level(logging.DEBUG)
    for name in ("capi_destinations", "urllib3", "django", "django_q"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """The formatted records (with tracebacks) and their raw arguments."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


def database_text() -> Iterator[tuple[str, str]]:
    """(where, text) for every row of every table, and for encoded session and task data."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                values = [
                    bytes(value).decode("latin-1")
                    if isinstance(value, bytes | memoryview)
                    else str(value)
                    for value in row
                ]
                yield table, "\t".join(values)
    # Sessions and django-q2's pickled task arguments are encoded: read them decoded too.
    store = SessionStore()
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_data FROM django_session")
        for (data,) in cursor.fetchall():
            yield "django_session (decoded)", repr(store.decode(data))
    for task in Task.objects.all():
        yield "django_q_task (unpickled)", repr((task.args, task.kwargs, task.result))
    for queued in OrmQ.objects.all():
        yield "django_q_ormq (unpickled)", repr(queued.task)
    for schedule in Schedule.objects.all():
        yield "django_q_schedule", repr((schedule.args, schedule.kwargs))


def assert_database_clean(world: SecretWorld) -> None:
    rows = 0
    for where, text in database_text():
        world.assert_clean(text, f"a raw row of {where}")
        rows += 1
    assert rows > 0


def purchase(event_id: str, when: Any) -> dict[str, Any]:
    """A browser purchase with customer details, as a developer would record it."""
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_time": int(when.timestamp()),
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "email": "jane.doe@example.com",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "client_ip_address": "203.0.113.7",
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


@pytest.fixture
def secret_world(
    clock: Any,
    use_sandbox: Any,
    tenant: Tenant,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    captured_logs: pytest.LogCaptureFixture,
) -> SecretWorld:
    """Three destinations sharing the token, with a history of checks, deliveries and errors."""
    sandbox = use_sandbox
    stored = []
    for number, pixel_id in enumerate(PIXEL_IDS):
        app_secret = APP_SECRET if number == 0 else ""
        sandbox.register_pixel(pixel_id, f"Pixel {number}", [SECRET_TOKEN], app_secret=app_secret)
        destination = make_destination(
            name=f"Shared token pixel {number}",
            pixel_id=pixel_id,
            access_token=SECRET_TOKEN,
            app_secret=app_secret,
            allowed_origins="https://shop.example.com",
            test_event_code="TEST123" if number == 2 else "",
        )
        destination.set_ingest_secret()
        destination.save()
        stored.append(destination)
    NotificationChannel.objects.create(
        tenant=tenant,
        kind="webhook",
        name="Ops webhook",
        target="https://hooks.example.com/capi",
        alert_kinds=["health"],
        signing_secret=CHANNEL_SECRET,
    )
    admin_user = make_user(tenant, Role.ADMIN)
    superuser = make_user(None, is_staff=True, is_superuser=True)
    world = SecretWorld(
        tenant=tenant,
        destinations=stored,
        admin_user=admin_user,
        superuser=superuser,
        forbidden=forbidden_strings(int(clock.now().timestamp())),
    )
    # A history for the pages to show: checks, deliveries, a test event, Meta's refusals.
    for destination in stored:
        health.check_destination(destination)
        for index in range(3):
            capi_destinations.track(destination, purchase(f"ok-{index}", clock.now()))
        destinations.send_test_event(destination, actor=admin_user, test_event_code="TEST1")
    dispatch.dispatch_pending()
    # Meta's error message quoting the token, and a proxy's HTML page echoing the request.
    sandbox.answer_error(
        190, message=f"Invalid OAuth access token {SECRET_TOKEN}", status=400, times=1
    )
    sandbox.answer_next(
        status=502,
        text=f"<html><body>Bad gateway for access_token={SECRET_TOKEN}&appsecret_proof="
        f"{world.forbidden['the appsecret_proof']}</body></html>",
        times=2,
    )
    for destination in stored:
        capi_destinations.track(destination, purchase("refused-1", clock.now()))
    dispatch.dispatch_pending()
    # The token is revoked: checks and deliveries now fail with Meta's reasons.
    sandbox.revoke(SECRET_TOKEN)
    clock.advance(timedelta(minutes=30))
    for destination in stored:
        destination.refresh_from_db()
        capi_destinations.track(destination, purchase("after-revoke-1", clock.now()))
        health.check_destination(destination)
    dispatch.dispatch_pending()
    assert DeliveryAttempt.objects.exclude(error_message="").exists()
    assert HealthCheck.objects.filter(status="unhealthy").exists()
    return world


def admin_client(world: SecretWorld, *, superuser: bool = False) -> Client:
    client = Client()
    client.force_login(world.superuser if superuser else world.admin_user)
    return client


def app_urls(world: SecretWorld) -> list[str]:
    """A URL for every app route, for each destination (and its events)."""
    urls = []
    member = Membership.objects.filter(tenant=world.tenant).select_related("user").first()
    assert member is not None
    invitation, invitation_token = invitations.invite(
        world.tenant, "invited@example.com", "viewer", actor=world.admin_user
    )
    for route in app_routes():
        for destination in world.destinations:
            values = {
                "tenant_slug": world.tenant.slug,
                "code": str(destination.code),
                "username": member.user.get_username(),
                "ingest_key": destination.ingest_key,
                "channel": str(NotificationChannel.objects.get(tenant=world.tenant).code),
                "invitation_code": str(invitation.code),
                "token": invitation_token,
                "signature": digest.unsubscribe_token(member.user),
                "run": str(_import_run(destination).code),
            }
            for event in destination.events.all()[:3]:
                # An event's own address names it; the others ignore the event's pk.
                kwargs = {
                    name: str(event.pk) if name == "event_pk" else values[name]
                    for name in route.parameters
                }
                base = reverse(f"capi_destinations:{route.name}", kwargs=kwargs)
                urls.append(f"{base}?event_name={event.event_name}&event_id={event.event_id}")
                urls.append(f"{base}?status=failed")
            if "event_pk" not in route.parameters:
                kwargs = {name: values[name] for name in route.parameters}
                urls.append(f"{reverse(f'capi_destinations:{route.name}', kwargs=kwargs)}?q=")
    return sorted(set(urls))


def _import_run(destination: Destination) -> ImportRun:
    """A finished import of the destination, with a rejected row (its results page shows it)."""
    run, _ = ImportRun.objects.get_or_create(
        destination=destination,
        defaults={
            "file_name": "store-sales.csv",
            "status": ImportStatus.DONE,
            "rows_read": 2,
            "stored": 1,
            "rejected": 1,
            "rejected_rows": [{"line": 3, "reason": "No event time.", "columns": {}}],
        },
    )
    return run


# --- pages, fragments and forms ------------------------------------------------------------------


def test_no_page_or_fragment_shows_the_token(
    secret_world: SecretWorld, captured_logs: pytest.LogCaptureFixture
) -> None:
    client = admin_client(secret_world)
    fetched = 0
    for url in app_urls(secret_world):
        for headers in (
            {},
            {"HTTP_HX_REQUEST": "true"},
            {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "capi-cards"},
        ):
            response = client.get(url, **headers)
            assert response.status_code < 500, url
            # The CSV exports stream.
            body = b"".join(response.streaming_content) if response.streaming else response.content
            secret_world.assert_clean(body.decode(), f"GET {url} {headers}")
            fetched += 1
    assert fetched > 50
    secret_world.assert_clean(logged_text(captured_logs), "the logs")
    assert_database_clean(secret_world)


def test_forms_re_rendered_with_errors_never_echo_the_token(
    secret_world: SecretWorld, captured_logs: pytest.LogCaptureFixture
) -> None:
    client = admin_client(secret_world)
    destination = secret_world.destinations[0]
    code = {"code": destination.code}
    bad_pixel = {
        "name": "Broken",
        "pixel_id": "12",
        "access_token": SECRET_TOKEN,
        "app_secret": APP_SECRET,
        "consent_policy": "send_always",
        "missing_consent": "granted",
    }
    answers = {
        "add with a bad pixel id": client.post(
            reverse("capi_destinations:destination_add", kwargs={"tenant_slug": "acme"}),
            bad_pixel,
        ),
        "edit with a bad pixel id": client.post(
            reverse("capi_destinations:destination_edit", kwargs=code), bad_pixel
        ),
        "replace with a broken paste": client.post(
            reverse("capi_destinations:replace_token", kwargs=code),
            {"access_token": f"{SECRET_TOKEN[:100]} {SECRET_TOKEN[100:]}"},
        ),
        "check a revoked token": client.post(
            reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": "acme"}),
            {"pixel_id": destination.pixel_id, "access_token": SECRET_TOKEN},
            HTTP_HX_REQUEST="true",
        ),
        "check the stored token": client.post(
            reverse("capi_destinations:destination_token_check", kwargs=code),
            {"pixel_id": destination.pixel_id, "access_token": ""},
            HTTP_HX_REQUEST="true",
        ),
        "check a cut token": client.post(
            reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": "acme"}),
            {"pixel_id": destination.pixel_id, "access_token": SECRET_TOKEN[:40] + "!"},
            HTTP_HX_REQUEST="true",
        ),
    }
    for what, response in answers.items():
        assert response.status_code == 200, what
        secret_world.assert_clean(response.content.decode(), what)
    # The forms really did refuse (else this test would prove nothing about error pages).
    assert "pixel_id" in answers["add with a bad pixel id"].context["form"].errors
    assert "access_token" in answers["replace with a broken paste"].context["form"].errors
    assert Destination.objects.filter(tenant=secret_world.tenant).count() == len(PIXEL_IDS)
    secret_world.assert_clean(logged_text(captured_logs), "the logs")


def test_a_working_token_check_and_a_test_event_show_no_token(
    secret_world: SecretWorld, use_sandbox: Any, captured_logs: pytest.LogCaptureFixture
) -> None:
    use_sandbox.register_pixel("4444444444444444", "Fresh pixel", [make_token("fresh")])
    client = admin_client(secret_world)
    check = client.post(
        reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": "acme"}),
        {"pixel_id": "4444444444444444", "access_token": make_token("fresh")},
        HTTP_HX_REQUEST="true",
    )
    assert "Fresh pixel" in check.content.decode()
    destination = secret_world.destinations[1]
    sent = client.post(
        reverse("capi_destinations:send_test_event", kwargs={"code": destination.code}),
        {"test_event_code": "TEST1"},
        HTTP_HX_REQUEST="true",
    )
    assert sent.status_code == 200
    for what, response in (("token check", check), ("test event", sent)):
        secret_world.assert_clean(response.content.decode(), what)
    secret_world.assert_clean(logged_text(captured_logs), "the logs")
    assert_database_clean(secret_world)


# --- JSON answers ----------------------------------------------------------------------------


def test_json_answers_of_the_ingest_endpoint_show_no_token(
    secret_world: SecretWorld, clock: Any, captured_logs: pytest.LogCaptureFixture
) -> None:
    client = Client()
    for destination in secret_world.destinations:
        url = reverse(
            "capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}
        )
        secret = destination.set_ingest_secret()
        destination.save()
        bodies = [
            json.dumps({"data": [purchase("json-1", clock.now()), {"event_name": 7}]}),
            json.dumps(purchase("json-1", clock.now())),
            "{not json",
            json.dumps([1, 2, 3]),
        ]
        for body in bodies:
            for auth in (f"Bearer {secret}", "Bearer wrong", "Basic abc"):
                response = client.post(
                    url, body, content_type="application/json", HTTP_AUTHORIZATION=auth
                )
                assert response["Content-Type"].startswith("application/json")
                secret_world.assert_clean(response.content.decode(), f"ingest answer {auth}")
        preflight = client.options(url, HTTP_ORIGIN="https://shop.example.com")
        secret_world.assert_clean(str(preflight.headers), "preflight headers")
    secret_world.assert_clean(logged_text(captured_logs), "the logs")
    assert_database_clean(secret_world)


# --- the admin -------------------------------------------------------------------------------


def _admin_objects(world: SecretWorld) -> dict[str, Any]:
    destination = world.destinations[0]
    return {
        "tenant": world.tenant,
        "membership": Membership.objects.filter(tenant=world.tenant).first(),
        "destination": destination,
        "event": Event.objects.filter(destination=destination).exclude(status_reason="").first(),
        "deliveryattempt": DeliveryAttempt.objects.exclude(error_message="").first(),
        "healthcheck": HealthCheck.objects.filter(status="unhealthy").first(),
        "auditentry": destination.audit_entries.first(),
        "notificationchannel": NotificationChannel.objects.get(tenant=world.tenant),
        "importrun": _import_run(destination),
    }


def test_no_admin_page_shows_the_token(
    secret_world: SecretWorld, captured_logs: pytest.LogCaptureFixture
) -> None:
    client = admin_client(secret_world, superuser=True)
    objects = _admin_objects(secret_world)
    destination = secret_world.destinations[0]
    change_url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    # A change refused for a bad field re-renders the form with the pasted token and secret.
    refused = client.post(
        change_url,
        {
            "name": destination.name,
            "pixel_id": "not digits",
            "access_token": SECRET_TOKEN,
            "app_secret": APP_SECRET,
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert refused.status_code == 200
    assert b"errornote" in refused.content
    secret_world.assert_clean(refused.content.decode(), "a refused admin change")
    # An accepted change puts a history entry in place for the history page below.
    accepted = client.post(
        change_url,
        {
            "name": "Renamed in the admin",
            "pixel_id": destination.pixel_id,
            "access_token": SECRET_TOKEN,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
            "allowed_origins": "",
        },
    )
    assert accepted.status_code == 302
    added = client.post(
        reverse("admin:capi_destinations_destination_add"),
        {
            "tenant": secret_world.tenant.pk,
            "name": "Added in the admin",
            "pixel_id": "5555555555555555",
            "access_token": SECRET_TOKEN,
            "app_secret": APP_SECRET,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert added.status_code == 200
    secret_world.assert_clean(added.content.decode(), "the admin's page after adding")
    fetched = 0
    for name, parameters in admin_routes():
        model_name = name.removeprefix("capi_destinations_").rsplit("_", 1)[0]
        kwargs = {"object_id": str(objects[model_name].pk)} if "object_id" in parameters else {}
        url = reverse(f"admin:{name}", kwargs=kwargs)
        # A search for "EAA" must not find the token (it is encrypted) nor show it.
        for query in ("", "?q=EAA"):
            response = client.get(url + query)
            assert response.status_code in (200, 302, 403), (name, response.status_code)
            secret_world.assert_clean(response.content.decode(), f"admin {name}{query}")
            fetched += 1
    assert fetched >= 25
    secret_world.assert_clean(logged_text(captured_logs), "the logs")
    assert_database_clean(secret_world)


# --- error pages and error reports ------------------------------------------------------------


def _failing_receiver(**kwargs: Any) -> None:
    # A host site's receiver that breaks: the request carrying the token ends in a 500.
    raise RuntimeError("a receiver of the host site failed")


@pytest.fixture
def html_error_mails() -> Iterator[None]:
    """Also mail the HTML report, whose tracebacks show every frame's local variables."""
    handler = AdminEmailHandler(include_html=True)
    request_logger = logging.getLogger("django.request")
    request_logger.addHandler(handler)
    yield
    request_logger.removeHandler(handler)


@pytest.fixture
def broken_receiver() -> Iterator[None]:
    signals.destination_token_replaced.connect(_failing_receiver, dispatch_uid="secrecy-500")
    yield
    signals.destination_token_replaced.disconnect(dispatch_uid="secrecy-500")


def test_error_pages_and_error_reports_never_show_the_token(
    secret_world: SecretWorld,
    broken_receiver: None,
    html_error_mails: None,
    settings: Any,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    # Django 6.0 takes plain addresses and deprecates (name, address) pairs; 5.2 needs pairs.
    settings.ADMINS = (
        ["ops@example.com"] if django.VERSION >= (6, 0) else [("Operations", "ops@example.com")]
    )
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(secret_world.admin_user)
    destination = secret_world.destinations[1]
    code = {"code": destination.code}
    new_token = {"access_token": make_token("pasted-while-it-broke")}
    failures = {
        "a page's token replacement": client.post(
            reverse("capi_destinations:replace_token", kwargs=code),
            {"access_token": SECRET_TOKEN + "X"},
        ),
    }
    superuser = Client(raise_request_exception=False)
    superuser.force_login(secret_world.superuser)
    failures["an admin change"] = superuser.post(
        reverse("admin:capi_destinations_destination_change", args=[destination.pk]),
        {
            "name": destination.name,
            "pixel_id": destination.pixel_id,
            "access_token": SECRET_TOKEN[:-1] + "Z",
            "app_secret": APP_SECRET,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    for what, response in failures.items():
        assert response.status_code == 500, what
        secret_world.assert_clean(response.content.decode(), f"the 500 page of {what}")
    # The pasted tokens were near-copies of the secret; the reports must hold neither.
    pasted = {SECRET_TOKEN + "X", SECRET_TOKEN[:-1] + "Z", new_token["access_token"]}
    # Django's own text report and the HTML one, for each failure.
    assert len(mail.outbox) == 2 * len(failures)
    for message in mail.outbox:
        report = message.body + "".join(str(part[0]) for part in message.alternatives)
        secret_world.assert_clean(report, f"the error report {message.subject!r}")
        for token in pasted:
            assert token not in report, f"a pasted token appears in {message.subject!r}"
    other_errors = {
        "404": client.get(
            reverse(
                "capi_destinations:destination",
                kwargs={"code": "00000000-0000-4000-8000-000000000000"},
            )
        ),
        "405": client.get(reverse("capi_destinations:check_now", kwargs=code)),
    }
    for what, response in other_errors.items():
        assert response.status_code == int(what)
        secret_world.assert_clean(response.content.decode(), f"the {what} page")
    logs = logged_text(captured_logs)
    secret_world.assert_clean(logs, "the logs")
    for token in pasted:
        assert token not in logs


def test_reprs_and_strings_of_what_holds_the_token_are_clean(
    secret_world: SecretWorld,
) -> None:
    destination = Destination.objects.get(pk=secret_world.destinations[0].pk)
    texts = [repr(destination), str(destination), repr(destination.__dict__.get("token_hint"))]
    check = destinations.check_token(destination.pixel_id, SECRET_TOKEN)
    texts += [repr(check), str(check)]
    try:
        graph.send_events(destination, [purchase("repr-1", destination.created_at)])
    except graph.GraphError as error:
        texts += [repr(error), str(error), repr(error.to_record()), repr(error.__dict__)]
    else:  # pragma: no cover - the token is revoked in this world
        pytest.fail("a revoked token must be refused")
    channel = NotificationChannel.objects.get(tenant=secret_world.tenant)
    assert channel.signing_secret == CHANNEL_SECRET  # kept, to sign with
    texts += [repr(channel), str(channel)]
    for text in texts:
        secret_world.assert_clean(text, "a repr")


def test_fetching_metas_match_quality_shows_and_keeps_no_secret(
    clock: Any,
    use_sandbox: Any,
    make_destination: Callable[..., Destination],
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    """Issue 18: the Dataset Quality read, answered, refused and failed, leaks nothing."""
    sandbox = use_sandbox
    forbidden = forbidden_strings(int(clock.now().timestamp()))
    destination = make_destination(
        pixel_id=PIXEL_IDS[0], access_token=SECRET_TOKEN, app_secret=APP_SECRET
    )
    sandbox.register_pixel(PIXEL_IDS[0], "Pixel", [SECRET_TOKEN], app_secret=APP_SECRET)
    capi_destinations.track(destination, purchase("emq-1", clock.now()))
    dispatch.dispatch_pending()

    texts = [repr(match_quality.fetch_match_quality(destination))]
    sandbox.answer_next(
        status=400,
        method="GET",
        error={
            "message": f"(#10) No access for {SECRET_TOKEN}",
            "type": "OAuthException",
            "code": 10,
        },
    )
    texts.append(repr(match_quality.fetch_match_quality(destination)))
    sandbox.answer_next(
        status=502, method="GET", text=f"<html>Bad gateway access_token={SECRET_TOKEN}</html>"
    )
    texts.append(repr(match_quality.fetch_match_quality(destination)))
    try:
        sandbox.answer_next(status=400, method="GET", error={"message": SECRET_TOKEN, "code": 10})
        graph.get_dataset_quality(destination)
    except graph.GraphError as error:
        texts += [repr(error), str(error), repr(error.__dict__)]
    request_log = repr(sandbox.requests())

    assert MatchQualityReport.objects.get(destination=destination).status == "not_available"
    assert any(request["path"].endswith("/dataset_quality") for request in sandbox.requests())
    for label, secret in forbidden.items():
        assert secret not in logged_text(captured_logs), f"{label} appears in the logs"
        assert secret not in request_log, f"{label} appears in the sandbox's request log"
        for text in texts:
            assert secret not in text, f"{label} appears in a repr"
        for where, row in database_text():
            assert secret not in row, f"{label} appears in a raw row of {where}"
