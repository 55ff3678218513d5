"""Helpers shared by the page views: htmx detection, messages, the destination's URLs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect

from capi_destinations import exports
from capi_destinations.models import Destination

# Sent with an htmx answer after a change, so the destination page's cards refresh at once.
CHANGED_EVENT = "capi:destination-changed"
# Sent with the health card that shows the verdict of the check a change asked for: the
# deliveries beside it refresh too (the events that change released were sent meanwhile).
CHECKED_EVENT = "capi:health-checked"


def is_htmx(request: HttpRequest) -> bool:
    """Whether the request came from htmx (django-htmx's middleware sets ``request.htmx``)."""
    return bool(getattr(request, "htmx", False))


def wants_fragment(request: HttpRequest) -> bool:
    """Whether to answer with a fragment: an htmx request, but not htmx restoring a page of its
    history it no longer holds (that one needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request  # type: ignore[union-attr]


def notify(request: HttpRequest, level: int, text: str) -> None:
    """A flash message, if the host site has the messages framework (it is optional)."""
    messages.add_message(request, level, text, fail_silently=True)


def destination_url(destination: Destination, name: str = "destination") -> str:
    """The URL of one of a destination's pages, by its public code."""
    return reverse(f"capi_destinations:{name}", kwargs={"code": destination.code})


def back_to_destination(
    destination: Destination, request: HttpRequest | None = None
) -> HttpResponse:
    """Redirect a form post back to the destination page.

    Given the ``request`` of a form posted through htmx (``hx-boost``), the browser is told to
    load the page itself (``HX-Redirect``), as after a plain post.
    """
    if request is not None and is_htmx(request):
        return HttpResponseClientRedirect(destination_url(destination))
    return redirect(destination_url(destination))


def keep_address(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a form ``view`` so that htmx adds no history entry for its answers.

    The setup forms post through ``hx-boost``, which pushes the address for every answer (even
    under ``hx-push-url="false"``): with ``HX-Push-Url: false`` a form that comes back with an
    error, or the page shown once after a save, keeps the address it was posted to, as after a
    plain post.
    """

    @wraps(view)
    def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.setdefault("HX-Push-Url", "false")
        return response

    return answer


def with_changed_trigger(response: HttpResponse) -> HttpResponse:
    """Tell htmx that the destination changed: cards listening for it reload."""
    response["HX-Trigger"] = CHANGED_EVENT
    return response


def vary_on_htmx(response: HttpResponse) -> HttpResponse:
    """Mark a response that is a fragment for htmx and a whole page otherwise, so a browser's
    cache never serves the fragment for the page's own address (htmx pushes it to the history)."""
    patch_vary_headers(response, ("HX-Request",))
    return response


def csv_response(rows: Iterable[Sequence[Any]], filename: str) -> StreamingHttpResponse:
    """``rows`` (the header first) streamed as a CSV download named ``filename``."""
    response = StreamingHttpResponse(
        exports.csv_lines(rows), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def query_string_without(request: HttpRequest, *names: str) -> str:
    """The current query string minus ``names`` (for pagination links that keep filters)."""
    query: Any = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


_FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def refuse_nul_characters(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., HttpResponseBase]:
    """Wrap ``view`` so that a NUL character in the URL, the query or the form never reaches it.

    No database stores NUL in text, and PostgreSQL refuses a query that carries one with an
    error (a 500, mailed to the admins, that any logged-in viewer could trigger at will). Every
    app URL is wrapped in ``urls.py``, so no view has to remember it: a NUL in a URL parameter
    names nothing (404), one in the query string or a form field is a bad request (400).
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if any(isinstance(value, str) and "\x00" in value for value in kwargs.values()):
            raise Http404("No such page.")
        if _has_nul(request.GET) or (
            request.content_type in _FORM_CONTENT_TYPES and _has_nul(request.POST)
        ):
            raise BadRequest("NUL characters are not allowed in the query or form fields.")
        return view(request, *args, **kwargs)

    return guarded


def _has_nul(query: QueryDict) -> bool:
    return any(
        "\x00" in key or any("\x00" in value for value in values) for key, values in query.lists()
    )


def ingest_context(destination: Destination, request: HttpRequest) -> dict[str, Any]:
    """The ingest endpoint's absolute URL for the curl example (when the endpoint is mounted)."""
    try:
        path = reverse(
            "capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}
        )
    except NoReverseMatch:
        path = ""
    return {"ingest_url": request.build_absolute_uri(path) if path else ""}
