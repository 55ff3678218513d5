"""The Graph API client, against the sandbox through a real socket."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest

from capi_destinations import __version__, graph, graph_errors
from capi_destinations.graph import GraphError, appsecret_proof, get_pixel, redact, send_events
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

PIXEL_ID = "1234567890123456"
HASHED_EMAIL = hashlib.sha256(b"jane@example.com").hexdigest()


@dataclass
class PlainDestination:
    """Stands in for ``models.Destination``: the attributes the client reads, no database."""

    pixel_id: str = PIXEL_ID
    access_token: str = ""
    app_secret: str = ""
    test_event_code: str = ""
    graph_api_version: str = "v26.0"


@pytest.fixture
def token() -> str:
    return make_token("graph-tests")


@pytest.fixture
def destination(token: str) -> PlainDestination:
    return PlainDestination(access_token=token)


@pytest.fixture
def short_timeouts(settings: Any, graph_settings: Sandbox) -> Sandbox:
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "GRAPH_CONNECT_TIMEOUT": 1.0,
        "GRAPH_READ_TIMEOUT": 0.3,
    }
    return graph_settings


def server_event(sandbox: Sandbox, number: int = 1, **overrides: Any) -> dict[str, Any]:
    """A Meta-ready website Purchase, timed one minute before the sandbox's now."""
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(sandbox.app.state.now()) - 60,
        "event_id": f"order-{number}",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "em": [HASHED_EMAIL],
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "client_ip_address": "203.0.113.7",
            "fbp": "fb.1.1596403881668.1116446470",
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }
    event.update(overrides)
    return event


def raised_by_send(destination: PlainDestination, events: list[dict[str, Any]]) -> GraphError:
    with pytest.raises(GraphError) as caught:
        send_events(destination, events)
    return caught.value


# --- success -----------------------------------------------------------------------------------


def test_send_events_returns_metas_answer(graph_settings, destination):
    events = [server_event(graph_settings, number) for number in range(3)]

    result = send_events(destination, events)

    assert result.events_received == 3
    assert result.http_status == 200
    assert result.messages == ()
    assert result.fbtrace_id
    assert result.duration_ms >= 0
    assert [item["event_id"] for item in graph_settings.events()] == [
        "order-0",
        "order-1",
        "order-2",
    ]


def test_the_environment_s_proxy_settings_are_read_once_per_session(
    graph_settings, destination, monkeypatch
):
    # A proxy nobody listens on: a request that goes through it fails to connect.
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    graph.close_session()
    try:
        with pytest.raises(GraphError) as raised:
            send_events(destination, [server_event(graph_settings)])
        assert raised.value.category == graph_errors.TRANSIENT
        assert graph_settings.events() == []

        # NO_PROXY exempts the sandbox's host, as requests' trust_env did.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        graph.close_session()
        assert send_events(destination, [server_event(graph_settings)]).events_received == 1

        # Read when the session was made, not on each request (the dispatcher's sender thread
        # gave up the interpreter lock for each lookup).
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.delenv("no_proxy")
        assert send_events(destination, [server_event(graph_settings, 2)]).events_received == 1
    finally:
        graph.close_session()


def test_send_events_posts_one_compact_json_body_with_the_token_in_it(graph_settings, destination):
    send_events(destination, [server_event(graph_settings)])

    (request,) = graph_settings.requests()
    assert request["method"] == "POST"
    assert request["path"] == f"/v26.0/{PIXEL_ID}/events"
    assert request["content_type"] == "application/json"
    assert request["user_agent"] == f"django-capi-destinations/{__version__}"
    assert request["params"]["access_token"] == "[redacted]"
    assert request["params"]["partner_agent"] == graph.PARTNER_AGENT
    assert "test_event_code" not in request["params"]
    assert "appsecret_proof" not in request["params"]
    assert not request["authorization_header"]


def test_send_events_accepts_read_only_mappings(graph_settings, destination):
    event = server_event(graph_settings)
    event["custom_data"] = MappingProxyType(event["custom_data"])

    result = send_events(destination, [MappingProxyType(event)])

    assert result.events_received == 1


def test_destinations_test_event_code_is_used_unless_overridden(graph_settings, destination):
    destination.test_event_code = "TEST123"

    send_events(destination, [server_event(graph_settings, 1)])
    send_events(destination, [server_event(graph_settings, 2)], test_event_code="OTHER9")
    send_events(destination, [server_event(graph_settings, 3)], test_event_code="")

    codes = [item["test_event_code"] for item in graph_settings.events()]
    assert codes == ["TEST123", "OTHER9", ""]
    stats = graph_settings.stats()["pixels"][PIXEL_ID]
    assert (stats["test_events"], stats["events"]) == (2, 1)


@pytest.mark.parametrize("count", [0, graph.MAX_EVENTS_PER_REQUEST + 1])
def test_send_events_refuses_an_empty_or_oversized_batch(graph_settings, destination, count):
    events = [server_event(graph_settings, number) for number in range(count)]

    with pytest.raises(ValueError, match="1 to 1000 events"):
        send_events(destination, events)
    assert graph_settings.requests() == []


def test_get_pixel_reports_the_registered_name(graph_settings, destination, token):
    graph_settings.register_pixel(PIXEL_ID, "Acme Shoes web", [token])

    pixel = get_pixel(destination)

    assert (pixel.id, pixel.name) == (PIXEL_ID, "Acme Shoes web")
    (request,) = graph_settings.requests()
    assert request["method"] == "GET"
    assert request["authorization_header"]
    assert "access_token" not in request["params"]
    # Only the fields the product uses.
    assert request["params"]["fields"] == "id,name"


def test_get_pixel_in_an_open_sandbox_names_the_pixel_after_its_id(graph_settings, destination):
    assert get_pixel(destination).name == f"Sandbox pixel {PIXEL_ID}"


def test_get_pixel_checks_a_token_that_is_not_saved_yet(graph_settings, destination, token):
    typed_token = make_token("typed-in-the-form")
    graph_settings.register_pixel(PIXEL_ID, "Acme Shoes web", [typed_token])

    pixel = get_pixel(destination, access_token=typed_token)

    assert pixel.name == "Acme Shoes web"
    with pytest.raises(GraphError) as caught:
        get_pixel(destination)
    assert caught.value.category == graph.AUTH


# --- appsecret_proof ---------------------------------------------------------------------------


def test_appsecret_proof_matches_metas_definition():
    # Vectors from FACTS.md §1 (computed with the app secret as HMAC key).
    assert appsecret_proof("EAATOKEN", "appsecret") == (
        "f9a9ad0b549473cac886462f27658e1584e25e02e1c81dcc427190a793b329cb"
    )
    assert appsecret_proof("EAATOKEN", "appsecret", at=1700000000) == (
        "37ff77beb19168c319da51d961fe7d4638de122cd8efd29b22df99a4a4ecf8ee"
    )


def test_send_events_signs_with_appsecret_proof(graph_settings, destination, token):
    graph_settings.register_pixel(PIXEL_ID, "Signed pixel", [token], app_secret="s3cr3t-app")
    destination.app_secret = "s3cr3t-app"

    result = send_events(destination, [server_event(graph_settings)])

    assert result.events_received == 1
    (request,) = graph_settings.requests()
    assert request["params"]["appsecret_proof"] == "[redacted]"
    assert "appsecret_time" not in request["params"]


def test_time_stamped_appsecret_proof_is_sent_when_the_setting_asks(
    settings, graph_settings, destination, token, clock
):
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "GRAPH_APPSECRET_TIME": True}
    graph_settings.register_pixel(PIXEL_ID, "Signed pixel", [token], app_secret="s3cr3t-app")
    destination.app_secret = "s3cr3t-app"

    assert get_pixel(destination).name == "Signed pixel"
    send_events(destination, [server_event(graph_settings)])

    times = [request["params"]["appsecret_time"] for request in graph_settings.requests()]
    assert times == [str(int(clock.now().timestamp())), int(clock.now().timestamp())]


def test_a_wrong_app_secret_is_an_auth_problem(graph_settings, destination, token):
    graph_settings.register_pixel(PIXEL_ID, "Signed pixel", [token], app_secret="right-secret")
    destination.app_secret = "wrong-secret"

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.code, error.category) == (100, graph.AUTH)
    assert "app secret" in error.fix


def test_a_missing_appsecret_proof_is_an_auth_problem(graph_settings, destination, token):
    graph_settings.register_pixel(PIXEL_ID, "Signed pixel", [token], app_secret="right-secret")

    with pytest.raises(GraphError) as caught:
        get_pixel(destination)

    assert caught.value.category == graph.AUTH
    assert caught.value.permanent


# --- every category through the sandbox's own behaviour -----------------------------------------


def test_a_garbage_token_is_auth(graph_settings, destination):
    destination.access_token = "not a token"

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.code, error.http_status) == (graph.AUTH, 190, 400)
    assert error.type == "OAuthException"
    assert error.fbtrace_id


@pytest.mark.parametrize(("reason", "subcode"), [("revoked", None), ("expired", 463)])
def test_a_revoked_or_expired_token_is_auth(graph_settings, destination, token, reason, subcode):
    graph_settings.revoke(token, reason)

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.code, error.error_subcode) == (graph.AUTH, 190, subcode)


def test_a_destination_without_a_token_fails_before_calling_meta(graph_settings, destination):
    destination.access_token = ""

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert error.category == graph.AUTH
    assert graph_settings.requests() == []


def test_a_pixel_the_token_cannot_use_is_permission(graph_settings, destination, token):
    graph_settings.register_pixel("999", "Someone else's pixel", [token])
    graph_settings.register_pixel(PIXEL_ID, "Acme", [make_token("another")])

    with pytest.raises(GraphError) as caught:
        get_pixel(destination)

    error = caught.value
    assert (error.category, error.code, error.error_subcode) == (graph.PERMISSION, 100, 33)
    assert "the Pixel ID is the pixel the token was generated for" in error.fix


def test_a_deprecated_version_stops_sending(graph_settings, destination):
    destination.graph_api_version = "v2.0"

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.code, error.category) == (2635, graph.PERMISSION)
    assert error.permanent


def test_rate_limit_answer_carries_usage_and_retry_after(graph_settings, destination):
    graph_settings.set_faults(rate_limit_every=1, rate_limit_minutes=7)

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.code, error.error_subcode) == (graph.RATE_LIMIT, 613, 1487742)
    assert error.retry_after == timedelta(minutes=7)
    assert error.rate_limit is not None
    assert error.rate_limit.highest_percent == 100
    assert not error.permanent


def test_80004_rate_limit_is_rate_limit(graph_settings, destination):
    graph_settings.set_faults(rate_limit_every=1, rate_limit_code=80004)

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.code) == (graph.RATE_LIMIT, 80004)


def test_usage_headers_are_parsed_on_success(graph_settings, destination):
    graph_settings.set_faults(rate_limit_every=4)

    result = send_events(destination, [server_event(graph_settings)])

    assert result.rate_limit is not None
    assert result.rate_limit.app == {"call_count": 25, "total_cputime": 12, "total_time": 12}
    (usage,) = result.rate_limit.business_use_cases
    assert (usage.type, usage.call_count, usage.estimated_time_to_regain_access) == (
        "ads_management",
        25,
        0,
    )
    assert result.rate_limit.retry_after is None


def test_a_stale_event_is_invalid(graph_settings, destination):
    stale = server_event(graph_settings, event_time=int(graph_settings.app.state.now()) - 8 * 86400)

    error = raised_by_send(destination, [server_event(graph_settings), stale])

    assert (error.category, error.code, error.error_subcode) == (graph.INVALID, 100, 2804003)
    assert error.error_user_title == "Event Timestamp Too Old"
    # Like Meta (FACTS A3), the answer does not say which event it was.
    assert error.message == "Invalid parameter"
    assert graph_settings.events() == []


def test_unhashed_user_data_is_invalid(graph_settings, destination):
    event = server_event(graph_settings)
    event["user_data"]["em"] = ["jane@example.com"]

    error = raised_by_send(destination, [event])

    assert (error.category, error.error_subcode) == (graph.INVALID, 2804016)


def test_a_server_failure_is_transient(graph_settings, destination):
    graph_settings.set_faults(failure_rate=1.0)

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.http_status, error.code) == (graph.TRANSIENT, 500, 2)
    assert error.is_transient is True


def test_an_unknown_error_code_is_unknown(graph_settings, destination):
    graph_settings.answer_error(424242, message="Something new")

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.code, error.message) == (graph.UNKNOWN, 424242, "Something new")
    assert not error.permanent


def test_an_unknown_code_with_a_5xx_status_is_transient(graph_settings, destination):
    graph_settings.answer_error(424242, status=503)

    assert raised_by_send(destination, [server_event(graph_settings)]).category == graph.TRANSIENT


def test_an_unknown_code_that_meta_marks_transient_is_transient(graph_settings, destination):
    graph_settings.answer_error(424242, is_transient=True)

    assert raised_by_send(destination, [server_event(graph_settings)]).category == graph.TRANSIENT


# --- every known code --------------------------------------------------------------------------


KNOWN_CODES = list(graph_errors.KNOWN_ERRORS)


@pytest.mark.parametrize(
    ("code", "subcode"), KNOWN_CODES, ids=[f"{code}-{subcode}" for code, subcode in KNOWN_CODES]
)
def test_every_known_code_is_classified_with_its_explanation(
    graph_settings, destination, code, subcode
):
    graph_settings.answer_error(code, subcode, message=f"Meta says #{code}")
    expected = graph_errors.KNOWN_ERRORS[(code, subcode)]

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.code, error.error_subcode) == (code, subcode)
    assert error.category == expected.category
    assert (error.explanation, error.fix) == (expected.explanation, expected.fix)
    assert error.permanent == (expected.category in {graph.AUTH, graph.PERMISSION, graph.INVALID})


@pytest.mark.parametrize(
    ("code", "subcode", "category"),
    [
        (100, 1234567, graph.INVALID),  # an unlisted subcode falls back to the code
        (190, 999, graph.AUTH),
        (250, None, graph.PERMISSION),  # 200-299 are permission codes
        (4, 42, graph.RATE_LIMIT),
        (100, 1815018, graph.INVALID),  # undocumented: the code's class (FACTS §11)
        (100, 2804019, graph.INVALID),  # meaning unconfirmed: the code's class
        (1815018, None, graph.UNKNOWN),  # undocumented code: no invented meaning
        (2061015, None, graph.UNKNOWN),
    ],
)
def test_unlisted_subcodes_fall_back_to_the_codes_family(
    graph_settings, destination, code, subcode, category
):
    graph_settings.answer_error(code, subcode)

    assert raised_by_send(destination, [server_event(graph_settings)]).category == category


def test_every_category_is_a_known_constant():
    categories = {info.category for info in graph_errors.KNOWN_ERRORS.values()}

    assert categories <= set(graph.CATEGORIES)
    assert graph.CATEGORIES == (
        "auth",
        "permission",
        "rate_limit",
        "invalid",
        "transient",
        "unknown",
    )


def test_classify_falls_back_on_the_http_status():
    assert graph.classify(502, None, None, None).category == graph.TRANSIENT
    assert graph.classify(429, None, None, None).category == graph.RATE_LIMIT
    assert graph.classify(401, None, None, None).category == graph.AUTH
    assert graph.classify(403, None, None, None).category == graph.PERMISSION
    assert graph.classify(418, None, None, None).category == graph.UNKNOWN
    assert graph.classify(400, 100, None, False, message="Invalid appsecret_proof").category == (
        graph.AUTH
    )


# --- answers that are not Meta's usual JSON ----------------------------------------------------


def test_an_error_body_inside_a_200_is_still_an_error(graph_settings, destination):
    graph_settings.answer_error(190, status=200, message="Invalid OAuth access token")

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.http_status, error.category) == (200, graph.AUTH)


def test_a_non_json_502_page_is_transient(graph_settings, destination):
    graph_settings.answer_next(
        status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"
    )

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.http_status, error.code) == (graph.TRANSIENT, 502, None)
    assert "502 Bad Gateway" in error.message


def test_truncated_json_is_transient(graph_settings, destination):
    graph_settings.answer_next(status=200, text='{"events_received": 1, "messa')

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.http_status) == (graph.TRANSIENT, 200)
    assert error.explanation == graph_errors.UNPARSEABLE.explanation


def test_a_429_page_is_rate_limit_with_retry_after(graph_settings, destination):
    graph_settings.answer_next(status=429, text="Too many", headers={"Retry-After": "30"})

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert (error.category, error.retry_after) == (graph.RATE_LIMIT, timedelta(seconds=30))


def test_an_html_404_means_the_base_url_is_wrong(graph_settings, destination):
    graph_settings.answer_next(status=404, text="<html>Not Found</html>")

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert error.category == graph.UNKNOWN
    assert "GRAPH_API_BASE_URL" in error.fix


def test_a_200_without_events_received_is_unknown(graph_settings, destination):
    graph_settings.answer_next(status=200, body={"success": True})

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert error.category == graph.UNKNOWN
    assert "events_received" in error.message


def test_a_200_saying_success_false_is_unknown(graph_settings, destination):
    graph_settings.answer_next(status=200, body={"success": False})

    assert raised_by_send(destination, [server_event(graph_settings)]).category == graph.UNKNOWN


# --- network failures --------------------------------------------------------------------------


def test_an_answer_slower_than_the_read_timeout_is_transient(short_timeouts, destination):
    short_timeouts.set_faults(latency_ms=5000)

    error = raised_by_send(destination, [server_event(short_timeouts)])

    assert error.category == graph.TRANSIENT
    assert error.explanation == graph_errors.TIMEOUT.explanation
    assert error.http_status is None
    assert error.duration_ms is not None
    assert error.duration_ms >= 250


def test_connection_refused_is_transient(settings, destination, sandbox):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.CAPI_DESTINATIONS = {"GRAPH_API_BASE_URL": f"http://127.0.0.1:{closed_port}"}

    error = raised_by_send(destination, [server_event(sandbox)])

    assert error.category == graph.TRANSIENT
    assert error.explanation == graph_errors.CONNECTION_FAILED.explanation


def test_a_dropped_connection_is_transient(graph_settings, destination):
    graph_settings.set_faults(drop_next=1)

    error = raised_by_send(destination, [server_event(graph_settings)])

    assert error.category == graph.TRANSIENT
    assert error.explanation == graph_errors.CONNECTION_LOST.explanation
    # The pool recovers: the next request gets through on a fresh connection.
    assert send_events(destination, [server_event(graph_settings)]).events_received == 1


# --- secrets never leak -------------------------------------------------------------------------

APP_SECRET = "app-secret-for-redaction-tests"


def pieces_of(secret: str, size: int = 16) -> list[str]:
    """Overlapping slices of a secret: a cut-off secret is still a leak."""
    return [secret[start : start + size] for start in range(0, len(secret) - size + 1, 4)]


def _scenario_echoing_error(sandbox: Sandbox, token: str) -> None:
    sandbox.answer_error(190, message=f"Bad token {token} in request")


def _scenario_html_page(sandbox: Sandbox, token: str) -> None:
    sandbox.answer_next(status=502, text=f"<html>upstream saw access_token={token}</html>")


def _scenario_truncated(sandbox: Sandbox, token: str) -> None:
    sandbox.answer_next(status=200, text=f'{{"access_token": "{token}", "x')


def _scenario_timeout(sandbox: Sandbox, token: str) -> None:
    sandbox.set_faults(latency_ms=5000)


def _scenario_dropped(sandbox: Sandbox, token: str) -> None:
    sandbox.set_faults(drop_next=1)


def _scenario_user_message(sandbox: Sandbox, token: str) -> None:
    sandbox.answer_error(
        100, 2804050, error_user_title=f"Title {token}", error_user_msg=f"Msg {token}"
    )


@pytest.mark.parametrize(
    "scenario",
    [
        _scenario_echoing_error,
        _scenario_html_page,
        _scenario_truncated,
        _scenario_timeout,
        _scenario_dropped,
        _scenario_user_message,
    ],
)
@pytest.mark.parametrize(
    "call", [send_events, lambda destination, events: get_pixel(destination)], ids=["post", "get"]
)
def test_the_token_and_proof_appear_in_no_error_log_or_record(
    short_timeouts, destination, token, caplog, scenario, call
):
    destination.app_secret = APP_SECRET
    proof = appsecret_proof(token, APP_SECRET)
    scenario(short_timeouts, token)
    caplog.set_level(logging.DEBUG)

    events = [server_event(short_timeouts)]

    with pytest.raises(GraphError) as caught:
        call(destination, events)

    error = caught.value
    exposed = [
        str(error),
        repr(error),
        json.dumps(error.to_record()),
        error.explanation,
        error.fix,
        caplog.text,
        repr(error.__context__),
        repr(error.__cause__),
    ]
    for text in exposed:
        for secret in (token, proof, APP_SECRET):
            assert not any(piece in text for piece in pieces_of(secret))
    assert caplog.records, "the failure is logged"


def test_connection_errors_do_not_leak_the_proof_from_a_get_url(
    settings, destination, token, caplog
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.CAPI_DESTINATIONS = {"GRAPH_API_BASE_URL": f"http://127.0.0.1:{closed_port}"}
    destination.app_secret = APP_SECRET
    proof = appsecret_proof(token, APP_SECRET)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(GraphError) as caught:
        get_pixel(destination)

    assert "appsecret_proof=[redacted]" in caught.value.message
    assert proof not in str(caught.value)
    assert proof not in caplog.text


def test_successful_calls_log_without_secrets(graph_settings, destination, token, caplog):
    destination.app_secret = APP_SECRET
    caplog.set_level(logging.DEBUG)

    send_events(destination, [server_event(graph_settings)])
    get_pixel(destination)

    assert "Sent 1 events to pixel" in caplog.text
    assert token not in caplog.text
    assert appsecret_proof(token, APP_SECRET) not in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /v26.0/1?access_token=EAAabc123&fields=id", "access_token=[redacted]&fields=id"),
        ('{"access_token":"abc.def","x":1}', '{"access_token":"[redacted]","x":1}'),
        ("url?appsecret_proof=0a1b2c&x=1", "appsecret_proof=[redacted]&x=1"),
        ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer [redacted]"),
        ("stray EAAB1234567890abcdefXYZ here", "stray [redacted] here"),
    ],
)
def test_redact_removes_named_and_shaped_secrets(text, expected):
    assert expected in redact(text)


def test_redact_removes_the_given_secrets_and_their_url_encoding():
    assert redact("a s3cr3t/with+plus b s3cr3t%2Fwith%2Bplus", "s3cr3t/with+plus") == (
        "a [redacted] b [redacted]"
    )


# --- the error object --------------------------------------------------------------------------


def test_graph_error_record_matches_the_delivery_attempt_fields(graph_settings, destination):
    graph_settings.answer_error(100, 2804050, type="OAuthException", message="Too little")

    record = raised_by_send(destination, [server_event(graph_settings)]).to_record()

    assert set(record) == {
        "http_status",
        "fbtrace_id",
        "category",
        "error_code",
        "error_subcode",
        "error_type",
        "error_message",
        "error_user_title",
        "error_user_msg",
        "error_data",
    }
    assert (record["error_code"], record["error_subcode"], record["category"]) == (
        100,
        2804050,
        graph.INVALID,
    )


def test_graph_error_survives_pickling(graph_settings, destination):
    graph_settings.answer_error(190, 463, message="Session has expired")
    error = raised_by_send(destination, [server_event(graph_settings)])

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own object)

    assert (copy.category, copy.code, copy.error_subcode, copy.message) == (
        graph.AUTH,
        190,
        463,
        "Session has expired",
    )
    assert str(copy) == str(error)


def test_rate_limit_headers_parse_ad_account_usage():
    usage = graph.parse_rate_limit_headers(
        {"X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 90}'}
    )

    assert usage is not None
    assert usage.highest_percent == 100
    assert usage.retry_after == timedelta(seconds=90)
    assert graph.parse_rate_limit_headers({"Content-Type": "application/json"}) is None
    assert graph.parse_rate_limit_headers({"x-app-usage": "not json"}) is None


# --- the session -------------------------------------------------------------------------------


def test_one_pooled_session_serves_every_thread():
    sessions: list[Any] = []
    threads = [
        threading.Thread(target=lambda: sessions.append(graph.get_session())) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(session is graph.get_session() for session in sessions)
    session = graph.get_session()
    assert session.headers["User-Agent"] == f"django-capi-destinations/{__version__}"
    adapter = session.get_adapter("https://graph.facebook.com")
    assert adapter._pool_maxsize == graph.CONNECTION_POOL_SIZE


def test_the_session_keeps_no_cookies(graph_settings, destination):
    graph_settings.answer_next(
        status=200,
        body={"events_received": 1, "messages": [], "fbtrace_id": "x"},
        headers={"Set-Cookie": "tracker=1; Path=/"},
    )

    send_events(destination, [server_event(graph_settings)])

    assert len(graph.get_session().cookies) == 0
