from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse

from capi_destinations import signals
from capi_destinations.admin import DestinationAdminForm
from capi_destinations.forms import DestinationForm, WriteOnlySecretsMixin
from capi_destinations.models import (
    AttemptOutcome,
    AuditAction,
    AuditEntry,
    DeliveryAttempt,
    Destination,
    EventStatus,
    Health,
    HealthCheck,
    ImportRun,
    Membership,
    Role,
)
from tests.conftest import make_token


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
        "importrun",
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


# --- saving through the service functions ---------------------------------------------------


def admin_form(destination, **changes):
    form = {
        "name": destination.name,
        "pixel_id": destination.pixel_id,
        "access_token": "",
        "app_secret": "",
        "enabled": "on" if destination.enabled else "",
        "test_event_code": destination.test_event_code,
        "api_version": "",
        "default_country": "",
        "consent_policy": destination.consent_policy,
        "missing_consent": destination.missing_consent,
        "allowed_origins": "",
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value != ""}


@pytest.mark.parametrize("form_class", [DestinationForm, DestinationAdminForm])
def test_the_page_and_admin_forms_keep_secrets_write_only_alike(
    form_class, tenant, destination
) -> None:
    # Issue 17: one WriteOnlySecretsMixin for both forms, not a copy in the admin.
    assert issubclass(form_class, WriteOnlySecretsMixin)
    extra = {"tenant": tenant} if form_class is DestinationForm else {}
    shown = form_class(instance=destination, **extra)
    assert (shown.initial["access_token"], shown.initial["app_secret"]) == ("", "")
    assert f"Stored: {destination.token_hint}" in shown.fields["access_token"].help_text

    data = {**admin_form(destination), "tenant": tenant.pk}
    kept = form_class(data, instance=destination, **extra)
    assert kept.is_valid(), kept.errors
    assert kept.cleaned_data["access_token"] == destination.access_token

    spaced = form_class({**data, "app_secret": "0f1e2d3c 4b5a6978"}, instance=destination, **extra)
    assert not spaced.is_valid()
    assert spaced.errors.as_data()["app_secret"][0].code == "secret_whitespace"


@pytest.fixture
def token_signals():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    signals.destination_token_replaced.connect(receiver, weak=False)
    yield received
    signals.destination_token_replaced.disconnect(receiver)


def test_admin_add_goes_through_the_service_and_shows_the_secret_once(
    admin_client, admin_user, tenant, token, token_signals
) -> None:
    response = admin_client.post(
        reverse("admin:capi_destinations_destination_add"),
        {
            "tenant": tenant.pk,
            "name": "From the admin",
            "pixel_id": "1234567890123456",
            "access_token": token,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    content = response.content.decode()
    destination = Destination.objects.get(name="From the admin")
    secret = re.search(r'data-testid="ingest-secret">(sk_[^<]+)<', content).group(1)
    assert destination.check_ingest_secret(secret)
    assert token not in content
    assert token[:20] not in content
    entry = AuditEntry.objects.get(action=AuditAction.CREATED)
    assert (entry.actor, entry.destination) == (admin_user, destination)
    assert [kwargs["destination"] for kwargs in token_signals] == [destination]


def test_admin_token_replacement_is_audited_and_signalled(
    admin_client, destination, token_signals
) -> None:
    new_token = make_token("admin-replacement")
    url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    response = admin_client.post(url, admin_form(destination, access_token=new_token))
    assert response.status_code == 302, response.content.decode()[:2000]
    destination.refresh_from_db()
    assert destination.access_token == new_token
    entry = AuditEntry.objects.get(action=AuditAction.TOKEN_REPLACED)
    assert entry.detail == {"token_hint": destination.token_hint}
    assert len(token_signals) == 1


def test_admin_tenant_cannot_be_changed_on_an_existing_destination(
    admin_client, destination, other_tenant
) -> None:
    url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    admin_client.post(url, admin_form(destination, tenant=other_tenant.pk))
    destination.refresh_from_db()
    assert destination.tenant.slug == "acme"


def test_admin_delete_is_audited(admin_client, destination) -> None:
    url = reverse("admin:capi_destinations_destination_delete", args=[destination.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Destination.objects.exists()
    assert AuditEntry.objects.get().action == AuditAction.DELETED


# --- list, filters, inlines -------------------------------------------------------------------


def test_changelist_shows_badge_and_pixel_name_and_scoped_tenant_filter(
    client, staff_of_acme, two_destinations
) -> None:
    mine, _ = two_destinations
    mine.health = Health.UNHEALTHY
    mine.pixel_name = "Acme - Web"
    mine.save()
    client.force_login(staff_of_acme)
    page = client.get(reverse("admin:capi_destinations_destination_changelist")).content.decode()
    assert ">Unhealthy</span>" in page
    assert "Acme - Web" in page
    assert "Globex Coffee" not in page  # not even as a filter choice
    assert "Run health check" in page
    assert "Redeliver failed events" in page


def test_change_page_shows_recent_attempts_and_checks_without_the_token(
    admin_client, destination, clock
) -> None:
    for number in range(12):
        DeliveryAttempt.objects.create(
            destination=destination,
            started_at=clock.now(),
            event_count=1,
            fbtrace_id=f"trace-{number:02d}",
            outcome=AttemptOutcome.DELIVERED,
        )
    HealthCheck.objects.create(
        destination=destination,
        checked_at=clock.now(),
        status=Health.UNHEALTHY,
        checks=[{"name": "meta_accepts_token", "ok": False, "message": "Meta refused it."}],
    )
    url = reverse("admin:capi_destinations_destination_change", args=[destination.pk])
    page = admin_client.get(url).content.decode()
    assert "Recent delivery attempts" in page
    assert page.count("trace-") == 10  # only the newest ten
    assert "Meta refused it." in page
    assert destination.access_token not in page
    assert destination.access_token[:20] not in page


def test_no_admin_page_shows_the_token(admin_client, destination, make_event, clock) -> None:
    event = make_event()
    attempt = DeliveryAttempt.objects.create(
        destination=destination, started_at=clock.now(), outcome=AttemptOutcome.DELIVERED
    )
    check = HealthCheck.objects.create(
        destination=destination, checked_at=clock.now(), status=Health.HEALTHY
    )
    entry = AuditEntry.objects.create(
        tenant=destination.tenant, destination=destination, action=AuditAction.CREATED
    )
    urls = [
        reverse("admin:capi_destinations_destination_changelist"),
        reverse("admin:capi_destinations_destination_change", args=[destination.pk]),
        reverse("admin:capi_destinations_event_changelist"),
        reverse("admin:capi_destinations_event_change", args=[event.pk]),
        reverse("admin:capi_destinations_deliveryattempt_change", args=[attempt.pk]),
        reverse("admin:capi_destinations_healthcheck_change", args=[check.pk]),
        reverse("admin:capi_destinations_auditentry_change", args=[entry.pk]),
    ]
    for url in urls:
        page = admin_client.get(url).content.decode()
        assert destination.access_token not in page, url
        assert destination.access_token[:20] not in page, url


# --- actions ------------------------------------------------------------------------------------


def run_action(client, action, destinations):
    return client.post(
        reverse("admin:capi_destinations_destination_changelist"),
        {"action": action, "_selected_action": [d.pk for d in destinations]},
        follow=True,
    )


def test_enable_and_disable_actions_use_the_service(admin_client, admin_user, destination):
    response = run_action(admin_client, "disable", [destination])
    assert "Disabled 1 destination(s)." in response.content.decode()
    destination.refresh_from_db()
    assert not destination.enabled
    run_action(admin_client, "enable", [destination])
    destination.refresh_from_db()
    assert destination.enabled
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor")) == [
        (AuditAction.DISABLED, admin_user.pk),
        (AuditAction.ENABLED, admin_user.pk),
    ]


def test_redeliver_action(admin_client, destination, make_event, clock) -> None:
    failed = make_event(status=EventStatus.FAILED)
    response = run_action(admin_client, "redeliver_failed_events", [destination])
    assert "1 failed event(s)" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == EventStatus.PENDING


def test_event_redeliver_action(admin_client, admin_user, destination, make_event, clock) -> None:
    failed = make_event(status=EventStatus.FAILED)
    admin_client.post(
        reverse("admin:capi_destinations_event_changelist"),
        {"action": "redeliver", "_selected_action": [failed.pk]},
    )
    failed.refresh_from_db()
    assert failed.status == EventStatus.PENDING
    # The pages' service (destinations.redeliver): the same audit entry as the button writes.
    entry = AuditEntry.objects.get(action=AuditAction.REDELIVERED)
    assert (entry.destination, entry.actor, entry.detail) == (destination, admin_user, {"count": 1})


def test_run_health_check_action(admin_client, graph_settings, make_destination) -> None:
    good = make_destination(name="Good")
    bad = make_destination(name="Bad")
    graph_settings.revoke(bad.access_token)
    response = run_action(admin_client, "run_health_check", [good, bad])
    assert "Checked 2: 1 Healthy, 1 Unhealthy." in response.content.decode()
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.health, bad.health) == (Health.HEALTHY, Health.UNHEALTHY)


def test_member_changes_in_the_admin_are_audited(admin_client, admin_user, make_user, tenant):
    bob = make_user(username="bob")
    add_url = reverse("admin:capi_destinations_membership_add")
    response = admin_client.post(add_url, {"user": bob.pk, "tenant": tenant.pk, "role": "viewer"})
    assert response.status_code == 302
    membership = bob.capi_memberships.get()
    change_url = reverse("admin:capi_destinations_membership_change", args=[membership.pk])
    admin_client.post(change_url, {"user": bob.pk, "tenant": tenant.pk, "role": "editor"})
    delete_url = reverse("admin:capi_destinations_membership_delete", args=[membership.pk])
    admin_client.post(delete_url, {"post": "yes"})

    entries = AuditEntry.objects.filter(tenant=tenant).order_by("pk")
    assert [(entry.action, entry.actor) for entry in entries] == [
        (AuditAction.MEMBER_ADDED, admin_user),
        (AuditAction.MEMBER_ROLE_CHANGED, admin_user),
        (AuditAction.MEMBER_REMOVED, admin_user),
    ]
    assert entries[1].detail == {"member": "bob", "role": "editor", "previous_role": "viewer"}


def test_a_membership_given_to_another_user_in_the_admin_is_audited(
    admin_client, admin_user, make_user, tenant
):
    # Issue 14: changing the membership's user was not audited at all.
    membership = make_user(tenant, Role.EDITOR, username="bob").capi_memberships.get()
    carol = make_user(username="carol")
    response = admin_client.post(
        change_url("membership", membership),
        {"user": carol.pk, "tenant": tenant.pk, "role": "editor"},
    )
    assert response.status_code == 302

    entries = AuditEntry.objects.filter(tenant=tenant).order_by("pk")
    assert [(entry.action, entry.detail["member"], entry.actor) for entry in entries] == [
        (AuditAction.MEMBER_REMOVED, "bob", admin_user),
        (AuditAction.MEMBER_ADDED, "carol", admin_user),
    ]


def test_a_membership_moved_to_another_tenant_is_audited_in_both(
    admin_client, admin_user, make_user, tenant, other_tenant
):
    # Issue 14: a move was audited as a role change, in the wrong tenant.
    membership = make_user(tenant, Role.VIEWER, username="bob").capi_memberships.get()
    response = admin_client.post(
        change_url("membership", membership),
        {"user": membership.user_id, "tenant": other_tenant.pk, "role": "editor"},
    )
    assert response.status_code == 302

    old = AuditEntry.objects.get(tenant=tenant)
    new = AuditEntry.objects.get(tenant=other_tenant)
    assert (old.action, old.detail) == (
        AuditAction.MEMBER_REMOVED,
        {"member": "bob", "role": "viewer"},
    )
    assert (new.action, new.detail) == (
        AuditAction.MEMBER_ADDED,
        {"member": "bob", "role": "editor"},
    )
    assert old.actor == new.actor == admin_user


def test_the_admin_never_leaves_a_tenant_without_an_admin(
    admin_client, make_user, tenant, other_tenant
):
    alice = make_user(tenant, Role.ADMIN, username="alice").capi_memberships.get()
    bob = make_user(tenant, Role.VIEWER, username="bob").capi_memberships.get()
    change = change_url("membership", alice)

    demote = admin_client.post(
        change, {"user": alice.user_id, "tenant": tenant.pk, "role": "editor"}
    )
    move = admin_client.post(
        change, {"user": alice.user_id, "tenant": other_tenant.pk, "role": "admin"}
    )
    assert (demote.status_code, move.status_code) == (200, 200)  # the form again, with why
    assert "last admin" in demote.content.decode()
    delete = admin_client.post(
        reverse("admin:capi_destinations_membership_delete", args=[alice.pk]),
        {"post": "yes"},
        follow=True,
    )
    assert "last admin" in delete.content.decode()
    changelist = reverse("admin:capi_destinations_membership_changelist")
    bulk = admin_client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk], "post": "yes"},
        follow=True,
    )
    assert "Nothing deleted: Acme Shoes would be left without an admin" in bulk.content.decode()
    alice.refresh_from_db()
    assert (alice.tenant_id, alice.role) == (tenant.pk, Role.ADMIN)
    assert Membership.objects.filter(pk=bob.pk).exists()

    # With a second admin, the first may go.
    Membership.objects.filter(pk=bob.pk).update(role=Role.ADMIN)
    admin_client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [alice.pk], "post": "yes"},
    )
    assert not Membership.objects.filter(pk=alice.pk).exists()


# --- tenant roles decide what staff may change ---------------------------------------------------


@pytest.fixture
def make_staff(make_user):
    """``make_staff(role, tenant, ...)``: a staff user with every model permission of the app,
    so only their membership roles limit them."""

    def factory(*memberships):
        user = make_user(is_staff=True)
        for tenant, role in memberships:
            user.capi_memberships.create(tenant=tenant, role=role)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="capi_destinations")
        )
        return user

    return factory


def change_url(model, obj):
    return reverse(f"admin:capi_destinations_{model}_change", args=[obj.pk])


def test_a_staff_viewer_gets_a_read_only_destination_page_without_the_token(
    client, make_staff, tenant, destination
) -> None:
    destination.app_secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    destination.access_token = make_token("signed-with-the-secret")  # a new secret, a new paste
    destination.save()
    client.force_login(make_staff((tenant, Role.VIEWER)))
    response = client.get(change_url("destination", destination))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Acme web pixel" in page
    assert 'name="_save"' not in page  # no change form, a view
    assert 'name="access_token"' not in page
    assert destination.access_token not in page
    assert destination.access_token[:20] not in page
    assert destination.app_secret not in page
    assert destination.token_hint in page


def test_a_staff_viewer_cannot_change_delete_or_add_destinations(
    client, make_staff, tenant, destination
) -> None:
    client.force_login(make_staff((tenant, Role.VIEWER)))
    edit = client.post(change_url("destination", destination), admin_form(destination, name="X"))
    delete = client.post(
        reverse("admin:capi_destinations_destination_delete", args=[destination.pk]),
        {"post": "yes"},
    )
    add = client.post(
        reverse("admin:capi_destinations_destination_add"),
        {
            "tenant": tenant.pk,
            "name": "Sneaked in",
            "pixel_id": "1234567890123456",
            "access_token": make_token("sneaked"),
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert (edit.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    destination.refresh_from_db()
    assert destination.name == "Acme web pixel"
    assert list(Destination.objects.values_list("name", flat=True)) == ["Acme web pixel"]
    assert not AuditEntry.objects.exists()


def test_a_staff_viewer_has_no_actions(client, make_staff, tenant, destination, make_event):
    failed = make_event(status=EventStatus.FAILED)
    client.force_login(make_staff((tenant, Role.VIEWER)))
    page = client.get(reverse("admin:capi_destinations_destination_changelist")).content.decode()
    assert "Acme web pixel" in page  # viewers still see their client's destinations
    for action in ("Run health check", "Enable sending", "Disable sending", "Redeliver", "Delete"):
        assert action not in page, action
    for action in ("disable", "redeliver_failed_events", "run_health_check", "delete_selected"):
        run_action(client, action, [destination])
    client.post(
        reverse("admin:capi_destinations_event_changelist"),
        {"action": "redeliver", "_selected_action": [failed.pk]},
    )
    destination.refresh_from_db()
    failed.refresh_from_db()
    assert destination.enabled
    assert destination.health_checked_at is None
    assert failed.status == EventStatus.FAILED
    assert not AuditEntry.objects.exists()


def test_a_staff_editor_can_edit_and_run_actions(
    client, make_staff, tenant, destination, graph_settings
) -> None:
    editor = make_staff((tenant, Role.EDITOR))
    client.force_login(editor)
    form = admin_form(destination, name="Y")
    response = client.post(change_url("destination", destination), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    response = run_action(client, "disable", [destination])
    assert "Disabled 1 destination(s)." in response.content.decode()
    response = run_action(client, "run_health_check", [destination])
    assert "Checked 1:" in response.content.decode()
    destination.refresh_from_db()
    assert (destination.name, destination.enabled) == ("Y", False)
    assert destination.health_checked_at is not None
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor")) == [
        (AuditAction.UPDATED, editor.pk),
        (AuditAction.DISABLED, editor.pk),
    ]


def test_roles_apply_per_tenant_for_a_user_of_two_tenants(
    client, make_staff, tenant, other_tenant, two_destinations
) -> None:
    mine, theirs = two_destinations  # Acme: editor; Globex: only a viewer
    client.force_login(make_staff((tenant, Role.EDITOR), (other_tenant, Role.VIEWER)))
    page = client.get(change_url("destination", theirs)).content.decode()
    assert 'name="_save"' not in page
    assert theirs.access_token[:20] not in page
    assert client.post(change_url("destination", theirs), admin_form(theirs)).status_code == 403
    assert 'name="_save"' in client.get(change_url("destination", mine)).content.decode()

    # An action over both is refused as a whole: nothing half-done.
    response = run_action(client, "disable", [mine, theirs])
    assert "needs the editor role" in response.content.decode()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.enabled, theirs.enabled) == (True, True)
    delete = client.post(
        reverse("admin:capi_destinations_destination_changelist"),
        {"action": "delete_selected", "_selected_action": [mine.pk, theirs.pk], "post": "yes"},
    )
    assert delete.status_code == 403
    assert Destination.objects.count() == 2

    # The add form offers only the tenants where the user is an editor.
    add_page = client.get(reverse("admin:capi_destinations_destination_add")).content.decode()
    assert "Acme Shoes" in add_page
    assert "Globex Coffee" not in add_page


def test_staff_of_another_tenant_sees_and_changes_nothing(
    client, make_staff, other_tenant, destination
) -> None:
    client.force_login(make_staff((other_tenant, Role.ADMIN)))
    page = client.get(reverse("admin:capi_destinations_destination_changelist")).content.decode()
    assert "Acme web pixel" not in page
    assert client.get(change_url("destination", destination)).status_code in (302, 404)
    run_action(client, "disable", [destination])
    response = client.post(
        reverse("admin:capi_destinations_destination_delete", args=[destination.pk]),
        {"post": "yes"},
    )
    assert response.status_code in (302, 404)
    destination.refresh_from_db()
    assert destination.enabled
    membership_page = client.get(
        reverse("admin:capi_destinations_membership_changelist")
    ).content.decode()
    assert "Acme Shoes" not in membership_page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_memberships_and_the_tenant_need_the_admin_role(
    client, make_staff, make_user, tenant, role
) -> None:
    user = make_staff((tenant, role))
    bob = make_user(tenant, Role.VIEWER, username="bob")
    membership = bob.capi_memberships.get()
    client.force_login(user)
    page = client.get(change_url("membership", membership)).content.decode()
    assert "bob" in page
    assert 'name="_save"' not in page
    promote = client.post(
        change_url("membership", membership), {"user": bob.pk, "tenant": tenant.pk, "role": "admin"}
    )
    add = client.post(
        reverse("admin:capi_destinations_membership_add"),
        {"user": user.pk, "tenant": tenant.pk, "role": "admin"},
    )
    rename = client.post(change_url("tenant", tenant), {"name": "Mine now", "slug": "acme"})
    assert (promote.status_code, add.status_code, rename.status_code) == (403, 403, 403)
    membership.refresh_from_db()
    tenant.refresh_from_db()
    assert (membership.role, tenant.name) == (Role.VIEWER, "Acme Shoes")


def test_a_tenant_admin_manages_members_but_creates_no_tenants(
    client, make_staff, make_user, tenant
) -> None:
    client.force_login(make_staff((tenant, Role.ADMIN)))
    bob = make_user(tenant, Role.VIEWER, username="bob")
    membership = bob.capi_memberships.get()
    form = {"user": bob.pk, "tenant": tenant.pk, "role": "editor"}
    response = client.post(change_url("membership", membership), form)
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == Role.EDITOR
    renamed = client.post(change_url("tenant", tenant), {"name": "Acme Boots", "slug": "acme"})
    assert renamed.status_code == 302
    tenant.refresh_from_db()
    assert tenant.name == "Acme Boots"
    # A new tenant would have no members, so nobody but a superuser could see it again.
    add = client.post(
        reverse("admin:capi_destinations_tenant_add"), {"name": "Orphan", "slug": "orphan"}
    )
    assert add.status_code == 403


# --- django-q2's admin (issue 14): superusers only ------------------------------------------


def test_django_q_admin_is_for_superusers_only(client, make_user) -> None:
    staff = make_user(username="staffer", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q"))
    client.force_login(staff)
    models = [
        model
        for model in apps.get_app_config("django_q").get_models()
        if admin.site.is_registered(model)
    ]
    assert models, "django-q2 registers its admins"
    for model in models:
        url = reverse(f"admin:django_q_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 403, url
    assert "django_q" not in client.get(reverse("admin:index")).content.decode()

    client.force_login(make_user(username="root", is_staff=True, is_superuser=True))
    for model in models:
        url = reverse(f"admin:django_q_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url


def test_import_runs_are_listed_read_only_and_scoped_to_the_users_tenants(
    client, staff_of_acme, two_destinations
) -> None:
    mine, theirs = two_destinations
    ImportRun.objects.create(destination=mine, file_name="acme-store-sales.csv", stored=7)
    ImportRun.objects.create(destination=theirs, file_name="globex-crm.csv")
    client.force_login(staff_of_acme)

    page = client.get(reverse("admin:capi_destinations_importrun_changelist")).content.decode()

    assert "acme-store-sales.csv" in page
    assert "globex-crm.csv" not in page
    assert client.get(reverse("admin:capi_destinations_importrun_add")).status_code == 403
    run = ImportRun.objects.get(destination=mine)
    change = client.get(reverse("admin:capi_destinations_importrun_change", args=[run.pk]))
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
