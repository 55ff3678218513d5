"""Meta's own Event Match Quality beside ours (issue 18): fetched, stored, shown.

Every test talks to the Graph sandbox over a socket: the sandbox scores the events it received
for the pixel (its own approximation) and refuses a send-only token as Meta's pages say.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

import capi_destinations
from capi_destinations import diagnostics, dispatch, health, match_quality, tasks
from capi_destinations.models import (
    Destination,
    Event,
    Health,
    MatchQualityReport,
    MetaScoreStatus,
    Role,
)
from capi_destinations.sandbox import Sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def meta(graph_settings: Sandbox, clock: Any) -> Sandbox:
    return graph_settings


def purchase(event_id: str, now: Any, *, phone: bool = False) -> dict[str, Any]:
    user_data: dict[str, Any] = {
        "email": f"{event_id}@example.com",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "client_ip_address": "203.0.113.7",
    }
    if phone:
        user_data["phone"] = "+44 20 7946 0958"
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_time": int(now.timestamp()),
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": user_data,
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


def deliver_purchases(destination: Destination, now: Any, count: int = 3) -> None:
    """``count`` purchases recorded and delivered to the sandbox, every other one with a phone
    (three by default: our average is then 7.8, no value on a rounding edge)."""
    for index in range(count):
        capi_destinations.track(destination, purchase(f"p-{index}", now, phone=index % 2 == 0))
    dispatch.dispatch_pending()
    assert Event.objects.filter(destination=destination, status="delivered").count() == count


def refuse_next_read(
    meta: Sandbox, code: int, subcode: int | None = None, *, status: int = 400, **error: Any
) -> None:
    """Meta's error body for the next GET only (sending stays as it was)."""
    body = {"message": f"(#{code}) Scripted", "type": "OAuthException", "code": code, **error}
    if subcode is not None:
        body["error_subcode"] = subcode
    meta.answer_next(status=status, error=body, method="GET")


def page(user: Any, destination: Destination) -> str:
    client = Client()
    client.force_login(user)
    url = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def row_of(html: str, event_name: str) -> str:
    """The panel's row for one event name, up to the next row or the end of the panel."""
    row = html[html.index(f'data-testid="match-quality-row" data-event="{event_name}"') :]
    ends = [row.find('data-testid="match-quality-row"', 1), row.find("</section>")]
    return row[: min(end for end in ends if end > 0)]


def our_average(destination: Destination, event_name: str) -> float:
    scores = list(
        Event.objects.filter(destination=destination, event_name=event_name).values_list(
            "match_quality", flat=True
        )
    )
    return round(sum(scores) / len(scores), 1)


def test_metas_score_is_fetched_stored_and_shown_beside_ours(
    meta: Sandbox, clock: Any, destination: Destination, make_user: Callable[..., Any]
) -> None:
    meta.register_pixel(destination.pixel_id, "Acme", [destination.access_token])
    deliver_purchases(destination, clock.now())

    report = match_quality.fetch_match_quality(destination)

    assert report is not None
    assert report.status == MetaScoreStatus.AVAILABLE
    stored = MatchQualityReport.objects.get(destination=destination)
    (entry,) = stored.events
    assert entry["event_name"] == "Purchase"
    coverage = {item["identifier"]: item["coverage"] for item in entry["match_key_feedback"]}
    assert coverage == {"email": 100.0, "phone": 66.7, "ip_address": 100.0, "user_agent": 100.0}
    assert stored.lowest_score == entry["composite_score"] > 0
    assert stored.fetched_at == clock.now()

    html = page(make_user(destination.tenant, Role.VIEWER), destination)
    assert 'data-testid="match-quality" data-status="available"' in html
    row = row_of(html, "Purchase")
    assert f'data-testid="meta-score"><span>{entry["composite_score"]:.1f}</span>' in row
    assert f"<span>{our_average(destination, 'Purchase'):.1f}</span>" in row
    # Meta's per-key feedback in the diagnostics summary's words, with the health card's fix.
    assert "<strong>33%</strong> of Purchase events have no phone" in row
    assert "<strong>100%</strong> of Purchase events have no external ID" in row
    assert "of Purchase events have no email" not in row
    assert diagnostics.MATCH_KEYS_FIX in row.replace("&#x27;", "'")
    assert diagnostics.USER_AGENT_FIX.split(" (")[0] not in row  # Meta sees every user agent


def test_metas_scores_are_kept_per_day_for_a_week_to_compare_with(
    meta: Sandbox, clock: Any, destination: Destination
) -> None:
    meta.register_pixel(destination.pixel_id, "Acme", [destination.access_token])
    deliver_purchases(destination, clock.now())
    first = clock.now()
    for day in range(9):  # one fetch a day for nine days, two on the last
        clock.advance(timedelta(days=1 if day else 0))
        match_quality.fetch_match_quality(destination)
    # Purchases of the last week, so the sandbox scores them on the last fetch.
    capi_destinations.track(destination, purchase("p-late", clock.now(), phone=True))
    dispatch.dispatch_pending()
    clock.advance(timedelta(hours=1))
    match_quality.fetch_match_quality(destination)

    stored = MatchQualityReport.objects.get(destination=destination)
    # The last eight days (a week before the latest, and the latest): the first one is gone.
    assert sorted(stored.daily_scores) == [
        (first + timedelta(days=day)).date().isoformat() for day in range(1, 9)
    ]
    latest = {
        entry["event_name"]: entry["composite_score"]
        for entry in stored.events
        if entry["composite_score"] is not None
    }
    assert latest  # the sandbox still scores the purchases
    assert stored.daily_scores[clock.now().date().isoformat()] == latest


def test_a_send_only_token_gets_not_available_and_the_destination_stays_healthy(
    meta: Sandbox, clock: Any, destination: Destination, make_user: Callable[..., Any]
) -> None:
    """Meta: a token made "via the Conversions API inside the dataset settings" "can't be used
    to run API GET data requests" (conversions-api/guides/end-to-end-implementation); only the
    Events Manager token "will be able to fetch quality data" (conversions-api/dataset-quality-api).
    """
    meta.register_pixel(destination.pixel_id, "Acme", send_only_tokens=[destination.access_token])
    deliver_purchases(destination, clock.now())
    health.check_destination(destination)
    destination.refresh_from_db()
    assert destination.health == Health.HEALTHY

    counts = tasks.fetch_match_quality()

    assert counts == {"available": 0, "not_available": 1, "kept": 0}
    report = MatchQualityReport.objects.get(destination=destination)
    assert (report.status, report.events, report.lowest_score) == (
        MetaScoreStatus.NOT_AVAILABLE,
        [],
        None,
    )
    destination.refresh_from_db()
    assert destination.health == Health.HEALTHY
    assert not destination.blocked_reason
    clock.advance(timedelta(minutes=10))
    health.check_destination(destination)
    destination.refresh_from_db()
    assert destination.health == Health.HEALTHY

    html = page(make_user(destination.tenant, Role.VIEWER), destination)
    assert "Meta's score is not available with this token" in html
    row = row_of(html, "Purchase")
    assert 'data-testid="meta-score">—</strong>' in row
    assert f"<span>{our_average(destination, 'Purchase'):.1f}</span>" in row  # ours stays


@pytest.mark.parametrize(
    ("code", "subcode"), [(100, 33), (10, None), (200, None)], ids=["100/33", "10", "200"]
)
def test_every_permission_refusal_is_not_available(
    meta: Sandbox, destination: Destination, code: int, subcode: int | None
) -> None:
    refuse_next_read(meta, code, subcode)

    report = match_quality.fetch_match_quality(destination)

    assert report is not None
    assert report.status == MetaScoreStatus.NOT_AVAILABLE
    destination.refresh_from_db()
    assert destination.health == Health.UNKNOWN


@pytest.mark.parametrize(
    "failure",
    ["outage", "rate_limit", "revoked token"],
)
def test_a_failure_that_is_no_refusal_keeps_the_last_report(
    meta: Sandbox, clock: Any, destination: Destination, failure: str
) -> None:
    deliver_purchases(destination, clock.now(), count=2)
    first = match_quality.fetch_match_quality(destination)
    assert first is not None
    assert first.status == MetaScoreStatus.AVAILABLE
    clock.advance(timedelta(hours=1))
    if failure == "outage":
        refuse_next_read(meta, 2, status=500, is_transient=True)
    elif failure == "rate_limit":
        refuse_next_read(meta, 17, is_transient=True)
    else:
        meta.revoke(destination.access_token)

    kept = match_quality.fetch_match_quality(destination)

    assert kept is not None
    assert (kept.status, kept.events, kept.fetched_at) == (
        first.status,
        first.events,
        first.fetched_at,
    )
    destination.refresh_from_db()
    assert destination.health == Health.UNKNOWN


def test_a_new_answer_replaces_the_last_one_whole(
    meta: Sandbox, clock: Any, destination: Destination
) -> None:
    deliver_purchases(destination, clock.now(), count=2)
    match_quality.fetch_match_quality(destination)
    meta.answer_next(
        status=200,
        method="GET",
        body={
            "web": [
                {
                    "event_match_quality": {"composite_score": 6.8, "match_key_feedback": []},
                    "event_name": "Lead",
                }
            ]
        },
    )

    match_quality.fetch_match_quality(destination)

    report = MatchQualityReport.objects.get(destination=destination)
    assert [item["event_name"] for item in report.events] == ["Lead"]
    assert report.lowest_score == 6.8
    assert MatchQualityReport.objects.count() == 1


def test_the_task_fetches_only_enabled_destinations_and_the_command_says_what_it_did(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    enabled = make_destination()
    make_destination(enabled=False)

    out = StringIO()
    call_command("capi_match_quality", stdout=out)

    assert list(MatchQualityReport.objects.values_list("destination", flat=True)) == [enabled.pk]
    assert out.getvalue().strip() == (
        "Meta's match quality: 1 fetched, 0 not available with their token, "
        "0 could not be fetched (last report kept)."
    )


def test_the_panel_costs_two_queries_whatever_the_number_of_event_names(
    meta: Sandbox,
    clock: Any,
    destination: Destination,
    make_event: Callable[..., Event],
    django_assert_num_queries: Any,
) -> None:
    for name in ("Purchase", "Lead", "AddToCart", "ViewContent", "Search", "Contact"):
        make_event(event_name=name, match_quality=4.2)
    meta.answer_next(
        status=200,
        method="GET",
        body={
            "web": [
                {
                    "event_match_quality": {
                        "composite_score": 6.8,
                        "match_key_feedback": [
                            {"identifier": "email", "coverage": {"percentage": 90}}
                        ],
                    },
                    "event_name": name,
                }
                for name in ("Purchase", "Lead", "AddToCart")
            ]
        },
    )
    match_quality.fetch_match_quality(destination)

    with django_assert_num_queries(2):
        panel = match_quality.match_quality_panel(destination)

    assert [(row.event_name, row.meta_score, row.our_score) for row in panel.rows] == [
        ("Purchase", 6.8, 4.2),
        ("Lead", 6.8, 4.2),
        ("AddToCart", 6.8, 4.2),
        ("Contact", None, 4.2),
        ("Search", None, 4.2),
        ("ViewContent", None, 4.2),
    ]


def test_before_any_fetch_the_page_says_so_and_shows_our_estimate(
    destination: Destination, make_event: Callable[..., Event], make_user: Callable[..., Any]
) -> None:
    make_event(event_name="Purchase", match_quality=7.1)

    html = page(make_user(destination.tenant, Role.VIEWER), destination)

    assert 'data-status="not_fetched"' in html
    assert "Meta's score has not been fetched yet" in html
    assert "<span>7.1</span>" in html


def test_panels_for_many_destinations_cost_two_queries(
    meta: Sandbox,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    django_assert_num_queries: Any,
) -> None:
    """For the overview's cards: "Purchase: Meta 6.8 / ours 7.1" without a query per card."""
    many = [make_destination() for _ in range(5)]
    for number, destination in enumerate(many):
        make_event(destination=destination, event_name="Purchase", match_quality=7.0 + number / 10)
    meta.answer_next(
        status=200,
        method="GET",
        times=5,
        body={
            "web": [
                {
                    "event_match_quality": {"composite_score": 6.8, "match_key_feedback": []},
                    "event_name": "Purchase",
                }
            ]
        },
    )
    match_quality.fetch_all_match_quality(destination_ids=[item.pk for item in many])

    with django_assert_num_queries(2):
        panels = match_quality.match_quality_panels([item.pk for item in many])

    assert [
        [(row.event_name, row.meta_score, row.our_score) for row in panels[item.pk].rows]
        for item in many
    ] == [[("Purchase", 6.8, round(7.0 + number / 10, 1))] for number in range(5)]


def test_a_stored_report_of_any_shape_never_breaks_the_page(
    clock: Any, destination: Destination, make_user: Callable[..., Any]
) -> None:
    """Bad input never gives a 500: whatever Meta (or a hand edit) left in the JSON."""
    MatchQualityReport.objects.create(
        destination=destination,
        status=MetaScoreStatus.AVAILABLE,
        fetched_at=clock.now(),
        events=[
            {"event_name": "Purchase"},
            {"event_name": "Lead", "composite_score": "high", "match_key_feedback": "email"},
            {"event_name": "Search", "match_key_feedback": [{"identifier": 7}, "phone", None]},
            "AddToCart",
            None,
        ],
    )

    html = page(make_user(destination.tenant, Role.VIEWER), destination)

    for name in ("Purchase", "Lead", "Search"):
        assert 'data-testid="meta-score">—</strong>' in row_of(html, name)
    assert 'data-event="AddToCart"' not in html


def test_the_command_refuses_an_unknown_destination_id_and_fetches_nothing(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    known = make_destination()

    with pytest.raises(CommandError, match="No destination with id 987654"):
        call_command(
            "capi_match_quality", "--destination", str(known.pk), "--destination", "987654"
        )

    assert not MatchQualityReport.objects.exists()
