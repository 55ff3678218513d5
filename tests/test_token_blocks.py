"""A block belongs to the token that earned it (issue 13), whichever path replaces the token.

Each test blocks a destination the real way (Meta, here the sandbox over a socket, refuses its
token while delivering), stores a new token through one path, runs a dispatch pass and looks at
what the sandbox received.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from capi_destinations import destinations, dispatch, health, tokens
from capi_destinations.models import Destination, Event, EventStatus, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

pytestmark = pytest.mark.django_db

OLD_TOKEN = make_token("refused-by-meta")
NEW_TOKEN = make_token("the-working-one")
EVENT_IDS = ["held-1", "held-2", "held-3"]


@pytest.fixture
def blocked(
    clock: Any,
    use_sandbox: Sandbox,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
) -> Destination:
    """A destination Meta refused the token of while delivering, with three events waiting."""
    destination = make_destination(access_token=OLD_TOKEN)
    for event_id in EVENT_IDS:
        make_event(destination=destination, event_id=event_id)
    use_sandbox.revoke(OLD_TOKEN)
    dispatch.dispatch_pending()
    destination = Destination.objects.get(pk=destination.pk)
    assert destination.is_blocked
    assert destination.blocked_token_fingerprint == tokens.token_fingerprint(OLD_TOKEN)
    assert set(destination.events.values_list("status", flat=True)) == {EventStatus.PENDING}
    return destination


def delivered_ids(sandbox: Sandbox, destination: Destination) -> list[str]:
    return sorted(event["event_id"] for event in sandbox.events(pixel_id=destination.pixel_id))


def assert_sent_after_one_pass(sandbox: Sandbox, destination: Destination) -> None:
    dispatch.dispatch_pending()
    destination = Destination.objects.get(pk=destination.pk)
    assert not destination.is_blocked
    assert destination.blocked_token_fingerprint == ""
    assert delivered_ids(sandbox, destination) == EVENT_IDS
    assert set(destination.events.values_list("status", flat=True)) == {EventStatus.DELIVERED}
    # Hint and fingerprint are the new token's, whichever path wrote it.
    assert destination.token_hint == tokens.token_hint(NEW_TOKEN)
    assert destination.token_fingerprint == tokens.token_fingerprint(NEW_TOKEN)


def editor_client(tenant: Tenant, make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user(tenant, Role.EDITOR))
    return client


# --- every path that stores a token --------------------------------------------------------------


def test_orm_save_lifts_the_block_at_once(use_sandbox: Sandbox, blocked: Destination) -> None:
    blocked.access_token = NEW_TOKEN
    blocked.save()

    assert not Destination.objects.get(pk=blocked.pk).is_blocked
    assert_sent_after_one_pass(use_sandbox, blocked)


def test_orm_save_of_the_token_field_only_lifts_the_block(
    use_sandbox: Sandbox, blocked: Destination
) -> None:
    blocked.access_token = NEW_TOKEN
    blocked.save(update_fields=["access_token"])

    assert not Destination.objects.get(pk=blocked.pk).is_blocked
    assert_sent_after_one_pass(use_sandbox, blocked)


def test_queryset_update_lifts_the_block_at_the_next_pass(
    use_sandbox: Sandbox, blocked: Destination
) -> None:
    # No Python runs for this: the dispatcher compares the fingerprints.
    Destination.objects.filter(pk=blocked.pk).update(access_token=NEW_TOKEN)
    assert Destination.objects.get(pk=blocked.pk).is_blocked

    assert_sent_after_one_pass(use_sandbox, blocked)


def test_queryset_update_lifts_the_block_at_the_next_health_check(
    use_sandbox: Sandbox, blocked: Destination
) -> None:
    Destination.objects.filter(pk=blocked.pk).update(access_token=NEW_TOKEN)

    check = health.check_destination(Destination.objects.get(pk=blocked.pk))

    failing = [item["name"] for item in check.checks if not item["ok"]]
    assert "deliveries_accepted" not in failing
    assert not Destination.objects.get(pk=blocked.pk).is_blocked
    assert_sent_after_one_pass(use_sandbox, blocked)


def test_the_service_function_lifts_the_block(
    use_sandbox: Sandbox, blocked: Destination, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    destinations.update_destination(
        blocked, actor=make_user(tenant, Role.EDITOR), access_token=NEW_TOKEN
    )

    assert_sent_after_one_pass(use_sandbox, blocked)


def test_the_edit_page_lifts_the_block(
    use_sandbox: Sandbox, blocked: Destination, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    response = editor_client(tenant, make_user).post(
        reverse("capi_destinations:destination_edit", kwargs={"code": blocked.code}),
        {
            "name": blocked.name,
            "pixel_id": blocked.pixel_id,
            "access_token": NEW_TOKEN,
            "enabled": "on",
            "consent_policy": blocked.consent_policy,
            "missing_consent": blocked.missing_consent,
        },
    )

    assert response.status_code == 302
    assert_sent_after_one_pass(use_sandbox, blocked)


def test_the_replace_token_page_lifts_the_block(
    use_sandbox: Sandbox, blocked: Destination, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    response = editor_client(tenant, make_user).post(
        reverse("capi_destinations:replace_token", kwargs={"code": blocked.code}),
        {"access_token": NEW_TOKEN},
    )

    assert response.status_code == 302
    assert_sent_after_one_pass(use_sandbox, blocked)


def test_the_admin_lifts_the_block(
    use_sandbox: Sandbox, blocked: Destination, admin_client: Client
) -> None:
    response = admin_client.post(
        reverse("admin:capi_destinations_destination_change", args=[blocked.pk]),
        {
            "tenant": blocked.tenant_id,
            "name": blocked.name,
            "pixel_id": blocked.pixel_id,
            "access_token": NEW_TOKEN,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert_sent_after_one_pass(use_sandbox, blocked)


# --- what keeps a block --------------------------------------------------------------------------


def test_fernet_key_rotation_keeps_the_block(
    use_sandbox: Sandbox, blocked: Destination, settings: Any
) -> None:
    # The token is the same token, re-encrypted: Meta still refuses it, so nothing is tried.
    requests_before = len(use_sandbox.requests())
    settings.FERNET_KEYS = ["a-brand-new-fernet-key", *settings.FERNET_KEYS]
    call_command("capi_rotate_keys")
    settings.FERNET_KEYS = ["a-brand-new-fernet-key"]

    dispatch.dispatch_pending()

    destination = Destination.objects.get(pk=blocked.pk)
    assert destination.is_blocked
    assert destination.blocked_token_fingerprint == tokens.token_fingerprint(OLD_TOKEN)
    assert destination.token_fingerprint == tokens.token_fingerprint(OLD_TOKEN)
    assert len(use_sandbox.requests()) == requests_before
    assert set(destination.events.values_list("status", flat=True)) == {EventStatus.PENDING}


def test_a_secret_key_kept_as_fallback_keeps_the_block(
    use_sandbox: Sandbox, blocked: Destination, settings: Any
) -> None:
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-the-site"
    requests_before = len(use_sandbox.requests())

    dispatch.dispatch_pending()

    assert Destination.objects.get(pk=blocked.pk).is_blocked
    assert len(use_sandbox.requests()) == requests_before


def test_saving_other_fields_keeps_the_block(use_sandbox: Sandbox, blocked: Destination) -> None:
    blocked.name = "Renamed"
    blocked.save()
    blocked.access_token = OLD_TOKEN  # the same token again is no new token
    blocked.save()

    dispatch.dispatch_pending()

    assert Destination.objects.get(pk=blocked.pk).is_blocked
    assert delivered_ids(use_sandbox, blocked) == []


def test_a_new_token_meta_refuses_too_earns_its_own_block(
    use_sandbox: Sandbox, blocked: Destination
) -> None:
    use_sandbox.revoke(NEW_TOKEN)
    Destination.objects.filter(pk=blocked.pk).update(access_token=NEW_TOKEN)

    dispatch.dispatch_pending()

    destination = Destination.objects.get(pk=blocked.pk)
    assert destination.is_blocked
    assert destination.blocked_token_fingerprint == tokens.token_fingerprint(NEW_TOKEN)
    assert delivered_ids(use_sandbox, blocked) == []


# --- the fingerprint -----------------------------------------------------------------------------


def test_a_health_check_brings_a_stale_fingerprint_up_to_date(
    use_sandbox: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(access_token=OLD_TOKEN)
    Destination.objects.filter(pk=destination.pk).update(access_token=NEW_TOKEN)

    health.check_destination(Destination.objects.get(pk=destination.pk))

    destination = Destination.objects.get(pk=destination.pk)
    assert destination.token_fingerprint == tokens.token_fingerprint(NEW_TOKEN)
    assert destination.token_hint == tokens.token_hint(NEW_TOKEN)


def test_the_fingerprint_is_keyed_and_survives_fernet_rotation(settings: Any) -> None:
    fingerprint = tokens.token_fingerprint(OLD_TOKEN)

    assert len(fingerprint) == 64
    # Not a plain hash: a guessed token cannot be confirmed without the server's secret key.
    assert fingerprint != hashlib.sha256(OLD_TOKEN.encode()).hexdigest()
    assert tokens.token_fingerprint(OLD_TOKEN, secret="another-key") != fingerprint
    assert tokens.token_fingerprint(NEW_TOKEN) != fingerprint
    assert tokens.token_fingerprint("") == ""
    settings.FERNET_KEYS = ["another-fernet-key"]
    assert tokens.token_fingerprint(OLD_TOKEN) == fingerprint
    assert tokens.fingerprint_matches(OLD_TOKEN, fingerprint)
    assert not tokens.fingerprint_matches(NEW_TOKEN, fingerprint)
    assert not tokens.fingerprint_matches(OLD_TOKEN, "")
