"""A tenant's members: every member sees the list; admins add, re-role and remove members."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from capi_destinations import access
from capi_destinations.forms import AddMemberForm, MemberRoleForm
from capi_destinations.models import Membership, Role, Tenant
from capi_destinations.views.common import notify
from capi_destinations.views.destination import describe_audit_detail


def _members_page(
    request: HttpRequest, tenant_access: access.TenantAccess, form: AddMemberForm
) -> HttpResponse:
    return render(
        request,
        "capi_destinations/members.html",
        {
            "access": tenant_access,
            "tenant": tenant_access.tenant,
            "members": access.members_of(tenant_access.tenant),
            "add_form": form,
            "roles": Role.choices,
            "history": [
                (entry, describe_audit_detail(entry.detail))
                for entry in access.member_history(tenant_access.tenant)
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
    return _members_page(request, tenant_access, form)


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
