"""Alerts raised by the health checks: each turns on from recorded traffic and a held clock,
is announced once when it starts and once when it ends, and never flaps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from capi_destinations import alert_checks, counters, dispatch, health, signals, track_many
from capi_destinations import clock as app_clock
from capi_destinations.models import (
    AlertKind,
    AlertState,
    Destination,
    Health,
    HourlyOutcomes,
    MatchQualityReport,
    MetaScoreStatus,
    Role,
)
from capi_destinations.sandbox import Sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def meta(graph_settings: Sandbox, clock: Any) -> Sandbox:
    return graph_settings


@pytest.fixture
def registered(meta: Sandbox, destination: Destination) -> Destination:
    meta.register_pixel(destination.pixel_id, "Acme Shoes Pixel", [destination.access_token])
    # Created five weeks before the held clock, so it has a history to compare with.
    Destination.objects.filter(pk=destination.pk).update(
        created_at=app_clock.now() - timedelta(weeks=5)
    )
    destination.refresh_from_db()
    return destination


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    """Every ``destination_alert`` sent during the test, as (kind, raised, reason, fix)."""
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    signals.destination_alert.connect(receiver)
    yield received
    signals.destination_alert.disconnect(receiver)


@pytest.fixture
def alert_settings(settings: Any, graph_settings: Sandbox) -> Any:
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "TRAFFIC_DROP_HOURS": 1,
        "TRAFFIC_MIN_USUAL": 3,
        "TRAFFIC_HISTORY_WEEKS": 1,
        "ALERT_FAILURE_RATE_HOURS": 1,
        "ALERT_FAILURE_RATE_MIN_EVENTS": 5,
        "ALERT_MATCH_QUALITY_MIN_EVENTS": 5,
        "DISPATCH_LINGER_SECONDS": 0,
    }
    return settings


_sequence = iter(range(1, 1_000_000))


def an_event(*, rich: bool = True, currency: bool = True) -> dict[str, Any]:
    user_data: dict[str, Any] = {"client_ip_address": "203.0.113.7", "client_user_agent": "UA/1"}
    if rich:
        user_data.update(
            em="jane.doe@example.com",
            ph="+44 20 7946 0958",
            external_id="customer-42",
            fn="Jane",
            ln="Doe",
            fbp="fb.1.1700000000000.1234567890",
        )
    custom_data: dict[str, Any] = {"value": 10.0}
    if currency:
        custom_data["currency"] = "EUR"
    return {
        "event_name": "Purchase",
        "event_id": f"order-{next(_sequence)}",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": user_data,
        "custom_data": custom_data,
    }


@pytest.fixture
def record(django_capture_on_commit_callbacks: Any) -> Callable[..., None]:
    """``record(destination, at, count, rich=, currency=)``: events recorded through
    ``track_many`` with the clock held at ``at`` (what follows the commit too: the counters),
    then sent to the sandbox at that moment, as the dispatcher would."""

    def recorder(destination: Destination, at: datetime, count: int, **kinds: bool) -> None:
        with app_clock.held_at(at):
            with django_capture_on_commit_callbacks(execute=True):
                track_many(destination, [an_event(**kinds) for _ in range(count)])
            dispatch.dispatch_pending(destination.pk)

    return recorder


def evaluate(destination: Destination, times: int, capture: Any) -> None:
    with capture(execute=True):
        for _ in range(times):
            health.check_destination(destination)


def kinds(sent: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    return [(item["kind"], item["raised"]) for item in sent]


# --- traffic dropped -------------------------------------------------------------------


def test_ingest_counts_recorded_events_per_hour(
    alert_settings: Any, registered: Destination, record: Callable[..., None]
) -> None:
    record(registered, app_clock.now(), 4)
    record(registered, app_clock.now(), 2, currency=False)

    row = HourlyOutcomes.objects.get(destination=registered)
    assert (row.recorded, row.rejected, row.quality_events) == (6, 2, 6)
    assert row.quality_sum == pytest.approx(
        sum(registered.events.values_list("match_quality", flat=True))
    )


def test_rebuilding_the_counters_recounts_recorded_events_and_their_quality(
    alert_settings: Any, registered: Destination, record: Callable[..., None]
) -> None:
    record(registered, app_clock.now() - timedelta(hours=2), 3)
    record(registered, app_clock.now(), 2, rich=False)
    counted = {
        row.hour: (row.recorded, row.quality_events, round(row.quality_sum, 3))
        for row in HourlyOutcomes.objects.filter(destination=registered)
    }

    counters.rebuild(destination_ids=[registered.pk])

    rebuilt = {
        row.hour: (row.recorded, row.quality_events, round(row.quality_sum, 3))
        for row in HourlyOutcomes.objects.filter(destination=registered)
    }
    assert rebuilt == counted
    assert sorted(recorded for recorded, _rated, _sum in rebuilt.values()) == [2, 3]


def test_traffic_drop_raises_once_turns_the_card_unhealthy_and_clears_once(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    record: Callable[..., None],
) -> None:
    now = app_clock.now()  # 12:00; the window is 11:00-12:00
    for hour in (11, 12):
        record(registered, now.replace(hour=hour, minute=20) - timedelta(weeks=1), 5)

    evaluate(registered, 1, django_capture_on_commit_callbacks)
    assert sent == []  # one reading is not enough
    evaluate(registered, 3, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("traffic_dropped", True)]
    assert sent[0]["destination"].pk == registered.pk
    assert "No events were recorded in the last 1 h" in sent[0]["reason"]
    assert "still calls track()" in sent[0]["fix"]
    registered.refresh_from_db()
    assert registered.health == Health.UNHEALTHY
    assert [reason["name"] for reason in registered.health_reasons] == ["traffic_flowing"]

    # The site calls track() again; an hour later the window holds the usual traffic.
    record(registered, now.replace(minute=30), 5)
    app_clock.advance(timedelta(hours=1, minutes=5))
    evaluate(registered, 3, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("traffic_dropped", True), ("traffic_dropped", False)]
    assert sent[1]["fix"] == ""
    registered.refresh_from_db()
    assert registered.health == Health.HEALTHY


def test_a_destination_without_a_week_of_history_never_counts_as_dropped(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    record: Callable[..., None],
) -> None:
    Destination.objects.filter(pk=registered.pk).update(
        created_at=app_clock.now() - timedelta(days=3)
    )
    record(registered, app_clock.now() - timedelta(days=2, hours=1), 50)

    evaluate(registered, 3, django_capture_on_commit_callbacks)

    assert sent == []
    registered.refresh_from_db()
    assert registered.health == Health.HEALTHY


def test_weeks_past_retention_are_not_counted_as_quiet_ones(
    alert_settings: Any, registered: Destination, record: Callable[..., None]
) -> None:
    alert_settings.CAPI_DESTINATIONS = {
        **alert_settings.CAPI_DESTINATIONS,
        "TRAFFIC_HISTORY_WEEKS": 2,
        "RETENTION_DAYS": 10,
    }
    record(registered, app_clock.now().replace(hour=11) - timedelta(weeks=1), 6)

    facts = alert_checks.collect_alert_facts([registered.pk], now=app_clock.now())[registered.pk]

    # Two weeks ago is past retention: its counters are gone, not zero.
    assert facts.usual_recorded == 6


def test_traffic_is_about_recording_so_it_counts_with_sending_off(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    record: Callable[..., None],
) -> None:
    record(registered, app_clock.now().replace(hour=11) - timedelta(weeks=1), 5)
    Destination.objects.filter(pk=registered.pk).update(enabled=False)
    registered.refresh_from_db()

    evaluate(registered, 2, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("traffic_dropped", True)]


# --- Graph API version ending ----------------------------------------------------------------


def test_version_ending_within_90_days_raises_and_clears_when_upgraded(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # v21.0 ends on 2027-01-21, 58 days after the held clock.
    Destination.objects.filter(pk=registered.pk).update(api_version="v21.0")
    registered.refresh_from_db()

    evaluate(registered, 3, django_capture_on_commit_callbacks)
    assert kinds(sent) == [("version_ending", True)]
    assert "2027-01-21" in sent[0]["reason"] or "v21.0" in sent[0]["reason"]

    Destination.objects.filter(pk=registered.pk).update(api_version="")
    registered.refresh_from_db()
    evaluate(registered, 3, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("version_ending", True), ("version_ending", False)]


# --- match quality fell -----------------------------------------------------------------------


def test_match_quality_drop_against_the_week_before_raises_and_clears(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    record: Callable[..., None],
) -> None:
    now = app_clock.now()
    record(registered, now - timedelta(days=3), 10, rich=True)
    record(registered, now - timedelta(hours=2), 10, rich=False)

    evaluate(registered, 2, django_capture_on_commit_callbacks)
    assert kinds(sent) == [("match_quality_fell", True)]
    assert "Estimated match quality fell from" in sent[0]["reason"]

    # The release is fixed: the rest of the day's events carry the identifiers again.
    record(registered, now - timedelta(minutes=30), 200, rich=True)
    evaluate(registered, 2, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("match_quality_fell", True), ("match_quality_fell", False)]


def test_metas_score_falling_against_a_week_before_raises_and_clears(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # No events of ours: only Meta's score, as fetched a week apart, can tell.
    today = app_clock.now().date()
    week_before = (today - timedelta(days=7)).isoformat()
    report = MatchQualityReport.objects.create(
        destination=registered,
        status=MetaScoreStatus.AVAILABLE,
        fetched_at=app_clock.now(),
        daily_scores={
            week_before: {"Purchase": 7.5, "Lead": 6.0},
            today.isoformat(): {"Purchase": 5.9, "Lead": 6.0},
        },
    )

    evaluate(registered, 2, django_capture_on_commit_callbacks)
    assert kinds(sent) == [("match_quality_fell", True)]
    assert sent[0]["reason"] == (
        "Meta's Event Match Quality of Purchase fell from 7.5 to 5.9 out of 10 (against a week "
        "before)."
    )

    # Meta scores Purchase within a point of last week again.
    report.daily_scores[today.isoformat()] = {"Purchase": 6.6, "Lead": 6.0}
    report.save()
    evaluate(registered, 2, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("match_quality_fell", True), ("match_quality_fell", False)]


# --- failure rate ----------------------------------------------------------------------------


def test_refused_share_crossing_the_threshold_raises_and_clears(
    alert_settings: Any,
    registered: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    record: Callable[..., None],
) -> None:
    # A release starts sending purchases without a currency: our checks reject them.
    record(registered, app_clock.now(), 8, currency=False)
    record(registered, app_clock.now(), 2)

    evaluate(registered, 2, django_capture_on_commit_callbacks)
    assert kinds(sent) == [("failure_rate", True)]
    assert "8 of the 10 events of the last 1 h were refused (80%" in sent[0]["reason"]

    # Fixed: an hour later only good events reach Meta.
    app_clock.advance(timedelta(hours=1))
    record(registered, app_clock.now(), 10)
    evaluate(registered, 2, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("failure_rate", True), ("failure_rate", False)]


# --- the edge-triggered state ----------------------------------------------------------------


def observe(destination: Destination, active: bool, capture: Any) -> list[alert_checks.Condition]:
    condition = alert_checks.Condition(
        AlertKind.FAILURE_RATE, active, "Too many refused.", "Fix it."
    )
    with capture(execute=True):
        return alert_checks.record_conditions(destination, [condition], now=app_clock.now())


def test_a_flapping_condition_never_alerts(
    clock: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    for active in (True, False, True, False, True, False):
        observe(destination, active, django_capture_on_commit_callbacks)

    assert sent == []
    assert not AlertState.objects.get(destination=destination).raised


def test_a_lasting_condition_alerts_once_each_way(
    clock: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    for active in (True, True, True, True, False, True, False, False, False):
        observe(destination, active, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("failure_rate", True), ("failure_rate", False)]
    assert sent[0]["reason"] == "Too many refused."
    assert sent[0]["fix"] == "Fix it."


def test_the_debounce_is_a_setting(
    clock: Any,
    settings: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "ALERT_DEBOUNCE_CHECKS": 1}

    observe(destination, True, django_capture_on_commit_callbacks)

    assert kinds(sent) == [("failure_rate", True)]


def test_collecting_alert_facts_costs_the_same_for_one_destination_or_many(
    alert_settings: Any, clock: Any, make_destination: Any
) -> None:
    one = [make_destination().pk]
    many = [make_destination().pk for _ in range(6)]
    with CaptureQueriesContext(connection) as for_one:
        alert_checks.collect_alert_facts(one, now=app_clock.now())
    with CaptureQueriesContext(connection) as for_many:
        alert_checks.collect_alert_facts(many, now=app_clock.now())

    assert len(for_one) == len(for_many) == 4


def test_folding_in_unchanged_conditions_costs_no_query(
    clock: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    django_assert_num_queries: Any,
) -> None:
    for _ in range(2):
        observe(destination, True, django_capture_on_commit_callbacks)  # raised, streak 0
    states = alert_checks.collect_alert_facts([destination.pk], now=app_clock.now())[
        destination.pk
    ].states
    still = alert_checks.Condition(AlertKind.FAILURE_RATE, True, "Too many refused.", "Fix it.")
    never = alert_checks.Condition(AlertKind.VERSION_ENDING, False)

    with django_assert_num_queries(0):
        changes = alert_checks.record_conditions(
            destination, [still, never], now=app_clock.now(), states=states
        )

    assert changes == []
    assert kinds(sent) == [("failure_rate", True)]


def test_two_processes_with_the_same_reading_announce_a_change_once(
    clock: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    observe(destination, True, django_capture_on_commit_callbacks)  # streak 1 of 2
    # Two health-check processes read the states before either writes.
    first = alert_checks.collect_alert_facts([destination.pk], now=app_clock.now())[destination.pk]
    second = alert_checks.collect_alert_facts([destination.pk], now=app_clock.now())[destination.pk]
    condition = alert_checks.Condition(AlertKind.FAILURE_RATE, True, "Too many refused.", "Fix it.")

    with django_capture_on_commit_callbacks(execute=True):
        won = alert_checks.record_conditions(
            destination, [condition], now=app_clock.now(), states=first.states
        )
        lost = alert_checks.record_conditions(
            destination, [condition], now=app_clock.now(), states=second.states
        )

    assert (len(won), len(lost)) == (1, 0)
    assert kinds(sent) == [("failure_rate", True)]


def test_two_processes_creating_the_first_state_do_not_fail(
    clock: Any,
    destination: Destination,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    condition = alert_checks.Condition(AlertKind.FAILURE_RATE, True, "Too many refused.", "Fix it.")

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # both read "no state yet"
            alert_checks.record_conditions(destination, [condition], now=app_clock.now(), states={})

    state = AlertState.objects.get(destination=destination)
    assert (state.raised, state.streak) == (False, 1)
    assert sent == []


def test_the_overview_costs_the_same_queries_with_alerts_raised(
    clock: Any,
    make_user: Any,
    tenant: Any,
    make_destination: Any,
    client: Any,
    django_assert_num_queries: Any,
) -> None:
    client.force_login(make_user(tenant, Role.ADMIN))
    url = reverse("capi_destinations:overview")
    destinations = [make_destination() for _ in range(3)]
    client.get(url)  # warm the session
    with CaptureQueriesContext(connection) as without_alerts:
        client.get(url)
    for destination in destinations:
        for kind in AlertKind.values:
            AlertState.objects.create(destination=destination, kind=kind, raised=True)

    with django_assert_num_queries(len(without_alerts)):
        response = client.get(url)

    assert response.status_code == 200
