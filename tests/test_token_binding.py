"""A stored token stays with the pixel it was saved for (issue 14), on every path.

An agency's system-user token often serves many clients' pixels. An editor of one client never
sees the stored token, so they must not be able to aim it at another client's pixel: not by
checking it against another Pixel ID, not by changing the Pixel ID (or API version, or app
secret) and keeping the stored token. The attacker tests run as the attacker would: logged in as
client A's editor, through the pages, against the Graph sandbox over a real socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from capi_destinations import clock as app_clock
from capi_destinations import destinations, dispatch
from capi_destinations.models import (
    AuditAction,
    AuditEntry,
    Destination,
    Event,
    Role,
    Tenant,
    rebind_message,
)
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
AGENCY_TOKEN = make_token("the-agency-system-user")
ACME_PIXEL = "1111111111111111"
GLOBEX_PIXEL = "2222222222222222"
GLOBEX_PIXEL_NAME = "Globex PRIVATE pixel"
ACME_SHOP = "https://shop.acme.example"
PIXEL_MESSAGE = (
    "Paste the access token again to change the Pixel ID: a stored token stays with the pixel "
    "it was saved for."
)


@pytest.fixture
def agency(
    clock: Any,
    use_sandbox: Sandbox,
    tenant: Tenant,
    other_tenant: Tenant,
    make_destination: Callable[..., Destination],
) -> dict[str, Any]:
    """Acme's and Globex's pixels, both served by the agency's one system-user token."""
    use_sandbox.register_pixel(ACME_PIXEL, "Acme web", [AGENCY_TOKEN])
    use_sandbox.register_pixel(GLOBEX_PIXEL, GLOBEX_PIXEL_NAME, [AGENCY_TOKEN])
    acme = make_destination(
        tenant=tenant,
        name="Acme web",
        pixel_id=ACME_PIXEL,
        access_token=AGENCY_TOKEN,
        allowed_origins=ACME_SHOP,
    )
    globex = make_destination(
        tenant=other_tenant, name="Globex web", pixel_id=GLOBEX_PIXEL, access_token=AGENCY_TOKEN
    )
    return {"sandbox": use_sandbox, "acme": acme, "globex": globex}


@pytest.fixture
def acme_editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mallory")


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(name: str, destination: Destination) -> str:
    return reverse(f"capi_destinations:{name}", kwargs={"code": destination.code})


def graph_requests_for(sandbox: Sandbox, pixel_id: str) -> list[dict[str, Any]]:
    return [record for record in sandbox.requests() if pixel_id in record.get("path", "")]


def edit_form(destination: Destination, **changes: str) -> dict[str, str]:
    form = {
        "name": destination.name,
        "pixel_id": destination.pixel_id,
        "access_token": "",
        "enabled": "on",
        "test_event_code": destination.test_event_code,
        "consent_policy": destination.consent_policy,
        "missing_consent": destination.missing_consent,
        "app_secret": "",
        "api_version": destination.api_version,
        "default_country": destination.default_country,
        "allowed_origins": destination.allowed_origins,
        **changes,
    }
    return {key: value for key, value in form.items() if value != ""}


def admin_form(destination: Destination, **changes: str) -> dict[str, Any]:
    return {
        "tenant": destination.tenant_id,
        "name": destination.name,
        "pixel_id": destination.pixel_id,
        "access_token": "",
        "app_secret": "",
        "enabled": "on",
        "test_event_code": "",
        "api_version": destination.api_version,
        "default_country": "",
        "consent_policy": "send_always",
        "missing_consent": "granted",
        "allowed_origins": destination.allowed_origins,
        **changes,
    }


def post_purchase_from_the_shop(destination: Destination, event_id: str) -> Any:
    """A browser's call with the destination's public ingest key, as anyone on the web can make."""
    body = {
        "event_name": "Purchase",
        "event_time": int(app_clock.now().timestamp()) - 10,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": f"{ACME_SHOP}/checkout",
        "user_data": {"email": "fabricated@example.com"},
        "custom_data": {"value": 9999, "currency": "USD"},
    }
    return Client().post(
        reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}),
        data=json.dumps(body),
        content_type="text/plain;charset=UTF-8",
        HTTP_ORIGIN=ACME_SHOP,
        HTTP_USER_AGENT="Mozilla/5.0 (Browser)",
    )


# --- the attack, as client A's editor would run it ---------------------------------------------


def test_an_editor_cannot_check_the_stored_token_against_another_clients_pixel(
    agency: dict[str, Any], acme_editor: Any
) -> None:
    sandbox, acme = agency["sandbox"], agency["acme"]
    client = logged_in(acme_editor)

    response = client.post(
        url("destination_token_check", acme), {"pixel_id": GLOBEX_PIXEL, "access_token": ""}, **HTMX
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-state="error"' in page
    assert GLOBEX_PIXEL_NAME not in page
    assert "paste the access token again" in page
    # The stored token was not even tried on Globex's pixel.
    assert graph_requests_for(sandbox, GLOBEX_PIXEL) == []

    # Against the pixel it was saved for, the stored token is checked as before.
    response = client.post(
        url("destination_token_check", acme), {"pixel_id": ACME_PIXEL, "access_token": ""}, **HTMX
    )
    page = response.content.decode()
    assert 'data-state="ok"' in page
    assert "Acme web" in page
    # A blank Pixel ID stands for the saved one.
    response = client.post(
        url("destination_token_check", acme), {"pixel_id": "", "access_token": ""}, **HTMX
    )
    assert 'data-state="ok"' in response.content.decode()
    assert graph_requests_for(sandbox, GLOBEX_PIXEL) == []


def test_an_editor_cannot_point_the_stored_token_at_another_clients_pixel(
    agency: dict[str, Any], acme_editor: Any, other_tenant: Tenant
) -> None:
    sandbox, acme, globex = agency["sandbox"], agency["acme"], agency["globex"]
    client = logged_in(acme_editor)

    # 1. Change A's Pixel ID to B's, leaving the token blank.
    response = client.post(url("destination_edit", acme), edit_form(acme, pixel_id=GLOBEX_PIXEL))

    assert response.status_code == 200
    assert response.context["form"].errors["access_token"] == [PIXEL_MESSAGE]
    assert PIXEL_MESSAGE in response.content.decode()
    acme = Destination.objects.get(pk=acme.pk)
    assert acme.pixel_id == ACME_PIXEL

    # 2. Push fabricated Purchases through A's public ingest key, and a test event.
    assert post_purchase_from_the_shop(acme, "fabricated-1").status_code == 202
    dispatch.dispatch_pending()
    response = client.post(url("send_test_event", acme), {"test_event_code": "TEST1"}, **HTMX)
    assert response.status_code == 200

    # Nothing reached B's pixel; what was sent went to A's own pixel.
    assert sandbox.events(pixel_id=GLOBEX_PIXEL) == []
    assert [event["event_id"] for event in sandbox.events(pixel_id=ACME_PIXEL, test=False)] == [
        "fabricated-1"
    ]
    assert len(sandbox.events(pixel_id=ACME_PIXEL, test=True)) == 1
    assert GLOBEX_PIXEL_NAME not in response.content.decode()
    # B's destination and B's audit log: untouched, nothing happened to them.
    assert Destination.objects.get(pk=globex.pk).pixel_id == GLOBEX_PIXEL
    assert not AuditEntry.objects.filter(tenant=other_tenant).exists()
    assert not Event.objects.filter(destination=globex).exists()


def test_with_the_token_pasted_again_the_pixel_id_changes(
    agency: dict[str, Any], acme_editor: Any
) -> None:
    acme = agency["acme"]
    own_token = make_token("acme-own-token")
    # A token Meta accepts for the new pixel (one it refused would first ask "Save anyway").
    agency["sandbox"].register_pixel("3333333333333333", "Acme new", [own_token])

    response = logged_in(acme_editor).post(
        url("destination_edit", acme),
        edit_form(acme, pixel_id="3333333333333333", access_token=own_token),
    )

    assert response.status_code == 302
    acme = Destination.objects.get(pk=acme.pk)
    assert (acme.pixel_id, acme.access_token) == ("3333333333333333", own_token)
    # The name Meta gave the old pixel goes with it.
    assert acme.pixel_name == ""


# --- the same rule on every other path -----------------------------------------------------------


BOUND_CHANGES = [
    ("pixel_id", GLOBEX_PIXEL, PIXEL_MESSAGE),
    ("api_version", "v19.0", rebind_message(["api_version"])),
    ("app_secret", "a-new-app-secret", rebind_message(["app_secret"])),
]


@pytest.mark.parametrize(("field", "value", "message"), BOUND_CHANGES)
def test_the_model_refuses_a_bound_change_without_a_new_token(
    agency: dict[str, Any], field: str, value: str, message: str
) -> None:
    acme = Destination.objects.get(pk=agency["acme"].pk)
    setattr(acme, field, value)

    with pytest.raises(ValidationError) as cleaning:
        acme.full_clean()
    assert cleaning.value.message_dict["access_token"] == [message]
    with pytest.raises(ValidationError) as saving:
        acme.save()
    assert saving.value.message_dict["access_token"] == [message]
    with pytest.raises(ValidationError):
        acme.save(update_fields=[field])

    # Assigning the same token again is no new token; assigning a new one is.
    acme.access_token = AGENCY_TOKEN
    with pytest.raises(ValidationError):
        acme.save()
    acme.access_token = make_token("pasted-again")
    acme.save()
    assert getattr(Destination.objects.get(pk=acme.pk), field) == value


def test_the_stored_binding_is_the_saved_one_whatever_was_loaded_late(
    agency: dict[str, Any],
) -> None:
    # A deferred field loaded after the change must not make the change look stored.
    acme = Destination.objects.defer("pixel_id", "app_secret").get(pk=agency["acme"].pk)
    acme.pixel_id = GLOBEX_PIXEL
    assert acme.app_secret == ""  # loads a deferred field

    with pytest.raises(ValidationError):
        acme.save()

    acme = Destination.objects.get(pk=agency["acme"].pk)
    acme.pixel_id = GLOBEX_PIXEL
    acme.refresh_from_db(fields=["name"])
    with pytest.raises(ValidationError):
        acme.save()
    acme.refresh_from_db()
    acme.save()  # read again: nothing changed
    assert Destination.objects.get(pk=acme.pk).pixel_id == ACME_PIXEL


@pytest.mark.parametrize(("field", "value", "message"), BOUND_CHANGES)
def test_update_destination_refuses_a_bound_change_without_a_new_token(
    agency: dict[str, Any], acme_editor: Any, field: str, value: str, message: str
) -> None:
    acme = agency["acme"]

    with pytest.raises(ValidationError) as caught:
        destinations.update_destination(acme, actor=acme_editor, **{field: value})
    assert caught.value.message_dict["access_token"] == [message]
    # A blank token is "keep the stored one": refused the same way.
    with pytest.raises(ValidationError):
        destinations.update_destination(acme, actor=acme_editor, access_token="", **{field: value})
    assert getattr(Destination.objects.get(pk=acme.pk), field) != value
    assert not AuditEntry.objects.exists()

    destinations.update_destination(
        acme, actor=acme_editor, access_token=make_token("pasted-again"), **{field: value}
    )
    assert getattr(Destination.objects.get(pk=acme.pk), field) == value


@pytest.mark.parametrize(("field", "value", "message"), BOUND_CHANGES)
def test_the_admin_refuses_a_bound_change_without_a_new_token(
    agency: dict[str, Any], make_user: Callable[..., Any], field: str, value: str, message: str
) -> None:
    acme = agency["acme"]
    superuser = make_user(is_staff=True, is_superuser=True)
    change_url = reverse("admin:capi_destinations_destination_change", args=[acme.pk])
    client = logged_in(superuser)

    response = client.post(change_url, admin_form(acme, **{field: value}))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["access_token"] == [message]
    assert getattr(Destination.objects.get(pk=acme.pk), field) != value

    response = client.post(
        change_url, admin_form(acme, access_token=make_token("pasted-again"), **{field: value})
    )
    assert response.status_code == 302
    assert getattr(Destination.objects.get(pk=acme.pk), field) == value


def test_key_rotation_keeps_the_binding(agency: dict[str, Any], settings: Any) -> None:
    from django.core.management import call_command

    settings.FERNET_KEYS = ["a-new-fernet-key", *settings.FERNET_KEYS]
    call_command("capi_rotate_keys")

    acme = Destination.objects.get(pk=agency["acme"].pk)
    acme.pixel_id = GLOBEX_PIXEL
    with pytest.raises(ValidationError):
        acme.save()


# --- one token, several clients: warned and audited ----------------------------------------------


def test_saving_a_token_other_clients_use_warns_and_audits_every_client(
    agency: dict[str, Any],
    acme_editor: Any,
    make_user: Callable[..., Any],
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    response = logged_in(acme_editor).post(
        reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug}),
        {
            "name": "Acme outlet",
            "pixel_id": "4444444444444444",
            "access_token": AGENCY_TOKEN,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
        follow=True,
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "This token also serves 1 destination of 1 other client." in page
    assert "Globex" not in page
    added = Destination.objects.get(pixel_id="4444444444444444")
    mine = AuditEntry.objects.get(tenant=tenant, action=AuditAction.TOKEN_SHARED)
    assert mine.destination == added
    assert mine.actor == acme_editor
    assert mine.detail == {
        "token_hint": added.token_hint,
        "also_used_by": "1 destination of 1 other client",
    }
    theirs = AuditEntry.objects.get(tenant=other_tenant, action=AuditAction.TOKEN_SHARED)
    assert theirs.destination == agency["globex"]
    assert theirs.actor is None  # Acme's people are Acme's business
    assert theirs.detail == {
        "token_hint": agency["globex"].token_hint,
        "also_used_by": "1 destination of 1 other client",
    }
    # The edit forms of both clients say so too.
    edit_page = logged_in(acme_editor).get(url("destination_edit", added)).content.decode()
    assert "This token also serves 1 destination of 1 other client." in edit_page
    globex_editor = make_user(other_tenant, Role.EDITOR)
    edit_page = logged_in(globex_editor).get(url("destination_edit", agency["globex"]))
    assert "This token also serves 2 destinations of 1 other client." in edit_page.content.decode()
    for entry in (mine, theirs):
        text = json.dumps(entry.detail)
        for private in ("Acme", "Globex", ACME_PIXEL, GLOBEX_PIXEL, acme_editor.username):
            assert private not in text


def test_replacing_a_token_with_one_other_clients_use_warns_on_every_path(
    agency: dict[str, Any],
    acme_editor: Any,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    other_tenant: Tenant,
) -> None:
    own = make_destination(name="Acme app", access_token=make_token("acme-app-token"))

    # The page.
    response = logged_in(acme_editor).post(
        url("replace_token", own), {"access_token": AGENCY_TOKEN}, follow=True
    )
    assert "This token also serves 1 destination of 1 other client." in (response.content.decode())
    assert AuditEntry.objects.filter(tenant=other_tenant, action=AuditAction.TOKEN_SHARED).count()

    # The admin.
    other = make_destination(name="Acme kiosk", access_token=make_token("kiosk-token"))
    superuser = make_user(is_staff=True, is_superuser=True)
    response = logged_in(superuser).post(
        reverse("admin:capi_destinations_destination_change", args=[other.pk]),
        admin_form(other, access_token=AGENCY_TOKEN),
        follow=True,
    )
    assert "This token also serves 1 destination of 1 other client." in (response.content.decode())
    # Globex's log has one entry per Acme destination that took its token.
    assert (
        AuditEntry.objects.filter(tenant=other_tenant, action=AuditAction.TOKEN_SHARED).count() == 2
    )


def test_a_token_of_one_client_only_is_not_reported(
    agency: dict[str, Any], acme_editor: Any
) -> None:
    acme = agency["acme"]
    destinations.update_destination(acme, actor=acme_editor, access_token=make_token("own"))
    assert destinations.shared_token_warning(acme) == ""
    assert not AuditEntry.objects.filter(action=AuditAction.TOKEN_SHARED).exists()
