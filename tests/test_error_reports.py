"""Django's error reports never show a token, its proof or the app secret.

An error report (the HTML mail to ``ADMINS``, the text one, Sentry-like tools built on it) prints
the local variables of every frame of the traceback. Each test here makes something really go
wrong while a token is held in local variables: an event Python cannot encode, a timeout or token
length setting of the wrong type, a Graph API nobody answers at. Then it renders Django's own
``ExceptionReporter`` as text and as HTML and searches both for the secrets. Each report must still
show the frames (so the test looks at a real report) with their variables hidden.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.debug import ExceptionReporter

from capi_destinations import destinations, graph, health
from capi_destinations.models import Destination, Role
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
