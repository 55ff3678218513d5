"""Health checks against the Graph sandbox over a real socket, with the app clock held still."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django_q.models import Schedule

from capi_destinations import (
    dispatch,
    graph,
    health,
    health_status,
    problems,
    retention,
    signals,
    tasks,
)
from capi_destinations.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    Health,
    HealthCheck,
    Role,
)
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token, server_event

pytestmark = pytest.mark.django_db


def check_named(check: HealthCheck, name: str) -> dict[str, Any]:
    """The stored entry of one check in a HealthCheck."""
    return next(item for item in check.checks if item["name"] == name)


def reload(destination: Destination) -> Destination:
    return Destination.objects.get(pk=destination.pk)


@pytest.fixture
def meta(graph_settings: Sandbox, clock: Any) -> Sandbox:
    """The sandbox with the app pointed at it and the clock frozen."""
    return graph_settings


@pytest.fixture
def changes() -> Iterator[list[dict[str, Any]]]:
    """Every ``destination_health_changed`` signal sent during the test."""
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        # What a receiver sees at the moment of the signal.
        received.append({**kwargs, "health_then": kwargs["destination"].health})

    signals.destination_health_changed.connect(receiver)
    yield received
    signals.destination_health_changed.disconnect(receiver)


@pytest.fixture
def registered(meta: Sandbox, destination: Destination) -> Destination:
    """``destination`` with its pixel registered in the sandbox under a name."""
    meta.register_pixel(destination.pixel_id, "Acme Shoes Pixel", [destination.access_token])
    return destination


def store_raw_token(destination: Destination, token: str) -> Destination:
    # Saving through the model refuses a malformed token; a queryset update stores it as an
    # older release or a changed TOKEN_MIN_LENGTH could have left it.
    Destination.objects.filter(pk=destination.pk).update(access_token=token)
    return reload(destination)


def add_attempts(destination: Destination, outcome: str, category: str, count: int) -> None:
    for _ in range(count):
        DeliveryAttempt.objects.create(
            destination=destination,
            started_at=health.clock.now() - timedelta(minutes=5),
            outcome=outcome,
            category=category,
        )


# --- check 1: sending enabled --------------------------------------------------------------------


def test_sending_enabled_passes(registered: Destination) -> None:
    check = health.check_destination(registered)

    assert check_named(check, "sending_enabled")["ok"] is True
    assert check.status == Health.HEALTHY


def test_sending_disabled_makes_the_destination_unhealthy_with_the_fix(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(enabled=False)

    check = health.check_destination(destination)

    entry = check_named(check, "sending_enabled")
    assert entry["ok"] is False
    assert entry["message"] == problems.SENDING_OFF.reason
    assert entry["fix"] == problems.SENDING_OFF.fix
    assert "Tick “Send events via Conversions API”" in entry["fix"]
    assert entry["problem"] == "sending_off"
    assert reload(destination).health == Health.UNHEALTHY
    assert reload(destination).health_reasons[0]["name"] == "sending_enabled"


# --- check 2: token format -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_token", "says", "fix_says"),
    [
        ("", "Paste the Conversions API access token", "one piece"),
        (make_token("cut")[:60], "looks truncated: 60 characters", "one piece"),
        (
            make_token("space")[:90] + " " + make_token("space")[90:],
            "contains a space",
            "one piece",
        ),
        ("XYZ" + make_token("prefix")[3:], "starts with “XYZ”", "starts with EAA"),
    ],
    ids=["missing", "truncated", "whitespace", "prefix"],
)
def test_token_format_failures_say_which(
    meta: Sandbox, destination: Destination, bad_token: str, says: str, fix_says: str
) -> None:
    destination = store_raw_token(destination, bad_token)

    check = health.check_destination(destination)

    entry = check_named(check, "token_format")
    assert entry["ok"] is False
    # One wording for every paste problem, Meta's rule named after it.
    assert entry["message"].startswith(problems.TOKEN_NOT_WHOLE.reason)
    assert says in entry["message"]
    assert fix_says in entry["fix"]
    assert entry["fix"] == problems.TOKEN_NOT_WHOLE.fix
    assert check.status == Health.UNHEALTHY
    # A malformed token is never sent to Meta.
    assert meta.requests() == []
    assert check_named(check, "meta_accepts_token")["severity"] == "info"


def test_token_format_passes_for_a_whole_token(registered: Destination) -> None:
    check = health.check_destination(registered)

    assert check_named(check, "token_format") == {
        "name": "token_format",
        "ok": True,
        "message": "A token is stored and looks whole.",
        "fix": "",
        "severity": "error",
        "problem": "",
    }


def test_a_token_that_cannot_be_decrypted_is_reported_not_crashed_on(
    meta: Sandbox, make_destination: Callable[..., Destination], settings: Any
) -> None:
    settings.FERNET_KEYS = ["a key that was later lost"]
    lost = make_destination(name="Encrypted with a lost key")
    settings.FERNET_KEYS = ["tests-fernet-key-one"]
    readable = make_destination(name="Readable")
    meta.register_pixel(readable.pixel_id, "Readable pixel", [readable.access_token])

    checks = health.check_all_destinations()

    by_destination = {check.destination_id: check for check in checks}
    entry = check_named(by_destination[lost.pk], "token_format")
    assert entry["ok"] is False
    assert "cannot be decrypted" in entry["message"]
    assert by_destination[readable.pk].status == Health.HEALTHY


# --- check 3: Meta accepts the token -------------------------------------------------------------


def test_meta_accepting_the_token_stores_and_shows_the_pixel_name(
    registered: Destination,
) -> None:
    check = health.check_destination(registered)

    entry = check_named(check, "meta_accepts_token")
    assert entry["ok"] is True
    assert "“Acme Shoes Pixel”" in entry["message"]
    assert reload(registered).pixel_name == "Acme Shoes Pixel"
    assert registered.pixel_name == "Acme Shoes Pixel"


def test_a_revoked_token_is_unhealthy_with_a_new_token_fix(
    meta: Sandbox, registered: Destination
) -> None:
    meta.revoke(registered.access_token)

    check = health.check_destination(registered)

    entry = check_named(check, "meta_accepts_token")
    assert entry["ok"] is False
    assert "invalid or was revoked" in entry["message"]
    assert "Events Manager → your pixel → Settings → Conversions API" in entry["fix"]
    assert reload(registered).health == Health.UNHEALTHY


def test_an_expired_token_has_its_own_message(meta: Sandbox, registered: Destination) -> None:
    meta.revoke(registered.access_token, reason="expired")

    check = health.check_destination(registered)

    entry = check_named(check, "meta_accepts_token")
    assert entry["message"] == "Meta says the token has expired."
    assert "Generate access token" in entry["fix"]


def test_a_pixel_id_meta_will_not_read_leaves_a_new_destination_unknown(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    # Meta answers 100/33 alike for a mistyped Pixel ID and a send-only token: with no
    # delivery to tell them apart, the check says both and gives no verdict.
    destination = make_destination(pixel_id="1234567890123456")
    meta.register_pixel("9999999999999999", "Someone else's pixel", [destination.access_token])

    check = health.check_destination(destination)

    entry = check_named(check, "meta_accepts_token")
    assert "Pixel ID 1234567890123456 is mistyped" in entry["message"]
    assert "cannot be shown" in entry["message"]
    assert "the Pixel ID is the pixel the token was generated for" in entry["fix"]
    assert entry["severity"] == "info"
    assert check.status == Health.UNKNOWN
    assert reload(destination).health_reasons[0]["name"] == "meta_accepts_token"


def test_a_token_generated_for_another_pixel_never_shows_that_pixels_name(
    meta: Sandbox, make_destination: Callable[..., Destination], other_tenant: Any
) -> None:
    right = make_destination(name="Shoes", pixel_id="1111111111111111")
    wrong = make_destination(name="Shoes (copy)", pixel_id="1111111111111111", tenant=other_tenant)
    meta.register_pixel(right.pixel_id, "Shoes pixel", [right.access_token])
    meta.register_pixel("2222222222222222", "Hats pixel", [wrong.access_token])
    health.check_destination(right)  # Meta names the pixel: it exists.

    check = health.check_destination(wrong)

    # The name Meta reported to another client's destination is not shown (issue 14): the
    # Pixel ID is public, the name is that client's.
    assert "Shoes pixel" not in str(check.checks)
    assert "made for another pixel" in check_named(check, "meta_accepts_token")["message"]
    assert check.status == Health.UNKNOWN


def test_a_refused_read_leaves_a_destination_proven_healthy_healthy(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(name="Shoes", pixel_id="1111111111111111")
    meta.register_pixel(destination.pixel_id, "Shoes pixel", [destination.access_token])
    health.check_destination(destination)
    # The token may no longer read the pixel (for example a send-only token pasted in).
    meta.register_pixel(
        destination.pixel_id, "Shoes pixel", send_only_tokens=[destination.access_token]
    )

    check = health.check_destination(destination)

    assert check.status == Health.HEALTHY
    assert "cannot be shown" in check_named(check, "meta_accepts_token")["message"]


def test_a_permission_refusal_of_the_read_is_no_verdict(
    meta: Sandbox, registered: Destination
) -> None:
    meta.answer_error(200, message="(#200) Permission denied", type="OAuthException")

    check = health.check_destination(registered)

    entry = check_named(check, "meta_accepts_token")
    assert "cannot be shown" in entry["message"]
    assert check.status == Health.UNKNOWN


def test_other_refusals_show_metas_explanation(meta: Sandbox, registered: Destination) -> None:
    # (A test's shortcut: the app only changes the version with the token pasted again.)
    Destination.objects.filter(pk=registered.pk).update(api_version="v10.0")
    registered.refresh_from_db()

    check = health.check_destination(registered)

    entry = check_named(check, "meta_accepts_token")
    # Meta's 2635 is a problem with its own wording: the version is no longer served.
    assert entry["message"] == problems.API_VERSION_ENDED.reason
    assert entry["fix"] == problems.API_VERSION_ENDED.fix
    assert entry["problem"] == "api_version_ended"
    assert check.status == Health.UNHEALTHY


# --- transient errors ----------------------------------------------------------------------------


def test_meta_outage_keeps_healthy_until_the_threshold(
    meta: Sandbox, registered: Destination, settings: Any
) -> None:
    health.check_destination(registered)
    assert registered.health == Health.HEALTHY
    meta.set_faults(failure_rate=1.0)

    first = health.check_destination(registered)
    second = health.check_destination(registered)

    for check, count in ((first, 1), (second, 2)):
        entry = check_named(check, "meta_accepts_token")
        assert entry["message"].startswith("Could not reach Meta")
        assert f"(this was {count})" in entry["message"]
        assert entry["severity"] == "info"
        assert check.status == Health.HEALTHY
    assert reload(registered).health_transient_failures == 2
    assert reload(registered).health_reasons == []

    third = health.check_destination(registered)

    assert third.status == Health.UNHEALTHY
    assert check_named(third, "meta_accepts_token")["severity"] == "error"
    assert reload(registered).health_reasons[0]["message"].startswith("Could not reach Meta")

    meta.set_faults(failure_rate=0.0)
    recovered = health.check_destination(registered)

    assert recovered.status == Health.HEALTHY
    assert reload(registered).health_transient_failures == 0


def test_threshold_is_a_setting(meta: Sandbox, registered: Destination, settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "HEALTH_TRANSIENT_FAILURE_THRESHOLD": 1,
    }
    health.check_destination(registered)
    meta.set_faults(failure_rate=1.0)

    assert health.check_destination(registered).status == Health.UNHEALTHY


def test_a_timeout_counts_as_not_reaching_meta(
    meta: Sandbox, registered: Destination, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "GRAPH_READ_TIMEOUT": 0.2}
    meta.set_faults(latency_ms=5_000)

    check = health.check_destination(registered)

    assert check_named(check, "meta_accepts_token")["message"].startswith("Could not reach Meta")
    # Never checked before and no verdict now: still unknown, with the reason shown.
    assert check.status == Health.UNKNOWN
    assert reload(registered).health_reasons[0]["name"] == "meta_accepts_token"


def test_an_unhealthy_destination_stays_unhealthy_with_its_reason_during_an_outage(
    meta: Sandbox, registered: Destination
) -> None:
    meta.revoke(registered.access_token)
    health.check_destination(registered)
    meta.set_faults(failure_rate=1.0)

    check = health.check_destination(registered)

    assert check.status == Health.UNHEALTHY
    assert "revoked" in reload(registered).health_reasons[0]["message"]


def test_during_an_outage_a_reason_fixed_since_is_not_shown(
    meta: Sandbox, registered: Destination
) -> None:
    Destination.objects.filter(pk=registered.pk).update(enabled=False)
    health.check_destination(reload(registered))
    Destination.objects.filter(pk=registered.pk).update(enabled=True)
    meta.set_faults(failure_rate=1.0)

    check = health.check_destination(reload(registered))

    assert check.status == Health.UNHEALTHY
    reasons = reload(registered).health_reasons
    assert [reason["name"] for reason in reasons] == ["meta_accepts_token"]
    assert reasons[0]["message"].startswith("Could not reach Meta")


# --- check 4: recent deliveries ------------------------------------------------------------------


def test_a_delivery_refusal_is_a_definite_failure_even_when_meta_is_unreachable(
    meta: Sandbox, registered: Destination
) -> None:
    health.check_destination(registered)
    Destination.objects.filter(pk=registered.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=health.clock.now()
    )
    registered = reload(registered)
    meta.set_faults(failure_rate=1.0)

    check = health.check_destination(registered)

    entry = check_named(check, "deliveries_accepted")
    assert entry["ok"] is False
    assert "Meta refused events for this destination" in entry["message"]
    assert check.status == Health.UNHEALTHY


def test_many_failed_requests_make_the_destination_unhealthy(
    meta: Sandbox, registered: Destination
) -> None:
    add_attempts(registered, AttemptOutcome.DELIVERED, "", 2)
    add_attempts(registered, AttemptOutcome.RETRY, graph.TRANSIENT, 6)
    # Bisect steps are neither failures nor successes.
    add_attempts(registered, AttemptOutcome.BISECTED, graph.INVALID, 10)

    check = health.check_destination(registered)

    entry = check_named(check, "delivery_failure_rate")
    assert entry["ok"] is False
    assert entry["message"].startswith(problems.META_UNREACHABLE.reason)
    assert "6 of the last 8 requests to Meta failed" in entry["message"]
    assert entry["problem"] == "meta_unreachable"
    assert check.status == Health.UNHEALTHY


def test_rejected_data_gets_a_data_fix(meta: Sandbox, registered: Destination) -> None:
    add_attempts(registered, AttemptOutcome.INVALID, graph.INVALID, 5)

    check = health.check_destination(registered)

    entry = check_named(check, "delivery_failure_rate")
    assert entry["message"].startswith(problems.EVENTS_DATA_REFUSED.reason)
    assert "Open the failed events" in entry["fix"]


def test_a_few_failures_or_old_ones_do_not_count(meta: Sandbox, registered: Destination) -> None:
    add_attempts(registered, AttemptOutcome.RETRY, graph.TRANSIENT, 4)
    DeliveryAttempt.objects.create(
        destination=registered,
        started_at=health.clock.now() - timedelta(days=2),
        outcome=AttemptOutcome.RETRY,
        category=graph.TRANSIENT,
    )

    check = health.check_destination(registered)

    assert check_named(check, "delivery_failure_rate")["ok"] is True
    assert check.status == Health.HEALTHY


def test_failure_rate_counts_only_the_last_attempts(
    meta: Sandbox, registered: Destination, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "HEALTH_FAILURE_RATE_ATTEMPTS": 5,
    }
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            destination=registered,
            started_at=health.clock.now() - timedelta(hours=2),
            outcome=AttemptOutcome.RETRY,
            category=graph.TRANSIENT,
        )
        for _ in range(10)
    )
    add_attempts(registered, AttemptOutcome.DELIVERED, "", 5)

    check = health.check_destination(registered)

    entry = check_named(check, "delivery_failure_rate")
    assert entry == {**entry, "ok": True, "message": "5 of the last 5 requests to Meta succeeded."}


def test_events_waiting_past_the_delay_mean_no_worker_is_sending(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(next_attempt_at=health.clock.now() - timedelta(minutes=40))

    check = health.check_destination(registered)

    entry = check_named(check, "queue_moving")
    assert entry["ok"] is False
    assert "They have been waiting 40 min" in entry["message"]
    assert "qcluster" in entry["fix"]
    assert check.status == Health.UNHEALTHY


def test_a_recently_due_event_is_fine(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(next_attempt_at=health.clock.now() - timedelta(minutes=5))

    check = health.check_destination(registered)

    assert check_named(check, "queue_moving")["ok"] is True


def test_an_abandoned_lease_counts_as_a_stuck_queue(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(lease_expires_at=health.clock.now() - timedelta(hours=2))

    check = health.check_destination(registered)

    assert "waiting 2 h 0 min" in check_named(check, "queue_moving")["message"]


def test_a_rate_limit_pause_explains_the_wait_without_failing(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(next_attempt_at=health.clock.now() - timedelta(minutes=30))
    Destination.objects.filter(pk=registered.pk).update(
        paused_until=health.clock.now() + timedelta(minutes=10), pause_reason="rate limit"
    )

    check = health.check_destination(reload(registered))

    entry = check_named(check, "queue_moving")
    assert entry["severity"] == "info"
    assert "paused until" in entry["message"]
    assert check.status == Health.HEALTHY


# --- check 5: informational ----------------------------------------------------------------------


def test_test_mode_is_shown_without_changing_the_status(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(test_event_code="TEST12345")
    meta.register_pixel(destination.pixel_id, "Test pixel", [destination.access_token])

    check = health.check_destination(destination)

    entry = check_named(check, "test_mode")
    assert entry["ok"] is False
    assert entry["severity"] == "info"
    assert "TEST12345" in entry["message"]
    assert "clear the test event code" in entry["fix"]
    assert check.status == Health.HEALTHY


def test_low_match_quality_names_the_missing_identifiers(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    for number in range(4):
        make_event(
            event_id=f"weak-{number}",
            match_quality=3.5,
            payload={
                "event_name": "Purchase",
                "user_data": {
                    "client_ip_address": "203.0.113.7",
                    "client_user_agent": "Mozilla/5.0",
                },
            },
        )

    check = health.check_destination(registered)

    entry = check_named(check, "match_quality")
    assert entry["ok"] is False
    assert entry["severity"] == "info"
    assert "3.5 out of 10 on average over 4 events" in entry["message"]
    assert "Most often missing: email, phone, external ID." in entry["message"]
    assert check.status == Health.HEALTHY


def test_good_match_quality_passes(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(match_quality=8.7)

    check = health.check_destination(registered)

    entry = check_named(check, "match_quality")
    assert entry["ok"] is True
    assert "8.7 out of 10" in entry["message"]


# --- status, signal, compare-and-set -------------------------------------------------------------


def test_unknown_before_the_first_check(destination: Destination) -> None:
    assert destination.health == Health.UNKNOWN
    assert destination.health_checked_at is None


def test_every_run_is_stored_and_the_change_time_recorded(
    meta: Sandbox, registered: Destination, clock: Any
) -> None:
    first = health.check_destination(registered)
    clock.advance(timedelta(minutes=5))
    second = health.check_destination(registered)

    assert HealthCheck.objects.filter(destination=registered).count() == 2
    assert (first.status_changed, second.status_changed) == (True, False)
    stored = reload(registered)
    assert stored.health_changed_at == first.checked_at
    assert stored.health_checked_at == second.checked_at == clock.now()


def test_the_signal_fires_once_per_change(
    meta: Sandbox,
    registered: Destination,
    changes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)
        health.check_destination(registered)
        meta.revoke(registered.access_token)
        unhealthy = health.check_destination(registered)
        health.check_destination(registered)

    assert [(change["old"], change["new"]) for change in changes] == [
        (Health.UNKNOWN, Health.HEALTHY),
        (Health.HEALTHY, Health.UNHEALTHY),
    ]
    assert changes[1]["check"] == unhealthy
    assert changes[1]["destination"].pk == registered.pk


def test_receivers_see_the_destination_as_stored(
    meta: Sandbox,
    registered: Destination,
    changes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)

    assert changes[0]["health_then"] == Health.HEALTHY
    assert changes[0]["destination"].pixel_name == "Acme Shoes Pixel"


def test_two_processes_never_both_record_one_change(
    meta: Sandbox,
    registered: Destination,
    changes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # Two workers loaded the destination while it was unknown; both check it.
    first_copy = reload(registered)
    second_copy = reload(registered)

    with django_capture_on_commit_callbacks(execute=True):
        first = health.check_destination(first_copy)
        second = health.check_destination(second_copy)

    assert (first.status_changed, second.status_changed) == (True, False)
    assert len(changes) == 1
    assert reload(registered).health == Health.HEALTHY


def test_the_signal_waits_for_the_commit(
    meta: Sandbox, registered: Destination, changes: list[dict[str, Any]]
) -> None:
    # Inside the test's transaction nothing is committed, so nothing is announced yet.
    health.check_destination(registered)

    assert changes == []


def test_the_token_never_reaches_a_stored_check(meta: Sandbox, registered: Destination) -> None:
    token = registered.access_token
    meta.revoke(token)
    health.check_destination(registered)
    meta.set_faults(failure_rate=1.0)
    health.check_destination(registered)

    stored = repr(list(HealthCheck.objects.values())) + repr(reload(registered).health_reasons)
    assert token not in stored
    assert token[:40] not in stored


# --- the delivery engine's entry point -----------------------------------------------------------


def test_a_refusal_during_delivery_marks_unhealthy_at_once(
    meta: Sandbox,
    registered: Destination,
    changes: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    health.check_destination(registered)
    meta.revoke(registered.access_token)
    with pytest.raises(graph.GraphError) as refused:
        graph.send_events(registered, [server_event("evt-refused")])

    with django_capture_on_commit_callbacks(execute=True):
        check = health_status.mark_unhealthy_from_delivery(registered, refused.value)
        health_status.mark_unhealthy_from_delivery(registered, refused.value)

    assert check.status == Health.UNHEALTHY
    assert check.status_changed is True
    stored = reload(registered)
    assert stored.health == Health.UNHEALTHY
    assert stored.health_reasons[0]["name"] == "deliveries_accepted"
    assert stored.health_reasons[0]["message"].startswith("Meta refused events")
    assert stored.health_reasons[0]["fix"] == refused.value.fix
    assert [(change["old"], change["new"]) for change in changes] == [
        (Health.HEALTHY, Health.UNHEALTHY)
    ]


# --- many destinations ---------------------------------------------------------------------------


def test_check_all_destinations_checks_each_once(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destinations = [make_destination() for _ in range(6)]
    for destination in destinations:
        meta.register_pixel(
            destination.pixel_id, f"Pixel {destination.pk}", [destination.access_token]
        )

    checks = health.check_all_destinations(max_workers=3)

    assert sorted(check.destination_id for check in checks) == sorted(d.pk for d in destinations)
    assert {check.status for check in checks} == {Health.HEALTHY}
    assert len(meta.requests()) == 6


def test_check_all_destinations_by_tenant_and_by_id(
    meta: Sandbox,
    make_destination: Callable[..., Destination],
    other_tenant: Any,
) -> None:
    ours = make_destination()
    theirs = make_destination(tenant=other_tenant)
    third = make_destination(tenant=other_tenant)

    by_tenant = health.check_all_destinations(tenant_slug=other_tenant.slug)
    by_id = health.check_all_destinations(destination_ids=[ours.pk])

    assert sorted(check.destination_id for check in by_tenant) == sorted([theirs.pk, third.pk])
    assert [check.destination_id for check in by_id] == [ours.pk]


def test_a_hanging_destination_does_not_delay_the_others(
    meta: Sandbox, make_destination: Callable[..., Destination], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "GRAPH_READ_TIMEOUT": 1.0}
    hanging = make_destination(name="Hanging")
    others = [make_destination() for _ in range(5)]
    # Far longer than the client's read timeout: without a bound, this call would hang.
    meta.set_faults(pixel_latency_ms={hanging.pixel_id: 60_000})

    checks = health.check_all_destinations(max_workers=2)

    # Results come back in the order they finished: every other destination was checked and
    # recorded while the hanging call was still waiting on its single worker thread.
    assert [check.destination_id for check in checks][-1] == hanging.pk
    assert sorted(check.destination_id for check in checks[:-1]) == [d.pk for d in others]
    assert {check.status for check in checks[:-1]} == {Health.HEALTHY}
    assert check_named(checks[-1], "meta_accepts_token")["message"].startswith(
        "Could not reach Meta"
    )


# --- email ---------------------------------------------------------------------------------------


def test_admins_are_emailed_on_a_change_when_enabled(
    meta: Sandbox,
    registered: Destination,
    make_user: Callable[..., Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "HEALTH_EMAIL_ADMINS": True}
    admin = make_user(registered.tenant, Role.ADMIN)
    admin.email = "owner@example.com"
    admin.save()
    viewer = make_user(registered.tenant, Role.VIEWER)
    viewer.email = "viewer@example.com"
    viewer.save()

    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)  # unknown → healthy: not worth an email
        meta.revoke(registered.access_token)
        health.check_destination(registered)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["owner@example.com"]
    assert message.subject == f"[Acme Shoes] {registered.name} is now Unhealthy"
    assert "revoked" in message.body
    assert "Fix: Generate a new token" in message.body
    assert registered.access_token not in message.body


def test_no_email_by_default(
    meta: Sandbox,
    registered: Destination,
    make_user: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    admin = make_user(registered.tenant, Role.ADMIN)
    admin.email = "owner@example.com"
    admin.save()
    meta.revoke(registered.access_token)

    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)

    assert mail.outbox == []


# --- purge ---------------------------------------------------------------------------------------


def test_purge_keeps_the_last_status_change_and_the_latest_check(
    meta: Sandbox, registered: Destination, clock: Any
) -> None:
    change = health.check_destination(registered)  # unknown → healthy
    clock.advance(timedelta(minutes=5))
    old_repeat = health.check_destination(registered)
    clock.advance(timedelta(minutes=5))
    latest = health.check_destination(registered)
    clock.advance(timedelta(days=31))
    recent = health.check_destination(registered)

    deleted = retention.purge_old_checks()

    assert deleted == 2
    remaining = set(HealthCheck.objects.values_list("pk", flat=True))
    assert remaining == {change.pk, recent.pk}
    assert old_repeat.pk not in remaining
    assert latest.pk not in remaining


def test_purge_keeps_the_only_checks_of_a_quiet_destination(
    meta: Sandbox, registered: Destination, clock: Any
) -> None:
    change = health.check_destination(registered)
    clock.advance(timedelta(minutes=5))
    latest = health.check_destination(registered)

    deleted = retention.purge_old_checks(now=clock.now() + timedelta(days=90))

    assert deleted == 0
    assert set(HealthCheck.objects.values_list("pk", flat=True)) == {change.pk, latest.pk}


# --- running them: receivers and schedule ------------------------------------------------------


def test_a_new_token_is_checked_as_soon_as_it_is_saved(
    meta: Sandbox, destination: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    new_token = make_token("replacement")
    meta.register_pixel(destination.pixel_id, "Acme Shoes Pixel", [new_token])
    destination.access_token = new_token
    destination.save()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        signals.destination_token_replaced.send(
            sender=Destination, destination=destination, actor=None
        )
        # Nothing runs before the save is committed.
        assert not HealthCheck.objects.filter(destination=destination).exists()

    assert callbacks
    stored = reload(destination)
    assert stored.health == Health.HEALTHY
    assert stored.pixel_name == "Acme Shoes Pixel"
    assert HealthCheck.objects.filter(destination=destination).count() == 1


def test_disabling_a_destination_is_reflected_at_once(
    meta: Sandbox, registered: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    health.check_destination(registered)
    Destination.objects.filter(pk=registered.pk).update(enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        signals.destination_enabled_changed.send(
            sender=Destination, destination=reload(registered), enabled=False, actor=None
        )

    stored = reload(registered)
    assert stored.health == Health.UNHEALTHY
    assert stored.health_reasons[0]["name"] == "sending_enabled"


def test_a_passing_check_releases_events_held_by_a_refusal_with_one_of_them(
    meta: Sandbox,
    registered: Destination,
    make_event: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Test events are live data [D:using-api]: the check sends none; a held event goes alone."""
    held = make_event(event_id="held-1")
    Destination.objects.filter(pk=registered.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=health.clock.now()
    )
    registered = reload(registered)

    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)

    assert reload(registered).blocked_reason == ""
    held.refresh_from_db()
    assert held.status == "delivered"
    assert [event["event_id"] for event in meta.events()] == ["held-1"]
    assert health.check_destination(reload(registered)).status == Health.HEALTHY


def test_the_health_schedule_exists_once_after_repeated_migrate(settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "HEALTH_CHECK_INTERVAL": 600}
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)

    schedules = Schedule.objects.filter(func="capi_destinations.tasks.run_health_checks")
    assert schedules.count() == 1
    assert schedules.get().schedule_type == Schedule.MINUTES
    assert schedules.get().minutes == 10
    assert schedules.get().repeats == -1


def test_the_scheduled_task_checks_every_destination(
    meta: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    first, second = make_destination(), make_destination()

    assert tasks.run_health_checks() == 2
    assert {reload(first).health, reload(second).health} == {Health.HEALTHY}


# --- a token Meta lets read the pixel but not send events ------------------------------------


def refuse_events(meta: Sandbox, times: int = 50) -> None:
    """Meta answers the pixel read but refuses every POST of events (a permission error)."""
    meta.answer_next(
        status=403,
        error={"message": "(#200) Permissions error", "type": "OAuthException", "code": 200},
        times=times,
        method="POST",
    )


def block(destination: Destination) -> Destination:
    Destination.objects.filter(pk=destination.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=health.clock.now()
    )
    return reload(destination)


def posts(meta: Sandbox) -> list[dict[str, Any]]:
    return [request for request in meta.requests() if request["method"] == "POST"]


def test_while_blocked_a_check_sends_no_event_itself(
    meta: Sandbox, registered: Destination
) -> None:
    """Test events are live data [D:using-api]: a check never sends an event nobody tracked."""
    registered = block(registered)

    check = health.check_destination(registered)

    assert posts(meta) == []
    assert meta.events() == []
    stored = reload(registered)
    assert stored.blocked_reason == "Meta refused the access token."
    assert stored.canary_due_at is not None
    entry = check_named(check, "deliveries_accepted")
    assert entry["ok"] is False
    assert "sent alone" in entry["message"]


def test_a_block_stays_while_meta_reads_the_pixel_but_refuses_events(
    meta: Sandbox,
    registered: Destination,
    make_event: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    held = make_event(event_id="held-1")
    registered = block(registered)
    refuse_events(meta)

    with django_capture_on_commit_callbacks(execute=True):
        check = health.check_destination(registered)

    assert check.status == Health.UNHEALTHY
    assert reload(registered).blocked_reason
    assert check_named(check, "meta_accepts_token")["ok"] is True
    assert "system user" in check_named(check, "deliveries_accepted")["fix"]
    # The canary was the held event itself, refused: it waits on, its retries unspent.
    (canary,) = posts(meta)
    assert canary["event_count"] == 1
    assert canary["test_event_code"] == ""
    held.refresh_from_db()
    assert (held.status, held.attempts) == ("pending", 0)


def test_a_canary_that_cannot_reach_meta_keeps_the_block(
    meta: Sandbox,
    registered: Destination,
    make_event: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    make_event(event_id="held-1")
    registered = block(registered)
    meta.answer_next(
        status=500,
        error={"message": "Service temporarily unavailable", "type": "OAuthException", "code": 2},
        method="POST",
    )

    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)

    stored = reload(registered)
    assert stored.blocked_reason == "Meta refused the access token."
    assert stored.canary_due_at > health.clock.now()


def test_a_disabled_blocked_destination_is_sent_no_test_event(
    meta: Sandbox, registered: Destination
) -> None:
    Destination.objects.filter(pk=registered.pk).update(enabled=False)
    registered = block(reload(registered))

    health.check_destination(registered)

    assert posts(meta) == []
    assert reload(registered).blocked_reason == "Meta refused the access token."


def test_a_token_meta_lets_read_but_not_send_does_not_flap(
    meta: Sandbox,
    registered: Destination,
    make_event: Callable[..., Any],
    changes: list[dict[str, Any]],
    clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    held = make_event(event_id="held-1")
    refuse_events(meta)

    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(registered)
        dispatch.dispatch_pending()  # Meta refuses the events: blocked, Unhealthy
        for _ in range(4):  # the every-5-minutes health checks, each followed by a dispatch
            clock.advance(timedelta(minutes=5))
            health.check_destination(reload(registered))
            dispatch.dispatch_pending()

    # One change to Unhealthy, then nothing: no Healthy/Unhealthy round every check.
    assert [(change["old"], change["new"]) for change in changes] == [
        (Health.UNKNOWN, Health.HEALTHY),
        (Health.HEALTHY, Health.UNHEALTHY),
    ]
    assert reload(registered).health == Health.UNHEALTHY
    assert reload(registered).blocked_reason
    # The delivery that was refused, then per check one canary: the waiting event itself,
    # never a made-up test event. The event still waits.
    assert [request["test_event_code"] for request in posts(meta)] == [""] * 5
    assert [request["event_count"] for request in posts(meta)] == [1] * 5
    held.refresh_from_db()
    assert held.status == "pending"

    # Meta lets the token send again: the next check's canary (the event) is accepted, the
    # block is lifted, and the check after that finds the destination Healthy.
    meta.reset()
    meta.register_pixel(registered.pixel_id, "Acme Shoes Pixel", [registered.access_token])
    clock.advance(timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(reload(registered))
        dispatch.dispatch_pending()
    with django_capture_on_commit_callbacks(execute=True):
        recovered = health.check_destination(reload(registered))

    assert recovered.status == Health.HEALTHY
    assert changes[-1]["new"] == Health.HEALTHY
    assert len(changes) == 3
    held.refresh_from_db()
    assert held.status == "delivered"


# --- a release is no stalled queue (issue 16) ----------------------------------------------------


def test_the_check_right_after_enable_does_not_call_held_events_a_stalled_queue(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    """Events held a day while sending was off, then Enable: the check that runs at once (before
    the dispatch the save queued has sent them) sees the release, not a dead worker."""
    from capi_destinations import destinations

    Destination.objects.filter(pk=registered.pk).update(enabled=False)
    make_event(next_attempt_at=health.clock.now() - timedelta(hours=23, minutes=48))
    health.clock.advance(timedelta(seconds=1))

    destinations.set_enabled(reload(registered), True, actor=None)
    check = health.check_destination(reload(registered))

    assert check_named(check, "queue_moving")["ok"] is True
    assert check.status == Health.HEALTHY


def test_the_check_right_after_a_new_token_does_not_call_held_events_a_stalled_queue(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    from capi_destinations import destinations

    day_ago = health.clock.now() - timedelta(hours=24)
    Destination.objects.filter(pk=registered.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=day_ago
    )
    make_event(next_attempt_at=day_ago)
    new_token = make_token("replacement")
    meta.register_pixel(registered.pixel_id, "Acme Shoes Pixel", [new_token])

    destinations.update_destination(reload(registered), actor=None, access_token=new_token)
    check = health.check_destination(reload(registered))

    assert check_named(check, "queue_moving")["ok"] is True
    assert check.status != Health.UNHEALTHY


def test_events_still_unsent_long_after_a_release_are_a_stalled_queue(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    from capi_destinations import destinations

    Destination.objects.filter(pk=registered.pk).update(enabled=False)
    make_event(next_attempt_at=health.clock.now() - timedelta(hours=24))
    destinations.set_enabled(reload(registered), True, actor=None)
    health.clock.advance(timedelta(minutes=40))

    check = health.check_destination(reload(registered))

    assert "They have been waiting 40 min" in check_named(check, "queue_moving")["message"]
    assert check.status == Health.UNHEALTHY


def test_events_held_by_a_pause_that_just_ended_are_no_stalled_queue(
    meta: Sandbox, registered: Destination, make_event: Callable[..., Any]
) -> None:
    make_event(next_attempt_at=health.clock.now() - timedelta(hours=2))
    Destination.objects.filter(pk=registered.pk).update(
        paused_until=health.clock.now() - timedelta(minutes=1), pause_reason="rate limit"
    )

    check = health.check_destination(reload(registered))

    assert check_named(check, "queue_moving")["ok"] is True


def test_a_cut_token_says_the_paste_looks_incomplete(
    meta: Sandbox, registered: Destination
) -> None:
    """Issue 16: a token cut to 100 to 189 characters passes the format rules; Meta answers 190
    "Cannot parse access token", which the card tells apart from a revoked token."""
    cut = store_raw_token(registered, registered.access_token[:150])

    check = health.check_destination(cut)

    entry = check_named(check, "meta_accepts_token")
    assert entry["ok"] is False
    assert "looks incomplete" in entry["message"]
    assert "revoked" not in entry["message"]
    assert "Copy the whole token again" in entry["fix"]


# --- "Checking…" until the check a change asked for has run (issue 16) ---------------------------


def test_a_change_shows_checking_until_its_own_check_has_run(
    meta: Sandbox, registered: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q.conf import Conf

    from capi_destinations import destinations

    health.check_destination(reload(registered))
    monkeypatch.setattr(Conf, "SYNC", False)  # the check waits in the broker, as with workers
    health.clock.advance(timedelta(seconds=5))

    destinations.set_enabled(reload(registered), False, actor=None)
    pending = reload(registered)
    assert pending.health == Health.HEALTHY  # the stored verdict from before the change…
    assert pending.shown_health == "checking"  # …is not shown as the state after it

    health.clock.advance(timedelta(seconds=2))
    checked = reload(registered)
    health.check_destination(checked)
    assert reload(registered).shown_health == Health.UNHEALTHY


def test_checking_gives_way_to_the_stored_verdict_when_no_worker_runs_the_check(
    meta: Sandbox, registered: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q.conf import Conf

    from capi_destinations import destinations

    monkeypatch.setattr(Conf, "SYNC", False)
    destinations.set_enabled(reload(registered), False, actor=None)
    assert reload(registered).shown_health == "checking"

    health.clock.advance(Destination.HEALTH_CHECK_PENDING_FOR)

    assert reload(registered).shown_health == reload(registered).health
