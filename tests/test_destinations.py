from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from capi_destinations import destinations, signals
from capi_destinations.models import (
    AttemptOutcome,
    AuditAction,
    AuditEntry,
    DeliveryAttempt,
    Destination,
    EventStatus,
    Role,
)
from tests.conftest import make_token, server_event


class SignalRecorder:
    """Records every send of the destination signals during a test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def receiver_for(self, name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            self.sent.append((name, kwargs))

        return receive

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@pytest.fixture
def recorded_signals():
    recorder = SignalRecorder()
    pairs = [
        (signals.destination_token_replaced, recorder.receiver_for("token_replaced")),
        (signals.destination_enabled_changed, recorder.receiver_for("enabled_changed")),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    yield recorder
    for signal, receiver in pairs:
        signal.disconnect(receiver)


@pytest.fixture
def editor(make_user, tenant):
    return make_user(tenant, Role.EDITOR, username="erin")


def audit_text() -> str:
    return json.dumps(list(AuditEntry.objects.values("action", "detail", "destination_label")))


def test_create_destination_returns_the_secret_once_and_audits(
    tenant, editor, token, recorded_signals
) -> None:
    destination, secret = destinations.create_destination(
        tenant, actor=editor, name="Shop", pixel_id="1234567890123456", access_token=token
    )
    assert destination.pk
    assert secret.startswith("sk_")
    assert destination.check_ingest_secret(secret)
    assert secret not in json.dumps(list(Destination.objects.values("ingest_secret_hash")))
    assert destination.token_hint == f"EAA…{token[-4:]}"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.destination) == (
        AuditAction.CREATED,
        editor,
        destination,
    )
    assert token not in audit_text()
    assert token[:20] not in audit_text()
    # A new token is health-checked at once, like a replaced one.
    assert recorded_signals.names() == ["token_replaced"]


def test_create_destination_refuses_a_bad_token_and_saves_nothing(tenant, editor) -> None:
    with pytest.raises(ValidationError) as caught:
        destinations.create_destination(
            tenant, actor=editor, name="Shop", pixel_id="1234567890123456", access_token="EAA123"
        )
    assert "looks truncated" in str(caught.value.message_dict["access_token"])
    assert not Destination.objects.exists()
    assert not AuditEntry.objects.exists()


def test_create_destination_refuses_a_pixel_the_tenant_already_has(
    tenant, editor, destination
) -> None:
    with pytest.raises(ValidationError):
        destinations.create_destination(
            tenant,
            actor=editor,
            name="Again",
            pixel_id=destination.pixel_id,
            access_token=make_token("again"),
        )
    assert Destination.objects.count() == 1


def test_unknown_fields_are_refused(tenant, editor, destination) -> None:
    with pytest.raises(TypeError, match="health"):
        destinations.create_destination(tenant, actor=editor, health="healthy")
    with pytest.raises(TypeError, match="ingest_key"):
        destinations.update_destination(destination, actor=editor, ingest_key="pk_mine")


def test_update_with_a_blank_token_keeps_the_stored_one(
    destination, editor, recorded_signals
) -> None:
    stored = destination.access_token
    changed = destinations.update_destination(
        destination, actor=editor, name="Renamed", access_token="", app_secret="  "
    )
    assert changed == ["name"]
    destination = Destination.objects.get(pk=destination.pk)
    assert destination.name == "Renamed"
    assert destination.access_token == stored
    entry = AuditEntry.objects.get()
    assert entry.action == AuditAction.UPDATED
    assert entry.detail == {"fields": ["name"]}
    assert recorded_signals.sent == []


def test_update_with_a_new_token_audits_the_hint_and_signals_once(
    destination, editor, recorded_signals
) -> None:
    new_token = make_token("replacement")
    changed = destinations.update_destination(destination, actor=editor, access_token=new_token)
    assert changed == ["access_token"]
    destination = Destination.objects.get(pk=destination.pk)
    assert destination.access_token == new_token
    entry = AuditEntry.objects.get()
    assert entry.action == AuditAction.TOKEN_REPLACED
    assert entry.detail == {"token_hint": destination.token_hint}
    assert new_token not in audit_text()
    assert new_token[:20] not in audit_text()
    assert recorded_signals.names() == ["token_replaced"]
    assert recorded_signals.sent[0][1]["actor"] == editor


def test_update_with_the_same_token_pasted_with_spaces_changes_nothing(
    destination, editor, recorded_signals
) -> None:
    assert (
        destinations.update_destination(
            destination, actor=editor, access_token=f"  {destination.access_token}\n"
        )
        == []
    )
    assert not AuditEntry.objects.exists()
    assert recorded_signals.sent == []


def test_update_of_the_app_secret_is_audited_without_its_value(destination, editor) -> None:
    # The stored token is bound to the app secret it was saved with: a new secret comes with
    # the token pasted again (test_token_binding.py).
    destinations.update_destination(
        destination, actor=editor, app_secret="s3cretvalue", access_token=make_token("signed")
    )
    assert Destination.objects.get(pk=destination.pk).app_secret == "s3cretvalue"
    assert AuditEntry.objects.get(action=AuditAction.UPDATED).detail == {"app_secret": "replaced"}
    assert "s3cretvalue" not in audit_text()


def test_update_that_disables_sends_the_enabled_signal(
    destination, editor, recorded_signals
) -> None:
    destinations.update_destination(destination, actor=editor, enabled=False, name="Off")
    assert recorded_signals.names() == ["enabled_changed"]
    assert recorded_signals.sent[0][1]["enabled"] is False
    assert set(AuditEntry.objects.values_list("action", flat=True)) == {
        AuditAction.UPDATED,
        AuditAction.DISABLED,
    }


def test_invalid_update_saves_nothing_and_restores_the_instance(destination, editor) -> None:
    original_name = destination.name
    with pytest.raises(ValidationError):
        destinations.update_destination(
            destination, actor=editor, name="New", pixel_id="not-digits"
        )
    assert destination.name == original_name
    assert Destination.objects.get(pk=destination.pk).name == original_name
    assert not AuditEntry.objects.exists()


def test_set_enabled_signals_and_audits_only_real_changes(
    destination, editor, recorded_signals
) -> None:
    assert destinations.set_enabled(destination, False, actor=editor) is True
    assert destinations.set_enabled(destination, False, actor=editor) is False
    assert not Destination.objects.get(pk=destination.pk).enabled
    assert recorded_signals.names() == ["enabled_changed"]
    assert list(AuditEntry.objects.values_list("action", flat=True)) == [AuditAction.DISABLED]
    destinations.set_enabled(destination, True, actor=editor)
    assert recorded_signals.sent[-1][1]["enabled"] is True


def test_regenerate_ingest_keys_invalidates_the_old_ones(destination, editor) -> None:
    old_secret = destination.set_ingest_secret()
    destination.save()
    old_key = destination.ingest_key
    new_secret = destinations.regenerate_ingest_keys(destination, actor=editor)
    destination = Destination.objects.get(pk=destination.pk)
    assert destination.ingest_key != old_key
    assert destination.check_ingest_secret(new_secret)
    assert not destination.check_ingest_secret(old_secret)
    entry = AuditEntry.objects.get()
    assert entry.action == AuditAction.KEYS_REGENERATED
    assert new_secret not in audit_text()


def test_delete_keeps_the_audit_entry(destination, editor) -> None:
    label = str(destination)
    destinations.delete_destination(destination, actor=editor)
    assert not Destination.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.destination, entry.destination_label) == (
        AuditAction.DELETED,
        None,
        label,
    )


def test_redeliver_failed_requeues_failed_events_inside_the_window(
    clock, destination, editor, make_event
) -> None:
    failed = make_event(status=EventStatus.FAILED)
    expired = make_event(status=EventStatus.EXPIRED)
    too_old = make_event(status=EventStatus.FAILED, event_time=clock.now() - timedelta(days=8))
    delivered = make_event(status=EventStatus.DELIVERED)
    assert destinations.redeliver_failed(destination, actor=editor) == 2
    statuses = {
        event.pk: event.status for event in destination.events.all()
    }  # one query, four rows
    assert statuses[failed.pk] == EventStatus.PENDING
    assert statuses[expired.pk] == EventStatus.PENDING
    assert statuses[too_old.pk] == EventStatus.FAILED
    assert statuses[delivered.pk] == EventStatus.DELIVERED
    assert AuditEntry.objects.filter(action=AuditAction.REDELIVERED).count() == 1


def test_redeliver_failed_finds_store_events_recorded_61_days_ago(
    clock, destination, editor, make_event
) -> None:
    # The search reads only events recorded since Meta's longest window (62 days) opened (the
    # event table has no index on status): a store event recorded 61 days ago is still found.
    store_payload = {**server_event("store-1"), "action_source": "physical_store"}
    store = make_event(status=EventStatus.FAILED, event_id="store-1", payload=store_payload)
    web = make_event(status=EventStatus.FAILED)
    clock.advance(timedelta(days=61))
    assert destinations.redeliver_failed(destination, actor=editor) == 1
    store.refresh_from_db()
    web.refresh_from_db()
    assert (store.status, web.status) == (EventStatus.PENDING, EventStatus.FAILED)


def test_redeliver_failed_can_name_one_event(clock, destination, editor, make_event) -> None:
    chosen = make_event(status=EventStatus.FAILED)
    other = make_event(status=EventStatus.FAILED)
    assert destinations.redeliver_failed(destination, actor=editor, event_ids=[chosen.pk]) == 1
    other.refresh_from_db()
    assert other.status == EventStatus.FAILED


# --- check_token -------------------------------------------------------------------------------


def test_check_token_reports_format_problems_without_asking_meta(sandbox) -> None:
    result = destinations.check_token("12ab", "EAA" + "x" * 40)
    assert not result.ok
    assert "digits only" in result.field_errors["pixel_id"][0]
    assert "looks truncated: 43 characters" in result.field_errors["access_token"][0]
    assert sandbox.requests() == []


def test_check_token_names_the_pixel_meta_reports(graph_settings, token) -> None:
    graph_settings.register_pixel("1234567890123456", "Acme Shoes - Web", [token])
    result = destinations.check_token("1234567890123456", f" {token} ")
    assert result.ok
    assert result.pixel_name == "Acme Shoes - Web"
    assert result.message == "Connected to pixel 'Acme Shoes - Web'"
    assert token not in repr(result)


def test_check_token_explains_a_revoked_token(graph_settings, token) -> None:
    graph_settings.revoke(token)
    result = destinations.check_token("1234567890123456", token)
    assert not result.ok
    assert result.message
    assert "token" in (result.message + result.fix).lower()
    assert token not in result.message + result.fix


def test_check_token_explains_a_token_for_another_pixel(graph_settings, token) -> None:
    graph_settings.register_pixel("1111111111111111", "Other pixel", [token])
    graph_settings.register_pixel("1234567890123456", "Acme", [make_token("acme-only")])
    result = destinations.check_token("1234567890123456", token)
    assert not result.ok
    assert "Pixel ID" in result.message + result.fix


def test_check_token_says_when_meta_cannot_be_reached(graph_settings, token) -> None:
    graph_settings.set_faults(failure_rate=1.0)
    result = destinations.check_token("1234567890123456", token)
    assert not result.ok
    assert result.message.startswith("Could not reach Meta")
    assert "You can still save" in result.fix


# --- send_test_event ---------------------------------------------------------------------------


def test_send_test_event_uses_the_destinations_test_code(
    graph_settings, make_destination, editor
) -> None:
    destination = make_destination(test_event_code="TEST4242")
    result = destinations.send_test_event(destination, actor=editor)
    assert result.ok, result
    assert result.test_event_code == "TEST4242"
    assert result.events_received == 1
    received = graph_settings.events(event_id=result.event_id)
    assert len(received) == 1
    assert received[0]["test_event_code"] == "TEST4242"
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.outcome, attempt.test_event_code, attempt.event_count) == (
        AttemptOutcome.DELIVERED,
        "TEST4242",
        1,
    )
    assert attempt == result.attempt
    entry = AuditEntry.objects.get()
    assert entry.action == AuditAction.TEST_EVENT_SENT
    assert entry.detail["test_event_code"] == "TEST4242"


def test_send_test_event_with_a_revoked_token_shows_metas_reason(
    graph_settings, destination, editor
) -> None:
    graph_settings.revoke(destination.access_token)
    result = destinations.send_test_event(destination, actor=editor, test_event_code="TEST1")
    assert not result.ok
    assert result.message
    assert result.fix
    attempt = DeliveryAttempt.objects.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert attempt.error_code == 190
    stored = json.dumps(list(DeliveryAttempt.objects.values()), default=str)
    assert destination.access_token not in stored
    assert destination.access_token[:20] not in stored


def test_check_token_says_a_cut_token_looks_incomplete(graph_settings, token) -> None:
    """Issue 16: Meta's 190 "Cannot parse access token" is a paste problem, not a revoked token."""
    graph_settings.register_pixel("1234567890123456", "Acme", [token])

    result = destinations.check_token("1234567890123456", token[:150])

    assert not result.ok
    assert "looks incomplete" in result.message
    assert "revoked" not in result.message
    assert "Copy the whole token again" in result.fix
    assert token[:150] not in result.message + result.fix


def test_send_test_event_without_a_code_sends_nothing_and_asks_for_one(
    graph_settings, destination, editor
) -> None:
    """Issue 16: a generated code shows in no Test events tab; the code Events Manager shows is
    asked for instead, and nothing reaches Meta without one."""
    with pytest.raises(ValidationError) as refused:
        destinations.send_test_event(destination, actor=editor)
    assert refused.value.code == "test_code_missing"
    assert "Events Manager → your dataset → Test events" in refused.value.message
    assert graph_settings.events() == []
    assert not DeliveryAttempt.objects.exists()
    assert not AuditEntry.objects.exists()


def test_send_test_event_with_a_pasted_code_uses_it_and_keeps_the_destination_as_it_was(
    graph_settings, destination, editor
) -> None:
    result = destinations.send_test_event(destination, actor=editor, test_event_code=" TEST777 ")
    assert result.ok
    assert result.test_event_code == "TEST777"
    assert graph_settings.events(event_id=result.event_id)[0]["test_event_code"] == "TEST777"
    destination.refresh_from_db()
    assert destination.test_event_code == ""


@pytest.mark.parametrize("code", ["TEST 12", "x" * 51])
def test_send_test_event_refuses_a_code_events_manager_never_shows(
    graph_settings, destination, editor, code
) -> None:
    with pytest.raises(ValidationError):
        destinations.send_test_event(destination, actor=editor, test_event_code=code)
    assert graph_settings.events() == []


def test_the_test_event_answer_says_where_it_shows_and_that_meta_keeps_it(
    graph_settings, make_destination, editor
) -> None:
    destination = make_destination(test_event_code="TEST4242")
    result = destinations.send_test_event(destination, actor=editor)
    assert (
        f"Events Manager → your dataset (pixel {destination.pixel_id}) → Test events tab"
        in result.message
    )
    assert "test code TEST4242" in result.message
    assert (
        "Events sent with test_event_code are not dropped. They flow into Events Manager and are "
        "used for targeting and ads measurement purposes." in result.message
    )
