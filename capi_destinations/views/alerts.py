"""The Alerts page of a tenant: its notification channels (tenant admins only).

Viewers and editors get 403: a channel's addresses and URLs (a Slack URL holds a token) are
for admins. The work is in :mod:`capi_destinations.alerts`.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from capi_destinations import access, alerts
from capi_destinations.forms import ChannelForm
from capi_destinations.models import Role
from capi_destinations.views.common import notify
from capi_destinations.views.destination import describe_audit_detail


def _alerts_page(
    request: HttpRequest,
    tenant_access: access.TenantAccess,
    form: ChannelForm,
    *,
    new_secret: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "capi_destinations/alerts.html",
        {
            "access": tenant_access,
            "tenant": tenant_access.tenant,
            "rows": alerts.channel_rows(tenant_access.tenant),
            "history": [
                (entry, describe_audit_detail(entry.detail))
                for entry in alerts.channel_history(tenant_access.tenant)
            ],
            "form": form,
            "new_secret": new_secret,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def alert_channels(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """List the tenant's channels; a POST adds one (its signing secret is shown this once)."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    form = ChannelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            channel, secret = alerts.create_channel(
                tenant_access.tenant, actor=request.user, **form.values()
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            notify(request, messages.SUCCESS, f"Channel “{channel.name}” added.")
            if not secret:
                return redirect("capi_destinations:alert_channels", tenant_slug=tenant_slug)
            return _alerts_page(request, tenant_access, ChannelForm(), new_secret=secret)
    status = 400 if request.method == "POST" else 200
    return _alerts_page(request, tenant_access, form, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def alert_channel_edit(request: HttpRequest, tenant_slug: str, channel: str) -> HttpResponse:
    """Edit a channel (its secret is never shown again)."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    found = alerts.channel_of(tenant_access.tenant, channel)
    form = ChannelForm(request.POST or None, instance=found)
    if request.method == "POST" and form.is_valid():
        try:
            secret = alerts.update_channel(found, actor=request.user, **form.values())
        except ValidationError as error:
            form.add_error(None, error)
        else:
            notify(request, messages.SUCCESS, f"Channel “{found.name}” saved.")
            if secret:
                return _alerts_page(request, tenant_access, ChannelForm(), new_secret=secret)
            return redirect("capi_destinations:alert_channels", tenant_slug=tenant_slug)
    return render(
        request,
        "capi_destinations/alert_channel_form.html",
        {"tenant": tenant_access.tenant, "channel": found, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@login_required
@require_POST
def alert_channel_delete(request: HttpRequest, tenant_slug: str, channel: str) -> HttpResponse:
    """Delete a channel with the alerts waiting for it."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    found = alerts.channel_of(tenant_access.tenant, channel)
    alerts.delete_channel(found, actor=request.user)
    notify(request, messages.SUCCESS, f"Channel “{found.name}” deleted.")
    return redirect("capi_destinations:alert_channels", tenant_slug=tenant_slug)


@login_required
@require_POST
def alert_channel_secret(request: HttpRequest, tenant_slug: str, channel: str) -> HttpResponse:
    """Give a webhook a new signing secret, shown this once (the old one stops working)."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    found = alerts.channel_of(tenant_access.tenant, channel)
    try:
        secret = alerts.new_signing_secret(found, actor=request.user)
    except ValidationError as error:
        notify(request, messages.ERROR, " ".join(error.messages))
        return redirect("capi_destinations:alert_channels", tenant_slug=tenant_slug)
    return _alerts_page(request, tenant_access, ChannelForm(), new_secret=secret)


@login_required
@require_POST
def alert_channel_test(request: HttpRequest, tenant_slug: str, channel: str) -> HttpResponse:
    """Send a test alert now; the fragment shows the receiver's answer (htmx) or the page does."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.ADMIN)
    found = alerts.channel_of(tenant_access.tenant, channel)
    attempt = alerts.send_test_alert(found)
    return render(
        request,
        "capi_destinations/_alert_test_result.html",
        {"attempt": attempt, "channel": found, "tenant": tenant_access.tenant},
    )
