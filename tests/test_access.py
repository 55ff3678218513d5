from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from capi_destinations import access
from capi_destinations.models import AuditAction, AuditEntry, Membership, Role


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.EDITOR, False),
        (Role.EDITOR, Role.EDITOR, True),
        (Role.EDITOR, Role.ADMIN, False),
        (Role.ADMIN, Role.EDITOR, True),
        (Role.ADMIN, Role.ADMIN, True),
        (None, Role.VIEWER, False),
    ],
)
def test_role_allows_follows_the_role_ladder(role, needed, allowed) -> None:
    assert access.role_allows(role, needed) is allowed


def test_members_see_their_tenants_superusers_all_anonymous_none(
    make_user, tenant, other_tenant
) -> None:
    member = make_user(tenant, Role.VIEWER)
    superuser = make_user(is_superuser=True)
    assert list(access.tenants_for(member)) == [tenant]
    assert set(access.tenants_for(superuser)) == {tenant, other_tenant}
    assert list(access.tenants_for(AnonymousUser())) == []


def test_editable_tenants_leave_out_viewer_memberships(make_user, tenant, other_tenant) -> None:
    user = make_user(tenant, Role.EDITOR)
    Membership.objects.create(user=user, tenant=other_tenant, role=Role.VIEWER)
    assert list(access.editable_tenants(user)) == [tenant]
    assert access.roles_by_tenant(user) == {tenant.pk: Role.EDITOR, other_tenant.pk: Role.VIEWER}


def test_tenant_access_gives_the_role_and_404s_outsiders(make_user, tenant, other_tenant) -> None:
    editor = make_user(tenant, Role.EDITOR)
    granted = access.tenant_access(editor, tenant.slug)
    assert granted.tenant == tenant
    assert granted.can_edit
    assert not granted.can_manage_members
    with pytest.raises(Http404):
        access.tenant_access(editor, other_tenant.slug)
    with pytest.raises(Http404):
        access.tenant_access(editor, "no-such-tenant")
    with pytest.raises(Http404):
        access.tenant_access(AnonymousUser(), tenant.slug)


def test_tenant_access_403s_members_below_the_needed_role(make_user, tenant) -> None:
    viewer = make_user(tenant, Role.VIEWER)
    with pytest.raises(PermissionDenied):
        access.tenant_access(viewer, tenant.slug, needed=Role.EDITOR)


def test_superuser_acts_as_admin_everywhere(make_user, other_tenant) -> None:
    superuser = make_user(is_superuser=True)
    granted = access.tenant_access(superuser, other_tenant.slug, needed=Role.ADMIN)
    assert granted.role == Role.ADMIN


def test_destination_access_by_code(
    make_user, destination, make_destination, other_tenant, django_assert_num_queries
) -> None:
    viewer = make_user(destination.tenant, Role.VIEWER)
    theirs = make_destination(tenant=other_tenant)
    with django_assert_num_queries(1):
        found, granted = access.destination_access(viewer, destination.code)
    assert found == destination
    assert granted.role == Role.VIEWER
    assert found.tenant.name == "Acme Shoes"  # loaded with the destination
    with pytest.raises(Http404):
        access.destination_access(viewer, theirs.code)
    with pytest.raises(Http404):
        access.destination_access(viewer, uuid.uuid4())
    with pytest.raises(Http404):
        access.destination_access(viewer, "not-a-uuid")
    with pytest.raises(PermissionDenied):
        access.destination_access(viewer, destination.code, needed=Role.EDITOR)


def test_add_member_by_username(make_user, tenant) -> None:
    newcomer = make_user(username="newcomer")
    membership = access.add_member(tenant, " newcomer ", Role.EDITOR)
    assert membership.user == newcomer
    assert membership.role == Role.EDITOR
    with pytest.raises(ValidationError, match="already a member"):
        access.add_member(tenant, "newcomer", Role.VIEWER)
    with pytest.raises(ValidationError, match="There is no user “ghost”"):
        access.add_member(tenant, "ghost", Role.VIEWER)


def test_the_last_admin_can_be_neither_demoted_nor_removed(make_user, tenant) -> None:
    admin = make_user(tenant, Role.ADMIN)
    membership = Membership.objects.get(user=admin)
    with pytest.raises(ValidationError, match="last admin"):
        access.change_role(membership, Role.VIEWER)
    with pytest.raises(ValidationError, match="last admin"):
        access.remove_member(membership)
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN

    second = Membership.objects.get(user=make_user(tenant, Role.ADMIN))
    access.change_role(membership, Role.VIEWER)
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER
    with pytest.raises(ValidationError, match="last admin"):
        access.remove_member(second)


def test_members_are_listed_with_their_users(make_user, tenant, other_tenant) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    viewer = make_user(tenant, Role.VIEWER, username="bob")
    make_user(other_tenant, Role.ADMIN, username="carol")
    assert [membership.user for membership in access.members_of(tenant)] == [admin, viewer]


# --- member changes are audited ------------------------------------------------------------------


def member_entries(tenant) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def test_adding_a_member_is_audited(make_user, tenant) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    make_user(username="newcomer")

    access.add_member(tenant, "newcomer", Role.EDITOR, actor=admin)

    (entry,) = member_entries(tenant)
    assert entry.action == AuditAction.MEMBER_ADDED
    assert entry.actor == admin
    assert entry.destination is None
    assert entry.detail == {"member": "newcomer", "role": "editor"}


def test_changing_a_role_is_audited_with_the_previous_role(make_user, tenant) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    membership = Membership.objects.get(user=make_user(tenant, Role.VIEWER, username="bob"))

    access.change_role(membership, Role.EDITOR, actor=admin)
    access.change_role(membership, Role.EDITOR, actor=admin)  # no change, nothing to record

    (entry,) = member_entries(tenant)
    assert entry.action == AuditAction.MEMBER_ROLE_CHANGED
    assert entry.actor == admin
    assert entry.detail == {"member": "bob", "role": "editor", "previous_role": "viewer"}


def test_removing_a_member_is_audited(make_user, tenant) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    membership = Membership.objects.get(user=make_user(tenant, Role.EDITOR, username="bob"))

    access.remove_member(membership, actor=admin)

    (entry,) = member_entries(tenant)
    assert entry.action == AuditAction.MEMBER_REMOVED
    assert entry.actor == admin
    assert entry.detail == {"member": "bob", "role": "editor"}


def test_refused_member_changes_are_not_audited(make_user, tenant) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    last_admin = Membership.objects.get(user=admin)

    with pytest.raises(ValidationError):
        access.change_role(last_admin, Role.VIEWER, actor=admin)
    with pytest.raises(ValidationError):
        access.remove_member(last_admin, actor=admin)
    with pytest.raises(ValidationError):
        access.add_member(tenant, "ghost", Role.VIEWER, actor=admin)

    assert member_entries(tenant) == []


def test_a_system_change_is_audited_without_an_actor(make_user, tenant) -> None:
    make_user(username="newcomer")

    access.add_member(tenant, "newcomer", Role.VIEWER)

    assert member_entries(tenant)[0].actor is None


def test_member_history_lists_the_tenants_member_changes_newest_first(
    make_user, tenant, other_tenant, destination
) -> None:
    admin = make_user(tenant, Role.ADMIN, username="alice")
    make_user(username="bob")
    access.add_member(tenant, "bob", Role.VIEWER, actor=admin)
    access.add_member(other_tenant, "bob", Role.VIEWER, actor=admin)
    AuditEntry.objects.create(tenant=tenant, destination=destination, action=AuditAction.ENABLED)
    bob = Membership.objects.get(tenant=tenant, user__username="bob")
    access.change_role(bob, Role.EDITOR, actor=admin)

    history = access.member_history(tenant)

    assert [entry.action for entry in history] == [
        AuditAction.MEMBER_ROLE_CHANGED,
        AuditAction.MEMBER_ADDED,
    ]


def test_one_rule_keeps_a_tenant_admin_whichever_change_asks(
    make_user, tenant, other_tenant
) -> None:
    # Issue 17: the rule has one home (access.refuse_to_orphan); every service runs it under the
    # tenant's lock, and the admin's form and confirmation pages ask the same function early.
    alice = make_user(tenant, Role.ADMIN, username="alice").capi_memberships.get()
    with pytest.raises(ValidationError, match="last admin") as demoted:
        access.check_admin_kept(alice, role=Role.EDITOR, tenant_id=tenant.pk)
    with pytest.raises(ValidationError, match="last admin"):  # a move takes the admin away too
        access.check_admin_kept(alice, role=Role.ADMIN, tenant_id=other_tenant.pk)
    with pytest.raises(ValidationError, match="Nothing deleted: Acme Shoes would be left"):
        access.refuse_to_orphan(Membership.objects.filter(pk=alice.pk), many=True)
    assert demoted.value.code == "last_admin"
    access.check_admin_kept(alice, role=Role.ADMIN, tenant_id=tenant.pk)  # no change: allowed

    make_user(tenant, Role.ADMIN, username="bob")
    access.check_admin_kept(alice, role=Role.VIEWER, tenant_id=tenant.pk)
    access.refuse_to_orphan(Membership.objects.filter(pk=alice.pk))
