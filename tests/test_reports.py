from __future__ import annotations

from datetime import timedelta

from capi_destinations import counters, reports
from capi_destinations.models import (
    AttemptOutcome,
    BlockKind,
    DeliveryAttempt,
    EventStatus,
    Health,
    Membership,
    Role,
)
from capi_destinations.views.charts import match_quality_sparkline, stacked_hourly_chart


def test_counts_last_24h_in_one_query(
    clock, destination, make_destination, make_event, django_assert_num_queries
) -> None:
    other = make_destination()
    make_event(status=EventStatus.DELIVERED)
    make_event(status=EventStatus.FAILED)
    make_event(status=EventStatus.EXPIRED)
    make_event(status=EventStatus.REJECTED)
    make_event(status=EventStatus.SUPPRESSED)
    make_event(status=EventStatus.PENDING)
    with clock.held_at(clock.now() - timedelta(hours=24)):  # the hour before the 24 shown
        make_event(status=EventStatus.DELIVERED)
    make_event(destination=other, status=EventStatus.DELIVERED)
    with django_assert_num_queries(1):
        counts = reports.counts_last_24h([destination.pk, other.pk])
    # Rejected events never went to Meta: counted apart from those Meta failed (or that expired);
    # suppressed ones (consent, filters, exclusions) apart from both.
    assert counts == {
        destination.pk: {"delivered": 1, "failed": 2, "rejected": 1, "suppressed": 1},
        other.pk: {"delivered": 1, "failed": 0, "rejected": 0, "suppressed": 0},
    }
    assert reports.counts_last_24h([]) == {}


def test_overview_cards_are_scoped_and_unhealthy_first(
    make_user, tenant, other_tenant, make_destination
) -> None:
    user = make_user(tenant, Role.VIEWER)
    make_destination(name="B healthy", health=Health.HEALTHY)
    make_destination(name="A unknown")
    make_destination(name="C unhealthy", health=Health.UNHEALTHY)
    make_destination(name="Theirs", tenant=other_tenant, health=Health.UNHEALTHY)
    cards = reports.overview_cards(user)
    assert [card.destination.name for card in cards] == ["C unhealthy", "A unknown", "B healthy"]
    Membership.objects.create(user=user, tenant=other_tenant, role=Role.VIEWER)
    assert [c.destination.name for c in reports.overview_cards(user, tenant_slug="globex")] == [
        "Theirs"
    ]


def test_overview_never_loads_secrets(make_user, tenant, destination) -> None:
    user = make_user(tenant, Role.VIEWER)
    loaded = reports.overview_cards(user)[0].destination
    assert "access_token" not in loaded.__dict__
    assert "app_secret" not in loaded.__dict__


def test_first_reason_prefers_the_token_block(destination) -> None:
    assert reports.first_reason(destination) == ""
    destination.health_reasons = [{"name": "queue_moving", "message": "The queue is stuck."}]
    assert reports.first_reason(destination) == "The queue is stuck."
    destination.blocked_reason = "Meta refused the token (#190)."
    assert reports.first_reason(destination) == "Meta refused the token (#190)."


def test_hourly_counts_bucket_by_hour_and_skip_suppressed(
    clock, destination, make_event, django_assert_num_queries
) -> None:
    three_hours_ago = clock.now() - timedelta(hours=3, minutes=10)
    with clock.held_at(three_hours_ago):
        make_event(status=EventStatus.DELIVERED)
        make_event(status=EventStatus.REJECTED)
        make_event(status=EventStatus.FAILED)
    make_event(lease_expires_at=clock.now() + timedelta(minutes=5))  # on its way
    make_event(status=EventStatus.SUPPRESSED)
    with django_assert_num_queries(2):
        hours = reports.hourly_counts(destination)
    assert len(hours) == 24
    assert hours[-1].hour == clock.now().replace(minute=0, second=0, microsecond=0)
    by_hour = {hour.hour: hour for hour in hours}
    earlier = by_hour[three_hours_ago.replace(minute=0, second=0, microsecond=0)]
    assert (earlier.delivered, earlier.failed, earlier.rejected, earlier.pending) == (1, 1, 1, 0)
    assert (hours[-1].delivered, hours[-1].failed, hours[-1].pending) == (0, 0, 1)
    assert sum(hour.total for hour in hours) == 4
    # The chart's bars add up to the overview card's numbers.
    card = reports.single_card(destination)
    assert (card.delivered_24h, card.failed_24h, card.rejected_24h) == (
        sum(hour.delivered for hour in hours),
        sum(hour.failed for hour in hours),
        sum(hour.rejected for hour in hours),
    )


def test_hourly_match_quality_averages(clock, destination, make_event) -> None:
    make_event(match_quality=4.0)
    make_event(match_quality=8.0)
    series = reports.hourly_match_quality(destination)
    assert series[-1] == (series[-1][0], 6.0)
    assert series[0][1] is None


def test_diagnostics_summary_counts_each_event_once_per_code(destination, make_event) -> None:
    twice = [
        {"code": "invalid_email", "field": "user_data.em[0]", "severity": "warning"},
        {"code": "invalid_email", "field": "user_data.em[1]", "severity": "warning"},
    ]
    make_event(diagnostics=twice)
    make_event(diagnostics=[])
    summary = reports.diagnostics_summary(destination)
    assert summary.events == 2
    assert not summary.sampled
    [row] = summary.diagnostics
    assert (row.code, row.count, row.of_events, row.percent) == ("invalid_email", 1, 2, 50)


def test_diagnostics_summary_says_when_it_sampled(destination, make_event) -> None:
    for _ in range(3):
        make_event()
    summary = reports.diagnostics_summary(destination, sample_size=2)
    assert summary.sampled
    assert summary.events == 2


def test_event_log_filters(destination, make_event) -> None:
    make_event(event_name="Lead", status=EventStatus.FAILED)
    make_event(event_name="Purchase", status=EventStatus.FAILED)
    make_event(event_name="Purchase", status=EventStatus.DELIVERED)
    assert reports.event_log(destination).count() == 3
    assert reports.event_log(destination, status="failed", event_name="Purchase").count() == 1
    assert reports.event_log(destination, status="bogus").count() == 3
    assert reports.event_names(destination) == ["Lead", "Purchase"]


def test_recent_attempts_explain_metas_error(clock, destination) -> None:
    DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now(),
        http_status=400,
        error_code=190,
        outcome=AttemptOutcome.BLOCKED,
    )
    DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now() - timedelta(minutes=1),
        http_status=200,
        event_count=3,
        events_received=2,
        outcome=AttemptOutcome.DELIVERED,
    )
    refused, short = reports.recent_attempts(destination)
    assert refused.explanation
    assert refused.fix
    assert short.explanation == "Meta counted 2 of the 3 events sent."


def test_stacked_chart_scales_to_the_busiest_hour(clock) -> None:
    slots = counters.hours_shown(clock.now())
    hours = [reports.HourCounts(hour=slot) for slot in slots]
    hours[5] = reports.HourCounts(hour=slots[5], delivered=5, failed=2, rejected=1)
    hours[6] = reports.HourCounts(hour=slots[6], pending=4)
    chart = stacked_hourly_chart(hours, width=480, height=120)
    assert chart.peak == 8
    delivered, failed, rejected = chart.bars[5].segments
    assert (delivered.series, delivered.height, delivered.y) == ("delivered", 75.0, 45.0)
    assert (failed.series, failed.height, failed.y) == ("failed", 30.0, 15.0)
    assert (rejected.series, rejected.height, rejected.y) == ("rejected", 15.0, 0.0)
    assert chart.bars[6].segments[0].height == 60.0
    assert chart.bars[0].segments == ()
    assert chart.bars[0].axis_label
    assert "5 delivered, 2 failed, 1 rejected" in chart.bars[5].title
    assert stacked_hourly_chart([reports.HourCounts(hour=slots[0])]).is_empty


def test_sparkline_skips_empty_hours(clock) -> None:
    slots = counters.hours_shown(clock.now())
    series = [(slot, None) for slot in slots]
    series[10] = (slots[10], 5.0)
    series[20] = (slots[20], 10.0)
    line = match_quality_sparkline(series, width=240, height=60)
    assert line.points == "105.0,30.0 205.0,0.0"
    assert line.latest == 10.0
    assert line.guides == ((18.0, "7 good"), (30.0, "5 weak"))


def test_waiting_counts_in_one_query_and_in_words(
    clock, destination, make_destination, make_event, django_assert_num_queries
) -> None:
    other = make_destination()
    make_event(status=EventStatus.PENDING)
    make_event(lease_expires_at=clock.now() + timedelta(minutes=5))  # on its way
    make_event(status=EventStatus.DELIVERED)
    make_event(status=EventStatus.FAILED)
    with django_assert_num_queries(1):
        counts = reports.waiting_counts([destination.pk, other.pk])
    assert counts == {destination.pk: 2}

    assert reports.waiting_text(destination, 0) == ""
    assert reports.waiting_text(destination, 1) == "1 event waiting"
    assert reports.waiting_text(destination, 2) == "2 events waiting"
    destination.paused_until = clock.now() + timedelta(minutes=5)
    assert reports.waiting_text(destination, 2) == "2 events waiting while Meta's rate limit lasts"
    destination.blocked_reason = "Meta refuses every request for this destination, whatever …"
    destination.block_kind = BlockKind.EVERY_REQUEST
    assert reports.waiting_text(destination, 2) == (
        "2 events waiting until Meta accepts this destination's requests again"
    )
    destination.block_kind = BlockKind.TOKEN
    assert reports.waiting_text(destination, 15) == "15 events waiting for a new token"
    destination.enabled = False
    assert reports.waiting_text(destination, 15) == "15 events waiting while sending is off"
