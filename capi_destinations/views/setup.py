"""Setting a destination up: add, edit, replace the token, delete, check a token as typed."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from capi_destinations import access, destinations, reports
from capi_destinations.forms import (
    DestinationForm,
    ReplaceTokenForm,
    TokenCheckForm,
    token_needs_pasting_again,
)
from capi_destinations.models import Destination, Health, Role
from capi_destinations.views.common import (
    back_to_destination,
    destination_url,
    ingest_context,
    keep_address,
    notify,
)

# Django's error reports (mailed to ADMINS, shown with DEBUG) print a request's POST data: these
# fields never appear there, nor anywhere else a token must not be.
hide_secrets = sensitive_post_parameters("access_token", "app_secret")
# They also print the local variables of every frame: below these views, form validation and
# the Graph client hold the pasted or stored token under many names, so all of them are hidden.
hide_variables = sensitive_variables()


@hide_variables
@hide_secrets
@login_required
@require_http_methods(["GET", "POST"])
@keep_address
def destination_add(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """Add a destination to a tenant; on success show the ingest secret once."""
    tenant_access = access.tenant_access(request.user, tenant_slug, needed=Role.EDITOR)
    tenant = tenant_access.tenant
    form = DestinationForm(request.POST or None, tenant=tenant)
    refusal, unconfirmed = None, False
    if request.method == "POST" and form.is_valid():
        values = form.values()
        refusal, unconfirmed = meta_refusal(
            request,
            form,
            lambda: destinations.check_token(
                values["pixel_id"],
                values["access_token"],
                app_secret=values["app_secret"],
                api_version=values["api_version"],
            ),
        )
    if request.method == "POST" and form.is_valid() and not unconfirmed:
        try:
            destination, secret = destinations.create_destination(
                tenant, actor=request.user, **form.values()
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            warn_if_token_shared(request, destination)
            destination.refresh_from_db()  # the health check may have run at once
            return render(
                request,
                "capi_destinations/destination_created.html",
                {
                    "destination": destination,
                    "ingest_secret": secret,
                    "access": tenant_access,
                    # Saved although Meta refused it ("Save anyway"), or refused by the check
                    # that ran at once: say so, never "turns Healthy within minutes".
                    "refused_reason": (
                        refusal.message
                        if refusal is not None
                        else reports.first_reason(destination)
                        if destination.health == Health.UNHEALTHY
                        else ""
                    ),
                    **ingest_context(destination, request),
                },
            )
    return render(
        request,
        "capi_destinations/destination_form.html",
        {
            "form": form,
            "tenant": tenant,
            "check_url": reverse(
                "capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug}
            ),
            "cancel_url": reverse("capi_destinations:overview"),
            "check": refusal if unconfirmed else None,
            "token_repaste": token_needs_pasting_again(form),
        },
    )


@hide_variables
@hide_secrets
@login_required
@require_http_methods(["GET", "POST"])
@keep_address
def destination_edit(request: HttpRequest, code: str) -> HttpResponse:
    """Edit a destination; a blank token keeps the stored one."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    form = DestinationForm(
        request.POST or None,
        instance=destination,
        tenant=destination.tenant,
        editor=request.user,
    )
    refusal, unconfirmed = None, False
    if (
        request.method == "POST"
        and form.is_valid()
        and {"pixel_id", "access_token"} & set(form.changed_data)
    ):
        # A new Pixel ID or token is checked with Meta as on the add form.
        typed_token = (
            form.cleaned_data["access_token"] if "access_token" in form.changed_data else ""
        )
        refusal, unconfirmed = meta_refusal(
            request,
            form,
            lambda: destinations.check_destination_token(
                destination, pixel_id=form.cleaned_data["pixel_id"], token=typed_token
            ),
        )
    if request.method == "POST" and form.is_valid() and not unconfirmed:
        try:
            changed = destinations.update_destination(
                destination, actor=request.user, **form.changes()
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            notify(request, messages.SUCCESS, "Saved." if changed else "Nothing changed.")
            if "access_token" in changed:
                warn_if_token_shared(request, destination)
            return back_to_destination(destination, request)
    return render(
        request,
        "capi_destinations/destination_form.html",
        {
            "form": form,
            "tenant": destination.tenant,
            "destination": destination,
            "check_url": destination_url(destination, "destination_token_check"),
            "cancel_url": destination_url(destination),
            "check": refusal if unconfirmed else None,
            "token_repaste": token_needs_pasting_again(form),
        },
    )


@hide_variables
@hide_secrets
@login_required
@require_http_methods(["GET", "POST"])
@keep_address
def replace_token(request: HttpRequest, code: str) -> HttpResponse:
    """Paste a new token; the health check runs at once."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    form = ReplaceTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            destinations.update_destination(
                destination, actor=request.user, access_token=form.cleaned_data["access_token"]
            )
        except ValidationError as error:
            form.add_error("access_token", error)
        else:
            notify(request, messages.SUCCESS, "Token replaced. Meta is being asked about it now.")
            warn_if_token_shared(request, destination)
            return back_to_destination(destination, request)
    return render(
        request,
        "capi_destinations/replace_token.html",
        {
            "form": form,
            "destination": destination,
            "check_url": destination_url(destination, "destination_token_check"),
            "token_repaste": token_needs_pasting_again(form),
        },
    )


#: The checkbox, shown with Meta's refusal in the token check, that saves a refused pair anyway.
SAVE_REFUSED_FIELD = "save_refused"

REFUSED_NOT_SAVED = (
    "Not saved yet: Meta refused this Pixel ID and token (see below). Fix them, or tick "
    "“Save anyway”."
)


def meta_refusal(
    request: HttpRequest,
    form: DestinationForm,
    check: Callable[[], destinations.TokenCheck],
) -> tuple[destinations.TokenCheck | None, bool]:
    """Meta's refusal of the form's Pixel ID and token (``None`` if none), and whether it still
    needs the user's "Save anyway".

    A saved refused pair sends nothing (its card turns Unhealthy, its events wait), so it is
    saved only on purpose: unconfirmed, the refusal is added to the form as its error, and the
    token check box offers the checkbox. An outage, or a token that may not read the pixel (a
    send-only token, or a mistyped Pixel ID: Meta answers both alike), is no refusal.
    """
    result = check()
    if not result.refused:
        return None, False
    if request.POST.get(SAVE_REFUSED_FIELD):
        return result, False
    form.add_error(None, REFUSED_NOT_SAVED)
    return result, True


def warn_if_token_shared(request: HttpRequest, destination: Destination) -> None:
    """A non-blocking warning when the token just saved also serves other clients."""
    warning = destinations.shared_token_warning(destination)
    if warning:
        notify(request, messages.WARNING, warning)


@login_required
@require_http_methods(["GET", "POST"])
def destination_delete(request: HttpRequest, code: str) -> HttpResponse:
    """Confirm, then delete a destination with its events (the audit entry stays)."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    if request.method == "POST":
        name = str(destination)
        destinations.delete_destination(destination, actor=request.user)
        notify(request, messages.SUCCESS, f"Deleted {name}.")
        return redirect("capi_destinations:overview")
    return render(
        request,
        "capi_destinations/destination_confirm_delete.html",
        {"destination": destination, "event_count": destination.events.count()},
    )


def _render_token_check(
    request: HttpRequest, result: destinations.TokenCheck | None
) -> HttpResponse:
    # Only the destination form saves a refused pair on purpose ("Save anyway"); the replace
    # token page shows the refusal alone.
    offer = bool(request.POST.get("offer_save_anyway"))
    return render(
        request,
        "capi_destinations/_token_check.html",
        {"check": result, "offer_save_anyway": offer},
    )


@hide_variables
@hide_secrets
@login_required
@require_POST
def tenant_token_check(request: HttpRequest, tenant_slug: str) -> HttpResponse:
    """Check a Pixel ID and token typed into the add form (nothing is saved)."""
    access.tenant_access(request.user, tenant_slug, needed=Role.EDITOR)
    form = TokenCheckForm(request.POST)
    form.is_valid()
    pixel_id = form.cleaned_data.get("pixel_id", "")
    token = form.cleaned_data.get("access_token", "")
    if not token.strip():
        return _render_token_check(request, None)
    return _render_token_check(request, destinations.check_token(pixel_id, token))


@hide_variables
@hide_secrets
@login_required
@require_POST
def destination_token_check(request: HttpRequest, code: str) -> HttpResponse:
    """Check the edit form's Pixel ID and token; a blank token checks the stored one against
    the stored Pixel ID, never another."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    form = TokenCheckForm(request.POST)
    form.is_valid()
    token = form.cleaned_data.get("access_token", "")
    if not token.strip() and not destination.has_token:
        return _render_token_check(request, None)
    result = destinations.check_destination_token(
        destination, pixel_id=form.cleaned_data.get("pixel_id", ""), token=token
    )
    return _render_token_check(request, result)
