"""The daily digest's pages: a person's choice, and the one-click unsubscribe link."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from capi_destinations import digest
from capi_destinations.forms import DigestChoiceForm
from capi_destinations.views.common import notify


@login_required
@require_http_methods(["GET", "POST"])
def digest_settings(request: HttpRequest) -> HttpResponse:
    """Show and change which daily digest the signed-in person gets (their own choice only)."""
    form = DigestChoiceForm(
        request.POST or None, initial={"digest": digest.choice_of(request.user)}
    )
    if request.method == "POST" and form.is_valid():
        digest.set_choice(request.user, form.cleaned_data["digest"])
        notify(request, messages.SUCCESS, "Your daily digest choice was saved.")
        return redirect("capi_destinations:digest_settings")
    return render(request, "capi_destinations/digest_settings.html", {"form": form})


# The link in the email needs no login: its signature names the person. POST is RFC 8058's
# one-click unsubscribe (List-Unsubscribe-Post), sent by mail clients without a CSRF token.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def digest_unsubscribe(request: HttpRequest, signature: str) -> HttpResponse:
    """Stop the daily digest for the person the link was made for (one click, no login)."""
    user = digest.unsubscribe(signature)
    status = 200 if user is not None else 404
    return render(
        request,
        "capi_destinations/digest_unsubscribed.html",
        {"unsubscribed": user is not None},
        status=status,
    )
