"""An invitation's link: the invited person opens it and joins (admins invite on the members
page, ``views/members.py``).

The link (``invitation_link``) carries the secret once: the view keeps it in the session and
sends the browser on to the same page without it (``invitation``), as Django's password reset
does, so the secret is not left in the address bar, the history or a ``Referer`` header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods

from capi_destinations import invitations
from capi_destinations.forms import JoinForm
from capi_destinations.models import Invitation, Role
from capi_destinations.views.common import notify

SESSION_PREFIX = "capi_invitation_"


# --- the invited person ------------------------------------------------------------------------


@never_cache
@require_GET
@sensitive_variables("token")
def invitation_link(request: HttpRequest, invitation_code: str, token: str) -> HttpResponse:
    """The link from the email: keep its secret in the session, go on to the page without it."""
    try:
        invitation = invitations.find(invitation_code, token)
    except invitations.InvitationUnusable as unusable:
        return _unusable_page(request, unusable)
    request.session[SESSION_PREFIX + str(invitation.code)] = token
    return redirect("capi_destinations:invitation", invitation_code=invitation.code)


@never_cache
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("password1", "password2")
@sensitive_variables("token")
def invitation(request: HttpRequest, invitation_code: str) -> HttpResponse:
    """What the invited person sees: join with the account they are logged in with, log in
    first, or create their account; or why the link no longer works."""
    token = request.session.get(SESSION_PREFIX + str(invitation_code), "")
    try:
        found = invitations.find(invitation_code, token)
        invitations.check_usable(found)
    except invitations.InvitationUnusable as unusable:
        return _unusable_page(request, unusable)
    if request.user.is_authenticated:
        return _join_as_logged_in_user(request, found, token)
    if invitations.accounts_with_email(found.email).exists():
        return _page(request, found, "log_in", login_url=_login_url(request))
    return _create_account(request, found, token)


@sensitive_variables("token")
def _join_as_logged_in_user(request: HttpRequest, found: Invitation, token: str) -> HttpResponse:
    if invitations.normalize_email(invitations.email_of(request.user)) != found.email:
        return _page(request, found, "wrong_account", status=403)
    if request.method != "POST":
        return _page(request, found, "join")
    try:
        accepted = invitations.accept(found, token, request.user)
    except invitations.InvitationUnusable as unusable:
        return _unusable_page(request, unusable)
    return _joined(request, found, accepted)


@sensitive_variables("token")
def _create_account(request: HttpRequest, found: Invitation, token: str) -> HttpResponse:
    form = JoinForm(request.POST or None, email=found.email)
    if request.method == "POST" and form.is_valid():
        try:
            accepted = invitations.create_account_and_accept(
                found,
                token,
                username=form.login_name,
                password=form.cleaned_data["password1"],
            )
        except invitations.InvitationUnusable as unusable:
            return _unusable_page(request, unusable)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            login(request, accepted.membership.user, backend=settings.AUTHENTICATION_BACKENDS[0])
            return _joined(request, found, accepted)
    return _page(request, found, "create_account", form=form)


def _joined(
    request: HttpRequest, found: Invitation, accepted: invitations.Accepted
) -> HttpResponse:
    membership = accepted.membership
    request.session.pop(SESSION_PREFIX + str(found.code), None)
    role = membership.get_role_display().lower()
    if accepted.created:
        text = f"Welcome: you are now {role} of {membership.tenant}."
    else:
        text = f"You were a member of {membership.tenant} already, as {role}; nothing changed."
    notify(request, messages.SUCCESS, text)
    return redirect("capi_destinations:overview")


def _login_url(request: HttpRequest) -> str:
    # Back to this page after logging in: the session (and the link's secret in it) survives.
    return f"{resolve_url(settings.LOGIN_URL)}?next={quote(request.get_full_path())}"


def _page(
    request: HttpRequest, found: Invitation, step: str, *, status: int = 200, **context: Any
) -> HttpResponse:
    inviter = found.invited_by
    return render(
        request,
        "capi_destinations/invitation.html",
        {
            "invitation": found,
            "step": step,
            "role_label": Role(found.role).label.lower(),
            "inviter": inviter.get_username() if inviter is not None else "",
            "inviter_email": invitations.email_of(inviter) if inviter is not None else "",
            "login_field": get_user_model().USERNAME_FIELD,
            **context,
        },
        status=status,
    )


def _unusable_page(request: HttpRequest, unusable: invitations.InvitationUnusable) -> HttpResponse:
    found = unusable.invitation
    inviter = found.invited_by if found is not None else None
    return render(
        request,
        "capi_destinations/invitation_unusable.html",
        {
            "invitation": found,
            "reason": unusable.reason,
            "inviter": inviter.get_username() if inviter is not None else "",
            "inviter_email": invitations.email_of(inviter) if inviter is not None else "",
        },
        status=404 if found is None else 410,
    )
