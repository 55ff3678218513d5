"""Meta's Dataset Quality API as the sandbox answers it and the client reads it (issue 18).

Source of the shape: Meta's page "Dataset Quality API"
(developers.facebook.com/documentation/ads-commerce/conversions-api/dataset-quality-api,
"Example", API Response), whose example answer is pinned below; the same shape is quoted from
real calls in public code (``{"identifier": "email", "coverage": {"percentage": 95}}``).
docs/META.md ("Meta's own Event Match Quality") lists what is documented and what is guessed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from capi_destinations import graph
from capi_destinations.sandbox import Sandbox, running_sandbox
from tests.conftest import make_token

PIXEL_ID = "5566778800"
TOKEN = make_token("dataset-quality")
SEND_ONLY = make_token("dataset-quality-send-only")
FIELDS = graph.DATASET_QUALITY_FIELDS

# Meta's example answer, as printed on the page (its trailing comma after the last
# match_key_feedback entry removed: the page's example is not valid JSON as printed).
METAS_EXAMPLE: dict[str, Any] = {
    "web": [
        {
            "event_match_quality": {
                "composite_score": 6.2,
                "match_key_feedback": [
                    {"identifier": "user_agent", "coverage": {"percentage": 100}},
                    {"identifier": "external_id", "coverage": {"percentage": 100}},
                ],
            },
            "event_name": "pLTVPurchase",
        },
        {
            "event_match_quality": {
                "composite_score": 7.2,
                "match_key_feedback": [
                    {"identifier": "email", "coverage": {"percentage": 100}},
                    {"identifier": "ip_address", "coverage": {"percentage": 99.9}},
                ],
            },
            "event_name": "CompleteRegistration",
        },
    ]
}


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with running_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sandbox: Sandbox) -> None:
    sandbox.reset()
    sandbox.register_pixel(PIXEL_ID, "Shop", [TOKEN], send_only_tokens=[SEND_ONLY])


def send(sandbox: Sandbox, *user_data: dict[str, Any], event_name: str = "Purchase") -> None:
    now = int(sandbox.app.state.now())
    data = [
        {
            "event_name": event_name,
            "event_time": now - 60,
            "action_source": "other",
            "user_data": item,
            "custom_data": {"value": 1, "currency": "EUR"},
        }
        for item in user_data
    ]
    answer = requests.post(
        f"{sandbox}/v26.0/{PIXEL_ID}/events",
        json={"access_token": SEND_ONLY, "data": data},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


def read(sandbox: Sandbox, token: str = TOKEN, **params: Any) -> requests.Response:
    return requests.get(
        f"{sandbox}/v26.0/dataset_quality",
        params={"dataset_id": PIXEL_ID, "fields": FIELDS, **params},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def shape(value: Any) -> Any:
    """The keys and nesting of a JSON value, without its numbers and names."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if not isinstance(value, int | float) else "number"


def test_the_sandbox_answers_in_the_shape_of_metas_example(sandbox: Sandbox) -> None:
    """Meta's example: ``{"web": [{"event_match_quality": {"composite_score", "match_key_feedback":
    [{"identifier", "coverage": {"percentage"}}]}, "event_name"}]}`` (dataset-quality-api)."""
    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    send(
        sandbox,
        {"em": [digest], "client_user_agent": "Mozilla/5.0", "client_ip_address": "203.0.113.7"},
        {"em": [digest], "external_id": ["a" * 64], "client_user_agent": "Mozilla/5.0"},
    )

    answer = read(sandbox)

    assert answer.status_code == 200
    body = answer.json()
    assert shape(body) == shape(METAS_EXAMPLE)
    (entry,) = body["web"]
    assert entry["event_name"] == "Purchase"
    coverage = {
        item["identifier"]: item["coverage"]["percentage"]
        for item in entry["event_match_quality"]["match_key_feedback"]
    }
    assert coverage == {"email": 100, "external_id": 50, "ip_address": 50, "user_agent": 100}
    assert 0 < entry["event_match_quality"]["composite_score"] <= 10


def test_the_sandbox_scores_each_event_name_from_its_own_events(sandbox: Sandbox) -> None:
    """Sandbox approximation (documented in ``sandbox/quality.py``): more keys, higher score."""
    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    send(sandbox, {"client_user_agent": "Mozilla/5.0", "client_ip_address": "203.0.113.7"})
    send(
        sandbox,
        {"em": [digest], "ph": ["b" * 64], "client_user_agent": "Mozilla/5.0"},
        event_name="Lead",
    )

    scores = {
        entry["event_name"]: entry["event_match_quality"]["composite_score"]
        for entry in read(sandbox).json()["web"]
    }

    assert list(scores) == ["Purchase", "Lead"]
    assert scores["Lead"] > scores["Purchase"] > 0


def test_a_send_only_token_is_refused_as_its_read_of_the_pixel_is(sandbox: Sandbox) -> None:
    """Meta: a token made "via the Conversions API inside the dataset settings" "can't be used
    to run API GET data requests" (conversions-api/guides/end-to-end-implementation); the
    Events Manager token "will be able to fetch quality data" (conversions-api/dataset-quality-api).
    The refusal's body (100 / 33, naming the dataset) is *unconfirmed* for this endpoint."""
    answer = read(sandbox, SEND_ONLY)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["error_subcode"], error["type"]) == (
        100,
        33,
        "GraphMethodException",
    )
    assert f"Object with ID '{PIXEL_ID}' does not exist" in error["message"]


def test_no_dataset_id_is_refused(sandbox: Sandbox) -> None:
    """Meta: ``dataset_id`` is "Required" (dataset-quality-api, Parameters); the wording of the
    refusal is *unconfirmed*."""
    answer = requests.get(
        f"{sandbox}/v26.0/dataset_quality",
        params={"fields": FIELDS},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100


def test_the_client_reads_metas_example_answer(sandbox: Sandbox, settings: Any) -> None:
    """The client parses the example printed on Meta's page, field for field."""
    settings.CAPI_DESTINATIONS = {"GRAPH_API_BASE_URL": sandbox.url}
    sandbox.answer_next(status=200, body=METAS_EXAMPLE, method="GET")

    class Pixel:
        pixel_id = PIXEL_ID
        access_token = TOKEN
        app_secret = ""
        test_event_code = ""
        graph_api_version = "v26.0"

    quality = graph.get_dataset_quality(Pixel())

    assert quality.events == (
        graph.EventMatchQuality(
            "pLTVPurchase",
            6.2,
            (
                graph.MatchKeyCoverage("user_agent", 100.0),
                graph.MatchKeyCoverage("external_id", 100.0),
            ),
        ),
        graph.EventMatchQuality(
            "CompleteRegistration",
            7.2,
            (graph.MatchKeyCoverage("email", 100.0), graph.MatchKeyCoverage("ip_address", 99.9)),
        ),
    )
    (request,) = sandbox.requests()
    assert request["path"] == "/v26.0/dataset_quality"
    assert request["params"] == {"dataset_id": PIXEL_ID, "fields": FIELDS}
    assert request["authorization_header"] is True
