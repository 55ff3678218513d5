"""The destination page, its self-refreshing cards and its buttons."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from capi_destinations import access, destinations, health, match_quality, reports
from capi_destinations.access import TenantAccess
from capi_destinations.models import Destination, Event, Role
from capi_destinations.views.charts import match_quality_sparkline, stacked_hourly_chart
from capi_destinations.views.common import (
    CHECKED_EVENT,
    back_to_destination,
    ingest_context,
    is_htmx,
    notify,
    with_changed_trigger,
)
from capi_destinations.views.events import event_log_context

AUDIT_ENTRIES_SHOWN = 20

# The health checks' names (health.py) as the card shows them.
CHECK_TITLES = {
    health.SENDING_ENABLED: "Sending enabled",
    health.TOKEN_FORMAT: "Token format",
    health.META_ACCEPTS_TOKEN: "Meta accepts the token",
    health.DELIVERIES_ACCEPTED: "Deliveries accepted",
    health.DELIVERY_FAILURE_RATE: "Delivery failure rate",
    health.QUEUE_MOVING: "Queue moving",
    health.TRAFFIC_FLOWING: "Traffic flowing",
    health.GRAPH_API_VERSION: "Graph API version",
    health.TEST_MODE: "Test mode",
    health.MATCH_QUALITY: "Match quality",
}


def check_rows(checks: Any) -> list[dict[str, Any]]:
    """The stored check results with a readable title each (unknown names made readable)."""
    rows = []
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, dict):
            continue
        name = str(check.get("name", ""))
        rows.append({**check, "title": CHECK_TITLES.get(name, name.replace("_", " ").capitalize())})
    return rows


def describe_audit_detail(detail: Any) -> str:
    """An audit entry's detail in one line (it never holds a token, only hints)."""
    if not isinstance(detail, dict):
        return ""
    parts = []
    for key, value in detail.items():
        if isinstance(value, list | tuple):
            value = ", ".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return " · ".join(parts)


def health_card_context(destination: Destination, tenant_access: TenantAccess) -> dict[str, Any]:
    """What the health card shows: the latest check's rows, with message and fix each."""
    latest = destination.health_checks.first()
    return {
        "destination": destination,
        "access": tenant_access,
        "latest_check": latest,
        "checks": check_rows(latest.checks) if latest else [],
        "first_problem": reports.first_problem(destination),
        "notes": reports.notes(destination),
    }


def delivery_card_context(destination: Destination) -> dict[str, Any]:
    """The 24-hour chart, its totals and the recent attempts."""
    hours = reports.hourly_counts(destination)
    return {
        "destination": destination,
        "chart": stacked_hourly_chart(hours),
        "totals": {
            "delivered": sum(hour.delivered for hour in hours),
            "failed": sum(hour.failed for hour in hours),
            "rejected": sum(hour.rejected for hour in hours),
            "pending": sum(hour.pending for hour in hours),
        },
        "attempts": reports.recent_attempts(destination),
        "waiting": reports.waiting_text(
            destination, reports.waiting_counts([destination.pk]).get(destination.pk, 0)
        ),
    }


@login_required
@require_GET
def destination_detail(request: HttpRequest, code: str) -> HttpResponse:
    """Everything about one destination: health, deliveries, events, diagnostics, setup, audit."""
    destination, tenant_access = access.destination_access(request.user, code)
    context: dict[str, Any] = {
        "destination": destination,
        "access": tenant_access,
        **health_card_context(destination, tenant_access),
        **delivery_card_context(destination),
        **event_log_context(request, destination),
        **ingest_context(destination, request),
        "refused_calls": reports.refused_calls(destination),
        "summary": reports.diagnostics_summary(destination),
        "match_quality": match_quality_sparkline(reports.hourly_match_quality(destination)),
        "meta_quality": match_quality.match_quality_panel(destination),
        "audit_entries": [
            (entry, describe_audit_detail(entry.detail))
            for entry in destination.audit_entries.select_related("actor")[:AUDIT_ENTRIES_SHOWN]
        ],
    }
    return render(request, "capi_destinations/destination.html", context)


@login_required
@require_GET
def health_card(request: HttpRequest, code: str) -> HttpResponse:
    """The health card alone (polled every 30 s; every 2 s while a change's check is pending,
    with ``after_check``: the answer that ends the wait also refreshes the deliveries)."""
    destination, tenant_access = access.destination_access(request.user, code)
    response = render(
        request,
        "capi_destinations/_health_card.html",
        health_card_context(destination, tenant_access),
    )
    if request.GET.get("after_check") and not destination.health_check_pending:
        response["HX-Trigger"] = CHECKED_EVENT
    return response


@login_required
@require_GET
def delivery_card(request: HttpRequest, code: str) -> HttpResponse:
    """The 24-hour chart and recent attempts alone (polled every 30 s)."""
    destination, _ = access.destination_access(request.user, code)
    return render(
        request, "capi_destinations/_delivery_card.html", delivery_card_context(destination)
    )


@login_required
@require_POST
def check_now(request: HttpRequest, code: str) -> HttpResponse:
    """Run the health checks at once and show the result."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    health.check_destination(destination)
    destination.refresh_from_db()
    if not is_htmx(request):
        notify(request, messages.INFO, f"Checked: {destination.get_health_display()}.")
        return back_to_destination(destination)
    return with_changed_trigger(
        render(
            request,
            "capi_destinations/_health_card.html",
            health_card_context(destination, tenant_access),
        )
    )


# The token is decrypted below this frame to send the event.
@sensitive_variables()
@login_required
@require_POST
def send_test_event(request: HttpRequest, code: str) -> HttpResponse:
    """Send a synthetic event with the test code and show Meta's answer inline."""
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    try:
        result = destinations.send_test_event(
            destination,
            actor=request.user,
            test_event_code=request.POST.get("test_event_code", ""),
        )
    except ValidationError as refused:
        # No test code (or not one Events Manager shows): nothing was sent; say where to copy it.
        if not is_htmx(request):
            notify(request, messages.ERROR, refused.messages[0])
            return back_to_destination(destination)
        return render(
            request,
            "capi_destinations/_action_result.html",
            {"ok": False, "text": refused.messages[0], "testid": "test-event-code-needed"},
        )
    if not is_htmx(request):
        level = messages.SUCCESS if result.ok else messages.ERROR
        notify(request, level, result.message)
        return back_to_destination(destination)
    return render(request, "capi_destinations/_test_event_result.html", {"result": result})


@login_required
@require_POST
def redeliver(request: HttpRequest, code: str) -> HttpResponse:
    """Put failed and expired events (all, or the one named) back in the queue.

    Events Meta refused for their data, unchanged since, would be refused again: unless the
    request confirms (``confirm=1``), nothing is redelivered and the answer says so, with Meta's
    reason and what to fix, and offers **Redeliver anyway**.
    """
    destination, _ = access.destination_access(request.user, code, needed=Role.EDITOR)
    event_ids = None
    named = {"event_name": request.POST.get("event_name", ""), "event_id": ""}
    if request.POST.get("event_id"):
        named["event_id"] = request.POST["event_id"]
        event_ids = list(
            Event.objects.filter(destination=destination, **named).values_list("pk", flat=True)
        )
    if request.POST.get("confirm") != "1":
        refused = destinations.refused_for_their_data(destination, event_ids=event_ids)
        if refused.count:
            context = {"destination": destination, "refused": refused, "named": named}
            template = "_redeliver_warning.html" if is_htmx(request) else "redeliver_confirm.html"
            return render(request, f"capi_destinations/{template}", context)
    count = destinations.redeliver_failed(destination, actor=request.user, event_ids=event_ids)
    text = (
        f"{count} event{'s' if count != 1 else ''} put back in the queue."
        if count
        else "No failed events inside Meta's window (7 days; 62 for store events) to redeliver."
    )
    if not is_htmx(request):
        notify(request, messages.SUCCESS if count else messages.INFO, text)
        return back_to_destination(destination)
    return with_changed_trigger(
        render(
            request,
            "capi_destinations/_action_result.html",
            {"ok": bool(count), "text": text, "testid": "redeliver-result"},
        )
    )


@login_required
@require_POST
def set_enabled(request: HttpRequest, code: str) -> HttpResponse:
    """Turn sending via the Conversions API on or off."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    enabled = request.POST.get("enabled") in ("1", "true", "on")
    destinations.set_enabled(destination, enabled, actor=request.user)
    destination.refresh_from_db()
    if not is_htmx(request):
        notify(
            request,
            messages.SUCCESS,
            "Sending is on." if enabled else "Sending is off; events are still recorded.",
        )
        return back_to_destination(destination)
    return with_changed_trigger(
        render(
            request,
            "capi_destinations/_controls.html",
            {"destination": destination, "access": tenant_access},
        )
    )


# The new ingest secret is in this frame and in the template context rendered below it.
@sensitive_variables()
@login_required
@require_POST
def regenerate_keys(request: HttpRequest, code: str) -> HttpResponse:
    """New ingest key and secret; the secret is shown this once."""
    destination, tenant_access = access.destination_access(request.user, code, needed=Role.EDITOR)
    secret = destinations.regenerate_ingest_keys(destination, actor=request.user)
    context = {
        "destination": destination,
        "access": tenant_access,
        "ingest_secret": secret,
        **ingest_context(destination, request),
    }
    # Not a redirect: the secret must be shown now and is stored nowhere to show it later.
    template = (
        "capi_destinations/_ingest.html"
        if is_htmx(request)
        else "capi_destinations/keys_regenerated.html"
    )
    return render(request, template, context)
