"""The overview shows both match-quality scores per card and can put the lowest first (issue 18).

"Purchase: Meta 6.8 / ours 7.1" on each card, read from the stored report (one join, no count
of events per page load), and an order "Needs attention: lowest Meta score first".
"""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from capi_destinations import match_quality
from capi_destinations.models import Destination, MatchQualityReport, MetaScoreStatus, Role
from capi_destinations.sandbox import Sandbox
from tests.test_match_quality import deliver_purchases, our_average

pytestmark = pytest.mark.django_db


@pytest.fixture
def meta(graph_settings: Sandbox, clock: Any) -> Sandbox:
    return graph_settings


def overview(user: Any, query: str = "") -> str:
    client = Client()
    client.force_login(user)
    response = client.get(f"/capi/{query}")
    assert response.status_code == 200
    return response.content.decode()


def card_quality(html: str, destination: Destination) -> str:
    card = html[html.index(f'id="card-{destination.code}"') :]
    card = card[: card.index("</article>")]
    found = re.search(r'data-testid="card-match-quality">([^<]*)<', card)
    return html_module.unescape(found.group(1)) if found else ""


def test_a_card_shows_metas_score_beside_ours(
    meta: Sandbox, clock: Any, destination: Destination, make_user: Callable[..., Any]
) -> None:
    meta.register_pixel(destination.pixel_id, "Acme", [destination.access_token])
    deliver_purchases(destination, clock.now())

    match_quality.fetch_match_quality(destination)

    report = MatchQualityReport.objects.get(destination=destination)
    meta_score = report.events[0]["composite_score"]
    ours = our_average(destination, "Purchase")
    html = overview(make_user(destination.tenant, Role.VIEWER))
    assert card_quality(html, destination) == f"Purchase: Meta {meta_score:.1f} / ours {ours:.1f}"


def test_a_token_that_may_not_read_the_score_says_so_and_keeps_ours(
    meta: Sandbox, clock: Any, destination: Destination, make_user: Callable[..., Any]
) -> None:
    meta.register_pixel(destination.pixel_id, "Acme", send_only_tokens=[destination.access_token])
    deliver_purchases(destination, clock.now())

    report = match_quality.fetch_match_quality(destination)

    assert report is not None
    assert report.status == MetaScoreStatus.NOT_AVAILABLE
    ours = our_average(destination, "Purchase")
    assert card_quality(overview(make_user(destination.tenant, Role.VIEWER)), destination) == (
        f"Purchase: Meta's score not available with this token / ours {ours:.1f}"
    )


def test_needs_attention_puts_the_lowest_meta_score_first(
    clock: Any,
    make_destination: Callable[..., Destination],
    make_user: Callable[..., Any],
    tenant: Any,
) -> None:
    good, poor, unscored = (make_destination(name=name) for name in ("Good", "Poor", "Unscored"))
    for destination, score in ((good, 8.4), (poor, 3.1)):
        MatchQualityReport.objects.create(
            destination=destination,
            status=MetaScoreStatus.AVAILABLE,
            events=[{"event_name": "Purchase", "composite_score": score, "match_key_feedback": []}],
            lowest_score=score,
            fetched_at=clock.now(),
        )
    viewer = make_user(tenant, Role.VIEWER)

    default = overview(viewer)
    attention = overview(viewer, "?sort=attention")

    def order(html: str) -> list[str]:
        return re.findall(r'data-testid="destination-link">([^<]*)<', html)

    assert order(default) == ["Good", "Poor", "Unscored"]  # all Not checked yet: by name
    assert order(attention) == ["Poor", "Good", "Unscored"]
    assert card_quality(attention, poor) == "Purchase: Meta 3.1 / ours —"
    assert card_quality(attention, unscored) == ""


def test_needs_attention_filters_to_a_low_meta_score(
    clock: Any,
    make_destination: Callable[..., Destination],
    make_user: Callable[..., Any],
    tenant: Any,
    settings: Any,
) -> None:
    good, poor, _ = (make_destination(name=name) for name in ("Good", "Poor", "Unscored"))
    for destination, scores in ((good, (8.4, 7.9)), (poor, (8.8, 3.1))):
        MatchQualityReport.objects.create(
            destination=destination,
            status=MetaScoreStatus.AVAILABLE,
            events=[
                {"event_name": name, "composite_score": score, "match_key_feedback": []}
                for name, score in zip(("Purchase", "Lead"), scores, strict=True)
            ],
            lowest_score=min(scores),
            fetched_at=clock.now(),
        )
    viewer = make_user(tenant, Role.VIEWER)

    def names(html: str) -> list[str]:
        return re.findall(r'data-testid="destination-link">([^<]*)<', html)

    # Any event name under HEALTH_LOW_MATCH_QUALITY (5.0) needs attention; none scored: not yet.
    html = overview(viewer, "?status=attention")
    assert names(html) == ["Poor"]
    assert '<option value="attention" selected>' in html
    settings.CAPI_DESTINATIONS = {"HEALTH_LOW_MATCH_QUALITY": 8.0}
    assert names(overview(viewer, "?status=attention&sort=attention")) == ["Poor", "Good"]


def test_the_overview_costs_no_more_queries_with_reports(
    clock: Any,
    make_destination: Callable[..., Destination],
    make_user: Callable[..., Any],
    tenant: Any,
    django_assert_num_queries: Any,
) -> None:
    viewer = make_user(tenant, Role.VIEWER)
    client = Client()
    client.force_login(viewer)
    for number in range(5):
        destination = make_destination(name=f"Shop {number}")
        MatchQualityReport.objects.create(
            destination=destination,
            status=MetaScoreStatus.AVAILABLE,
            events=[{"event_name": "Lead", "composite_score": 5.0}],
            lowest_score=5.0,
            fetched_at=clock.now(),
            ours={"Lead": [6.0, 3]},
        )
    client.get("/capi/")  # warm the session

    # The same as without reports (tests/test_pages.py): the report comes in the cards' join.
    with django_assert_num_queries(7):
        html = client.get("/capi/?sort=attention").content.decode()

    assert html.count("Lead: Meta 5.0 / ours 6.0") == 5
