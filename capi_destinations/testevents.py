"""The **Send test event** probe: one synthetic event sent to Meta, its answer recorded.

The one place a test event is built, sent and filed among the attempts (a ``DeliveryAttempt``
with the test code, never retried). Only a person asks for one, through
:func:`capi_destinations.destinations.send_test_event`, which also writes the audit entry: a
test event is live data to Meta, so no check or task ever sends one.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from capi_destinations import clock, dispatch, graph
from capi_destinations.models import AttemptOutcome, DeliveryAttempt, Destination

TEST_EVENT_NAME = "PageView"
TEST_EVENT_SOURCE_URL = "https://example.com/capi-destinations-test"
TEST_EVENT_USER_AGENT = "django-capi-destinations test event"
# A documentation address (RFC 5737): the test event stands for nobody.
TEST_EVENT_IP = "192.0.2.1"


@dataclass(frozen=True)
class TestEventResult:
    """Meta's answer to a test event, for inline display."""

    ok: bool
    test_event_code: str
    event_id: str
    message: str
    fix: str = ""
    events_received: int | None = None
    fbtrace_id: str = ""
    http_status: int | None = None
    attempt: DeliveryAttempt | None = None


#: Meta's own words on test events (Conversions API, "Using the API"), quoted wherever the
#: pages say what happens to one.
META_KEEPS_TEST_EVENTS = (
    "Events sent with test_event_code are not dropped. They flow into Events Manager and are "
    "used for targeting and ads measurement purposes."
)

#: Where a test event shows, and where its code comes from.
TEST_EVENTS_TAB = "Events Manager → your dataset → Test events"

# The destination's own field holds up to 50 characters.
TEST_CODE_MAX_LENGTH = 50

TEST_CODE_NEEDED = (
    f"A test event shows in {TEST_EVENTS_TAB} tab only under the code that tab shows. Copy the "
    "code from there (it looks like TEST12345) and paste it here, or set it as the "
    "destination's test event code (Edit). Nothing was sent."
)


def code_for_test_event(destination: Destination, typed: str = "") -> str:
    """The test code to send with: the destination's own, else the one typed for this event.

    Raises ``ValidationError`` when there is none (a code made up here would show in no Test
    events tab) or the typed one cannot be Events Manager's (a space, too long).
    """
    if destination.test_event_code:
        return destination.test_event_code
    code = (typed or "").strip()
    if not code:
        raise ValidationError(TEST_CODE_NEEDED, code="test_code_missing")
    if len(code) > TEST_CODE_MAX_LENGTH or any(character.isspace() for character in code):
        raise ValidationError(
            f"That is not a test code from {TEST_EVENTS_TAB}: copy the code alone (such as "
            "TEST12345), without spaces.",
            code="test_code_invalid",
        )
    return code


def build_test_event(destination: Destination, *, now: Any = None) -> dict[str, Any]:
    """A synthetic PageView that Meta accepts and that identifies nobody."""
    now = now or clock.now()
    origins = destination.allowed_origin_list
    return {
        "event_name": TEST_EVENT_NAME,
        "event_time": int(now.timestamp()),
        "event_id": f"capi_test_{uuid.uuid4().hex}",
        "action_source": "website",
        "event_source_url": f"{origins[0]}/" if origins else TEST_EVENT_SOURCE_URL,
        "user_data": {
            "external_id": [
                hashlib.sha256(f"capi-destinations-test-{destination.code}".encode()).hexdigest()
            ],
            "client_ip_address": TEST_EVENT_IP,
            "client_user_agent": TEST_EVENT_USER_AGENT,
        },
    }


_ATTEMPT_FIELDS = frozenset(field.name for field in DeliveryAttempt._meta.concrete_fields)


def send_test_event(destination: Destination, *, test_event_code: str = "") -> TestEventResult:
    """Send one synthetic event with the destination's test code and return Meta's answer.

    Only when a person asks (the **Send test event** button, which says what follows). A
    destination without a test code of its own takes the code the person copied from Events
    Manager → Test events (``test_event_code``; :func:`code_for_test_event` refuses to send without
    one). The event is live data: "Events sent with test_event_code are not dropped. They flow
    into Events Manager and are used for targeting and ads measurement purposes" (Meta,
    Conversions API "Using the API"). It stands for nobody (a documentation IP address, a hashed
    ID of this destination). The request is recorded as a DeliveryAttempt, filed like a delivery
    by Meta's answer (:func:`capi_destinations.dispatch.attempt_outcome`); the audit entry is the
    caller's (:func:`capi_destinations.destinations.send_test_event`).
    """
    test_code = code_for_test_event(destination, test_event_code)
    started_at = clock.now()
    event = build_test_event(destination, now=started_at)
    started = time.monotonic()
    # No transaction is open here: the HTTP call must not hold database locks.
    try:
        answer = graph.send_events(destination, [event], test_event_code=test_code)
    except graph.GraphError as error:
        record = {k: v for k, v in error.to_record().items() if k in _ATTEMPT_FIELDS}
        record.pop("destination", None)
        record.setdefault("http_status", error.http_status)
        record.setdefault("fbtrace_id", error.fbtrace_id or "")
        attempt = _record_test_attempt(
            destination,
            started_at=started_at,
            duration_ms=_elapsed_ms(started),
            test_code=test_code,
            outcome=dispatch.attempt_outcome(error),
            **record,
        )
        result = TestEventResult(
            ok=False,
            test_event_code=test_code,
            event_id=event["event_id"],
            message=error.explanation,
            fix=error.fix,
            fbtrace_id=error.fbtrace_id or "",
            http_status=error.http_status,
            attempt=attempt,
        )
    else:
        attempt = _record_test_attempt(
            destination,
            started_at=started_at,
            duration_ms=answer.duration_ms,
            test_code=test_code,
            outcome=AttemptOutcome.DELIVERED,
            http_status=answer.http_status,
            events_received=answer.events_received,
            fbtrace_id=answer.fbtrace_id or "",
        )
        result = TestEventResult(
            ok=answer.events_received == 1,
            test_event_code=test_code,
            event_id=event["event_id"],
            message=(
                f"Meta received {answer.events_received} event and recorded it in the dataset. "
                f"It shows in Events Manager → your dataset (pixel {destination.pixel_id}) → "
                f"Test events tab, under test code {test_code}, while that tab shows the same "
                f"code. Meta keeps it: “{META_KEEPS_TEST_EVENTS}”"
            ),
            fix=""
            if answer.events_received == 1
            else "Meta answered but did not count the event; try again in a minute.",
            events_received=answer.events_received,
            fbtrace_id=answer.fbtrace_id or "",
            http_status=answer.http_status,
            attempt=attempt,
        )
    return result


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _record_test_attempt(
    destination: Destination,
    *,
    started_at: Any,
    duration_ms: int,
    test_code: str,
    outcome: str,
    **answer: Any,
) -> DeliveryAttempt:
    return DeliveryAttempt.objects.create(
        destination=destination,
        started_at=started_at,
        duration_ms=duration_ms,
        event_count=1,
        test_event_code=test_code,
        outcome=outcome,
        **{key: value for key, value in answer.items() if value is not None},
    )
