"""Bad input everywhere it can enter: the ingest endpoint, ``track()``, the destination form and
the token validator, driven by Hypothesis.

The promises: never a 500 (nor an exception out of ``track``), never a stored half-event (a row
is whole or absent, and a refused request stores nothing), and always a clear message (a JSON
error with a code and a sentence; a rejected event carries the diagnostics saying why; a form
names the field). ``tests/test_ingest_endpoint.py`` already throws arbitrary JSON values and
bytes at the endpoint; this file adds what those leave out: wrong types in every known field,
unicode edge cases, huge and deeply nested bodies, Python values JSON cannot carry, and the
forms.

Example counts are modest (the whole suite runs twice in CI on two shared cores).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_destinations import destinations, dispatch, tokens
from capi_destinations.diagnostics import SERVER_EVENT_KEYS
from capi_destinations.forms import DestinationForm, ReplaceTokenForm
from capi_destinations.ingest import DUPLICATE, track, track_many
from capi_destinations.models import Destination, Event, EventStatus, Role, Tenant
from capi_destinations.user_data_keys import ALIASES, CLEAR_KEYS, HASHED_KEYS
from tests.conftest import make_token

BAD_INPUT = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW_EXAMPLES = settings(BAD_INPUT, max_examples=30)

RESULT_STATUSES = {"stored", "rejected", "suppressed", "duplicate"}
# The row a result names is in this state (a duplicate names the original, in any state).
STATUS_OF_RESULT = {
    "stored": EventStatus.PENDING,
    "rejected": EventStatus.REJECTED,
    "suppressed": EventStatus.SUPPRESSED,
}
_HEX64 = re.compile(r"[0-9a-f]{64}")

# --- strategies ------------------------------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\u202e" + "evil",
    "e\u0301",
    "\ufeff",
    "\u200b",
    "😀" * 50,
    "Ω≈ç√∫",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth letters
    "İstanbul",
    "ß",
    "null",
    "NaN",
    "Infinity",
    "1e309",
    "-0",
    "0x1F",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%00%ff",
    "\n\r\t\x0b\x0c",
    "x" * 10_000,
]
nasty_text = st.sampled_from(NASTY_STRINGS) | st.text(max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3)
    ),
    max_leaves=10,
)
now_seconds = int(datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp())
event_times = (
    st.integers(min_value=now_seconds - 10 * 86400, max_value=now_seconds + 86400)
    | st.sampled_from([0, -1, 10**12, 10**20, "1700000000", "2026-11-24T12:00:00Z", 1.5e9])
    | json_values
)
USER_DATA_KEYS = [
    "em",
    "ph",
    "fn",
    "ln",
    "db",
    "ge",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "client_ip_address",
    "client_user_agent",
    "fbp",
    "fbc",
    "email",
    "phone",
    "date_of_birth",
]
CUSTOM_DATA_KEYS = ["value", "currency", "contents", "content_ids", "num_items", "order_id"]
user_data = st.dictionaries(
    st.sampled_from(USER_DATA_KEYS) | nasty_text,
    json_values | st.lists(nasty_text, max_size=3),
    max_size=6,
)
custom_data = st.dictionaries(
    st.sampled_from(CUSTOM_DATA_KEYS) | nasty_text,
    json_values
    | st.lists(st.dictionaries(st.sampled_from(["id", "quantity", "item_price"]), json_values)),
    max_size=5,
)
consent_state = st.dictionaries(
    st.sampled_from(["ad_storage", "ad_user_data", "ad_personalization", "region"]) | nasty_text,
    st.sampled_from(["granted", "denied", "GRANTED", ""]) | json_values,
    max_size=4,
)
# Every key Meta knows, each with any type; known names stay likely so events get far enough.
events = st.fixed_dictionaries(
    {},
    optional={
        "event_name": st.sampled_from(["Purchase", "purchase", "Lead", "PageView"]) | json_values,
        "event_id": st.uuids().map(str) | json_values,
        "event_time": event_times,
        "action_source": st.sampled_from(["website", "app", "email", "WEBSITE"]) | json_values,
        "event_source_url": st.sampled_from(
            ["https://shop.example.com/?fbclid=IwAR0abc", "javascript:alert(1)", "//x"]
        )
        | json_values,
        "user_data": user_data | json_values,
        "custom_data": custom_data | json_values,
        "consent": consent_state | json_values,
        "opt_out": json_values,
        "data_processing_options": json_values,
    },
)


def nested(depth: int, leaf: Any, *, as_list: bool) -> Any:
    """``leaf`` wrapped ``depth`` times in lists or one-key objects."""
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


deep_values = st.builds(
    nested, st.integers(min_value=50, max_value=900), json_scalars, as_list=st.booleans()
)
deep_events = st.builds(
    lambda where, value, base: {**base, where: value},
    st.sampled_from(["custom_data", "user_data", "consent", "event_id", "extra"]),
    deep_values,
    events,
)


def raw_deep_body(depth: int, opener: str) -> bytes:
    """A body nested far deeper than any JSON parser's recursion limit."""
    closer = "]" if opener == "[" else "}"
    inner = '"a":' if opener == "{" else ""
    return ((opener + inner) * depth + "1" + closer * depth).encode()


# --- helpers ---------------------------------------------------------------------------------


def assert_clear_error(response: Any) -> None:
    """A refused request: JSON ``{"error": {"code", "message"}}`` with a real sentence."""
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str)
    assert re.fullmatch(r"[a-z_]+", error["code"])
    assert isinstance(error["message"], str)
    assert len(error["message"]) >= 15
    assert "Traceback" not in error["message"]


def assert_whole_rows(destination: Destination) -> None:
    """Every stored event is complete: a half-written row would fail one of these."""
    for row in Event.objects.filter(destination=destination):
        assert row.status in EventStatus.values
        assert isinstance(row.event_name, str)
        assert isinstance(row.event_id, str)
        assert row.event_id
        assert "\x00" not in row.event_name + row.event_id
        assert isinstance(row.payload, dict)
        assert row.payload.get("event_id") == row.event_id
        json.dumps(row.payload, allow_nan=False)
        assert _HEX64.fullmatch(row.payload_hash)
        assert isinstance(row.diagnostics, list)
        for finding in row.diagnostics:
            assert finding["code"], finding
            assert finding["message"], finding
        if row.status == EventStatus.PENDING:
            assert row.next_attempt_at is not None
        if row.status in (EventStatus.REJECTED, EventStatus.SUPPRESSED):
            assert row.status_reason
            assert row.next_attempt_at is None
        if row.status == EventStatus.REJECTED:
            assert any(finding["severity"] == "error" for finding in row.diagnostics)


def assert_results_explain_themselves(results: list[dict[str, Any]], sent: int) -> None:
    assert len(results) == sent
    for position, result in enumerate(results):
        assert result["index"] == position
        assert result["status"] in RESULT_STATUSES
        assert isinstance(result["event_id"], str)
        assert result["event_id"]
        if result["status"] == "rejected":
            errors = [item for item in result["diagnostics"] if item["severity"] == "error"]
            assert errors, result
            assert all(item["message"] and item["fix"] for item in errors)


class Endpoint:
    """Posts raw bodies to one destination's ingest endpoint with its server secret."""

    def __init__(self, destination: Destination, secret: str) -> None:
        self.destination = destination
        self.url = reverse(
            "capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}
        )
        self.client = Client(raise_request_exception=True)
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    def post(self, body: bytes, content_type: str = "application/json") -> Any:
        return self.client.post(self.url, body, content_type=content_type, **self.headers)

    def ids(self) -> set[int]:
        return set(Event.objects.filter(destination=self.destination).values_list("pk", flat=True))


@pytest.fixture
def endpoint(clock: Any, make_destination: Callable[..., Destination], settings: Any) -> Endpoint:
    settings.CAPI_DESTINATIONS = {"INGEST_RATE_LIMIT": ""}
    destination = make_destination()
    secret = destination.set_ingest_secret()
    destination.save()
    return Endpoint(destination, secret)


def check_answer(endpoint: Endpoint, body: bytes, sent: int | None) -> Any:
    """Post ``body``; the answer and the stored rows must keep every promise."""
    before = endpoint.ids()
    response = endpoint.post(body)
    assert response.status_code in (202, 400, 413), response.status_code
    if response.status_code != 202:
        assert_clear_error(response)
        assert endpoint.ids() == before, "a refused request stored something"
        return response
    answer = response.json()
    if sent is not None:
        assert_results_explain_themselves(answer["events"], sent)
    assert_answers_match_rows(answer["events"], endpoint.destination)
    # Rows are only added, each one named by a result; nothing else appears or vanishes.
    named = {result["id"] for result in answer["events"]}
    assert endpoint.ids() == before | named
    assert_whole_rows(endpoint.destination)
    return response


def assert_answers_match_rows(results: list[dict[str, Any]], destination: Destination) -> None:
    """Each result names a row of this destination that is in the state the result says."""
    rows = Event.objects.in_bulk([result["id"] for result in results])
    for result in results:
        row = rows.get(result["id"])
        assert row is not None, f"result {result['index']} names no stored row"
        assert row.destination_id == destination.pk
        expected = STATUS_OF_RESULT.get(result["status"])
        if expected is not None:
            assert row.status == expected, (result, row.status)


# --- the endpoint ----------------------------------------------------------------------------


@BAD_INPUT
@given(batch=st.lists(events, min_size=1, max_size=5), wrapped=st.booleans())
def test_wrong_types_in_every_field_are_answered_clearly(
    endpoint: Endpoint, batch: list[dict[str, Any]], wrapped: bool
) -> None:
    body = json.dumps({"data": batch} if wrapped else batch).encode()
    check_answer(endpoint, body, len(batch))


@FEW_EXAMPLES
@given(event=deep_events)
def test_deeply_nested_fields_are_answered_clearly(
    endpoint: Endpoint, event: dict[str, Any]
) -> None:
    check_answer(endpoint, json.dumps(event).encode(), 1)


@FEW_EXAMPLES
@given(depth=st.integers(min_value=900, max_value=200_000), opener=st.sampled_from("[{"))
def test_bodies_nested_as_deep_as_the_parser_goes_and_deeper(
    endpoint: Endpoint, depth: int, opener: str
) -> None:
    body = raw_deep_body(depth, opener)
    response = check_answer(endpoint, body, None)
    if response.status_code == 202:
        # What the parser could follow is no event: each is rejected, with the reason.
        assert {result["status"] for result in response.json()["events"]} <= {"rejected"}


@FEW_EXAMPLES
@given(
    size=st.integers(min_value=900_000, max_value=1_100_000),
    field=st.sampled_from(["event_id", "custom_data", "user_data", "padding"]),
)
def test_huge_bodies_around_the_limit(endpoint: Endpoint, size: int, field: str) -> None:
    event = {"event_name": "Purchase", "event_id": "huge", "action_source": "website"}
    event[field] = "x" * size
    check_answer(endpoint, json.dumps(event).encode(), 1)


@settings(BAD_INPUT, max_examples=8)
@given(count=st.integers(min_value=995, max_value=1_005), event=events)
def test_batches_around_the_thousand_event_limit(
    endpoint: Endpoint, count: int, event: dict[str, Any]
) -> None:
    batch = [{**event, "event_id": f"many-{uuid.uuid4().hex}-{n}"} for n in range(count)]
    body = json.dumps({"data": batch}).encode()
    if count <= 1000:
        check_answer(endpoint, body, count)
        return
    before = endpoint.ids()
    response = endpoint.post(body)
    assert response.status_code in (400, 413)
    assert_clear_error(response)
    assert endpoint.ids() == before


@BAD_INPUT
@given(
    text=st.sampled_from(NASTY_STRINGS) | st.text(min_size=1, max_size=30),
    where=st.sampled_from(["event_name", "event_id", "key", "email", "currency", "country"]),
)
def test_unicode_edge_cases_are_stored_whole_or_refused(
    endpoint: Endpoint, text: str, where: str
) -> None:
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_id": f"u-{uuid.uuid4().hex}",
        "event_time": now_seconds,
        "action_source": "website",
        "user_data": {"em": "jane@example.com", "client_user_agent": "UA"},
        "custom_data": {"value": 1, "currency": "EUR"},
    }
    if where in ("event_name", "event_id"):
        event[where] = text
    elif where == "key":
        event["custom_data"][text] = text
    elif where in ("email", "country"):
        event["user_data"][where] = text
    else:
        event["custom_data"]["currency"] = text
    # ensure_ascii escapes lone surrogates as \udXXX, which is valid JSON.
    check_answer(endpoint, json.dumps(event).encode(), 1)


@FEW_EXAMPLES
@given(
    content_type=st.sampled_from(
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
    ),
    body=st.binary(max_size=300),
)
def test_other_content_types_never_cause_a_500(
    endpoint: Endpoint, content_type: str, body: bytes
) -> None:
    before = endpoint.ids()
    response = endpoint.post(body, content_type=content_type)
    assert response.status_code in (202, 400, 413)
    if response.status_code != 202:
        assert_clear_error(response)
        assert endpoint.ids() == before


# --- track() ---------------------------------------------------------------------------------


class Opaque:
    """An object JSON knows nothing about, whose str() is not helpful."""

    def __repr__(self) -> str:
        return "<Opaque>"


python_values = st.recursive(
    json_scalars
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.floats()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.dates()
    | st.binary(max_size=10)
    | st.builds(Opaque)
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.just(math.inf),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(nasty_text | st.integers(), children, max_size=3)
    ),
    max_leaves=10,
)
python_events = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        ("event_name", "event_id", "event_time", "action_source", "custom_data"), python_values
    )
    | {
        "user_data": st.dictionaries(st.sampled_from(USER_DATA_KEYS), python_values, max_size=4),
        "event_name": st.sampled_from(["Purchase", "Lead"]) | python_values,
    },
)


@pytest.fixture
def tracked_destination(clock: Any, make_destination: Callable[..., Destination]) -> Destination:
    return make_destination()


@BAD_INPUT
@given(event=python_events | python_values)
def test_track_answers_any_python_value_without_raising(
    tracked_destination: Destination, event: Any
) -> None:
    rows = Event.objects.filter(destination=tracked_destination)
    before = set(rows.values_list("pk", flat=True))
    result = track(tracked_destination, event)
    assert result.status in RESULT_STATUSES
    if result.status == "rejected":
        errors = [item for item in result.diagnostics if item.severity == "error"]
        assert errors
        assert all(item.message and item.fix for item in errors)
    # The result's row exists; at most that one row is new.
    assert set(rows.values_list("pk", flat=True)) == before | {result.event.pk}
    if result.status != DUPLICATE:
        assert rows.get(pk=result.event.pk).status == STATUS_OF_RESULT[result.status]
    assert_whole_rows(tracked_destination)


@FEW_EXAMPLES
@given(batch=st.lists(python_events | python_values, max_size=6))
def test_track_many_keeps_order_and_stores_each_event_whole(
    tracked_destination: Destination, batch: list[Any]
) -> None:
    results = track_many(tracked_destination, batch)
    assert [result.index for result in results] == list(range(len(batch)))
    assert_whole_rows(tracked_destination)


def test_track_explains_a_mixed_bag_of_python_types(
    tracked_destination: Destination, clock: Any
) -> None:
    result = track(
        tracked_destination,
        {
            "event_name": "Purchase",
            "event_id": 12345,
            "event_time": clock.now(),
            "action_source": "website",
            "event_source_url": "https://shop.example.com/",
            "user_data": {"em": b"jane@example.com", "client_user_agent": "UA"},
            "custom_data": {
                "value": Decimal("NaN"),
                "currency": "EUR",
                "when": date(2026, 1, 1),
                "tags": {1, 2},
                "thing": Opaque(),
                "later": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=1),
            },
        },
    )
    assert result.status == "rejected"
    fields = {item.field for item in result.diagnostics if item.severity == "error"}
    assert "custom_data.value" in fields
    assert_whole_rows(tracked_destination)


def test_an_event_id_of_nul_characters_is_replaced_not_stored_empty(
    tracked_destination: Destination, clock: Any
) -> None:
    # Stored as "" it would make every such event a "duplicate" of the first one: lost.
    first, second = (
        track(
            tracked_destination,
            {
                "event_name": "Purchase",
                "event_id": "\x00\x00",
                "event_time": int(clock.now().timestamp()),
                "action_source": "website",
                "event_source_url": "https://shop.example.com/",
                "user_data": {"em": email, "client_user_agent": "UA"},
                "custom_data": {"value": 10, "currency": "EUR"},
            },
        )
        for email in ("first@example.com", "second@example.com")
    )
    assert (first.status, second.status) == ("stored", "stored")
    assert first.event.event_id.startswith("srv_")
    assert second.event.event_id.startswith("srv_")
    assert first.event.event_id != second.event.event_id
    assert any(item.field == "event_id" for item in first.diagnostics)
    assert_whole_rows(tracked_destination)


# --- the destination form and the token validator ---------------------------------------------

FORM_FIELDS = [
    "name",
    "pixel_id",
    "access_token",
    "enabled",
    "test_event_code",
    "consent_policy",
    "missing_consent",
    "app_secret",
    "api_version",
    "default_country",
    "allowed_origins",
]
form_text = nasty_text | st.sampled_from(["1234567890123456", "send_always", "granted", "de"])
form_data = st.dictionaries(
    st.sampled_from(FORM_FIELDS), form_text | st.lists(form_text, max_size=2), max_size=11
).map(
    lambda data: {
        # Browsers cannot send lone surrogates; they arrive as U+FFFD.
        key: [item.encode("utf-8", "replace").decode("utf-8") for item in value]
        if isinstance(value, list)
        else value.encode("utf-8", "replace").decode("utf-8")
        for key, value in data.items()
    }
)


@pytest.fixture
def editor_client(tenant: Tenant, make_user: Callable[..., Any], use_sandbox: Any) -> Client:
    client = Client(raise_request_exception=True)
    client.force_login(make_user(tenant, Role.EDITOR))
    return client


@BAD_INPUT
@given(data=form_data)
def test_the_destination_form_names_every_problem(tenant: Tenant, data: dict[str, Any]) -> None:
    form = DestinationForm(data=_flat(data), tenant=tenant)
    if form.is_valid():
        assert tokens.clean_access_token(form.cleaned_data["access_token"])
        return
    for field, messages in form.errors.items():
        assert field in FORM_FIELDS or field == "__all__"
        assert all(isinstance(message, str) and len(message) >= 8 for message in messages)
    token = data.get("access_token")
    # A field's own value may be echoed ("… is not one of the available choices"): only the
    # token must never be. (Compared value by value: a list's repr escapes control characters.)
    others = [
        str(item)
        for key, value in data.items()
        if key != "access_token"
        for item in (value if isinstance(value, list) else [value])
    ]
    if (
        isinstance(token, str)
        and len(token.strip()) >= 12
        and not any(token.strip() in other for other in others)
    ):
        assert token.strip() not in str(form.errors), "an error message repeats the token"


@FEW_EXAMPLES
# An empty POST shows the blank form again (nothing to refuse), so every example sends a field.
@given(data=form_data.filter(lambda data: any(value != [] for value in data.values())))
def test_posting_anything_to_the_setup_pages_never_causes_a_500(
    editor_client: Client, tenant: Tenant, data: dict[str, Any]
) -> None:
    before = Destination.objects.count()
    add = editor_client.post(
        reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug}), data
    )
    if _has_nul(data):
        # Refused before any view runs (refuse_nul_characters): no database stores NUL.
        assert add.status_code == 400
        assert Destination.objects.count() == before
        return
    assert add.status_code == 200
    created = Destination.objects.count() - before
    assert created in (0, 1)
    if created == 0:
        assert add.context["form"].errors, "refused without saying why"
    check = editor_client.post(
        reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug}),
        data,
        HTTP_HX_REQUEST="true",
    )
    assert check.status_code == 200


def _has_nul(data: dict[str, Any]) -> bool:
    values = [
        item for value in data.values() for item in (value if isinstance(value, list) else [value])
    ]
    return any("\x00" in str(item) for item in [*data, *values])


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value[-1] if isinstance(value, list) and value else value
        for key, value in data.items()
    }


token_like = (
    st.builds(lambda body: "EAA" + body, st.text(alphabet=st.characters(), max_size=300))
    | st.builds(
        lambda cut, noise: make_token("validator")[:cut] + noise,
        st.integers(min_value=0, max_value=190),
        st.sampled_from(["", " ", "\n", "\u200b", '"', "…", "\x00"]),
    )
    | nasty_text
    | st.none()
    | st.integers()
    | st.binary(max_size=20)
    | st.lists(st.text(max_size=5), max_size=2)
)


@BAD_INPUT
@given(value=token_like)
def test_the_token_validator_accepts_clean_tokens_and_explains_the_rest(value: Any) -> None:
    try:
        token = tokens.clean_access_token(value)
    except ValidationError as error:
        messages = error.messages
        assert messages
        assert all(len(message) >= 20 for message in messages)
        if isinstance(value, str) and len(value.strip()) >= 12:
            assert value.strip() not in " ".join(messages), "the message repeats the token"
        return
    assert token.isascii()
    assert token.isalnum()
    assert token.startswith("EAA")
    assert tokens.clean_access_token(token) == token
    hint = tokens.token_hint(token)
    assert token not in hint
    assert len(hint) <= 16


@FEW_EXAMPLES
@given(value=token_like.filter(lambda value: isinstance(value, str)), pixel_id=form_text)
def test_the_token_form_and_live_check_never_raise_or_repeat_the_token(
    use_sandbox: Any, value: str, pixel_id: str
) -> None:
    form = ReplaceTokenForm(data={"access_token": value.replace("\x00", "")})
    form.is_valid()
    result = destinations.check_token(pixel_id, value)
    assert result.message
    if len(value.strip()) >= 12:
        assert value.strip() not in result.message
        assert value.strip() not in str(form.errors)


# --- any JSON number at any position of the whole event schema -------------------------------
#
# The strategies above keep numbers to the sizes the code expects. JSON has no such limit, and
# neither do callers of track(): these generate whole events over every key of Meta's schema
# where any position may hold any JSON value, with unbounded integers, 1e400 (which Python's
# json reads as infinity), negative zero, integers too long for Python to read, and the same
# numbers written as strings.


class RawNumber(str):
    """A JSON number literal sent as it is written (Python cannot hold it as a float or int)."""


# Integers past sys.get_int_max_str_digits() (4300): json.loads refuses to read them by default.
TOO_MANY_DIGITS = [RawNumber("9" * 4301), RawNumber("-" + "1" * 5000)]
number_literals = st.sampled_from(
    [
        RawNumber("1e400"),
        RawNumber("-1e400"),
        RawNumber("1E+400"),
        RawNumber("1e-400"),
        RawNumber("-0"),
        RawNumber("-0.0"),
        RawNumber("0e0"),
        RawNumber("1" + "0" * 401),
        *TOO_MANY_DIGITS,
    ]
)
numbers_as_text = st.sampled_from(
    ["1e400", "-1e400", "-0.0", "-0", str(10**401), "9" * 5000, "NaN", "Infinity", "0x10"]
)
unbounded_integers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.builds(
        lambda digits, sign: sign * 10**digits, st.integers(300, 4200), st.sampled_from([1, -1])
    )
)
# What json.loads gives for a JSON number (no NaN: a JSON body cannot carry it).
http_numbers = (
    unbounded_integers
    | st.floats(allow_nan=False)
    | st.just(-0.0)
    | number_literals
    | numbers_as_text
)


class HugeInt(int):
    """An integer past Python's limit for writing integers as text, shown by its size only.

    (Hypothesis prints the values it draws, and ``repr`` of such an integer raises.)
    """

    __str__ = int.__repr__

    def __repr__(self) -> str:
        return f"<integer of {self.bit_length()} bits>"


# What a Python caller of track() can pass: all of the above, NaN, and integers JSON cannot
# write at all.
python_numbers = (
    unbounded_integers
    | st.floats()
    | st.just(-0.0)
    | numbers_as_text
    | st.sampled_from(
        [HugeInt(10**5000), HugeInt(-(10**4400)), Decimal("1E+400"), Decimal("NaN"), Decimal("-0")]
    )
)
# Text that survives a JSON round trip: NUL and lone surrogates included (\u escapes).
json_text = st.sampled_from(NASTY_STRINGS) | st.text(max_size=20) | numbers_as_text


def arbitrary_json(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | numbers | json_text
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
        ),
        max_leaves=12,
    )


USER_DATA_SCHEMA_KEYS = [*HASHED_KEYS, *CLEAR_KEYS, *ALIASES]
CUSTOM_DATA_SCHEMA_KEYS = [
    "value",
    "currency",
    "predicted_ltv",
    "num_items",
    "contents",
    "content_ids",
    "content_name",
    "content_type",
    "content_category",
    "order_id",
    "search_string",
    "status",
    "delivery_category",
]
CONTENT_KEYS = ["id", "quantity", "item_price", "delivery_category", "title", "brand"]
APP_DATA_KEYS = [
    "advertiser_tracking_enabled",
    "application_tracking_enabled",
    "extinfo",
    "campaign_ids",
    "install_referrer",
    "installer_package",
    "url_schemes",
    "windows_attribution_id",
]


def whole_events(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Events over every key of the schema; every position may hold any JSON value instead."""
    anything = arbitrary_json(numbers)

    def shaped(keys: list[str], value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.dictionaries(st.sampled_from(keys) | json_text, value, max_size=6) | anything

    contents = st.lists(shaped(CONTENT_KEYS, numbers | anything), max_size=3) | anything
    custom = shaped(
        CUSTOM_DATA_SCHEMA_KEYS,
        numbers | st.sampled_from(["USD", "EUR", "usd"]) | contents | anything,
    )
    user = shaped(
        USER_DATA_SCHEMA_KEYS,
        st.sampled_from(["jane@example.com", "+1 650 555 0100", "19900101", "fb.1.1.x"])
        | numbers
        | st.lists(numbers | json_text, max_size=3)
        | anything,
    )
    app = shaped(APP_DATA_KEYS, st.lists(numbers | json_text, max_size=16) | anything)
    original = shaped(["event_name", "event_time"], numbers | anything)
    schema: dict[str, st.SearchStrategy[Any]] = {
        "event_name": st.sampled_from(["Purchase", "Lead"]) | anything,
        "event_id": st.uuids().map(str) | numbers | anything,
        "event_time": st.just(now_seconds) | numbers | anything,
        "action_source": st.sampled_from(["website", "app", "system_generated"]) | anything,
        "event_source_url": st.just("https://shop.example.com/?fbclid=IwAR0abc") | anything,
        "user_data": user,
        "custom_data": custom,
        "app_data": app,
        "original_event_data": original,
        "consent": shaped(["ad_storage", "ad_user_data", "region"], anything),
    }
    for key in SERVER_EVENT_KEYS:
        schema.setdefault(key, anything)
    known = st.fixed_dictionaries({}, optional=schema)
    unknown = st.dictionaries(json_text, anything, max_size=2)
    return st.builds(lambda extra, event: {**extra, **event}, unknown, known)


def json_body(value: Any) -> str:
    """``value`` as JSON text, writing RawNumber literals and infinities as big literals."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, float) and math.isinf(value):
        return "1e400" if value > 0 else "-1e400"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{json.dumps(str(k))}:{json_body(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(json_body(item) for item in value) + "]"
    return json.dumps(value)


WHOLE_SCHEMA = settings(BAD_INPUT, max_examples=60)


@WHOLE_SCHEMA
@given(batch=st.lists(whole_events(http_numbers), min_size=1, max_size=4))
def test_any_json_at_any_position_of_the_schema_is_accepted_event_by_event(
    endpoint: Endpoint, batch: list[dict[str, Any]]
) -> None:
    # Every body here is valid JSON holding a list of objects: the request is never refused
    # whole (that would refuse the good events with the bad), each event gets its own status.
    response = check_answer(endpoint, json_body({"data": batch}).encode(), len(batch))
    assert response.status_code == 202, response.json()


@WHOLE_SCHEMA
@given(event=whole_events(python_numbers))
def test_track_takes_any_number_at_any_position_of_the_schema(
    tracked_destination: Destination, event: dict[str, Any]
) -> None:
    rows = Event.objects.filter(destination=tracked_destination)
    before = set(rows.values_list("pk", flat=True))
    result = track(tracked_destination, event)
    assert result.status in RESULT_STATUSES
    if result.status == "rejected":
        assert result.event.status_reason.startswith("Not sent: ")
    assert set(rows.values_list("pk", flat=True)) == before | {result.event.pk}
    assert_whole_rows(tracked_destination)


def purchase(event_id: str, now: int, **custom: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_time": now,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/",
        "user_data": {"em": "jane@example.com", "client_user_agent": "UA"},
        "custom_data": {"value": 10, "currency": "EUR", **custom},
    }


def out_of_range_fields(diagnostics: list[dict[str, Any]]) -> set[str]:
    return {item["field"] for item in diagnostics if item["code"] == "number_out_of_range"}


def test_one_401_digit_value_refuses_that_event_only_every_time(endpoint: Endpoint) -> None:
    batch = [purchase(f"good-{index}", now_seconds) for index in range(999)]
    batch.insert(500, purchase("huge", now_seconds, value=RawNumber("9" * 401)))
    body = json_body({"data": batch})
    for attempt in range(2):
        response = endpoint.post(body.encode())
        assert response.status_code == 202
        results = response.json()["events"]
        assert len(results) == 1000
        bad = results[500]
        assert bad["status"] == ("rejected" if attempt == 0 else "duplicate")
        others = [result["status"] for index, result in enumerate(results) if index != 500]
        assert set(others) == ({"stored"} if attempt == 0 else {"duplicate"})
    row = Event.objects.get(destination=endpoint.destination, event_id="huge")
    assert row.status == EventStatus.REJECTED
    assert out_of_range_fields(row.diagnostics) == {"custom_data.value"}
    assert "custom_data.value" in row.status_reason
    # Nothing lost: the stored payload holds the number as sent.
    assert row.payload["custom_data"]["value"] == int("9" * 401)
    assert Event.objects.filter(status=EventStatus.PENDING).count() == 999


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("value", "1e400"),
        ("value", "-" + "9" * 401),
        ("value", '"1e400"'),
        ("predicted_ltv", "1e400"),
        ("predicted_ltv", "9" * 5000),
        ("num_items", "9" * 20),
        ("num_items", "1e400"),
    ],
)
def test_an_out_of_range_number_names_its_field(
    endpoint: Endpoint, field: str, literal: str
) -> None:
    body = json_body(purchase("e1", now_seconds, **{field: RawNumber(literal)}))
    response = check_answer(endpoint, body.encode(), 1)
    assert response.status_code == 202
    result = response.json()["events"][0]
    assert result["status"] == "rejected"
    assert out_of_range_fields(result["diagnostics"]) == {f"custom_data.{field}"}
    finding = next(item for item in result["diagnostics"] if item["code"] == "number_out_of_range")
    assert finding["fix"].startswith(f"Send custom_data.{field} as a plain number")
    # The number is kept as sent (as text where JSON's reader has no value for it).
    stored = Event.objects.get(event_id="e1").payload["custom_data"][field]
    assert str(stored).lstrip("-")[:1] in ("1", "9")


@pytest.mark.parametrize("where", ["quantity", "item_price"])
@pytest.mark.parametrize("literal", ["1e400", "9" * 401, "-" + "9" * 401])
def test_out_of_range_numbers_in_contents_name_the_line_item(
    endpoint: Endpoint, where: str, literal: str
) -> None:
    item = {"id": "SKU-1", "quantity": 1, "item_price": 5, where: RawNumber(literal)}
    body = json_body(purchase("e1", now_seconds, contents=[item]))
    result = check_answer(endpoint, body.encode(), 1).json()["events"][0]
    assert result["status"] == "rejected"
    assert f"custom_data.contents[0].{where}" in out_of_range_fields(result["diagnostics"])


@pytest.mark.parametrize(
    ("literal", "code"),
    [
        ("9" * 401, "number_out_of_range"),
        ("-" + "9" * 401, "number_out_of_range"),
        ("1e400", "number_out_of_range"),
        ('"1e400"', "number_out_of_range"),
        ('"' + "9" * 401 + '"', "number_out_of_range"),
        ("9" * 5000, "number_out_of_range"),
        ("-0.0", "event_time_too_old"),
        ('"-0.0"', "event_time_too_old"),
        ('"soon"', "invalid_event_time"),
    ],
)
def test_an_unusable_event_time_is_a_clear_rejection(
    endpoint: Endpoint, literal: str, code: str
) -> None:
    body = json_body({**purchase("e1", now_seconds), "event_time": RawNumber(literal)})
    result = check_answer(endpoint, body.encode(), 1).json()["events"][0]
    assert result["status"] == "rejected"
    errors = [item for item in result["diagnostics"] if item["severity"] == "error"]
    assert [(item["code"], item["field"]) for item in errors] == [(code, "event_time")]


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 10**5000, math.inf, Decimal("1E+400"), "1e400", str(10**401)],
    ids=["401 digits", "negative", "5001 digits", "inf", "Decimal", "text 1e400", "text digits"],
)
def test_track_rejects_an_out_of_range_value_without_raising(
    tracked_destination: Destination, value: Any
) -> None:
    result = track(tracked_destination, purchase("e1", now_seconds, value=value))
    assert result.status == "rejected"
    assert {item.field for item in result.diagnostics if item.code == "number_out_of_range"} == {
        "custom_data.value"
    }
    assert_whole_rows(tracked_destination)


def test_a_stored_event_with_huge_numbers_is_delivered_as_valid_json(
    use_sandbox: Any, tracked_destination: Destination
) -> None:
    # Numbers Meta does not read (custom properties) are sent as they came; the sender's JSON
    # stays valid, whatever they hold.
    event = purchase("e1", now_seconds, big=10**400, text="1e400", nothing=math.inf, zero=-0.0)
    result = track(tracked_destination, event)
    assert result.status == "stored"
    report = dispatch.dispatch_pending()
    assert report.delivered == 1
    sent = use_sandbox.events()[0]["event"]["custom_data"]
    assert (sent["big"], sent["text"], sent["nothing"], sent["zero"]) == (10**400, "1e400", None, 0)
