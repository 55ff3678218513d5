"""Member changes made at the same moment: a tenant keeps one admin, and nobody gets a 500.

Issue 14: two demotes or removes at once on the members page deadlocked on PostgreSQL (each
locked the other's admin row) and answered 500; two admin change forms at once left tenants
with no admin. Every member change now locks the tenant's row first, then its memberships, in
``access.py``, for the pages and the admin alike. Threads start together on a barrier; on SQLite
the writers are serialized by the database itself, and the rule must hold there too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse

from capi_destinations import access, invitations
from capi_destinations.models import AuditAction, AuditEntry, Membership, Role, Tenant
from tests.conftest import close_thread_connection

ROUNDS = 4


def run_together(*actions: Callable[[], Any]) -> list[Any]:
    """Run each action in its own thread, all released at once; their results or errors."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = action()
        except Exception as error:
            results[index] = error
        finally:
            close_thread_connection()

    threads = [
        threading.Thread(target=run, args=(index, action)) for index, action in enumerate(actions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def two_admins(make_tenant: Callable[..., Tenant], make_user: Callable[..., Any]) -> tuple:
    tenant = make_tenant()
    first = make_user(tenant, Role.ADMIN)
    second = make_user(tenant, Role.ADMIN)
    return tenant, first, second


def logged_in(user: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def admins_of(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.ADMIN).count()


# --- the rule itself, on every database: the services called from two threads at once -------


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("change", ["demote", "remove", "move", "admin_demote"])
def test_two_changes_at_once_leave_one_admin(
    transactional_db: None, make_tenant, make_user, other_tenant, change: str, round_: int
) -> None:
    tenant, first, second = two_admins(make_tenant, make_user)
    memberships = [Membership.objects.get(tenant=tenant, user=user) for user in (first, second)]

    def act(membership: Membership) -> Any:
        if change == "demote":
            return access.change_role(membership, Role.VIEWER)
        if change == "remove":
            return access.remove_member(membership)
        if change == "move":
            return access.update_membership(
                membership, user=membership.user, tenant=other_tenant, role=Role.ADMIN
            )
        return access.update_membership(
            membership, user=membership.user, tenant=tenant, role=Role.EDITOR
        )

    outcomes = run_together(lambda: act(memberships[0]), lambda: act(memberships[1]))

    refused = [o for o in outcomes if isinstance(o, ValidationError)]
    assert len(refused) == 1, outcomes
    assert not [o for o in outcomes if isinstance(o, Exception) and o not in refused], outcomes
    assert admins_of(tenant) == 1


# --- through the pages and the admin (PostgreSQL: the test's in-memory SQLite database, shared
# by threads, answers "table is locked" to any reader while another thread writes) ------------

if connection.vendor == "postgresql":

    @pytest.mark.parametrize("round_", range(ROUNDS))
    @pytest.mark.parametrize("change", ["demote", "remove"])
    def test_two_admins_changing_each_other_on_the_members_page(
        transactional_db: None, make_tenant, make_user, change: str, round_: int
    ) -> None:
        tenant, first, second = two_admins(make_tenant, make_user)
        clients = {first: logged_in(first), second: logged_in(second)}

        def act(by: Any, on: Any) -> int:
            name = "member_role" if change == "demote" else "member_remove"
            url = reverse(
                f"capi_destinations:{name}",
                kwargs={"tenant_slug": tenant.slug, "username": on.username},
            )
            return clients[by].post(url, {"role": Role.VIEWER}).status_code

        answers = run_together(lambda: act(first, second), lambda: act(second, first))

        # The loser is refused with a message (302), or, when the other's change committed
        # before its request was read, is no admin any more (403: demoted) or no member (404:
        # removed); never a 500.
        too_late = 403 if change == "demote" else 404
        assert all(answer in (302, too_late) for answer in answers), answers
        assert admins_of(tenant) == 1
        # One change went through and was audited; the other was refused with a message.
        done = AuditEntry.objects.filter(
            tenant=tenant,
            action__in=[AuditAction.MEMBER_ROLE_CHANGED, AuditAction.MEMBER_REMOVED],
        )
        assert done.count() == 1

    def admin_client(make_user: Callable[..., Any]) -> Client:
        return logged_in(make_user(is_staff=True, is_superuser=True))

    @pytest.mark.parametrize("round_", range(ROUNDS))
    def test_two_admin_change_forms_demoting_both_admins(
        transactional_db: None, make_tenant, make_user, round_: int
    ) -> None:
        tenant, first, second = two_admins(make_tenant, make_user)
        client_a, client_b = admin_client(make_user), admin_client(make_user)

        def demote(client: Client, user: Any) -> int:
            membership = Membership.objects.get(tenant=tenant, user=user)
            url = reverse("admin:capi_destinations_membership_change", args=[membership.pk])
            fields = {"user": user.pk, "tenant": tenant.pk, "role": Role.VIEWER}
            return client.post(url, fields).status_code

        answers = run_together(lambda: demote(client_a, first), lambda: demote(client_b, second))

        assert all(answer in (200, 302) for answer in answers), answers
        assert admins_of(tenant) == 1

    @pytest.mark.parametrize("round_", range(ROUNDS))
    def test_two_admin_deletes_of_both_admins(
        transactional_db: None, make_tenant, make_user, round_: int
    ) -> None:
        tenant, first, second = two_admins(make_tenant, make_user)
        client_a, client_b = admin_client(make_user), admin_client(make_user)

        def delete(client: Client, user: Any) -> int:
            membership = Membership.objects.get(tenant=tenant, user=user)
            url = reverse("admin:capi_destinations_membership_delete", args=[membership.pk])
            return client.post(url, {"post": "yes"}).status_code

        answers = run_together(lambda: delete(client_a, first), lambda: delete(client_b, second))

        assert all(answer in (200, 302) for answer in answers), answers
        assert admins_of(tenant) == 1

    @pytest.mark.parametrize("round_", range(ROUNDS))
    def test_the_members_page_and_the_admin_at_once(
        transactional_db: None, make_tenant, make_user, round_: int
    ) -> None:
        tenant, first, second = two_admins(make_tenant, make_user)
        page = logged_in(first)
        admin = admin_client(make_user)

        def on_the_page() -> int:
            url = reverse(
                "capi_destinations:member_remove",
                kwargs={"tenant_slug": tenant.slug, "username": second.username},
            )
            return page.post(url).status_code

        def in_the_admin() -> int:
            membership = Membership.objects.get(tenant=tenant, user=first)
            url = reverse("admin:capi_destinations_membership_change", args=[membership.pk])
            fields = {"user": first.pk, "tenant": tenant.pk, "role": Role.EDITOR}
            return admin.post(url, fields).status_code

        answers = run_together(on_the_page, in_the_admin)

        assert all(answer in (200, 302) for answer in answers), answers
        assert admins_of(tenant) == 1


# --- an invitation accepted twice at once ------------------------------------------------------


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_one_link_accepted_twice_at_once_makes_one_account(
    transactional_db: None, make_tenant, make_user, django_user_model, round_: int
) -> None:
    tenant = make_tenant()
    admin = make_user(tenant, Role.ADMIN)
    invitation, token = invitations.invite(tenant, "new@example.com", Role.EDITOR, actor=admin)

    def create(username: str) -> Callable[[], Any]:
        return lambda: invitations.create_account_and_accept(
            invitation, token, username=username, password="a long and unusual passphrase 42"
        )

    results = run_together(create("first"), create("second"))
    accepted = [result for result in results if isinstance(result, invitations.Accepted)]
    refused = [result for result in results if not isinstance(result, invitations.Accepted)]
    assert len(accepted) == 1, results
    assert isinstance(refused[0], invitations.InvitationUnusable | ValidationError), refused
    assert Membership.objects.filter(tenant=tenant, role=Role.EDITOR).count() == 1
    assert django_user_model.objects.filter(email="new@example.com").count() == 1
    added = AuditEntry.objects.filter(tenant=tenant, action=AuditAction.MEMBER_ADDED)
    assert added.count() == 1
