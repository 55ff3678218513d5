"""Django's error reports never show a token, its proof or the app secret.

An error report (the HTML mail to ``ADMINS``, the text one, Sentry-like tools built on it) prints
the local variables of every frame of the traceback. Each test here makes something really go
wrong while a token is held in local variables: an event Python cannot encode, a timeout or token
length setting of the wrong type, a Graph API nobody answers at. Then it renders Django's own
``ExceptionReporter`` as text and as HTML and searches both for the secrets. Each report must still
show the frames (so the test looks at a real report) with their variables hidden.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.test import Client, RequestFactory
from django.test.signals import template_rendered
from django.urls import reverse
from django.views.debug import ExceptionReporter

from capi_destinations import destinations, graph, health
from capi_destinations.models import Destination, Event, Role
from capi_destinations.signals import events_recorded
from tests.conftest import make_token

SECRET_TOKEN = make_token("error-report-secret")
PASTED_TOKEN = make_token("pasted-into-a-broken-form")
APP_SECRET = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
# What Django prints instead of a hidden variable.
HIDDEN = "********************"


def forbidden() -> dict[str, str]:
    """What no report may hold, by name."""
    return {
        "the token": SECRET_TOKEN,
        "the token's first 20 characters": SECRET_TOKEN[:20],
        "the appsecret_proof": graph.appsecret_proof(SECRET_TOKEN, APP_SECRET),
        "the app secret": APP_SECRET,
        "a pasted token": PASTED_TOKEN,
        "a pasted token's first 20 characters": PASTED_TOKEN[:20],
    }


@dataclass
class Report:
    text: str
    html: str

    def assert_clean(self) -> None:
        for label, secret in forbidden().items():
            assert secret not in self.text, f"{label} appears in the text report"
            assert secret not in self.html, f"{label} appears in the HTML report"

    def assert_shows(self, *function_names: str) -> None:
        """The frames are in the report, with variables hidden: it is a report worth reading."""
        for name in function_names:
            assert f"in {name}" in self.text, f"no frame of {name} in the report"
        # Only the HTML report lists each frame's local variables.
        assert HIDDEN in self.html


def report_of(request: Any, exc_info: Any) -> Report:
    """Django's error report of ``exc_info`` for ``request``, as mailed to ADMINS."""
    reporter = ExceptionReporter(request, *exc_info)
    return Report(text=reporter.get_traceback_text(), html=reporter.get_traceback_html())


def report_of_call(function: Callable[[], Any], expected: type[BaseException]) -> Report:
    """Call ``function``, which must fail with ``expected``, and report it as a view would."""
    request = RequestFactory().get("/capi/")
    try:
        function()
    except expected:
        return report_of(request, sys.exc_info())
    pytest.fail(f"{function} did not raise {expected.__name__}")


@pytest.fixture
def secret_destination(make_destination: Callable[..., Destination]) -> Destination:
    """A destination whose requests carry the token and an appsecret_proof."""
    return make_destination(access_token=SECRET_TOKEN, app_secret=APP_SECRET)


@pytest.fixture
def unanswered_url() -> str:
    """An address where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def configure(settings: Any, **values: Any) -> None:
    settings.CAPI_DESTINATIONS = {**(settings.CAPI_DESTINATIONS or {}), **values}


# --- the Graph client ------------------------------------------------------------------------


def test_an_event_python_cannot_encode_inside_send_events(secret_destination) -> None:
    # The JSON encoder's own frames hold the whole request body, token and proof included.
    event = {"event_name": "Purchase", "event_time": datetime(2026, 11, 24, tzinfo=UTC)}
    report = report_of_call(lambda: graph.send_events(secret_destination, [event]), TypeError)
    report.assert_clean()
    report.assert_shows("send_events", "_json_default")


def test_a_timeout_setting_of_the_wrong_type_inside_send_events(
    secret_destination, settings
) -> None:
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    report = report_of_call(
        lambda: graph.send_events(secret_destination, [{"event_name": "Purchase"}]), ValueError
    )
    report.assert_clean()
    report.assert_shows("send_events", "_request")


def test_a_graph_error_nobody_catches_from_send_events(
    secret_destination, settings, unanswered_url
) -> None:
    configure(settings, GRAPH_API_BASE_URL=unanswered_url)
    report = report_of_call(
        lambda: graph.send_events(secret_destination, [{"event_name": "Purchase"}]),
        graph.GraphError,
    )
    report.assert_clean()
    report.assert_shows("send_events", "_request")


def test_a_failure_inside_get_pixel(secret_destination, settings, unanswered_url) -> None:
    configure(settings, GRAPH_API_BASE_URL=unanswered_url)
    report = report_of_call(lambda: graph.get_pixel(secret_destination), graph.GraphError)
    report.assert_clean()
    report.assert_shows("get_pixel", "_request")

    configure(settings, GRAPH_READ_TIMEOUT="later")
    report = report_of_call(
        lambda: graph.get_pixel(secret_destination, access_token=PASTED_TOKEN), ValueError
    )
    report.assert_clean()
    report.assert_shows("get_pixel", "_request")


def test_a_failure_inside_appsecret_proof() -> None:
    report = report_of_call(
        lambda: graph.appsecret_proof(SECRET_TOKEN, None),  # type: ignore[arg-type]
        AttributeError,
    )
    report.assert_clean()
    report.assert_shows("appsecret_proof")


# --- health checks and the token check --------------------------------------------------------


def test_a_failure_inside_a_health_check(secret_destination, settings) -> None:
    # A token length read from the environment as text: the format check itself fails.
    configure(settings, TOKEN_MIN_LENGTH="100")
    report = report_of_call(lambda: health.check_destination(secret_destination), TypeError)
    report.assert_clean()
    report.assert_shows("probe_token", "clean_access_token")


def test_a_failure_while_a_health_check_asks_meta(secret_destination, settings) -> None:
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    report = report_of_call(lambda: health.check_destination(secret_destination), ValueError)
    report.assert_clean()
    report.assert_shows("probe_token", "get_pixel", "_request")


def test_a_failure_inside_the_token_check(secret_destination, settings) -> None:
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    report = report_of_call(
        lambda: destinations.check_token(
            secret_destination.pixel_id, PASTED_TOKEN, app_secret=APP_SECRET
        ),
        ValueError,
    )
    report.assert_clean()
    report.assert_shows("check_token", "get_pixel")


def test_a_failure_while_creating_a_destination(tenant, settings) -> None:
    configure(settings, TOKEN_MIN_LENGTH="100")
    report = report_of_call(
        lambda: destinations.create_destination(
            tenant,
            actor=None,
            name="Broken",
            pixel_id="1234567890123456",
            access_token=PASTED_TOKEN,
            app_secret=APP_SECRET,
        ),
        TypeError,
    )
    report.assert_clean()
    report.assert_shows("create_destination", "clean_access_token")


# --- the pages and the admin: a real request, reported the way Django reports it -------------


@pytest.fixture
def failed_requests() -> Iterator[list[Report]]:
    """The error report of every request that raises, built as Django's 500 handling does."""
    reports: list[Report] = []

    def on_exception(sender: Any, request: Any, **kwargs: Any) -> None:
        reports.append(report_of(request, sys.exc_info()))

    got_request_exception.connect(on_exception, dispatch_uid="test_error_reports")
    yield reports
    got_request_exception.disconnect(dispatch_uid="test_error_reports")


@pytest.fixture
def editor_client(make_user, tenant) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(make_user(tenant, Role.EDITOR))
    return client


def form_fields(**changes: str) -> dict[str, str]:
    fields = {
        "name": "Acme web pixel",
        "pixel_id": "1234567890123456",
        "access_token": PASTED_TOKEN,
        "app_secret": APP_SECRET,
        "enabled": "on",
        "consent_policy": "send_always",
        "missing_consent": "granted",
    }
    return {**fields, **changes}


def assert_one_clean_report(response: Any, reports: list[Report], *function_names: str) -> None:
    assert response.status_code == 500
    assert len(reports) == 1
    reports[0].assert_clean()
    reports[0].assert_shows(*function_names)


def test_the_add_form(editor_client, failed_requests, tenant, settings) -> None:
    configure(settings, TOKEN_MIN_LENGTH="100")
    url = reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})
    response = editor_client.post(url, form_fields())
    assert_one_clean_report(response, failed_requests, "destination_add", "clean_access_token")


def test_the_edit_form(editor_client, failed_requests, secret_destination, settings) -> None:
    configure(settings, TOKEN_MIN_LENGTH="100")
    url = reverse("capi_destinations:destination_edit", kwargs={"code": secret_destination.code})
    response = editor_client.post(url, form_fields(pixel_id=secret_destination.pixel_id))
    assert_one_clean_report(response, failed_requests, "destination_edit", "clean_access_token")


def test_the_replace_token_form(
    editor_client, failed_requests, secret_destination, settings
) -> None:
    configure(settings, TOKEN_MIN_LENGTH="100")
    url = reverse("capi_destinations:replace_token", kwargs={"code": secret_destination.code})
    response = editor_client.post(url, {"access_token": PASTED_TOKEN})
    assert_one_clean_report(response, failed_requests, "replace_token", "clean_access_token")


def test_the_token_check_of_the_add_form(editor_client, failed_requests, tenant, settings) -> None:
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    url = reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug})
    response = editor_client.post(
        url, {"pixel_id": "1234567890123456", "access_token": PASTED_TOKEN}
    )
    assert_one_clean_report(response, failed_requests, "tenant_token_check", "get_pixel")


def test_the_token_check_of_the_edit_form_with_the_stored_token(
    editor_client, failed_requests, secret_destination, settings
) -> None:
    # A blank token field checks the stored token: the view holds it in a local variable.
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    url = reverse(
        "capi_destinations:destination_token_check", kwargs={"code": secret_destination.code}
    )
    response = editor_client.post(url, {"pixel_id": "", "access_token": ""})
    assert_one_clean_report(response, failed_requests, "destination_token_check", "get_pixel")


@pytest.mark.parametrize("form_page", ["add", "change"])
def test_the_admin_destination_form(
    failed_requests, secret_destination, admin_user, settings, form_page
) -> None:
    configure(settings, TOKEN_MIN_LENGTH="100")
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    fields = form_fields(pixel_id="6543210987654321")
    if form_page == "add":
        url = reverse("admin:capi_destinations_destination_add")
        fields["tenant"] = str(secret_destination.tenant_id)
    else:
        url = reverse("admin:capi_destinations_destination_change", args=[secret_destination.pk])
    response = client.post(url, fields)
    assert_one_clean_report(response, failed_requests, "changeform_view", "clean_access_token")


# --- the ingest endpoint and the pages that show customer data (issue 14) ----------------------

CUSTOMER_EMAIL = "jane.customer@example.com"
CUSTOMER_PHONE = "(650) 555-0123"
SHOP = "https://shop.example.com"


def customer_forbidden(ingest_secret: str) -> dict[str, str]:
    return {
        "the ingest secret": ingest_secret,
        "the customer's email": CUSTOMER_EMAIL,
        "the customer's email, normalized": CUSTOMER_EMAIL.lower(),
        "the customer's phone": CUSTOMER_PHONE,
        "the customer's phone, digits": "6505550123",
    }


def assert_no_customer_data(report: Report, ingest_secret: str) -> None:
    for label, secret in customer_forbidden(ingest_secret).items():
        assert secret not in report.text, f"{label} appears in the text report"
        assert secret not in report.html, f"{label} appears in the HTML report"


@pytest.fixture
def shop_destination(make_destination: Callable[..., Destination]) -> tuple[Destination, str]:
    destination = make_destination(allowed_origins=SHOP)
    secret = destination.set_ingest_secret()
    destination.save()
    return destination, secret


def customer_event() -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": "order-1",
        "action_source": "website",
        "event_source_url": f"{SHOP}/checkout",
        "user_data": {
            "email": CUSTOMER_EMAIL,
            "phone": CUSTOMER_PHONE,
            "country": "us",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        },
        "custom_data": {"value": 20, "currency": "USD"},
    }


@pytest.fixture
def failing_receiver() -> Iterator[None]:
    """A host's receiver of ``events_recorded`` that fails: the request then fails inside
    ``track_many``, with the events (raw email and phone) and the secret in the frames above."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("the host's receiver failed")

    events_recorded.connect(receiver, dispatch_uid="test_error_reports_failing")
    yield
    events_recorded.disconnect(dispatch_uid="test_error_reports_failing")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("caller", ["server", "browser"])
def test_the_ingest_endpoint(
    transactional_db, failed_requests, failing_receiver, shop_destination, settings, debug, caller
) -> None:
    # Even the DEBUG error page hides them: the app's views install a filter that is always on.
    settings.DEBUG = debug
    destination, secret = shop_destination
    headers = (
        {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if caller == "server" else {"HTTP_ORIGIN": SHOP}
    )
    url = reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})
    response = Client(raise_request_exception=False).post(
        url, data=json.dumps([customer_event()]), content_type="application/json", **headers
    )
    assert response.status_code == 500, response.content
    assert len(failed_requests) == 1
    assert_no_customer_data(failed_requests[0], secret)
    failed_requests[0].assert_shows("ingest_events", "track_many")


@pytest.fixture
def failing_template() -> Iterator[Callable[[str], None]]:
    """``failing_template(name)``: rendering that template fails, as a broken template would,
    while the view's frame holds everything it passes to it."""
    names: list[str] = []

    def receiver(sender: Any, template: Any, **kwargs: Any) -> None:
        if template.name in names:
            raise RuntimeError(f"{template.name} failed")

    template_rendered.connect(receiver, dispatch_uid="test_error_reports_template")
    yield names.append
    template_rendered.disconnect(dispatch_uid="test_error_reports_template")


@pytest.mark.parametrize("debug", [False, True])
def test_the_event_detail_page(
    failed_requests, failing_template, editor_client, shop_destination, settings, debug
) -> None:
    destination, _ = shop_destination
    Client().post(
        reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}),
        data=json.dumps([customer_event()]),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {shop_destination[1]}",
    )
    settings.DEBUG = debug
    failing_template("capi_destinations/event_detail.html")
    url = reverse("capi_destinations:event_detail", kwargs={"code": destination.code})
    response = editor_client.get(url, {"event_name": "Purchase", "event_id": "order-1"})

    assert response.status_code == 500
    (report,) = failed_requests
    stored = Event.objects.get(event_id="order-1").payload["user_data"]
    for personal in [stored["em"][0], stored["ph"][0], "203.0.113.7"]:
        assert personal not in report.text
        assert personal not in report.html
    report.assert_shows("event_detail")


@pytest.mark.parametrize("debug", [False, True])
def test_the_regenerated_keys_page(
    failed_requests, failing_template, editor_client, shop_destination, settings, debug
) -> None:
    destination, _ = shop_destination
    settings.DEBUG = debug
    failing_template("capi_destinations/keys_regenerated.html")
    url = reverse("capi_destinations:regenerate_keys", kwargs={"code": destination.code})
    response = editor_client.post(url)

    assert response.status_code == 500
    (report,) = failed_requests
    new_secret_hash = Destination.objects.get(pk=destination.pk).ingest_secret_hash
    assert new_secret_hash != destination.ingest_secret_hash
    for text in (report.text, report.html):
        assert not re.search(r"sk_[A-Za-z0-9_-]{20,}", text), "an ingest secret is in the report"
    report.assert_shows("regenerate_keys")


def test_the_test_event_button(
    failed_requests, editor_client, secret_destination, settings
) -> None:
    configure(settings, GRAPH_CONNECT_TIMEOUT="soon")
    url = reverse("capi_destinations:send_test_event", kwargs={"code": secret_destination.code})
    response = editor_client.post(url, {"test_event_code": "TEST1"})
    assert_one_clean_report(response, failed_requests, "send_test_event", "_request")


def test_track_many_called_by_a_host_view(
    transactional_db, failing_receiver, shop_destination
) -> None:
    # A host's own view (not decorated) calls track_many: its frames still hide the events.
    destination, secret = shop_destination
    from capi_destinations.ingest import track_many

    report = report_of_call(lambda: track_many(destination, [customer_event()]), RuntimeError)
    assert_no_customer_data(report, secret)
    report.assert_shows("track_many")
