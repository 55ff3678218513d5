"""A tenant's members: every member sees the list; admins invite by email, add, re-role and
remove members, and resend or revoke pending invitations."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from capi_destinations import access, invitations
from capi_destinations.forms import AddMemberForm, InviteMemberForm, MemberRoleForm
from capi_destinations.models import Invitation, Membership, Role, Tenant
from capi_destinations.views.common import notify
from capi_destinations.views.destination import describe_audit_detail

logger = logging.getLogger(__name__)


def members_page(
    request: HttpRequest,
    tenant_access: access.TenantAccess,
    *,
    add_form: AddMemberForm | None = None,
    invite_form: InviteMemberForm | None = None,
) -> HttpResponse:
    """The members page, with the forms as submitted when one of them had errors."""
    tenant = tenant_access.tenant
    email_field = get_user_model().get_email_field_name()
    manages = tenant_access.can_manage_members
    return render(
        request,
        "capi_destinations/members.html",
        {
            "access": tenant_access,
            "tenant": tenant,
            "members": [
                (membership, getattr(membership.user, email_field, "") or "")
                for membership in access.members_of(tenant)
            ],
            "invitations": list(invitations.pending_invitations(tenant)) if manages else [],
            "add_form": add_form or AddMemberForm(),
            "invite_form": invite_form or InviteMemberForm(),
            "roles": Role.choices,
            "invitation_days": invitations.max_age_days(),
            "history": [
                (entry, describe_audit_detail(entry.detail))
                for entry in access.member_history(tenant)
            ],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """List the tenant's members; a POST (admins only) adds one."""
    needed = Role.ADMIN if request.method == "POST" else Role.VIEWER
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=needed)
    form = AddMemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            membership = access.add_member(
                tenant_access.tenant,
                form.cleaned_data["username"],
                form.cleaned_data["role"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_error("username", error)
        else:
            notify(
                request,
                messages.SUCCESS,
                f"{membership.user} is now {membership.get_role_display().lower()} of "
                f"{tenant_access.tenant}.",
            )
            return redirect("capi_destinations:members", tenant_slug=tenant_slug)
    return members_page(request, tenant_access, add_form=form)


def _membership(tenant: Tenant, username: str) -> Membership:
    membership = (
        Membership.objects.select_related("user", "tenant")
        .filter(tenant=tenant, **{f"user__{get_user_model().USERNAME_FIELD}": username})
        .first()
    )
    if membership is None:
        raise Http404("No such member.")
    return membership


@login_required
@require_POST
def member_role(request: HttpRequest, tenant_slug: str, username: str) -> HttpResponse:
    """Change a member's role (admins only; the last admin stays an admin)."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    membership = _membership(tenant_access.tenant, username)
    form = MemberRoleForm(request.POST)
    if form.is_valid():
        try:
            access.change_role(membership, form.cleaned_data["role"], actor=request.user)
        except ValidationError as error:
            notify(request, messages.ERROR, " ".join(error.messages))
        else:
            notify(
                request,
                messages.SUCCESS,
                f"{membership.user} is now {membership.get_role_display().lower()}.",
            )
    else:
        notify(request, messages.ERROR, "Choose one of the roles.")
    return redirect("capi_destinations:members", tenant_slug=tenant_slug)


@login_required
@require_POST
def member_remove(request: HttpRequest, tenant_slug: str, username: str) -> HttpResponse:
    """Remove a member (admins only; never the last admin)."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    membership = _membership(tenant_access.tenant, username)
    try:
        access.remove_member(membership, actor=request.user)
    except ValidationError as error:
        notify(request, messages.ERROR, " ".join(error.messages))
    else:
        notify(request, messages.SUCCESS, f"{membership.user} no longer has access.")
    return redirect("capi_destinations:members", tenant_slug=tenant_slug)


# --- invitations by email ------------------------------------------------------------------


@sensitive_variables("token", "link")
def _mail(request: HttpRequest, invitation: Invitation, token: str) -> bool:
    """Send the invitation's link; False (and a logged error, without the link) on failure."""
    link = request.build_absolute_uri(
        reverse(
            "capi_destinations:invitation_link",
            kwargs={"invitation_code": invitation.code, "token": token},
        )
    )
    try:
        invitations.send_invitation(invitation, link)
    except Exception:
        # The mail server's trouble must not lose the invitation: Resend sends it again.
        logger.exception("Could not email invitation %s", invitation.code)
        return False
    return True


def _sent_message(request: HttpRequest, invitation: Invitation, sent: bool) -> None:
    if sent:
        notify(
            request,
            messages.SUCCESS,
            f"Invitation sent to {invitation.email} as {Role(invitation.role).label.lower()}.",
        )
    else:
        notify(
            request,
            messages.ERROR,
            f"The invitation to {invitation.email} is saved, but the email could not be sent. "
            "Check the site's email settings, then use Resend.",
        )


@login_required
@require_POST
@sensitive_variables("token")
def invite(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """Invite someone by email (admins only); the form's errors show on the members page."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    form = InviteMemberForm(request.POST)
    if form.is_valid():
        try:
            invitation, token = invitations.invite(
                tenant_access.tenant,
                form.cleaned_data["email"],
                form.cleaned_data["role"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_error("email", error)
        else:
            _sent_message(request, invitation, _mail(request, invitation, token))
            return redirect("capi_destinations:members", tenant_slug=tenant_slug)
    return members_page(request, tenant_access, invite_form=form)


def _admins_invitation(request: HttpRequest, tenant_slug: str, code: str) -> Invitation:
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    invitation = invitations.invitation_of(tenant_access.tenant, code)
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


@login_required
@require_POST
@sensitive_variables("token")
def invitation_resend(request: HttpRequest, tenant_slug: str, invitation_code: str) -> HttpResponse:
    """Send a pending invitation again with a new link, valid from now (admins only)."""
    invitation = _admins_invitation(request, tenant_slug, invitation_code)
    try:
        token = invitations.resend(invitation, actor=request.user)
    except invitations.InvitationUnusable:
        notify(request, messages.ERROR, f"The invitation to {invitation.email} is closed already.")
    else:
        _sent_message(request, invitation, _mail(request, invitation, token))
    return redirect("capi_destinations:members", tenant_slug=tenant_slug)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, tenant_slug: str, invitation_code: str) -> HttpResponse:
    """Withdraw a pending invitation: its link stops working (admins only)."""
    invitation = _admins_invitation(request, tenant_slug, invitation_code)
    try:
        invitations.revoke(invitation, actor=request.user)
    except invitations.InvitationUnusable:
        notify(request, messages.ERROR, f"The invitation to {invitation.email} is closed already.")
    else:
        notify(request, messages.SUCCESS, f"The invitation to {invitation.email} is revoked.")
    return redirect("capi_destinations:members", tenant_slug=tenant_slug)
