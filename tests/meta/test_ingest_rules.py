"""Ingest rules, one test per rule Meta documents; each docstring names its source.

The sources are the rows of docs/META.md, section "Ingest rules". Events go through
``track()`` and, where the rule is about what Meta accepts, on to the sandbox over a socket.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from capi_destinations import checks, diagnostics, dispatch, graph, ingest, reports
from capi_destinations import clock as app_clock
from capi_destinations.diagnostics import Diagnostic
from capi_destinations.forms import DestinationForm
from capi_destinations.models import Destination, Event, EventStatus, Role
from capi_destinations.sandbox import Sandbox, validation
from tests.conftest import queue_events

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def env(clock: Any, use_sandbox: Sandbox) -> Sandbox:
    """A frozen clock and the app pointed at a fresh sandbox."""
    return use_sandbox


def event(**fields: Any) -> dict[str, Any]:
    """A raw event as a developer sends it; ``fields`` override or add keys."""
    raw: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(app_clock.now().timestamp()),
        "event_id": "order-1",
        "action_source": "physical_store",
        "user_data": {"em": "jane.doe@example.com", "ph": "+44 20 7946 0958"},
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }
    raw.update(fields)
    return raw


def codes(result: ingest.TrackResult) -> set[str]:
    return {finding.code for finding in result.diagnostics}


def finding(result: ingest.TrackResult, code: str) -> Diagnostic:
    return next(found for found in result.diagnostics if found.code == code)


# --- 1. physical_store events have 62 days -------------------------------------------------


def test_a_store_event_30_days_old_is_stored_and_delivered(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, offline events: "For offline and physical store events with physical_store
    as action_source, you should upload transactions within 62 days of the conversion."
    (developers.facebook.com/documentation/ads-commerce/conversions-api/offline-events)."""
    when = int((app_clock.now() - 30 * DAY).timestamp())
    result = ingest.track(destination, event(event_time=when))

    assert result.status == ingest.STORED
    assert "event_time_too_old" not in codes(result)
    report = dispatch.dispatch_pending()
    assert report.delivered == 1
    assert [record["event_id"] for record in env.events()] == ["order-1"]


def test_a_store_event_waits_in_the_queue_past_seven_days(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, offline events (62 days for physical_store); the queue keeps such an event
    while its destination is disabled, and sends it once enabled again."""
    when = int((app_clock.now() - 6 * DAY).timestamp())
    ingest.track(destination, event(event_time=when))
    Destination.objects.filter(pk=destination.pk).update(enabled=False)
    app_clock.advance(20 * DAY)

    assert dispatch.expire_unsendable_events() == 0
    Destination.objects.filter(pk=destination.pk).update(enabled=True)
    assert dispatch.dispatch_pending().delivered == 1


def test_the_seven_day_rule_stays_for_every_other_action_source(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, server event parameters: event_time "can be up to 7 days before you send
    an event to Meta" (…/conversions-api/parameters/server-event); 62 days only for
    physical_store (…/conversions-api/offline-events)."""
    eight_days = int((app_clock.now() - 8 * DAY).timestamp())
    web = ingest.track(
        destination,
        event(
            event_id="web-1",
            event_time=eight_days,
            action_source="website",
            event_source_url="https://shop.example.com/",
            user_data={"em": "jane.doe@example.com", "client_user_agent": "Mozilla/5.0"},
        ),
    )
    old_store = ingest.track(
        destination,
        event(event_id="store-1", event_time=int((app_clock.now() - 63 * DAY).timestamp())),
    )

    assert web.status == ingest.REJECTED
    assert "event_time_too_old" in codes(web)
    assert old_store.status == ingest.REJECTED
    assert "62 days" in finding(old_store, "event_time_too_old").message


def test_the_sandbox_accepts_a_store_event_of_sixty_days(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, offline events (62 days for physical_store): the sandbox answers alike."""
    when = app_clock.now() - 60 * DAY
    payload = {
        "event_name": "Purchase",
        "event_time": int(when.timestamp()),
        "event_id": "store-60",
        "action_source": "physical_store",
        "user_data": {"em": ["a" * 64]},
        "custom_data": {"value": 1.0, "currency": "EUR"},
    }
    store = Event.objects.create(
        destination=destination,
        event_name="Purchase",
        event_id="store-60",
        event_time=when,
        action_source="physical_store",
        payload=payload,
    )
    website = {**payload, "event_id": "web-60", "action_source": "website"}
    web = Event.objects.create(
        destination=destination,
        event_name="Purchase",
        event_id="web-60",
        event_time=when,
        action_source="website",
        payload=website,
    )
    queue_events([store, web])

    report = dispatch.dispatch_pending()

    assert report.delivered == 1
    assert report.expired == 1
    assert Event.objects.get(event_id="store-60").status == EventStatus.DELIVERED


# --- 4. parameter builder values are sent as is -------------------------------------------

DIGEST = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
APPENDIX = ".AQIDAQMC"


@pytest.mark.parametrize(
    "key", ["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"]
)
def test_a_digest_with_the_parameter_builder_appendix_is_passed_unchanged(
    key: str, clock: Any, destination: Destination
) -> None:
    """Source: Meta, parameter builder library: hashed customer information comes back with an
    appendix ("62a14e44…0f62f.ABcDEFGh"), and "You can send these values as is"
    (developers.facebook.com/documentation/ads-commerce/conversions-api/parameter-builder-library)."""
    value = DIGEST + APPENDIX
    result = ingest.track(destination, event(user_data={"em": "jane@example.com", key: value}))

    assert result.event.payload["user_data"][key] == [value]
    assert not [f for f in result.diagnostics if f.field == f"user_data.{key}"]


def test_an_ip_address_with_the_appendix_is_kept(clock: Any, destination: Destination) -> None:
    """Source: Meta, parameter builder library: client_ip_address "168.212.226.204.ABcDEFGh"
    can be sent as is (…/conversions-api/parameter-builder-library)."""
    ipv4 = "168.212.226.204.AQIDAQMC"
    ipv6 = "2001:db8::1.AQIDAQMC"
    first = ingest.track(destination, event(event_id="ip4", user_data={"ip": ipv4}))
    second = ingest.track(destination, event(event_id="ip6", user_data={"ip": ipv6}))
    bad = ingest.track(destination, event(event_id="ip-bad", user_data={"ip": "1.2.3.AQIDAQMC"}))

    assert first.event.payload["user_data"]["client_ip_address"] == ipv4
    assert second.event.payload["user_data"]["client_ip_address"] == ipv6
    assert "invalid_ip_address" in codes(bad)


def test_fbc_fbp_and_urls_with_the_appendix_are_sent_as_is(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, parameter builder library: fbc, fbp and URLs carry the appendix and go to
    Meta as they are (…/conversions-api/parameter-builder-library); the sandbox accepts them."""
    fbc = "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890.AQIDAQMC"
    fbp = "fb.1.1596403881668.1116446470.AQIDAQMC"
    url = "https://shop.example.com/checkout.AQIDAQMC"
    result = ingest.track(
        destination,
        event(
            action_source="website",
            event_source_url=url,
            user_data={
                "em": DIGEST + APPENDIX,
                "fbc": fbc,
                "fbp": fbp,
                "client_user_agent": "Mozilla/5.0",
            },
        ),
    )

    assert result.status == ingest.STORED
    sent = result.event.payload
    assert (sent["user_data"]["fbc"], sent["user_data"]["fbp"]) == (fbc, fbp)
    assert sent["event_source_url"] == url
    assert dispatch.dispatch_pending().delivered == 1
    assert env.events()[0]["event"]["user_data"]["em"] == [DIGEST + APPENDIX]


# --- 5. business messaging keeps its identifiers -------------------------------------------


def test_business_messaging_account_ids_are_kept(env: Sandbox, destination: Destination) -> None:
    """Source: Meta, Conversions API for business messaging: WhatsApp events carry
    user_data.whatsapp_business_account_id with ctwa_clid, Instagram events
    instagram_business_account_id (…/conversions-api/business-messaging)."""
    result = ingest.track(
        destination,
        event(
            action_source="business_messaging",
            messaging_channel="whatsapp",
            user_data={"whatsapp_business_account_id": 1234567890, "ctwa_clid": "ARAkLkA8rmlF"},
        ),
    )

    assert result.status == ingest.STORED, result.diagnostics
    sent = result.event.payload
    assert sent["messaging_channel"] == "whatsapp"
    assert sent["user_data"]["whatsapp_business_account_id"] == "1234567890"
    assert sent["user_data"]["ctwa_clid"] == "ARAkLkA8rmlF"
    assert not {"unknown_user_data_key", "missing_messaging_identifiers"} & codes(result)
    instagram = ingest.track(
        destination,
        event(
            event_id="ig-1",
            action_source="business_messaging",
            messaging_channel="instagram",
            user_data={
                "instagram_business_account_id": "17841400000000000",
                "ig_account_id": "17841400000000000",
                "ig_sid": "1234",
            },
        ),
    )
    assert instagram.event.payload["user_data"]["instagram_business_account_id"]
    assert dispatch.dispatch_pending().delivered == 2


def test_messaging_channel_must_be_a_documented_value(clock: Any, destination: Destination) -> None:
    """Source: Meta, business messaging: messaging_channel is whatsapp, messenger or instagram
    (…/conversions-api/business-messaging)."""
    result = ingest.track(
        destination,
        event(
            action_source="business_messaging",
            messaging_channel="WhatsApp",
            user_data={"whatsapp_business_account_id": "1", "ctwa_clid": "x"},
        ),
    )

    assert result.status == ingest.REJECTED
    found = finding(result, "invalid_messaging_channel")
    assert '"whatsapp"' in found.fix


@pytest.mark.parametrize(
    ("channel", "user_data", "missing"),
    [
        ("whatsapp", {"ctwa_clid": "ARAkLkA8rmlF"}, "whatsapp_business_account_id"),
        ("messenger", {"page_id": "123"}, "page_scoped_user_id"),
        ("instagram", {"ig_sid": "123"}, "ig_account_id"),
    ],
)
def test_a_business_messaging_event_without_its_channels_identifiers_is_flagged(
    channel: str, user_data: dict[str, str], missing: str, clock: Any, destination: Destination
) -> None:
    """Source: Meta, business messaging: WhatsApp needs ctwa_clid and the WhatsApp business
    account; Messenger page_id and page_scoped_user_id; Instagram ig_account_id and ig_sid
    (…/conversions-api/business-messaging)."""
    result = ingest.track(
        destination,
        event(
            action_source="business_messaging",
            messaging_channel=channel,
            user_data={"em": "jane@example.com", **user_data},
        ),
    )

    found = finding(result, "missing_messaging_identifiers")
    assert found.field == f"user_data.{missing}"
    assert missing in found.message
    assert missing in found.fix


# --- 6. partner_agent -----------------------------------------------------------------------


def test_the_partner_agent_follows_metas_rule_and_a_platform_sets_its_own(
    env: Sandbox, destination: Destination, settings: Any
) -> None:
    """Source: Meta, end-to-end implementation guide, "Attribute events to your platform":
    partner_agent "should be in a format that is less than 23 characters and includes at least
    two alphabetical characters" (…/conversions-api/guides/end-to-end-implementation)."""
    assert checks.partner_agent_problem(graph.PARTNER_AGENT) is None
    ingest.track(destination, event())
    dispatch.dispatch_pending()
    assert env.requests()[-1]["params"]["partner_agent"] == graph.PARTNER_AGENT

    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "PARTNER_AGENT": "acme-shops-2.1"}
    ingest.track(destination, event(event_id="order-2"))
    dispatch.dispatch_pending()
    assert env.requests()[-1]["params"]["partner_agent"] == "acme-shops-2.1"


@pytest.mark.parametrize("value", ["a-platform-name-that-is-23", "12-34", "x"])
def test_a_partner_agent_setting_that_breaks_the_rule_fails_the_system_check(
    value: str, settings: Any
) -> None:
    """Source: Meta, end-to-end implementation guide (less than 23 characters, at least two
    letters); the check refuses a setting that Meta's rule refuses."""
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "PARTNER_AGENT": value}

    found = [message.id for message in checks.check_setting_formats()]

    assert "capi_destinations.E020" in found


def test_the_sandbox_refuses_a_partner_agent_that_breaks_the_rule(
    env: Sandbox, destination: Destination, settings: Any
) -> None:
    """Source: Meta, end-to-end implementation guide (the format); the answer Meta gives to a
    wrong one is unconfirmed, so the sandbox gives its generic invalid-parameter answer."""
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "PARTNER_AGENT": "a-platform-name-that-is-23",
    }
    ingest.track(destination, event())

    dispatch.dispatch_pending()

    assert env.events() == []
    assert env.requests()[-1]["status"] == 400


# --- 7. the freshest click wins -------------------------------------------------------------


def web_event(**fields: Any) -> dict[str, Any]:
    return event(
        action_source="website",
        event_source_url="https://shop.example.com/landing?fbclid=NewClick123",
        user_data={"em": "jane@example.com", "client_user_agent": "Mozilla/5.0"},
        **fields,
    )


def test_an_fbclid_in_the_page_url_beats_an_older_fbc_cookie(
    clock: Any, destination: Destination, rf: Any
) -> None:
    """Source: Meta, fbp and fbc parameters: store and send "the most recent value obtained
    from the URL"
    (developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc)."""
    request = rf.get("/", HTTP_USER_AGENT="Mozilla/5.0")
    request.COOKIES["_fbc"] = "fb.1.1554763741205.OldClick999"
    now_ms = int(app_clock.now().timestamp()) * 1000

    result = ingest.track(destination, web_event(), request=request)

    assert result.event.payload["user_data"]["fbc"] == f"fb.1.{now_ms}.NewClick123"
    assert "fbc_from_url" in codes(result)
    same = ingest.track(
        destination,
        web_event(event_id="order-2"),
        request=_with_cookie(rf, "fb.1.1554763741205.NewClick123"),
    )
    assert same.event.payload["user_data"]["fbc"] == "fb.1.1554763741205.NewClick123"


def _with_cookie(rf: Any, fbc: str) -> Any:
    request = rf.get("/", HTTP_USER_AGENT="Mozilla/5.0")
    request.COOKIES["_fbc"] = fbc
    return request


def test_an_fbc_built_for_a_back_filled_event_uses_the_events_time(
    clock: Any, destination: Destination
) -> None:
    """Source: Meta, fbp and fbc parameters: creationTime is when the fbclid was first observed
    (…/parameters/fbp-and-fbc); for an event sent later that is its own time, never a time
    after the conversion."""
    happened = int((app_clock.now() - 2 * DAY).timestamp())

    result = ingest.track(destination, web_event(event_time=happened))

    assert result.event.payload["user_data"]["fbc"] == f"fb.1.{happened * 1000}.NewClick123"


# --- 8. event_time is never invented silently ----------------------------------------------


def test_a_missing_event_time_becomes_the_recording_time_and_says_so(
    clock: Any, destination: Destination
) -> None:
    """Source: Meta, server event parameters: event_time is required
    (…/conversions-api/parameters/server-event); filling it is our choice, and it is told."""
    raw = event()
    del raw["event_time"]

    result = ingest.track(destination, raw)

    assert result.event.payload["event_time"] == int(app_clock.now().timestamp())
    note = finding(result, "event_time_filled")
    assert (note.field, note.severity) == ("event_time", "warning")
    assert "recorded" in note.message


def test_the_future_time_tolerance_is_one_rule_of_ours_in_ingest_and_sandbox(
    env: Sandbox, destination: Destination
) -> None:
    """Source: none: Meta documents no tolerance for event times in the future (unconfirmed);
    ours is five minutes, the same in ingest and sandbox, and the message says it is ours."""
    assert timedelta(seconds=validation.FUTURE_TOLERANCE_SECONDS) == diagnostics.MAX_CLOCK_SKEW
    now = int(app_clock.now().timestamp())
    inside = ingest.track(destination, event(event_id="in", event_time=now + 290))
    outside = ingest.track(destination, event(event_id="out", event_time=now + 310))

    assert inside.status == ingest.STORED
    assert outside.status == ingest.REJECTED
    message = finding(outside, "event_time_in_future").message
    assert "our own rule" in message
    assert "Meta documents no limit" in message
    assert dispatch.dispatch_pending().delivered == 1
    meta_ready = {
        "event_name": "Purchase",
        "action_source": "physical_store",
        "user_data": {"em": [DIGEST]},
        "custom_data": {"value": 1, "currency": "EUR"},
    }
    assert validation.validate_events([{**meta_ready, "event_time": now + 290}], now=now) is None
    assert validation.validate_events([{**meta_ready, "event_time": now + 310}], now=now)


# --- 9. a phone number without a country code cannot match ---------------------------------


def test_phones_without_a_country_code_are_an_error_on_the_destinations_summary(
    clock: Any, destination: Destination, make_user: Any, tenant: Any
) -> None:
    """Source: Meta, customer information parameters: phone numbers "must include a country
    code to be used for matching"
    (developers.facebook.com/documentation/ads-commerce/conversions-api/parameters/customer-information-parameters)."""
    phones = ["+44 20 7946 0958"] * 9 + ["020 7946 0958"] * 4  # 4 of 13: 31%
    for number, phone in enumerate(phones):
        ingest.track(destination, event(event_id=f"p{number}", user_data={"ph": phone}))

    [row] = reports.diagnostics_summary(destination).phones_without_country
    assert (row.event_name, row.count, row.of_phones, row.percent) == ("Purchase", 4, 13, 31)
    assert row.severity == "error"
    client = Client()
    client.force_login(make_user(tenant, Role.ADMIN))
    page = client.get(
        reverse("capi_destinations:destination", kwargs={"code": destination.code})
    ).content.decode()
    assert "31%</strong> of Purchase phones have no country code" in page
    assert "default country" in page


def test_a_destinations_default_country_reads_national_phone_numbers(
    clock: Any, make_destination: Any
) -> None:
    """Source: Meta, customer information parameters (a country code is needed); the
    destination's default country (set in its form) supplies it for national numbers."""
    british = make_destination(default_country="gb")

    result = ingest.track(british, event(user_data={"ph": "020 7946 0958"}))

    assert "phone_missing_country_code" not in codes(result)
    expected = hashlib.sha256(b"442079460958").hexdigest()
    assert result.event.payload["user_data"]["ph"] == [expected]
    assert not reports.diagnostics_summary(british).phones_without_country
    assert "default_country" in DestinationForm.Meta.fields


# --- 10. fields that can fail a whole request are checked before sending --------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"data_processing_options": ["ldu"]}, "data_processing_options"),
        ({"data_processing_options": "LDU"}, "data_processing_options"),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": 2},
            "data_processing_options_country",
        ),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": 1},
            "data_processing_options_state",
        ),
        (
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 0,
                "data_processing_options_state": 1000,
            },
            "data_processing_options_country",
        ),
    ],
)
def test_limited_data_use_values_and_pairing_are_checked(
    fields: dict[str, Any], field: str, clock: Any, destination: Destination
) -> None:
    """Source: Meta, server event parameters: data_processing_options accepts only "LDU" (or
    []); data_processing_options_country 1 (USA) or 0, _state 1000 (California) or 0, a state
    with a country (…/conversions-api/parameters/server-event)."""
    result = ingest.track(destination, event(**fields))

    assert result.status == ingest.REJECTED
    assert finding(result, "invalid_data_processing_options").field == field


def test_ldu_alone_is_geolocated_and_a_location_without_ldu_is_left_out(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, server event parameters (0 = Meta geolocates; country and state belong to
    LDU); the sandbox accepts what ingest sends."""
    alone = ingest.track(destination, event(data_processing_options=["LDU"]))
    stray = ingest.track(destination, event(event_id="order-2", data_processing_options_country=1))

    assert alone.status == ingest.STORED
    assert "ldu_location_filled" in codes(alone)
    sent = alone.event.payload
    assert (sent["data_processing_options_country"], sent["data_processing_options_state"]) == (
        0,
        0,
    )
    assert "data_processing_options_country" not in stray.event.payload
    assert "dpo_location_without_ldu" in codes(stray)
    assert dispatch.dispatch_pending().delivered == 2


@pytest.mark.parametrize(
    ("fields", "path", "code"),
    [
        ({"opt_out": "yes"}, ("opt_out",), "invalid_opt_out"),
        (
            {"customer_segmentation": "vip"},
            ("customer_segmentation",),
            "invalid_customer_segmentation",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "content_type": "sku"}},
            ("custom_data", "content_type"),
            "invalid_content_type",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "delivery_category": "drone"}},
            ("custom_data", "delivery_category"),
            "invalid_delivery_category",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "predicted_ltv": "high"}},
            ("custom_data", "predicted_ltv"),
            "invalid_predicted_ltv",
        ),
        (
            {"custom_data": {"value": 1, "currency": "EUR", "num_items": "3"}},
            ("custom_data", "num_items"),
            "invalid_num_items",
        ),
        (
            {"original_event_data": {"event_name": "Lead", "colour": "red"}},
            ("original_event_data", "colour"),
            "invalid_original_event_data",
        ),
        (
            {"action_source": "email", "store_data": {"store_code": "12"}},
            ("store_data",),
            "invalid_store_data",
        ),
    ],
)
def test_a_bad_optional_field_is_left_out_with_a_diagnostic(
    fields: dict[str, Any], path: tuple[str, ...], code: str, env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, server event and custom data parameters: opt_out is a boolean;
    customer_segmentation one of nine values; content_type product or product_group;
    delivery_category in_store, curbside or home_delivery; predicted_ltv a number; num_items an
    integer; original_event_data event_name, event_time, order_id, event_id
    (…/parameters/server-event, …/parameters/custom-data); store_data belongs to store events
    (…/conversions-api/offline-events). One bad value fails a whole request
    (…/conversions-api/using-the-api), so it is left out and the rest is sent."""
    result = ingest.track(destination, event(**fields))

    assert result.status == ingest.STORED
    assert code in codes(result)
    sent: Any = result.event.payload
    for key in path[:-1]:
        sent = sent[key]
    assert path[-1] not in sent
    assert dispatch.dispatch_pending().delivered == 1


def test_a_valid_store_event_keeps_its_store_data(clock: Any, destination: Destination) -> None:
    """Source: Meta, offline events: store_data, "store location data about conversion event",
    a JSON dictionary (…/conversions-api/offline-events); its keys are not checked
    (unconfirmed)."""
    result = ingest.track(destination, event(store_data={"store_code": "12"}))

    assert result.event.payload["store_data"] == {"store_code": "12"}
    assert "unknown_event_key" not in codes(result)


@pytest.mark.parametrize(
    ("app_data", "field"),
    [
        ({"extinfo": ["a2"] + [""] * 15}, "app_data.advertiser_tracking_enabled"),
        ({"advertiser_tracking_enabled": 1, "extinfo": ["a2"] * 3}, "app_data.extinfo"),
        ({"advertiser_tracking_enabled": 1, "extinfo": ["x9"] + [""] * 15}, "app_data.extinfo"),
        ({"advertiser_tracking_enabled": 1}, "app_data.extinfo"),
    ],
)
def test_app_events_need_tracking_flag_and_the_sixteen_extinfo_slots(
    app_data: dict[str, Any], field: str, clock: Any, destination: Destination
) -> None:
    """Source: Meta, app data parameters: app events need advertiser_tracking_enabled and
    extinfo, 16 slots in order, the first "a2" (Android) or "i2" (iOS)
    (…/conversions-api/parameters/server-event, …/conversions-api/app-events)."""
    result = ingest.track(destination, event(action_source="app", app_data=app_data))
    good = ingest.track(
        destination,
        event(
            event_id="order-2",
            action_source="app",
            app_data={"advertiser_tracking_enabled": 1, "extinfo": ["i2"] + [""] * 15},
        ),
    )

    assert result.status == ingest.REJECTED
    assert finding(result, "invalid_app_data").field == field
    assert good.status == ingest.STORED


@pytest.mark.parametrize(
    ("fields", "user_data"),
    [
        ({"data_processing_options": ["LDU"]}, {}),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": 1},
            {},
        ),
        ({}, {"client_ip_address": "999.1.1.1"}),
        ({}, {"fbc": "fbclid=AbC"}),
    ],
)
def test_the_sandbox_enforces_the_documented_formats(
    fields: dict[str, Any], user_data: dict[str, Any], clock: Any
) -> None:
    """Source: Meta, server event parameters (LDU values and pairing) and customer information
    parameters (a valid IPv4/IPv6 address; fbc is fb.<subdomain index>.<creation time>.<fbclid>)
    (…/parameters/server-event, …/parameters/customer-information-parameters)."""
    now = int(app_clock.now().timestamp())
    good = {
        "event_name": "Purchase",
        "event_time": now,
        "action_source": "physical_store",
        "user_data": {"em": [DIGEST], "client_ip_address": "168.212.226.204.AQIDAQMC"},
        "custom_data": {"value": 1, "currency": "EUR"},
    }
    bad = {**good, **fields, "user_data": {**good["user_data"], **user_data}}

    assert validation.validate_events([good], now=now) is None
    answer = validation.validate_events([bad], now=now)
    assert answer is not None
    assert answer.code == 100


# --- 14. the deduplication window -------------------------------------------------------------


def test_an_event_id_reused_after_48_hours_is_still_one_event(
    env: Sandbox, destination: Destination
) -> None:
    """Source: Meta, deduplicate pixel and server events: the same event_name and event_id are
    deduplicated within 48 hours (…/conversions-api/deduplicate-pixel-and-server-events).
    Our rule: one event per event_id for as long as events are kept, so a reuse after 48 hours
    (which Meta would count again) is neither stored nor sent, and event_id_reused says so."""
    ingest.track(destination, event())
    assert dispatch.dispatch_pending().delivered == 1
    app_clock.advance(timedelta(hours=49))

    reused = ingest.track(destination, event(custom_data={"value": 99.0, "currency": "EUR"}))

    assert reused.status == ingest.DUPLICATE
    message = finding(reused, "event_id_reused").message
    assert "48 hours" in message
    assert "never counted twice" in message
    assert dispatch.dispatch_pending().delivered == 0
    assert len(env.events()) == 1
