"""A client's exclusions on its own page (issue 20): every member reads them, admins change them.

Staff traffic, IP ranges and the test-order flag apply to all of the client's destinations;
the page states what applies, refuses a bad address range with the line, audits each change
(the admin's client page too, through the same service), and is 404 to outsiders.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from capi_destinations import exclusions, track
from capi_destinations.models import AuditAction, AuditEntry, Destination, Role, Tenant
from tests.conftest import server_event

pytestmark = pytest.mark.django_db


def url(tenant: Tenant) -> str:
    return reverse("capi_destinations:tenant_exclusions", kwargs={"tenant_slug": tenant.slug})


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def posted(**changes: Any) -> dict[str, Any]:
    data = {"excluded_networks": "", "test_flag": "test_order"}
    data.update(changes)
    if data.pop("exclude_staff", False):
        data["exclude_staff"] = "on"
    return data


def test_an_admin_sets_the_exclusions_and_they_apply(
    tenant: Tenant, destination: Destination, make_user: Any
) -> None:
    admin = make_user(tenant, Role.ADMIN, username="ada")
    client = logged_in(admin)

    response = client.post(
        url(tenant),
        posted(
            exclude_staff=True,
            excluded_networks=" 203.0.113.0/24\n\n2001:db8::/32 ",
            test_flag="qa_order",
        ),
    )

    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.exclude_staff, tenant.excluded_networks, tenant.test_flag) == (
        True,
        "203.0.113.0/24\n2001:db8::/32",
        "qa_order",
    )
    office = server_event("office-1")
    office["user_data"]["client_ip_address"] = "203.0.113.9"
    qa = server_event("qa-1")
    qa["custom_data"]["qa_order"] = True
    fresh = Destination.objects.get(pk=destination.pk)
    assert track(fresh, office).event.status_reason == (
        "suppressed: from 203.0.113.0/24, an address range the client excludes"
    )
    assert track(fresh, qa).event.status_reason == (
        "suppressed: a test order (custom_data.qa_order is set)"
    )
    page = client.get(url(tenant)).content.decode()
    assert "Exclusions of Acme Shoes saved." in page
    assert "<code>203.0.113.0/24</code>, <code>2001:db8::/32</code>" in page


def test_a_bad_address_range_is_refused_with_the_line_and_nothing_is_saved(
    tenant: Tenant, make_user: Any
) -> None:
    client = logged_in(make_user(tenant, Role.ADMIN))

    response = client.post(
        url(tenant), posted(exclude_staff=True, excluded_networks="10.0.0.0/8\noffice wifi")
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="error-excluded_networks"' in page
    assert "&#x27;office wifi&#x27; is not an IP address or range" in page
    tenant.refresh_from_db()
    assert (tenant.exclude_staff, tenant.excluded_networks) == (False, "")
    assert not AuditEntry.objects.filter(action=AuditAction.EXCLUSIONS_CHANGED).exists()
    # The page still states what applies, not what was posted.
    assert "No IP range is excluded." in page


def test_each_change_is_audited_with_who_and_what(tenant: Tenant, make_user: Any) -> None:
    admin = make_user(tenant, Role.ADMIN, username="ada")
    client = logged_in(admin)

    client.post(url(tenant), posted(excluded_networks="203.0.113.0/24"))
    client.post(url(tenant), posted(excluded_networks="203.0.113.0/24"))  # nothing changed
    client.post(url(tenant), posted(excluded_networks="203.0.113.0/24", test_flag=""))

    entries = list(AuditEntry.objects.filter(action=AuditAction.EXCLUSIONS_CHANGED))
    assert [entry.detail for entry in reversed(entries)] == [
        {"Excluded IP ranges": ["203.0.113.0/24"]},
        {"Test-order flag": "none"},
    ]
    assert {(entry.actor, entry.tenant, entry.destination) for entry in entries} == {
        (admin, tenant, None)
    }
    page = client.get(url(tenant)).content.decode()
    assert page.count('data-testid="exclusion-change"') == 2
    assert "Excluded IP ranges: 203.0.113.0/24" in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_viewers_and_editors_read_the_exclusions_but_cannot_change_them(
    tenant: Tenant, make_user: Any, role: str
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(exclude_staff=True)
    client = logged_in(make_user(tenant, role))

    page = client.get(url(tenant))
    response = client.post(url(tenant), posted(excluded_networks="0.0.0.0/0"))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Events recorded in a request of a logged-in staff user are not sent." in text
    assert 'data-testid="exclusions-read-only"' in text
    assert 'data-testid="exclusions-form"' not in text
    assert response.status_code == 403
    tenant.refresh_from_db()
    assert tenant.excluded_networks == ""


def test_outsiders_get_not_found(tenant: Tenant, other_tenant: Tenant, make_user: Any) -> None:
    outsider = logged_in(make_user(other_tenant, Role.ADMIN))

    assert outsider.get(url(tenant)).status_code == 404
    assert outsider.post(url(tenant), posted(exclude_staff=True)).status_code == 404
    tenant.refresh_from_db()
    assert tenant.exclude_staff is False


def test_the_overview_and_the_edit_page_link_to_the_page(
    tenant: Tenant, destination: Destination, make_user: Any
) -> None:
    client = logged_in(make_user(tenant, Role.EDITOR))

    overview = client.get(reverse("capi_destinations:overview")).content.decode()
    edit = client.get(
        reverse("capi_destinations:destination_edit", kwargs={"code": destination.code})
    ).content.decode()

    assert f'href="{url(tenant)}" data-testid="exclusions-link"' in overview
    assert f'href="{url(tenant)}" data-testid="exclusions-link"' in edit


def test_the_admin_saves_the_exclusions_through_the_same_service(
    admin_client: Client, admin_user: Any, tenant: Tenant
) -> None:
    response = admin_client.post(
        reverse("admin:capi_destinations_tenant_change", args=[tenant.pk]),
        {
            "name": tenant.name,
            "slug": tenant.slug,
            "exclude_staff": "on",
            "excluded_networks": "198.51.100.0/24",
            "test_flag": "test_order",
        },
    )
    refused = admin_client.post(
        reverse("admin:capi_destinations_tenant_change", args=[tenant.pk]),
        {"name": tenant.name, "slug": tenant.slug, "excluded_networks": "not a range"},
    )

    assert response.status_code == 302
    (entry,) = AuditEntry.objects.filter(action=AuditAction.EXCLUSIONS_CHANGED)
    assert (entry.actor, entry.detail) == (
        admin_user,
        {"Exclude staff traffic": True, "Excluded IP ranges": ["198.51.100.0/24"]},
    )
    assert refused.status_code == 200
    assert "&#x27;not a range&#x27; is not an IP address or range" in refused.content.decode()
    tenant.refresh_from_db()
    assert tenant.excluded_networks == "198.51.100.0/24"


def test_the_service_refuses_what_is_not_an_exclusion(tenant: Tenant) -> None:
    with pytest.raises(TypeError, match="Not an exclusion: name"):
        exclusions.update_exclusions(tenant, name="Renamed")


def test_what_the_exclusions_catch_is_suppressed_with_reasons_and_counted_on_the_card(
    tenant: Tenant,
    destination: Destination,
    make_user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    admin = make_user(tenant, Role.ADMIN, is_staff=True)
    client = logged_in(admin)
    client.post(url(tenant), posted(exclude_staff=True, excluded_networks="192.0.2.0/24"))
    fresh = Destination.objects.get(pk=destination.pk)
    by_staff = RequestFactory().post("/checkout", REMOTE_ADDR="198.51.100.1")
    by_staff.user = admin
    office, test_order = server_event("office-2"), server_event("test-2")
    office["user_data"]["client_ip_address"] = "192.0.2.50"
    test_order["custom_data"]["test_order"] = "yes"

    with django_capture_on_commit_callbacks(execute=True):
        results = [
            track(fresh, server_event("staff-2"), request=by_staff),
            track(fresh, office),
            track(fresh, test_order),
            track(fresh, server_event("customer-2")),
        ]

    assert [result.event.status_reason for result in results] == [
        "suppressed: recorded by a logged-in staff user (the client excludes staff)",
        "suppressed: from 192.0.2.0/24, an address range the client excludes",
        "suppressed: a test order (custom_data.test_order is set)",
        "",
    ]
    assert (
        "3 suppressed</span>" in client.get(reverse("capi_destinations:overview")).content.decode()
    )
