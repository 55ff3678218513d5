"""Invitations by email: an admin invites, the link creates or attaches the account, once.

Every test goes through the pages (the members page, the link from the email as
``django.core.mail.outbox`` holds it) with the test client; the clock is the app's.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import django
import pytest
from django.core import mail
from django.test import Client, override_settings
from django.urls import reverse

from capi_destinations import invitations, retention
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AuditAction,
    AuditEntry,
    Invitation,
    InvitationState,
    Membership,
    Role,
    Tenant,
)

PASSWORD = "a long and unusual passphrase 42"
LINK = re.compile(r"http://testserver(/capi/invitation/[0-9a-f-]{36}/[A-Za-z0-9_-]+/)")


@pytest.fixture
def owner(make_user: Any, tenant: Tenant) -> Any:
    user = make_user(tenant, Role.ADMIN, username="olivia")
    user.email = "olivia@acme.test"
    user.save()
    return user


def logged_in(user: Any, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def members_url(tenant: Tenant) -> str:
    return reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug})


def invite_url(tenant: Tenant) -> str:
    return reverse("capi_destinations:invite", kwargs={"tenant_slug": tenant.slug})


def invite(client: Client, tenant: Tenant, email: str, role: str = Role.EDITOR) -> str:
    """Invite through the page; returns the path of the link in the one email sent."""
    before = len(mail.outbox)
    response = client.post(invite_url(tenant), {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(mail.outbox) == before + 1
    message = mail.outbox[-1]
    assert message.to == [email.lower()]
    match = LINK.search(message.body)
    assert match is not None, message.body
    return match.group(1)


def open_link(client: Client, path: str) -> Any:
    """Open the link as a browser does: it lands on the invitation page, without the secret."""
    response = client.get(path)
    assert response.status_code == 302, response.status_code
    page = reverse("capi_destinations:invitation", kwargs={"invitation_code": path.split("/")[3]})
    assert response["Location"] == page
    return client.get(page)


def create_account(client: Client, path: str, username: str = "") -> Any:
    page = open_link(client, path)
    assert page.status_code == 200
    assert 'data-step="create_account"' in page.content.decode()
    data = {"password1": PASSWORD, "password2": PASSWORD}
    if username:
        data["username"] = username
    return client.post(page.wsgi_request.path, data)


# --- inviting ----------------------------------------------------------------------------------


def test_an_invitation_sends_one_email_with_a_link(owner: Any, tenant: Tenant, clock: Any) -> None:
    client = logged_in(owner)
    path = invite(client, tenant, "New.Person@Example.com", Role.EDITOR)
    message = mail.outbox[0]
    assert "Acme Shoes" in message.subject
    assert "olivia invited you" in message.body
    assert "7 days" in message.body
    invitation = Invitation.objects.get()
    assert invitation.email == "new.person@example.com"
    assert invitation.role == Role.EDITOR
    assert invitation.invited_by == owner
    # Only a hash of the link's secret is stored.
    secret = path.rstrip("/").rsplit("/", 1)[1]
    assert len(secret) >= 43
    assert secret not in invitation.token_hash
    assert invitation.token_matches(secret)
    # The page lists it, with who invited and when, and Resend and Revoke.
    page = client.get(members_url(tenant)).content.decode()
    assert 'data-testid="invitation-row" data-email="new.person@example.com"' in page
    assert "olivia" in page
    assert "2026-11-24 12:00" in page
    assert 'data-testid="resend-invitation"' in page
    assert 'data-testid="revoke-invitation"' in page
    assert secret not in page
    entry = AuditEntry.objects.get(action=AuditAction.MEMBER_INVITED)
    assert entry.detail == {"email": "new.person@example.com", "role": "editor"}


def test_inviting_a_member_is_refused(owner: Any, tenant: Tenant, make_user: Any) -> None:
    member = make_user(tenant, Role.VIEWER, username="vera")
    member.email = "vera@acme.test"
    member.save()
    response = logged_in(owner).post(
        invite_url(tenant), {"email": "VERA@acme.test", "role": "admin"}
    )
    assert response.status_code == 200
    assert "already a member" in response.content.decode()
    assert not mail.outbox
    assert not Invitation.objects.exists()


def test_inviting_again_sends_a_new_link_and_the_old_one_stops(owner: Any, tenant: Tenant) -> None:
    client = logged_in(owner)
    first = invite(client, tenant, "new@example.com", Role.VIEWER)
    second = invite(client, tenant, "new@example.com", Role.ADMIN)
    assert first != second
    assert Invitation.objects.get().role == Role.ADMIN
    refused = Client().get(first)
    assert refused.status_code == 404
    assert 'data-reason="unknown"' in refused.content.decode()
    assert Client().get(second).status_code == 302


# --- the link ----------------------------------------------------------------------------------


def test_the_link_creates_a_new_account_with_the_role(
    owner: Any, tenant: Tenant, django_user_model: Any
) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com", Role.EDITOR)
    visitor = Client()
    response = create_account(visitor, path, username="newbie")
    assert response.status_code == 302
    assert response["Location"] == reverse("capi_destinations:overview")
    user = django_user_model.objects.get(username="newbie")
    assert user.email == "new@example.com"
    assert user.check_password(PASSWORD)
    assert Membership.objects.get(user=user, tenant=tenant).role == Role.EDITOR
    # Logged in, on the overview, with the client and the role.
    overview = visitor.get(response["Location"]).content.decode()
    assert 'data-testid="current-user">newbie<' in overview
    assert "Welcome: you are now editor of Acme Shoes." in overview
    invitation = Invitation.objects.get()
    assert invitation.state == InvitationState.ACCEPTED
    assert invitation.closed_by == user
    entry = AuditEntry.objects.get(action=AuditAction.MEMBER_ADDED)
    assert entry.actor == user
    assert entry.detail == {"member": "newbie", "role": "editor", "invited_by": "olivia"}


def test_the_login_name_defaults_to_the_address(
    owner: Any, tenant: Tenant, django_user_model: Any
) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com", Role.VIEWER)
    visitor = Client()
    page = open_link(visitor, path).content.decode()
    assert 'value="new@example.com"' in page
    response = create_account(visitor, path, username="new@example.com")
    assert response.status_code == 302
    assert django_user_model.objects.get(username="new@example.com").email == "new@example.com"


def test_the_sites_password_validators_apply(owner: Any, tenant: Tenant) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com")
    visitor = Client()
    page = open_link(visitor, path)
    with override_settings(
        AUTH_PASSWORD_VALIDATORS=[
            {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}
        ]
    ):
        response = visitor.post(
            page.wsgi_request.path,
            {"username": "newbie", "password1": "short", "password2": "short"},
        )
    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not Membership.objects.filter(user__username="newbie").exists()
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_the_link_attaches_the_logged_in_account_with_that_address(
    owner: Any, tenant: Tenant, make_user: Any
) -> None:
    path = invite(logged_in(owner), tenant, "Jane@Example.com", Role.ADMIN)
    jane = make_user(username="jane")
    jane.email = "jane@example.COM"
    jane.save()
    client = logged_in(jane, enforce_csrf_checks=True)
    page = open_link(client, path)
    content = page.content.decode()
    assert 'data-step="join"' in content
    # The POST that joins needs the CSRF token.
    assert client.post(page.wsgi_request.path).status_code == 403
    assert not Membership.objects.filter(user=jane).exists()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', content).group(1)
    response = client.post(page.wsgi_request.path, {"csrfmiddlewaretoken": csrf})
    assert response.status_code == 302
    assert Membership.objects.get(user=jane, tenant=tenant).role == Role.ADMIN


def test_an_account_with_that_address_logs_in_first_then_joins(
    owner: Any, tenant: Tenant, make_user: Any
) -> None:
    path = invite(logged_in(owner), tenant, "jane@example.com", Role.VIEWER)
    jane = make_user(username="jane")
    jane.email = "jane@example.com"
    jane.save()
    visitor = Client()
    page = open_link(visitor, path)
    content = page.content.decode()
    assert 'data-step="log_in"' in content
    login = re.search(r'href="([^"]+)" data-testid="log-in-first"', content).group(1)
    assert login == f"/accounts/login/?next={page.wsgi_request.path}"
    # Logging in keeps the session, so the page (without the secret in its URL) still works.
    response = visitor.post(login, {"username": "jane", "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert response["Location"] == page.wsgi_request.path
    assert 'data-step="join"' in visitor.get(page.wsgi_request.path).content.decode()
    visitor.post(page.wsgi_request.path)
    assert Membership.objects.get(user=jane, tenant=tenant).role == Role.VIEWER


def test_another_account_is_told_to_log_out(owner: Any, tenant: Tenant, make_user: Any) -> None:
    path = invite(logged_in(owner), tenant, "jane@example.com", Role.ADMIN)
    mallory = make_user(username="mallory")
    client = logged_in(mallory)
    page = open_link(client, path)
    assert page.status_code == 403
    assert 'data-testid="wrong-account"' in page.content.decode()
    assert client.post(page.wsgi_request.path).status_code == 403
    assert not Membership.objects.filter(user=mallory).exists()
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_a_member_already_keeps_their_role(owner: Any, tenant: Tenant, make_user: Any) -> None:
    path = invite(logged_in(owner), tenant, "jane@example.com", Role.ADMIN)
    jane = make_user(tenant, Role.VIEWER, username="jane")
    jane.email = "jane@example.com"
    jane.save()
    client = logged_in(jane)
    page = open_link(client, path)
    response = client.post(page.wsgi_request.path, follow=True)
    assert "already, as viewer; nothing changed" in response.content.decode()
    assert Membership.objects.filter(tenant=tenant, user=jane).get().role == Role.VIEWER
    assert not AuditEntry.objects.filter(action=AuditAction.MEMBER_ADDED).exists()


# --- links that no longer work -----------------------------------------------------------------


def test_a_link_used_twice_is_refused(owner: Any, tenant: Tenant) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com")
    assert create_account(Client(), path, username="newbie").status_code == 302
    again = Client().get(path)
    assert again.status_code == 302
    page = Client().get(path, follow=True)
    assert page.status_code == 410
    content = page.content.decode()
    assert 'data-reason="used"' in content
    assert "olivia (olivia@acme.test), who invited you" in content
    assert Membership.objects.filter(tenant=tenant).count() == 2


def test_two_accounts_from_one_link_are_refused(owner: Any, tenant: Tenant) -> None:
    # Two browsers opened the link; the second to submit gets no account and no membership.
    path = invite(logged_in(owner), tenant, "new@example.com")
    first, second = Client(), Client()
    first_page, second_page = open_link(first, path), open_link(second, path)
    data = {"username": "one", "password1": PASSWORD, "password2": PASSWORD}
    assert first.post(first_page.wsgi_request.path, data).status_code == 302
    refused = second.post(second_page.wsgi_request.path, {**data, "username": "two"})
    assert refused.status_code == 410
    assert Membership.objects.filter(tenant=tenant, user__username="two").count() == 0


def test_an_expired_link_is_refused(owner: Any, tenant: Tenant, clock: Any) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com")
    visitor = Client()
    page = open_link(visitor, path)
    clock.advance(timedelta(days=7))
    response = visitor.post(
        page.wsgi_request.path,
        {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 410
    content = response.content.decode()
    assert 'data-reason="expired"' in content
    assert "Ask olivia (olivia@acme.test), who invited you" in content
    assert not Membership.objects.filter(user__username="newbie").exists()
    # The admin sees it expired, and Resend gives a new link that works from now.
    members = logged_in(owner).get(members_url(tenant)).content.decode()
    assert 'data-testid="invitation-expired"' in members


@override_settings(CAPI_DESTINATIONS={"INVITATION_MAX_AGE": 3600})
def test_the_max_age_is_a_setting_and_resend_renews_it(
    owner: Any, tenant: Tenant, clock: Any
) -> None:
    client = logged_in(owner)
    old = invite(client, tenant, "new@example.com")
    assert "1 day" in mail.outbox[0].body
    clock.advance(timedelta(minutes=61))
    assert Client().get(old, follow=True).status_code == 410
    invitation = Invitation.objects.get()
    url = reverse(
        "capi_destinations:invitation_resend",
        kwargs={"tenant_slug": tenant.slug, "invitation_code": invitation.code},
    )
    assert client.post(url).status_code == 302
    assert len(mail.outbox) == 2
    new = LINK.search(mail.outbox[1].body).group(1)
    assert new != old
    assert Client().get(old, follow=True).status_code == 404
    assert create_account(Client(), new, username="newbie").status_code == 302


def test_a_revoked_link_is_refused(owner: Any, tenant: Tenant) -> None:
    client = logged_in(owner)
    path = invite(client, tenant, "new@example.com")
    invitation = Invitation.objects.get()
    url = reverse(
        "capi_destinations:invitation_revoke",
        kwargs={"tenant_slug": tenant.slug, "invitation_code": invitation.code},
    )
    assert client.post(url).status_code == 302
    page = Client().get(path, follow=True)
    assert page.status_code == 410
    assert 'data-reason="revoked"' in page.content.decode()
    assert 'data-email="new@example.com"' not in client.get(members_url(tenant)).content.decode()
    entry = AuditEntry.objects.get(action=AuditAction.INVITATION_REVOKED)
    assert entry.actor == owner
    # Revoked once: a second revoke or a resend says so and changes nothing.
    response = client.post(url, follow=True)
    assert "closed already" in response.content.decode()


def wrong_links(path: str) -> dict[str, str]:
    code, secret = path.rstrip("/").rsplit("/", 2)[1:]
    return {
        "cut": f"/capi/invitation/{code}/{secret[:-10]}/",
        "longer": f"/capi/invitation/{code}/{secret}x/",
        "changed": f"/capi/invitation/{code}/{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}/",
        "other code": f"/capi/invitation/{'0' * 8}-0000-4000-8000-{'0' * 12}/{secret}/",
    }


@pytest.mark.parametrize("kind", ["cut", "longer", "changed", "other code"])
def test_a_wrong_or_unknown_link_is_a_clear_404(owner: Any, tenant: Tenant, kind: str) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com")
    response = Client().get(wrong_links(path)[kind])
    assert response.status_code == 404
    content = response.content.decode()
    assert 'data-reason="unknown"' in content
    assert "Acme" not in content
    assert Invitation.objects.get().state == InvitationState.PENDING


def test_the_page_without_the_link_says_to_open_the_link(owner: Any, tenant: Tenant) -> None:
    invite(logged_in(owner), tenant, "new@example.com")
    invitation = Invitation.objects.get()
    url = reverse("capi_destinations:invitation", kwargs={"invitation_code": invitation.code})
    response = Client().get(url)
    assert response.status_code == 404
    content = response.content.decode()
    assert 'data-reason="unknown"' in content
    # Nothing about the invitation without its secret.
    assert "new@example.com" not in content
    assert "Acme" not in content


# --- who may invite, and isolation -------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_only_admins_invite_resend_and_revoke(
    owner: Any, tenant: Tenant, make_user: Any, role: str
) -> None:
    invite(logged_in(owner), tenant, "new@example.com")
    invitation = Invitation.objects.get()
    client = logged_in(make_user(tenant, role))
    assert (
        client.post(invite_url(tenant), {"email": "x@example.com", "role": "admin"}).status_code
        == 403
    )
    for name in ("invitation_resend", "invitation_revoke"):
        url = reverse(
            f"capi_destinations:{name}",
            kwargs={"tenant_slug": tenant.slug, "invitation_code": invitation.code},
        )
        assert client.post(url).status_code == 403
    page = client.get(members_url(tenant)).content.decode()
    assert 'data-testid="invite-form"' not in page
    assert 'data-testid="invitations"' not in page
    assert len(mail.outbox) == 1
    invitation.refresh_from_db()
    assert invitation.state == InvitationState.PENDING
    assert Invitation.objects.count() == 1


def test_another_tenants_admin_cannot_touch_this_tenants_invitations(
    owner: Any, tenant: Tenant, other_tenant: Tenant, make_user: Any
) -> None:
    invite(logged_in(owner), tenant, "new@example.com")
    invitation = Invitation.objects.get()
    outsider = logged_in(make_user(other_tenant, Role.ADMIN))
    for slug in (tenant.slug, other_tenant.slug):
        for name in ("invitation_resend", "invitation_revoke"):
            url = reverse(
                f"capi_destinations:{name}",
                kwargs={"tenant_slug": slug, "invitation_code": invitation.code},
            )
            assert outsider.post(url).status_code == 404, (slug, name)
    assert (
        outsider.post(invite_url(tenant), {"email": "x@example.com", "role": "admin"}).status_code
        == 404
    )
    invitation.refresh_from_db()
    assert invitation.state == InvitationState.PENDING
    assert len(mail.outbox) == 1


def test_an_invitation_grants_only_its_own_tenant(
    owner: Any, tenant: Tenant, other_tenant: Tenant, make_user: Any
) -> None:
    other_admin = make_user(other_tenant, Role.ADMIN, username="gina")
    acme = invite(logged_in(owner), tenant, "new@example.com", Role.ADMIN)
    invite(logged_in(other_admin), other_tenant, "other@example.com", Role.VIEWER)
    globex = Invitation.objects.get(tenant=other_tenant)
    # Acme's secret with Globex's invitation code opens nothing.
    secret = acme.rstrip("/").rsplit("/", 1)[1]
    crossed = reverse(
        "capi_destinations:invitation_link",
        kwargs={"invitation_code": globex.code, "token": secret},
    )
    assert Client().get(crossed).status_code == 404
    response = create_account(Client(), acme, username="newbie")
    assert response.status_code == 302
    assert list(
        Membership.objects.filter(user__username="newbie").values_list("tenant__slug", "role")
    ) == [("acme", "admin")]
    assert Invitation.objects.get(tenant=other_tenant).state == InvitationState.PENDING


# --- the secret stays secret -------------------------------------------------------------------


def test_the_secret_is_in_no_log_audit_entry_or_page(
    owner: Any, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = logged_in(owner)
    path = invite(client, tenant, "new@example.com")
    secret = path.rstrip("/").rsplit("/", 1)[1]
    visitor = Client()
    page = open_link(visitor, path)
    assert secret not in page.content.decode()
    assert secret not in page.wsgi_request.path
    create_account(visitor, path, username="newbie")
    client.get(members_url(tenant))
    assert secret not in caplog.text
    for entry in AuditEntry.objects.all():
        assert secret not in str(entry.detail)
    invitation = Invitation.objects.get()
    assert secret not in repr(invitation)
    assert secret not in str(invitation)
    assert invitation.token_hash not in repr(invitation)


def refusing_mail_server() -> Any:
    """Settings whose mail server refuses every message: MAILERS from Django 6.1 on (which
    deprecates EMAIL_BACKEND, a warning this suite turns into an error), else EMAIL_BACKEND."""
    backend = "tests.test_invitations.RefusingBackend"
    if django.VERSION >= (6, 1):
        return override_settings(MAILERS={"default": {"BACKEND": backend}})
    return override_settings(EMAIL_BACKEND=backend)


def test_a_mail_server_failure_keeps_the_invitation(owner: Any, tenant: Tenant) -> None:
    with refusing_mail_server():
        response = logged_in(owner).post(
            invite_url(tenant), {"email": "new@example.com", "role": "viewer"}, follow=True
        )
    assert response.status_code == 200
    assert "the email could not be sent" in response.content.decode()
    assert Invitation.objects.get().state == InvitationState.PENDING


class RefusingBackend:
    """An email backend whose server refuses every message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_messages(self, messages: Any) -> int:
        raise ConnectionRefusedError("mail server down")


# --- the page's cost ---------------------------------------------------------------------------


def test_the_members_page_lists_name_email_and_last_login_in_bounded_queries(
    owner: Any, tenant: Tenant, make_user: Any, django_assert_num_queries: Any, clock: Any
) -> None:
    for number in range(5):
        member = make_user(tenant, Role.VIEWER, username=f"member{number}")
        member.first_name, member.last_name = "Member", f"Number {number}"
        member.email = f"member{number}@acme.test"
        member.last_login = clock.now() - timedelta(days=number)
        member.save()
    client = logged_in(owner)
    for number in range(3):
        invitations.invite(tenant, f"invitee{number}@example.com", Role.VIEWER, actor=owner)
    client.get(members_url(tenant))
    # Session, user, tenant with the role, members, invitations, history: however many.
    with django_assert_num_queries(6):
        page = client.get(members_url(tenant)).content.decode()
    assert "Member Number 3" in page
    assert "member3@acme.test" in page
    assert "2026-11-21 12:00" in page
    assert page.count('data-testid="invitation-row"') == 3
    assert "Never" in page or owner.last_login is not None
    assert "sign up" not in page


def test_the_invitation_page_costs_a_few_queries(
    owner: Any, tenant: Tenant, django_assert_num_queries: Any
) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com")
    visitor = Client()
    page = open_link(visitor, path).wsgi_request.path
    # Session, the invitation with its client and inviter, whether an account has the address.
    with django_assert_num_queries(3):
        response = visitor.get(page)
    assert 'data-step="create_account"' in response.content.decode()


def test_a_taken_login_name_is_refused_and_nothing_is_created(
    owner: Any, tenant: Tenant, django_user_model: Any
) -> None:
    path = invite(logged_in(owner), tenant, "new@example.com", Role.EDITOR)
    visitor = Client()
    page = open_link(visitor, path).wsgi_request.path
    response = visitor.post(
        page, {"username": "OLIVIA", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 200
    assert "exists already" in response.content.decode()
    assert not django_user_model.objects.filter(email="new@example.com").exists()
    assert Invitation.objects.get().state == InvitationState.PENDING
    # Another name works.
    response = visitor.post(
        page, {"username": "nina", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302


def test_retention_purges_closed_and_long_expired_invitations(
    owner: Any, tenant: Tenant, clock: Any
) -> None:
    """An invitation holds an email address: it goes once nobody can need it any more."""
    used, _ = invitations.invite(tenant, "used@example.com", Role.EDITOR, actor=owner)
    revoked, _ = invitations.invite(tenant, "revoked@example.com", Role.EDITOR, actor=owner)
    invitations.invite(tenant, "expired@example.com", Role.EDITOR, actor=owner)
    invitations.revoke(revoked, actor=owner)
    Invitation.objects.filter(pk=used.pk).update(
        state=InvitationState.ACCEPTED, closed_at=clock.now()
    )
    days = int(app_settings.RETENTION_DAYS)
    clock.advance(timedelta(days=days + 1))
    fresh, _ = invitations.invite(tenant, "fresh@example.com", Role.EDITOR, actor=owner)

    purged = retention.purge_old_records()

    # The expired one stays listed (to resend) until it has been expired that long too.
    assert purged["invitations"] == 2
    assert set(Invitation.objects.values_list("email", flat=True)) == {
        "expired@example.com",
        "fresh@example.com",
    }
    clock.advance(timedelta(seconds=float(app_settings.INVITATION_MAX_AGE)))
    assert retention.purge_old_records()["invitations"] == 1
    assert list(Invitation.objects.values_list("pk", flat=True)) == [fresh.pk]
