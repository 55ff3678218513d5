"""A destination's event log and one event's detail: payload, diagnostics, attempts."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET

from capi_destinations import access, reports
from capi_destinations.findings import Diagnostic, by_severity
from capi_destinations.forms import EventFilterForm
from capi_destinations.models import Destination, Event, EventStatus
from capi_destinations.views.common import is_htmx, query_string_without

EVENTS_PER_PAGE = 50
REDELIVERABLE = {EventStatus.FAILED, EventStatus.EXPIRED}


def event_log_context(request: HttpRequest, destination: Destination) -> dict[str, Any]:
    """One page of the filtered event log, and the filter form."""
    form = EventFilterForm(request.GET, event_names=reports.event_names(destination))
    events = reports.event_log(destination, **form.filters())
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return {
        "event_filter_form": form,
        "events_page": page,
        "event_filter_query": query_string_without(request, "page"),
    }


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
    template = "_event_log.html" if is_htmx(request) else "event_log.html"
    return render(request, f"capi_destinations/{template}", context)


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
def event_detail(request: HttpRequest, code: str) -> HttpResponse:
    """One event, named by its natural key (``?event_name=…&event_id=…``)."""
    destination, tenant_access = access.destination_access(request.user, code)
    event = Event.objects.filter(
        destination=destination,
        event_name=request.GET.get("event_name", ""),
        event_id=request.GET.get("event_id", ""),
    ).first()
    if event is None:
        raise Http404("No such event.")
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
    template = "_event_detail.html" if is_htmx(request) else "event_detail.html"
    return render(request, f"capi_destinations/{template}", context)
