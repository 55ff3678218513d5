"""The Exclusions page of a tenant: staff traffic, IP ranges and the test-order flag.

Every member reads it (it says why events are suppressed); admins change it. Outsiders get 404.
The work is in :mod:`capi_destinations.exclusions`.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from capi_destinations import access, exclusions, routing
from capi_destinations.forms import ExclusionsForm
from capi_destinations.models import Role, Tenant
from capi_destinations.views.common import notify
from capi_destinations.views.destination import describe_audit_detail


@login_required
@require_http_methods(["GET", "POST"])
def tenant_exclusions(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """Show the tenant's exclusions; a POST (admins only) changes them."""
    needed = Role.ADMIN if request.method == "POST" else Role.VIEWER
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=needed)
    tenant = tenant_access.tenant
    # Read before the form sets what was posted on the instance: the page states what applies.
    applied = _applied(tenant)
    form = ExclusionsForm(request.POST or None, instance=tenant)
    if request.method == "POST" and form.is_valid():
        try:
            changed = exclusions.update_exclusions(tenant, actor=request.user, **form.values())
        except ValidationError as error:
            form.add_error(None, error)
        else:
            notify(
                request,
                messages.SUCCESS,
                f"Exclusions of {tenant} saved." if changed else "Nothing changed.",
            )
            return redirect("capi_destinations:tenant_exclusions", tenant_slug=tenant_slug)
    return render(
        request,
        "capi_destinations/exclusions.html",
        {
            "access": tenant_access,
            "tenant": tenant,
            "applied": applied,
            "form": form,
            "history": [
                (entry, describe_audit_detail(entry.detail)) for entry in exclusions.history(tenant)
            ],
        },
        status=400 if request.method == "POST" else 200,
    )


def _applied(tenant: Tenant) -> dict[str, object]:
    return {
        "exclude_staff": tenant.exclude_staff,
        "networks": routing.lines(tenant.excluded_networks),
        "test_flag": tenant.test_flag.strip(),
    }
