"""Helpers shared by the page views: htmx detection, messages, the destination's URLs."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from capi_destinations.models import Destination

# Sent with an htmx answer after a change, so the destination page's cards refresh at once.
CHANGED_EVENT = "capi:destination-changed"


def is_htmx(request: HttpRequest) -> bool:
    """Whether the request came from htmx (django-htmx's middleware sets ``request.htmx``)."""
    return bool(getattr(request, "htmx", False))


def notify(request: HttpRequest, level: int, text: str) -> None:
    """A flash message, if the host site has the messages framework (it is optional)."""
    messages.add_message(request, level, text, fail_silently=True)


def destination_url(destination: Destination, name: str = "destination") -> str:
    """The URL of one of a destination's pages, by its public code."""
    return reverse(f"capi_destinations:{name}", kwargs={"code": destination.code})


def back_to_destination(destination: Destination) -> HttpResponse:
    """Redirect a plain (non-htmx) form post back to the destination page."""
    return redirect(destination_url(destination))


def with_changed_trigger(response: HttpResponse) -> HttpResponse:
    """Tell htmx that the destination changed: cards listening for it reload."""
    response["HX-Trigger"] = CHANGED_EVENT
    return response


def query_string_without(request: HttpRequest, *names: str) -> str:
    """The current query string minus ``names`` (for pagination links that keep filters)."""
    query: Any = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()
