"""The sandbox enforces the formats Meta documents, and accepts what Meta says to send as is.

Each test names its source; docs/META.md ("Sandbox answers") marks which part is documented
(the format) and which is *unconfirmed* (that Meta refuses the whole request for it).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from capi_destinations.sandbox import Sandbox, running_sandbox
from tests.conftest import make_token

PIXEL_ID = "5566778899"
TOKEN = make_token("meta-answers")
HASH = "a" * 64


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with running_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sandbox: Sandbox) -> None:
    sandbox.reset()


def event(sandbox: Sandbox, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_name": "Lead",
        "event_time": int(sandbox.app.state.now()) - 60,
        "action_source": "other",
        "user_data": {"em": [HASH]},
    }
    for key, value in changes.items():
        if key.startswith("user_data."):
            item["user_data"][key.removeprefix("user_data.")] = value
        else:
            item[key] = value
    return item


def post(sandbox: Sandbox, item: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{sandbox}/v26.0/{PIXEL_ID}/events",
        json={"access_token": TOKEN, "data": [item]},
        timeout=5,
    )


def assert_refused(response: requests.Response, words: str) -> None:
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["code"]) == ("Invalid parameter", 100)
    assert words in error["error_user_msg"]


@pytest.mark.parametrize(
    "options",
    [
        {"data_processing_options": []},
        {"data_processing_options": ["LDU"]}
        | {"data_processing_options_country": 0, "data_processing_options_state": 0},
        {"data_processing_options": ["LDU"]}
        | {"data_processing_options_country": 1, "data_processing_options_state": 1000},
    ],
    ids=["not-ldu", "ldu-geolocated", "ldu-california"],
)
def test_documented_limited_data_use_values_are_accepted(
    sandbox: Sandbox, options: dict[str, Any]
) -> None:
    """LDU: only "LDU" or []; country 1 or 0; state 1000 or 0 (FACTS §3,
    developers.facebook.com/documentation/ads-commerce/conversions-api/parameters/server-event)."""
    assert post(sandbox, event(sandbox, **options)).status_code == 200


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"data_processing_options": ["ldu"]}, 'only ["LDU"] or []'),
        ({"data_processing_options": "LDU"}, 'only ["LDU"] or []'),
        ({"data_processing_options": ["LDU"]}, "country is required"),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": 2},
            "country must be 1 or 0",
        ),
        (
            {"data_processing_options": ["LDU"], "data_processing_options_country": 1},
            "state is required with a country",
        ),
        (
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 1,
                "data_processing_options_state": 6,
            },
            "state must be 1000 or 0",
        ),
    ],
    ids=["lowercase", "not-a-list", "no-country", "bad-country", "no-state", "bad-state"],
)
def test_limited_data_use_outside_the_documented_values_is_refused(
    sandbox: Sandbox, options: dict[str, Any], words: str
) -> None:
    """The same page's values and pairing ("if a country is set a state must be set too");
    that Meta refuses the request for them is *unconfirmed*."""
    assert_refused(post(sandbox, event(sandbox, **options)), words)


@pytest.mark.parametrize(
    "ip", ["203.0.113.7", "2001:db8::1", "168.212.226.204.AQIDAQMC", "2001:db8::1.ABcDEFGh"]
)
def test_ip_addresses_and_the_parameter_builders_appendix_are_accepted(
    sandbox: Sandbox, ip: str
) -> None:
    """client_ip_address: a valid IPv4 or IPv6 address (customer-information-parameters); the
    parameter builder appends ".ABcDEFGh" and Meta says "You can send these values as is"
    (FACTS A3, parameter-builder-library)."""
    assert post(sandbox, event(sandbox, **{"user_data.client_ip_address": ip})).status_code == 200


@pytest.mark.parametrize("ip", ["not an ip", "300.1.1.1", "203.0.113.7.toolong!!"])
def test_a_malformed_ip_address_is_refused(sandbox: Sandbox, ip: str) -> None:
    """The format is documented; the refusal of the request is *unconfirmed*."""
    response = post(sandbox, event(sandbox, **{"user_data.client_ip_address": ip}))

    assert_refused(response, "client_ip_address")


@pytest.mark.parametrize(
    "fbc",
    [
        "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
        "fb.1.1596403881668.1116446470",
        "fb.1.1554763741205.AbCdEf.AQIDAQMC",
    ],
)
def test_documented_fbc_values_are_accepted(sandbox: Sandbox, fbc: str) -> None:
    """fbc = fb.<subdomainIndex>.<creationTime>.<fbclid> (Meta's own examples, FACTS §13), with
    the parameter builder's fifth segment sent as is (FACTS A3)."""
    assert post(sandbox, event(sandbox, **{"user_data.fbc": fbc})).status_code == 200


@pytest.mark.parametrize("fbc", ["AbCdEf", "fb.1.AbCdEf", "fb.x.1554763741205.AbC", "fb.1.2."])
def test_a_malformed_fbc_is_refused(sandbox: Sandbox, fbc: str) -> None:
    """The format is documented (fbp-and-fbc); the refusal of the request is *unconfirmed*."""
    assert_refused(post(sandbox, event(sandbox, **{"user_data.fbc": fbc})), "user_data.fbc")
