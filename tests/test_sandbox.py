"""The Graph API sandbox: Meta's paths and validation rules, faults, control API, read-back.

Everything goes through a real socket with plain ``requests`` calls, the way any client
(our own, Meta's SDK, curl) would talk to it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from capi_destinations.management.commands.capi_sandbox import (
    build_sandbox_app,
    parse_seed_pixel,
)
from capi_destinations.sandbox import Sandbox, SandboxApp, running_sandbox
from capi_destinations.sandbox.state import RawData
from tests.conftest import make_token

PIXEL_ID = "1122334455"
TOKEN = make_token("sandbox-tests")
HASH = hashlib.sha256(b"jane@example.com").hexdigest()
ROOT = Path(__file__).resolve().parent.parent


def event(sandbox: Sandbox, number: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid website Purchase one minute before the sandbox's now."""
    item: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(sandbox.app.state.now()) - 60,
        "event_id": f"order-{number}",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thanks",
        "user_data": {"em": [HASH], "client_user_agent": "Mozilla/5.0", "fbp": "fb.1.1.1"},
        "custom_data": {"value": 10, "currency": "USD"},
    }
    item.update(overrides)
    return item


def post_events(
    sandbox: Sandbox,
    events: list[Any],
    *,
    pixel_id: str = PIXEL_ID,
    token: str | None = TOKEN,
    version: str = "v26.0",
    **params: Any,
) -> requests.Response:
    body: dict[str, Any] = {"data": events, **params}
    if token is not None:
        body["access_token"] = token
    return requests.post(f"{sandbox}/{version}/{pixel_id}/events", json=body, timeout=10)


def get_pixel(
    sandbox: Sandbox, *, pixel_id: str = PIXEL_ID, token: str = TOKEN, **params: str
) -> requests.Response:
    return requests.get(
        f"{sandbox}/v26.0/{pixel_id}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def meta_error(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def assert_event_error(response: requests.Response, words: str, subcode: int | None = None) -> None:
    """Meta's 400 for a bad event: "Invalid parameter", code 100, the subcode, and no event index.

    Shape of real bodies: rudderlabs/rudder-transformer test/integrations/destinations/
    facebook_pixel/network.ts (2804003), facebook/facebook-java-business-sdk#421 (2804016).
    """
    assert response.status_code == 400
    error = meta_error(response)
    assert error["message"] == "Invalid parameter"
    assert error["type"] == "OAuthException"
    assert error["code"] == 100
    assert error.get("error_subcode") == subcode
    assert error["is_transient"] is False
    assert error["error_user_title"]
    assert words in error["error_user_msg"]
    assert error["fbtrace_id"]
    text = json.dumps(error)
    assert "data[" not in text
    assert not re.search(r"\bevent \d", text, re.IGNORECASE)


def control(sandbox: Sandbox, method: str, name: str, body: Any = None, **query: str) -> Any:
    response = requests.request(
        method, f"{sandbox}/_sandbox/{name}", json=body, params=query, timeout=10
    )
    assert response.status_code < 300, response.text
    return response.json()


# --- Meta's answers ----------------------------------------------------------------------------


def test_an_open_sandbox_accepts_any_well_formed_token_on_any_pixel(sandbox):
    response = post_events(sandbox, [event(sandbox, 1), event(sandbox, 2)])

    assert response.status_code == 200
    body = response.json()
    assert body["events_received"] == 2
    assert body["messages"] == []
    assert body["fbtrace_id"] == response.headers["x-fb-trace-id"]
    assert get_pixel(sandbox, fields="id,name").json() == {
        "id": PIXEL_ID,
        "name": f"Sandbox pixel {PIXEL_ID}",
    }


def test_registered_pixels_answer_only_their_own_tokens(sandbox):
    sandbox.register_pixel(PIXEL_ID, "Acme web", [TOKEN])
    other_token = make_token("other")
    sandbox.register_pixel("777", "Other shop", [other_token])

    assert get_pixel(sandbox, fields="name").json() == {"id": PIXEL_ID, "name": "Acme web"}
    assert post_events(sandbox, [event(sandbox)]).status_code == 200
    wrong_pixel = meta_error(post_events(sandbox, [event(sandbox)], token=other_token))
    unknown_token = meta_error(post_events(sandbox, [event(sandbox)], token=make_token("x")))

    assert (wrong_pixel["code"], wrong_pixel["error_subcode"]) == (100, 33)
    assert wrong_pixel["type"] == "GraphMethodException"
    assert PIXEL_ID in wrong_pixel["message"]
    assert unknown_token["code"] == 190


def test_an_unregistered_pixel_does_not_exist_once_pixels_are_registered(sandbox):
    sandbox.register_pixel("777", "Other shop", [TOKEN])

    error = meta_error(get_pixel(sandbox))

    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert error["message"].startswith("Unsupported get request. Object with ID")


def test_pixel_fields_are_answered_as_requested(sandbox, clock):
    post_events(sandbox, [event(sandbox)])

    body = get_pixel(
        sandbox, fields="id,name,last_fired_time,is_unavailable,owner_business{id,name}"
    ).json()

    assert body["last_fired_time"] == clock.now().strftime("%Y-%m-%dT%H:%M:%S+0000")
    assert body["is_unavailable"] is False
    assert set(body["owner_business"]) == {"id", "name"}


def test_an_unknown_pixel_field_is_refused(sandbox):
    error = meta_error(get_pixel(sandbox, fields="id,colour"))

    assert error["code"] == 100
    assert "(colour)" in error["message"]


@pytest.mark.parametrize(
    ("token", "code", "subcode"),
    [
        (None, 104, None),
        ("", 104, None),
        ("EAA-not-letters-and-digits-but-long-enough-0123456789", 190, None),
        ("EAAshort", 190, None),
        ("XYZ" + "a" * 100, 190, None),
        ("EAA" + "a" * 50 + " " + "b" * 50, 190, None),
    ],
    ids=["absent", "empty", "punctuation", "truncated", "wrong-prefix", "whitespace"],
)
def test_token_rules(sandbox, token, code, subcode):
    response = post_events(sandbox, [event(sandbox)], token=token)

    assert response.status_code == 400
    error = meta_error(response)
    assert (error["code"], error.get("error_subcode")) == (code, subcode)
    assert error["type"] == "OAuthException"


def test_a_revoked_token_stops_working(sandbox):
    assert post_events(sandbox, [event(sandbox)]).status_code == 200

    control(sandbox, "POST", "revoke", {"token": TOKEN})

    error = meta_error(post_events(sandbox, [event(sandbox)]))
    assert (error["code"], error.get("error_subcode")) == (190, None)


def test_an_expired_token_answers_463(sandbox):
    sandbox.revoke(TOKEN, "expired")

    error = meta_error(get_pixel(sandbox))

    assert (error["code"], error["error_subcode"]) == (190, 463)


def test_the_token_may_come_as_query_parameter_or_header(sandbox):
    by_query = requests.get(
        f"{sandbox}/v26.0/{PIXEL_ID}", params={"access_token": TOKEN}, timeout=5
    )
    by_header = requests.post(
        f"{sandbox}/v26.0/{PIXEL_ID}/events",
        json={"data": [event(sandbox)]},
        headers={"Authorization": f"OAuth {TOKEN}"},
        timeout=5,
    )

    assert by_query.json()["id"] == PIXEL_ID
    assert by_header.json()["events_received"] == 1


def test_the_sdks_form_encoding_is_accepted(sandbox):
    # Meta's SDK sends a form whose data is a JSON array of JSON-encoded events.
    form = {
        "data": json.dumps([json.dumps(event(sandbox, 1)), json.dumps(event(sandbox, 2))]),
        "access_token": TOKEN,
        "test_event_code": "TEST42",
    }

    response = requests.post(f"{sandbox}/v26.0/{PIXEL_ID}/events", data=form, timeout=5)

    assert response.json()["events_received"] == 2
    assert [item["test_event_code"] for item in sandbox.events()] == ["TEST42", "TEST42"]


def test_a_deprecated_version_is_refused(sandbox):
    error = meta_error(post_events(sandbox, [event(sandbox)], version="v12.0"))

    assert error["code"] == 2635


def test_the_oldest_served_version_is_a_fault_setting(sandbox):
    sandbox.set_faults(oldest_version="v30.0")

    assert meta_error(post_events(sandbox, [event(sandbox)]))["code"] == 2635


def test_unknown_paths_answer_2500(sandbox):
    response = requests.post(f"{sandbox}/v26.0/{PIXEL_ID}/conversions", timeout=5)

    assert meta_error(response)["code"] == 2500


def test_a_pixel_id_must_be_numeric(sandbox):
    error = meta_error(post_events(sandbox, [event(sandbox)], pixel_id="my-pixel"))

    assert (error["code"], error["error_subcode"]) == (100, 33)


def test_appsecret_proof_is_required_when_the_pixels_app_has_a_secret(sandbox):
    sandbox.register_pixel(PIXEL_ID, "Signed", [TOKEN], app_secret="topsecret")
    good = hmac.new(b"topsecret", TOKEN.encode(), hashlib.sha256).hexdigest()
    now = int(sandbox.app.state.now())
    timed = hmac.new(b"topsecret", f"{TOKEN}|{now}".encode(), hashlib.sha256).hexdigest()
    stale = hmac.new(b"topsecret", f"{TOKEN}|{now - 600}".encode(), hashlib.sha256).hexdigest()

    missing = meta_error(post_events(sandbox, [event(sandbox)]))
    wrong = meta_error(post_events(sandbox, [event(sandbox)], appsecret_proof="0" * 64))
    expired = meta_error(
        post_events(sandbox, [event(sandbox)], appsecret_proof=stale, appsecret_time=now - 600)
    )
    plain = post_events(sandbox, [event(sandbox, 1)], appsecret_proof=good)
    time_stamped = post_events(
        sandbox, [event(sandbox, 2)], appsecret_proof=timed, appsecret_time=now
    )

    assert "require an appsecret_proof" in missing["message"]
    assert "Invalid appsecret_proof" in wrong["message"]
    assert "Invalid appsecret_proof" in expired["message"]
    assert (plain.status_code, time_stamped.status_code) == (200, 200)


# --- event validation, one rule at a time ------------------------------------------------------


def test_at_most_1000_events_per_request(sandbox):
    events = [event(sandbox, number) for number in range(1001)]

    response = post_events(sandbox, events)

    error = meta_error(response)
    assert error["code"] == 100
    assert "1001" in error["message"]
    assert "1000" in error["message"]
    assert post_events(sandbox, events[:1000]).json()["events_received"] == 1000


@pytest.mark.parametrize(
    ("data", "words"),
    [(None, "required"), ([], "at least one"), ("not json", "JSON array"), ({"a": 1}, "array")],
)
def test_data_must_be_a_non_empty_array(sandbox, data, words):
    body: dict[str, Any] = {"access_token": TOKEN}
    if data is not None:
        body["data"] = data

    response = requests.post(f"{sandbox}/v26.0/{PIXEL_ID}/events", json=body, timeout=5)

    error = meta_error(response)
    assert error["code"] == 100
    assert words in error["message"]


def test_one_invalid_event_fails_the_whole_request_and_names_no_event(sandbox):
    """Meta's answer does not say which event of data was bad (FACTS A3; real bodies above)."""
    events = [event(sandbox, 0), event(sandbox, 1), event(sandbox, 2, event_name="")]

    response = post_events(sandbox, events)

    assert_event_error(response, "event_name is required")
    assert sandbox.events() == []
    assert sandbox.stats()["events"] == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"event_name": None}, "event_name is required"),
        ({"event_name": "X" * 51}, "longer than 50"),
        ({"event_time": None}, "event_time is required"),
        ({"event_time": 1.5}, "whole Unix seconds"),
        ({"event_time": "yesterday"}, "whole Unix seconds"),
        ({"action_source": None}, "action_source is required"),
        ({"action_source": "television"}, "is not one of"),
        ({"user_data": None}, "user_data is required"),
        ({"event_source_url": None}, "event_source_url"),
        ({"event_source_url": "shop.example.com/thanks"}, "event_source_url"),
        ({"custom_data": "cheap"}, "custom_data must be an object"),
        ({"custom_data": {"value": "ten", "currency": "USD"}}, "value must be a number"),
        ({"custom_data": {"value": True, "currency": "USD"}}, "value must be a number"),
        ({"custom_data": {"value": 10, "currency": "DOLLARS"}}, "ISO 4217"),
        ({"custom_data": {"value": 10, "currency": "XYZ"}}, "ISO 4217"),
        ({"custom_data": {"currency": "USD"}}, "value is required for Purchase"),
        ({"custom_data": {"value": 10}}, "currency is required for Purchase"),
    ],
)
def test_each_event_rule_gives_its_error(sandbox, change, words):
    bad = event(sandbox, 1)
    for key, value in change.items():
        if value is None:
            del bad[key]
        else:
            bad[key] = value

    assert_event_error(post_events(sandbox, [event(sandbox, 0), bad]), words)


def test_website_events_need_the_client_user_agent(sandbox):
    bad = event(sandbox)
    del bad["user_data"]["client_user_agent"]

    assert_event_error(post_events(sandbox, [bad]), "client_user_agent is required")


def test_other_action_sources_need_neither_url_nor_user_agent(sandbox):
    offline = event(sandbox, action_source="physical_store", event_name="Lead", custom_data=None)
    del offline["event_source_url"]
    del offline["custom_data"]
    offline["user_data"] = {"ph": [HASH]}

    assert post_events(sandbox, [offline]).status_code == 200


def test_numeric_strings_are_accepted_for_event_time_and_value(sandbox):
    item = event(sandbox)
    item["event_time"] = str(item["event_time"])
    item["custom_data"] = {"value": "19.99", "currency": "eur"}

    assert post_events(sandbox, [item]).status_code == 200


def test_an_event_older_than_7_days_is_refused(sandbox):
    old = event(sandbox, event_time=int(sandbox.app.state.now()) - 7 * 86400 - 5)

    response = post_events(sandbox, [old])

    assert_event_error(response, "more than 7 days", subcode=2804003)
    assert meta_error(response)["error_user_title"] == "Event Timestamp Too Old"


def test_an_event_just_inside_7_days_is_accepted(sandbox):
    edge = event(sandbox, event_time=int(sandbox.app.state.now()) - 7 * 86400 + 5)

    assert post_events(sandbox, [edge]).status_code == 200


def test_an_event_in_the_future_is_refused(sandbox):
    future = event(sandbox, event_time=int(sandbox.app.state.now()) + 3600)

    assert_event_error(post_events(sandbox, [future]), "in the future", subcode=2804003)


def test_milliseconds_instead_of_seconds_are_called_out(sandbox):
    millis = event(sandbox, event_time=int(sandbox.app.state.now() * 1000))

    assert_event_error(post_events(sandbox, [millis]), "milliseconds", subcode=2804003)


@pytest.mark.parametrize("key", ["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country"])
def test_pii_keys_must_be_sha256_hex(sandbox, key):
    bad = event(sandbox)
    bad["user_data"][key] = ["jane@example.com"] if key == "em" else "plain"

    response = post_events(sandbox, [bad])

    assert_event_error(response, f"The {key} parameter is not hashed", subcode=2804016)


def test_a_hash_given_as_a_plain_string_is_accepted(sandbox):
    item = event(sandbox)
    item["user_data"]["em"] = HASH.upper()

    assert post_events(sandbox, [item]).status_code == 200


@pytest.mark.parametrize(
    "user_data",
    [
        {},
        {"em": [], "ph": ""},
        {"unknown_key": "x", "client_user_agent": "Mozilla/5.0"},
        {"fn": [HASH], "ge": [HASH]},
        {"ct": [HASH], "zp": [HASH], "country": [HASH], "client_user_agent": "Mozilla/5.0"},
        {"db": [HASH], "client_user_agent": "Mozilla/5.0"},
    ],
    ids=["empty", "only-empty-values", "unknown-key", "fn-ge", "location", "db"],
)
def test_too_little_customer_information_is_refused(sandbox, user_data):
    # Not a website event, so no other rule asks for client_user_agent.
    weak = event(sandbox, action_source="other", user_data=user_data)

    assert_event_error(
        post_events(sandbox, [weak]), "no customer information parameters", subcode=2804050
    )


# --- test events, read-back, statistics ---------------------------------------------------------


def test_test_events_are_kept_apart(sandbox):
    post_events(sandbox, [event(sandbox, 1)])
    post_events(sandbox, [event(sandbox, 1), event(sandbox, 2)], test_event_code="TEST777")

    stats = sandbox.stats()
    assert (stats["events"], stats["test_events"]) == (1, 2)
    assert stats["duplicates"] == []
    assert [item["event_id"] for item in sandbox.events(test=True)] == ["order-1", "order-2"]
    assert [item["event_id"] for item in sandbox.events(test=False)] == ["order-1"]
    over_http = control(sandbox, "GET", "events", test_event_code="TEST777")
    assert over_http["count"] == 2


def test_events_are_read_back_with_their_pixel_request_and_filters(sandbox):
    post_events(sandbox, [event(sandbox, 1), event(sandbox, 2)])
    post_events(sandbox, [event(sandbox, 3)], pixel_id="555")

    by_id = control(sandbox, "GET", "events", event_id="order-2")
    by_pixel = control(sandbox, "GET", "events", pixel_id="555")
    page = control(sandbox, "GET", "events", offset="1", limit="1")

    assert by_id["count"] == 1
    (found,) = by_id["events"]
    assert (found["pixel_id"], found["event_name"], found["test_event_code"]) == (
        PIXEL_ID,
        "Purchase",
        "",
    )
    assert found["request_id"] == sandbox.requests()[0]["id"]
    assert found["event"]["user_data"]["em"] == [HASH]
    assert [item["event_id"] for item in by_pixel["events"]] == ["order-3"]
    assert (page["count"], [item["event_id"] for item in page["events"]]) == (3, ["order-2"])


def test_stats_count_per_pixel_and_find_duplicates_by_pixel_name_and_event_id(sandbox):
    post_events(sandbox, [event(sandbox, 1), event(sandbox, 2)])
    post_events(sandbox, [event(sandbox, 1), event(sandbox, 1, event_name="Lead")])
    post_events(sandbox, [event(sandbox, 1)], pixel_id="555")
    post_events(sandbox, [event(sandbox, 9, event_time=1)])

    stats = control(sandbox, "GET", "stats")

    assert stats["requests"] == 4
    assert stats["events"] == 5
    assert stats["pixels"][PIXEL_ID] == {"requests": 3, "events": 4, "test_events": 0, "errors": 1}
    assert stats["pixels"]["555"]["events"] == 1
    assert stats["errors"] == {"100": 1}
    assert stats["duplicates"] == [
        {"pixel_id": PIXEL_ID, "event_name": "Purchase", "event_id": "order-1", "count": 2}
    ]


def test_the_request_log_never_holds_a_token_or_proof(sandbox):
    post_events(sandbox, [event(sandbox)], appsecret_proof="f" * 64)
    get_pixel(sandbox)
    requests.get(f"{sandbox}/v26.0/{PIXEL_ID}", params={"access_token": TOKEN}, timeout=5)

    logged = control(sandbox, "GET", "requests")

    text = json.dumps(logged)
    assert TOKEN not in text
    assert "f" * 64 not in text
    assert [entry["params"].get("access_token") for entry in logged] == [
        "[redacted]",
        None,
        "[redacted]",
    ]
    assert [entry["status"] for entry in logged] == [200, 200, 200]
    assert logged[0]["event_count"] == 1


def test_the_request_log_records_metas_error(sandbox):
    post_events(sandbox, [event(sandbox, event_name="")])

    (entry,) = sandbox.requests()

    assert (entry["status"], entry["error_code"]) == (400, 100)
    assert "event_name" in entry["error"]["error_user_msg"]


def test_read_back_of_200000_events_is_cheap(sandbox):
    batch = [event(sandbox, number) for number in range(1000)]
    raw = RawData(json.dumps({"data": batch}).encode(), whole_body=True)
    state = sandbox.app.state
    for request_number in range(200):
        state.record_events(
            PIXEL_ID, f"req-{request_number}", "", batch, state.generation, raw_data=raw
        )

    started = time.perf_counter()
    stats = sandbox.stats()
    counted = time.perf_counter() - started
    matching = sandbox.events(event_id="order-7")

    assert stats["events"] == 200_000
    assert len(stats["duplicates"]) == 1000
    assert {entry["count"] for entry in stats["duplicates"]} == {200}
    assert counted < 2
    assert len(matching) == 200
    assert matching[-1]["event"] == batch[7]
    assert matching[-1]["request_id"] == "req-199"


def test_kept_events_hold_no_token_or_proof():
    body = json.dumps({"data": [{"event_name": "Lead"}], "access_token": TOKEN}).encode()

    kept = RawData(body, whole_body=True).without(TOKEN, "f" * 64)

    assert TOKEN.encode() not in kept.text
    assert kept.decode() == [{"event_name": "Lead"}]


# --- the clock ----------------------------------------------------------------------------------


def test_the_sandbox_clock_follows_the_app_clock(sandbox, clock):
    item = event(sandbox)
    clock.advance(timedelta(days=8))

    assert_event_error(post_events(sandbox, [item]), "more than 7 days", subcode=2804003)


def test_the_now_fault_sets_the_sandbox_clock(sandbox):
    control(sandbox, "POST", "faults", {"now": 1_600_000_000})

    ok = post_events(sandbox, [event(sandbox, event_time=1_600_000_000 - 3600)])
    too_new = post_events(sandbox, [event(sandbox, event_time=1_600_000_000 + 3600)])

    assert ok.status_code == 200
    assert meta_error(too_new)["error_subcode"] == 2804003


# --- faults ------------------------------------------------------------------------------------


def test_latency_does_not_block_other_requests(sandbox):
    sandbox.set_faults(latency_ms=400)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda number: post_events(sandbox, [event(sandbox, number)]).status_code, range(8)
            )
        )
    elapsed = time.perf_counter() - started

    assert statuses == [200] * 8
    assert 0.4 <= elapsed < 8 * 0.4


def test_latency_beyond_the_clients_timeout_hangs_the_request(sandbox):
    sandbox.set_faults(latency_ms=10_000)

    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{sandbox}/v26.0/{PIXEL_ID}/events",
            json={"data": [event(sandbox)], "access_token": TOKEN},
            timeout=(2, 0.2),
        )
    # The control API is never delayed.
    assert control(sandbox, "GET", "faults")["latency_ms"] == 10_000


def test_pixel_latency_slows_only_that_pixel(sandbox):
    sandbox.set_faults(pixel_latency_ms={"999": 10_000})

    fast = requests.post(
        f"{sandbox}/v26.0/{PIXEL_ID}/events",
        json={"data": [event(sandbox)], "access_token": TOKEN},
        timeout=(2, 2),
    )
    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{sandbox}/v26.0/999/events",
            json={"data": [event(sandbox)], "access_token": TOKEN},
            timeout=(2, 0.2),
        )

    assert fast.status_code == 200


def test_a_request_that_outlives_a_reset_changes_nothing(sandbox):
    sandbox.set_faults(latency_ms=10_000)
    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{sandbox}/v26.0/{PIXEL_ID}/events",
            json={"data": [event(sandbox, 1)], "access_token": TOKEN},
            timeout=(2, 0.2),
        )

    # The reset wakes the waiting request; it belongs to the old state and must store nothing.
    sandbox.reset()
    assert post_events(sandbox, [event(sandbox, 5)]).status_code == 200

    assert [item["event_id"] for item in sandbox.events()] == ["order-5"]


def test_a_failure_rate_of_one_answers_transient_500s(sandbox):
    control(sandbox, "POST", "faults", {"failure_rate": 1.0})

    response = post_events(sandbox, [event(sandbox)])

    assert response.status_code == 500
    error = meta_error(response)
    assert (error["code"], error["is_transient"]) == (2, True)
    assert sandbox.events() == []


def test_a_seeded_failure_rate_is_repeatable(sandbox):
    def outcomes() -> list[int]:
        sandbox.set_faults(failure_rate=0.5, seed=7)
        return [post_events(sandbox, [event(sandbox, n)]).status_code for n in range(20)]

    first, second = outcomes(), outcomes()

    assert first == second
    assert set(first) == {200, 500}


def test_every_nth_request_is_rate_limited_with_usage_headers(sandbox):
    sandbox.set_faults(rate_limit_every=3, rate_limit_minutes=5)

    responses = [post_events(sandbox, [event(sandbox, n)]) for n in range(3)]

    assert [response.status_code for response in responses] == [200, 200, 400]
    error = meta_error(responses[2])
    assert (error["code"], error["error_subcode"], error["is_transient"]) == (613, 1487742, True)
    usage = json.loads(responses[2].headers["x-business-use-case-usage"])
    (entries,) = usage.values()
    assert entries[0]["call_count"] == 100
    assert entries[0]["estimated_time_to_regain_access"] == 5
    assert json.loads(responses[0].headers["x-app-usage"])["call_count"] == 33


@pytest.mark.parametrize("code", [4, 17, 80004])
def test_the_rate_limit_code_can_be_chosen(sandbox, code):
    sandbox.set_faults(rate_limit_every=1, rate_limit_code=code)

    assert meta_error(post_events(sandbox, [event(sandbox)]))["code"] == code


def test_drop_next_closes_the_connection_without_an_answer(sandbox):
    control(sandbox, "POST", "faults", {"drop_next": 1})

    with pytest.raises(requests.ConnectionError):
        post_events(sandbox, [event(sandbox, 1)])

    assert post_events(sandbox, [event(sandbox, 2)]).status_code == 200
    assert [item["event_id"] for item in sandbox.events()] == ["order-2"]


def test_a_drop_rate_of_one_drops_every_request(sandbox):
    sandbox.set_faults(drop_rate=1.0)

    with pytest.raises(requests.ConnectionError):
        post_events(sandbox, [event(sandbox)])
    with pytest.raises(requests.ConnectionError):
        get_pixel(sandbox)


def test_scripted_answers_replace_the_next_n_requests(sandbox):
    control(
        sandbox,
        "POST",
        "answers",
        {
            "status": 400,
            "error": {"code": 190, "message": "Scripted", "type": "OAuthException"},
            "times": 2,
        },
    )

    first, second, third = (post_events(sandbox, [event(sandbox, n)]) for n in range(3))

    assert [meta_error(first)["code"], meta_error(second)["code"]] == [190, 190]
    assert meta_error(first)["fbtrace_id"]
    assert third.status_code == 200


def test_scripted_answers_can_be_raw_text_dropped_or_limited_to_a_method(sandbox):
    sandbox.answer_next(status=502, text="<html>Bad Gateway</html>", method="GET")
    sandbox.answer_next(drop=True, method="POST")

    with pytest.raises(requests.ConnectionError):
        post_events(sandbox, [event(sandbox)])
    page = get_pixel(sandbox)

    assert (page.status_code, page.text) == (502, "<html>Bad Gateway</html>")
    assert page.headers["Content-Type"].startswith("text/html")


def test_reset_forgets_pixels_faults_scripts_and_traffic(sandbox):
    sandbox.register_pixel("777", "Other", [make_token("other")])
    sandbox.revoke(TOKEN)
    sandbox.set_faults(latency_ms=5, failure_rate=0.1)
    sandbox.answer_error(190)
    post_events(sandbox, [event(sandbox)])

    control(sandbox, "POST", "reset")

    assert control(sandbox, "GET", "pixels") == []
    assert control(sandbox, "GET", "faults")["failure_rate"] == 0
    assert sandbox.requests() == []
    assert post_events(sandbox, [event(sandbox)]).status_code == 200


# --- control API ------------------------------------------------------------------------------


def test_pixels_are_registered_over_http_without_echoing_tokens(sandbox):
    created = control(
        sandbox, "POST", "pixels", {"pixel_id": PIXEL_ID, "name": "Acme", "tokens": [TOKEN]}
    )

    listed = control(sandbox, "GET", "pixels")

    assert created == {"pixel_id": PIXEL_ID, "name": "Acme"}
    assert listed == [
        {
            "pixel_id": PIXEL_ID,
            "name": "Acme",
            "token_count": 1,
            "requires_appsecret_proof": False,
        }
    ]
    assert get_pixel(sandbox).json()["name"] == "Acme"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("faults", {"latency": 5}, "unknown fault"),
        ("faults", {"failure_rate": 2}, "between 0 and 1"),
        ("faults", {"rate_limit_code": 999}, "rate_limit_code"),
        ("pixels", {"pixel_id": "abc"}, "digits"),
        ("pixels", {"pixel_id": "1", "tokens": "EAA"}, "list of strings"),
        ("revoke", {}, "token is required"),
        ("answers", {"status": 200}, "give a body"),
        ("answers", {"status": 99, "text": "x"}, "HTTP status"),
    ],
)
def test_control_api_refuses_bad_input(sandbox, path, body, words):
    response = requests.post(f"{sandbox}/_sandbox/{path}", json=body, timeout=5)

    assert response.status_code == 400
    assert words in response.json()["error"]


def test_control_api_unknown_endpoint_is_404(sandbox):
    response = requests.get(f"{sandbox}/_sandbox/nothing", timeout=5)

    assert response.status_code == 404


# --- serving -----------------------------------------------------------------------------------


def test_running_sandbox_serves_on_a_free_port_and_stops():
    with running_sandbox(latency_ms=1) as sandbox:
        url = sandbox.url
        assert str(sandbox) == url
        assert requests.get(f"{url}/_sandbox/faults", timeout=5).json()["latency_ms"] == 1

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_sandbox/", timeout=2)


def test_the_app_is_plain_wsgi():
    app = SandboxApp()
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"] = status

    body = b"".join(
        app(
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": f"/v26.0/{PIXEL_ID}",
                "QUERY_STRING": f"access_token={TOKEN}",
                "wsgi.input": None,
            },
            start_response,
        )
    )

    assert captured["status"] == "200 OK"
    assert json.loads(body)["id"] == PIXEL_ID


def test_seed_pixel_arguments_are_parsed():
    assert parse_seed_pixel("123:Shop: main:EAAtoken") == ("123", "Shop: main", "EAAtoken")
    app = build_sandbox_app(
        seed_pixels=[("1", "One", "EAAa"), ("1", "One", "EAAb"), ("2", "Two", "EAAc")],
        latency_ms=3,
    )
    assert app.state.pixels["1"].tokens == {"EAAa", "EAAb"}
    assert app.state.faults.latency_ms == 3


def test_the_capi_sandbox_command_serves_until_interrupted():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "capi_sandbox",
            "--port",
            "0",
            "--seed-pixel",
            f"{PIXEL_ID}:Demo shop:{TOKEN}",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = first_line.split(" listening on ")[1].split()[0]
        # Read the banner through the same buffered file: communicate() reads the pipe itself
        # and would miss lines this file object has already buffered.
        banner = [first_line]
        while not banner[-1].startswith("Quit with Ctrl-C.") and banner[-1]:
            banner.append(process.stdout.readline())

        pixel = requests.get(
            f"{url}/v26.0/{PIXEL_ID}",
            params={"fields": "name"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert "1 pixel(s) registered" in first_line
    assert pixel.json() == {"id": PIXEL_ID, "name": "Demo shop"}
    assert process.returncode == 0, errors
    assert "Sandbox stopped." in output
    # The setting a host site reads, not the demo site's environment variable.
    assert f'CAPI_DESTINATIONS = {{"GRAPH_API_BASE_URL": "{url}"}}' in "".join(banner)
    assert "CAPI_GRAPH_API_BASE_URL" not in "".join(banner) + output


def test_a_truncated_registered_token_cannot_be_parsed_as_meta_answers(sandbox):
    """Meta answers a cut token 190 "Cannot parse access token", no subcode (FACTS §11/§14)."""
    sandbox.register_pixel(PIXEL_ID, "Acme web", [TOKEN])

    for length in (100, 150, len(TOKEN) - 1):
        response = post_events(sandbox, [event(sandbox)], token=TOKEN[:length])
        error = meta_error(response)

        assert response.status_code == 400
        assert (error["code"], error.get("error_subcode")) == (190, None)
        assert error["type"] == "OAuthException"
        assert error["message"] == "Invalid OAuth access token - Cannot parse access token"
        assert meta_error(get_pixel(sandbox, token=TOKEN[:length]))["code"] == 190
