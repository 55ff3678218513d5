"""The dispatcher against a sandbox that answers like Meta: errors that name no event.

Each test names the source of the rule it proves (see docs/META.md, "Sandbox answers" and
"Dispatch reactions"). Throughout, the sandbox's own store is the witness that no event nobody
tracked ever reached a customer's dataset: test events are live data ("Events sent with
test_event_code are not dropped. They flow into Events Manager and are used for targeting and
ads measurement purposes", [D:using-api]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from capi_destinations import clock as app_clock
from capi_destinations import delivery_state, dispatch, graph
from capi_destinations.models import (
    AttemptOutcome,
    BlockKind,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    QueuedEvent,
    Role,
)
from capi_destinations.sandbox import Sandbox
from tests.conftest import queue_events, server_event

pytestmark = pytest.mark.django_db

# Real bodies quoted in public code and threads: Meta's error shape, naming no event.
RUDDER_2804003 = (
    "rudderlabs/rudder-transformer test/integrations/destinations/facebook_pixel/network.ts"
)
JAVA_SDK_421 = "https://github.com/facebook/facebook-java-business-sdk/issues/421"
SETONO_2804050 = "Setono/meta-conversions-api-php-sdk src/Client/ErrorResponse.php"
REAL_ERROR_KEYS = {
    "message",
    "type",
    "code",
    "error_subcode",
    "is_transient",
    "error_user_title",
    "error_user_msg",
    "fbtrace_id",
}


@pytest.fixture
def env(clock: Any, use_sandbox: Sandbox) -> Sandbox:
    """A frozen clock and the app pointed at a fresh sandbox."""
    return use_sandbox


def add_events(
    destination: Destination, count: int, *, bad: Collection[int] = (), prefix: str = "evt"
) -> list[Event]:
    """``count`` due events; those at the indexes in ``bad`` carry an unhashed email."""
    now = app_clock.now()
    rows = []
    for index in range(count):
        payload = server_event(f"{prefix}-{index}", event_time=now)
        if index in bad:
            payload["user_data"]["em"] = ["not-hashed@example.com"]
        rows.append(
            Event(
                destination=destination,
                event_name="Purchase",
                event_id=f"{prefix}-{index}",
                event_time=now,
                action_source="website",
                payload=payload,
            )
        )
    events = Event.objects.bulk_create(rows)
    queue_events(events)
    return events


def assert_only_tracked_events_reached(sandbox: Sandbox) -> Counter[str]:
    """Every event the sandbox stored is one of ours, sent without a test event code."""
    received = Counter(record["event_id"] for record in sandbox.events())
    ours = set(Event.objects.values_list("event_id", flat=True))
    assert set(received) <= ours, set(received) - ours
    assert all(not request["test_event_code"] for request in sandbox.requests())
    return received


def refuse_every_request(sandbox: Sandbox, subcode: int | None = 2804030, times: int = 100) -> str:
    """Meta refusing whatever the events (here: Limited Data Use required, [TP:ocfu-25])."""
    user_msg = "Limited Data Use is required for this dataset."
    sandbox.answer_error(
        100,
        subcode,
        message="Invalid parameter",
        error_user_title="Invalid parameter",
        error_user_msg=user_msg,
        times=times,
        method="POST",
    )
    return user_msg


# --- the sandbox answers like Meta ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "subcode", "source"),
    [
        ({"event_time": -8 * 86400}, 2804003, RUDDER_2804003),
        ({"em": "not-hashed@example.com"}, 2804016, JAVA_SDK_421),
        ({"user_data": {"ge": ["f" * 64], "fn": ["a" * 64]}}, 2804050, SETONO_2804050),
    ],
    ids=["too-old", "unhashed", "too-little-customer-information"],
)
def test_sandbox_refusals_have_metas_shape_and_name_no_event(
    env: Sandbox, destination: Destination, change: dict[str, Any], subcode: int, source: str
) -> None:
    """Meta answers a bad event with "Invalid parameter", type OAuthException, code 100, a
    subcode, is_transient and a title and text for people, and never says which event of data
    was bad (FACTS A3; real bodies: rudder-transformer network.ts for 2804003,
    facebook-java-business-sdk#421 for 2804016, Setono ErrorResponse.php for 2804050)."""
    good = server_event("good", event_time=app_clock.now())
    bad = server_event("bad", event_time=app_clock.now())
    if "event_time" in change:
        bad["event_time"] += change["event_time"]
    if "em" in change:
        bad["user_data"]["em"] = [change["em"]]
    if "user_data" in change:
        bad["action_source"] = "other"
        bad["user_data"] = change["user_data"]

    with pytest.raises(graph.GraphError) as raised:
        graph.send_events(destination, [good, good, bad])

    (request,) = env.requests()
    error = request["error"]
    assert set(error) | {"fbtrace_id"} == REAL_ERROR_KEYS, source
    assert error["message"] == "Invalid parameter"
    assert (error["type"], error["code"], error["error_subcode"]) == (
        "OAuthException",
        100,
        subcode,
    )
    assert error["is_transient"] is False
    text = str(error)
    assert "data[" not in text
    assert "2]" not in text
    assert "event 2" not in text.lower()
    assert raised.value.category == graph.INVALID


# --- the split alone isolates bad events ----------------------------------------------------


@pytest.mark.parametrize(
    ("count", "bad"),
    [
        (8, {1, 6}),  # one in each half: both halves refused alike
        (8, {0, 1}),  # side by side: two lone events refused alike, then one accepted
        (1000, {499, 500}),  # astride the middle of a full request
        (1000, {0, 999}),  # the first and the last
    ],
    ids=["one-per-half", "side-by-side", "astride-the-middle", "first-and-last"],
)
def test_two_bad_events_are_isolated_by_the_split_alone(
    env: Sandbox, destination: Destination, count: int, bad: set[int]
) -> None:
    """One invalid event rejects the whole batch ([D:using-api], "One invalid event rejects the
    entire batch") and Meta's answer names no event (FACTS A3, [TP:rudder-mock][TP:setono]):
    the dispatcher splits until the bad events stand alone, every good event is delivered
    once, the bad ones fail with Meta's message, and nothing nobody tracked is sent."""
    events = add_events(destination, count, bad=bad)

    report = dispatch.dispatch_pending()

    bad_ids = {events[index].event_id for index in bad}
    received = assert_only_tracked_events_reached(env)
    assert set(received) == {event.event_id for event in events} - bad_ids
    assert set(received.values()) == {1}
    assert report.failed == len(bad)
    for event in Event.objects.filter(event_id__in=bad_ids):
        assert event.status == EventStatus.FAILED
        diagnostic = event.diagnostics[-1]
        assert diagnostic["code"] == "meta_rejected"
        assert "em parameter is not hashed" in diagnostic["message"]
        assert diagnostic["field"] == "user_data.em"
        assert (diagnostic["meta_code"], diagnostic["meta_subcode"]) == (100, 2804016)
        assert "Meta rejected this event" in event.status_reason
    assert not Destination.objects.get(pk=destination.pk).is_blocked
    # Each request is either accepted or split; no synthetic probe among them.
    outcomes = Counter(DeliveryAttempt.objects.values_list("outcome", flat=True))
    assert outcomes[AttemptOutcome.INVALID] == len(bad)
    assert sum(outcomes.values()) == report.requests == len(env.requests())


# --- a refusal of every request, recognised from the events' own answers -------------------


def test_a_refusal_of_every_request_holds_the_destination_without_failing_events(
    env: Sandbox, destination: Destination
) -> None:
    """Meta refuses every request alike (Limited Data Use required, [TP:ocfu-25]; a wrong test
    event code): three unrelated lone events refused alike with nothing accepted show it, so
    the destination is held with a plain reason and no event fails or spends a retry."""
    add_events(destination, 200)
    user_msg = refuse_every_request(env)

    report = dispatch.dispatch_pending()

    assert report.failed == 0
    assert report.requests <= 20
    assert Counter(Event.objects.values_list("status", flat=True)) == {EventStatus.PENDING: 200}
    assert set(Event.objects.values_list("attempts", flat=True)) == {0}
    stored = Destination.objects.get(pk=destination.pk)
    assert stored.is_blocked
    assert stored.blocked_reason.startswith("Meta refuses every request for this destination")
    assert stored.block_kind == BlockKind.EVERY_REQUEST
    assert delivery_state.refuses_every_request(stored)
    assert user_msg in stored.blocked_reason
    assert env.events() == []
    assert_only_tracked_events_reached(env)


def test_two_lone_events_refused_alike_with_nothing_accepted_hold_the_destination(
    env: Sandbox, destination: Destination
) -> None:
    """Two unrelated single events refused with the same code and subcode, nothing accepted:
    a request-level refusal (issue 15, item 2), not two bad events failed one by one."""
    add_events(destination, 2)
    refuse_every_request(env)

    dispatch.dispatch_pending()

    assert Destination.objects.get(pk=destination.pk).is_blocked
    assert set(Event.objects.values_list("status", "attempts")) == {(EventStatus.PENDING, 0)}
    assert env.events() == []


def test_one_event_per_pass_refused_alike_twice_holds_the_destination(
    env: Sandbox, destination: Destination
) -> None:
    """Low traffic sends one event per request: the previous lone refusal of another event, with
    nothing accepted since, is the second answer that shows a request-level refusal; the
    earlier event, failed when one answer could not tell, waits again with the others."""
    (first,) = add_events(destination, 1, prefix="first")
    refuse_every_request(env)
    dispatch.dispatch_pending()
    first.refresh_from_db()
    # One lone refusal cannot tell: Meta's message is kept on the failed event.
    assert first.status == EventStatus.FAILED
    assert not Destination.objects.get(pk=destination.pk).is_blocked

    (second,) = add_events(destination, 1, prefix="second")
    dispatch.dispatch_pending()

    second.refresh_from_db()
    assert (second.status, second.attempts) == (EventStatus.PENDING, 0)
    assert Destination.objects.get(pk=destination.pk).is_blocked
    # The first one was not at fault either: it waits again with the second.
    first.refresh_from_db()
    assert first.status == EventStatus.PENDING
    assert first.status_reason.startswith("Waiting: Meta refuses every request")
    assert env.events() == []


def test_undocumented_codes_never_block_a_destination(
    env: Sandbox, destination: Destination
) -> None:
    """Codes with no public documentation (1815018, 2061015; FACTS §11 "no public evidence
    found") get no invented meaning: an unknown code is retried, and as a subcode of 100 it is
    the code's documented class (invalid). Neither blocks the destination."""
    add_events(destination, 1, prefix="a")
    env.answer_error(2061015, message="Unknown", method="POST")
    dispatch.dispatch_pending()
    assert not Destination.objects.get(pk=destination.pk).is_blocked
    assert Event.objects.get(event_id="a-0").status == EventStatus.PENDING  # retried later

    add_events(destination, 1, prefix="b")
    env.answer_error(100, 1815018, message="Invalid parameter", method="POST")
    dispatch.dispatch_pending(max_batches=1)
    assert not Destination.objects.get(pk=destination.pk).is_blocked
    attempt = DeliveryAttempt.objects.order_by("-pk").first()
    assert attempt is not None
    assert attempt.category in (graph.INVALID, graph.UNKNOWN)
    assert graph.classify(400, 100, 1815018, False).category == graph.INVALID
    assert graph.classify(400, 2061015, None, False).category == graph.UNKNOWN
    assert graph.classify(400, 1815018, None, False).category == graph.UNKNOWN


# --- a blocked destination is released by one of its own events ----------------------------


def block_with_a_refused_token(env: Sandbox, destination: Destination) -> None:
    env.answer_error(
        190, message="Invalid OAuth access token - Cannot parse access token", method="POST"
    )
    dispatch.dispatch_pending()
    assert Destination.objects.get(pk=destination.pk).is_blocked


def test_a_blocked_destination_is_released_by_one_of_its_own_waiting_events(
    env: Sandbox, destination: Destination, clock: Any
) -> None:
    """No synthetic event (issue 15, item 2; [D:using-api] test events are live data): after a
    backoff, the destination's newest waiting event is sent alone; Meta accepts it, the block
    is lifted and the others follow in the same pass, each once."""
    events = add_events(destination, 5)
    block_with_a_refused_token(env, destination)
    before = len(env.requests())

    clock.advance(delivery_state.CANARY_FIRST_DELAY)
    dispatch.dispatch_pending()

    canary_request, *rest = env.requests()[before:]
    assert canary_request["event_count"] == 1
    assert env.events()[0]["event_id"] == events[-1].event_id
    assert rest
    assert all(request["status"] == 200 for request in rest)
    lifted = Destination.objects.get(pk=destination.pk)
    assert not lifted.is_blocked
    assert lifted.block_kind == ""
    received = assert_only_tracked_events_reached(env)
    assert received == Counter({event.event_id: 1 for event in events})
    assert DeliveryAttempt.objects.filter(canary=True, outcome=AttemptOutcome.DELIVERED).count()


def test_no_canary_before_its_time_and_a_refused_one_doubles_the_wait(
    env: Sandbox, destination: Destination, clock: Any
) -> None:
    """The canary waits CANARY_FIRST_DELAY, then as long as the block has lasted (up to
    CANARY_MAX_DELAY); a refused canary is held again, its retries unspent."""
    add_events(destination, 3)
    block_with_a_refused_token(env, destination)
    blocked_at = Destination.objects.get(pk=destination.pk).blocked_at
    before = len(env.requests())

    clock.advance(delivery_state.CANARY_FIRST_DELAY - timedelta(seconds=1))
    dispatch.dispatch_pending()
    assert len(env.requests()) == before

    clock.advance(timedelta(seconds=1))
    env.answer_error(190, message="Error validating access token", method="POST")
    dispatch.dispatch_pending()

    stored = Destination.objects.get(pk=destination.pk)
    assert len(env.requests()) == before + 1
    assert stored.is_blocked
    assert stored.blocked_at == blocked_at
    assert stored.canary_due_at == app_clock.now() + delivery_state.CANARY_FIRST_DELAY
    assert set(Event.objects.values_list("status", "attempts")) == {(EventStatus.PENDING, 0)}
    assert env.events() == []
    assert delivery_state.canary_delay(blocked_at, blocked_at + timedelta(days=1)) == (
        delivery_state.CANARY_MAX_DELAY
    )


# --- Meta's answer is kept whole ------------------------------------------------------------


def test_metas_messages_and_error_data_are_kept_on_the_attempt_and_shown(
    env: Sandbox, destination: Destination, make_user: Callable[..., Any]
) -> None:
    """A successful answer is {"events_received", "messages", "fbtrace_id"}
    ([D:ads-pixel-events-ref], FACTS §10); an error may carry "error_data" with
    "blame_field_specs" (FACTS §10, [SDK:exceptions.py]). Both are kept whole, never a token."""
    token = destination.access_token
    add_events(destination, 1, prefix="ok")
    env.answer_next(
        status=200,
        body={
            "events_received": 1,
            "messages": ["Event received late", f"echo {token}"],
            "fbtrace_id": "AbC",
        },
        method="POST",
    )
    dispatch.dispatch_pending()
    delivered = DeliveryAttempt.objects.get(outcome=AttemptOutcome.DELIVERED)
    assert delivered.messages[0] == "Event received late"
    assert token not in str(delivered.messages)

    add_events(destination, 1, prefix="bad")
    env.answer_error(
        100,
        2804016,
        message="Invalid parameter",
        error_user_msg="The ct parameter isn't hashed.",
        error_data={"blame_field_specs": [["data", "user_data", "ct"]], "echo": token},
        method="POST",
    )
    dispatch.dispatch_pending()
    refused = DeliveryAttempt.objects.get(outcome=AttemptOutcome.INVALID)
    assert refused.error_data["blame_field_specs"] == [["data", "user_data", "ct"]]
    assert token not in str(refused.error_data)

    viewer = make_user(destination.tenant, Role.VIEWER)
    client = Client()
    client.force_login(viewer)
    card = client.get(
        reverse("capi_destinations:delivery_card", kwargs={"code": destination.code})
    ).content.decode()
    assert "Event received late" in card
    assert "blame_field_specs" in card
    assert token not in card
    detail = client.get(
        reverse("capi_destinations:event_detail", kwargs={"code": destination.code})
        + "?"
        + urlencode({"event_name": "Purchase", "event_id": "bad-0"})
    ).content.decode()
    assert "blame_field_specs" in detail


def test_a_canary_stays_due_while_nothing_waits(
    env: Sandbox, destination: Destination, clock: Any
) -> None:
    """Without a waiting event there is nothing real to send, so nothing is sent; the first
    event recorded afterwards goes as the canary at the next pass, not an hour later."""
    (held,) = add_events(destination, 1, prefix="held")
    block_with_a_refused_token(env, destination)
    Event.objects.filter(pk=held.pk).update(status=EventStatus.FAILED)
    QueuedEvent.objects.filter(pk=held.pk).delete()  # out of the queue, as a failure is
    clock.advance(timedelta(minutes=30))
    before = len(env.requests())

    dispatch.dispatch_pending()
    assert len(env.requests()) == before
    due = Destination.objects.get(pk=destination.pk).canary_due_at
    assert due is not None
    assert due <= app_clock.now()

    add_events(destination, 1, prefix="new")
    dispatch.dispatch_pending()

    assert [record["event_id"] for record in env.events()] == ["new-0"]
    assert not Destination.objects.get(pk=destination.pk).is_blocked
