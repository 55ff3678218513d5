"""A destination's event log and one event's detail: payload, diagnostics, attempts."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET

from capi_destinations import access, exports, reports
from capi_destinations.access import TenantAccess
from capi_destinations.findings import Diagnostic, by_severity
from capi_destinations.forms import EventFilterForm
from capi_destinations.models import Destination, Event, EventStatus
from capi_destinations.views.common import (
    csv_response,
    query_string_without,
    vary_on_htmx,
    wants_fragment,
)

EVENTS_PER_PAGE = 50
REDELIVERABLE = {EventStatus.FAILED, EventStatus.EXPIRED}


def event_log_context(request: HttpRequest, destination: Destination) -> dict[str, Any]:
    """One page of the filtered event log, and the filter form."""
    form, events = filtered_events(request, destination)
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return {
        "event_filter_form": form,
        "events_page": page,
        "event_filter_query": query_string_without(request, "page"),
        # The log's filters and page, carried by each event's link so that the shared address
        # opens the same page of the same log with the event open.
        "event_log_query": request.GET.urlencode(),
    }


def filtered_events(
    request: HttpRequest, destination: Destination
) -> tuple[EventFilterForm, QuerySet[Event]]:
    """The event-log filter form read from the query string, and the events it keeps."""
    form = EventFilterForm(request.GET, event_names=reports.event_names(destination))
    return form, reports.event_log(destination, **form.filters())


@login_required
@require_GET
def event_log(request: HttpRequest, code: str) -> HttpResponse:
    """The event log (the fragment for htmx filters and paging, else a page of its own)."""
    destination, tenant_access = access.destination_access(request.user, code)
    context = {
        "destination": destination,
        "access": tenant_access,
        **event_log_context(request, destination),
    }
    template = "_event_log.html" if wants_fragment(request) else "event_log.html"
    return vary_on_htmx(render(request, f"capi_destinations/{template}", context))


@login_required
@require_GET
def event_log_csv(request: HttpRequest, code: str) -> StreamingHttpResponse:
    """The events the log shows with the same filters (every page), as CSV, streamed."""
    destination, _ = access.destination_access(request.user, code)
    _, events = filtered_events(request, destination)
    return csv_response(exports.event_rows(events), f"events-{destination.pixel_id}.csv")


@login_required
@require_GET
def attempts_csv(request: HttpRequest, code: str) -> StreamingHttpResponse:
    """The delivery attempts of the events the log shows with the same filters, as CSV."""
    destination, _ = access.destination_access(request.user, code)
    _, events = filtered_events(request, destination)
    return csv_response(exports.attempt_rows(events), f"attempts-{destination.pixel_id}.csv")


def _diagnostics_of(event: Event) -> list[Diagnostic]:
    found = []
    for item in event.diagnostics or []:
        if isinstance(item, dict) and "code" in item:
            found.append(Diagnostic.from_dict(item))
    # Errors first: they are why an event was not sent.
    return by_severity(found)


# The event's payload (hashed customer data, IP address, user agent) is in this frame.
@sensitive_variables()
@login_required
@require_GET
def event_detail_by_key(request: HttpRequest, code: str) -> HttpResponse:
    """One event by its natural key (``?event_name=…&event_id=…``): the address events had
    before each had its own; links shared then keep working."""
    destination, tenant_access = access.destination_access(request.user, code)
    event = Event.objects.filter(
        destination=destination,
        event_name=request.GET.get("event_name", ""),
        event_id=request.GET.get("event_id", ""),
    ).first()
    if event is None:
        raise Http404("No such event.")
    return _event_response(request, destination, tenant_access, event)


# The event's payload (hashed customer data, IP address, user agent) is in this frame.
@sensitive_variables()
@login_required
@require_GET
def event_detail(request: HttpRequest, code: str, event_pk: int) -> HttpResponse:
    """One event at its own address: the detail alone for htmx (which pushes the address), else
    the event log (same filters and page, from the query string) with the event open."""
    destination, tenant_access = access.destination_access(request.user, code)
    event = Event.objects.filter(destination=destination, pk=event_pk).first()
    if event is None:
        raise Http404("No such event.")
    return _event_response(request, destination, tenant_access, event)


@sensitive_variables()
def _event_response(
    request: HttpRequest, destination: Destination, tenant_access: TenantAccess, event: Event
) -> HttpResponse:
    context = {
        "destination": destination,
        "access": tenant_access,
        "event": event,
        # The stored payload holds hashed customer data only; shown as Meta receives it.
        "payload_json": json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False),
        "event_diagnostics": _diagnostics_of(event),
        "event_attempts": event.delivery_history(limit=20),
        "can_redeliver": tenant_access.can_edit and event.status in REDELIVERABLE,
    }
    if wants_fragment(request):
        return vary_on_htmx(render(request, "capi_destinations/_event_detail.html", context))
    context.update(event_log_context(request, destination))
    return vary_on_htmx(render(request, "capi_destinations/event_detail.html", context))
