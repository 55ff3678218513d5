from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from capi_destinations.models import Destination, Role


@pytest.fixture
def staff_of_acme(make_user, tenant):
    user = make_user(tenant, Role.ADMIN, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="capi_destinations")
    )
    return user


@pytest.fixture
def two_destinations(make_destination, other_tenant):
    mine = make_destination(name="Acme pixel")
    theirs = make_destination(name="Globex pixel", tenant=other_tenant)
    return mine, theirs


def test_staff_sees_only_own_tenant_in_lists(client, staff_of_acme, two_destinations) -> None:
    client.force_login(staff_of_acme)
    for model in (
        "destination",
        "tenant",
        "membership",
        "event",
        "deliveryattempt",
        "healthcheck",
        "auditentry",
    ):
        response = client.get(reverse(f"admin:capi_destinations_{model}_changelist"))
        assert response.status_code == 200, model
    page = client.get(reverse("admin:capi_destinations_destination_changelist")).content.decode()
    assert "Acme pixel" in page
    assert "Globex pixel" not in page
    tenants = client.get(reverse("admin:capi_destinations_tenant_changelist")).content.decode()
    assert "Acme Shoes" in tenants
    assert "Globex Coffee" not in tenants


def test_staff_gets_no_other_tenant_change_page(client, staff_of_acme, two_destinations) -> None:
    _, theirs = two_destinations
    client.force_login(staff_of_acme)
    response = client.get(reverse("admin:capi_destinations_destination_change", args=[theirs.pk]))
    # The admin redirects "object does not exist" to the index with a message: never shows it.
    assert response.status_code in (302, 404)
    assert b"Globex pixel" not in response.content
    response = client.get(reverse("admin:capi_destinations_tenant_change", args=[theirs.tenant_id]))
    assert response.status_code in (302, 404)


def test_tenant_choices_are_scoped_on_the_add_form(client, staff_of_acme, two_destinations) -> None:
    client.force_login(staff_of_acme)
    page = client.get(reverse("admin:capi_destinations_destination_add")).content.decode()
    assert "Acme Shoes" in page
    assert "Globex Coffee" not in page


def test_token_is_write_only_in_the_admin(admin_client, destination, token) -> None:
    destination.access_token = token
    destination.save()
    url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    page = admin_client.get(url).content.decode()
    assert token not in page
    assert token[:20] not in page
    assert destination.token_hint in page

    # A blank token keeps the stored one.
    form = {
        "tenant": destination.tenant_id,
        "name": "Renamed",
        "pixel_id": destination.pixel_id,
        "access_token": "",
        "app_secret": "",
        "enabled": "on",
        "test_event_code": "",
        "api_version": "",
        "default_country": "",
        "consent_policy": "send_always",
        "missing_consent": "granted",
        "ingest_key": destination.ingest_key,
        "allowed_origins": "",
        "health_transient_failures": "0",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    destination = Destination.objects.get(pk=destination.pk)
    assert destination.name == "Renamed"
    assert destination.access_token == token


def test_bad_token_in_admin_shows_the_exact_problem(admin_client, tenant) -> None:
    response = admin_client.post(
        reverse("admin:capi_destinations_destination_add"),
        {
            "tenant": tenant.pk,
            "name": "New",
            "pixel_id": "1234567890123456",
            "access_token": "EAA" + "x" * 55,
            "consent_policy": "send_always",
            "missing_consent": "granted",
            "ingest_key": "pk_test",
            "health_transient_failures": "0",
        },
    )
    assert response.status_code == 200
    assert "looks truncated: 58 characters" in response.content.decode()
    assert not Destination.objects.exists()
