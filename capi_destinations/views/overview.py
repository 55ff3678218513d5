"""The overview: every destination the user may see, as cards, unhealthy first."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from capi_destinations import access, exports, reports
from capi_destinations.forms import OverviewFilterForm
from capi_destinations.models import Role
from capi_destinations.views.common import (
    csv_response,
    is_htmx,
    query_string_without,
    vary_on_htmx,
)

# The id of the card grid: the element htmx polls and swaps.
CARD_GRID_ID = "capi-cards"
# Cards per page: a screenful or two on a laptop, and a fixed render time with hundreds.
CARDS_PER_PAGE = 30


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """All visible destinations as cards; the grid alone when htmx polls or filters it."""
    user = request.user
    tenants = list(access.tenants_for(user).order_by("name"))
    form = OverviewFilterForm(request.GET, tenants=tenants)
    filters = form.filters()
    overview = reports.overview_page(
        user,
        page_number=request.GET.get("page"),
        per_page=CARDS_PER_PAGE,
        tenant_slug=filters["tenant_slug"],
        status=filters["status"],
        search=filters["search"],
        sort=filters["sort"],
    )
    filter_query = query_string_without(request, "page")
    roles = access.roles_by_tenant(user)
    context: dict[str, Any] = {
        "cards": overview.cards,
        "overview": overview,
        "filter_form": form,
        "filter_query": filter_query,
        "grid_id": CARD_GRID_ID,
        "health_totals": overview.health_totals,
        # The cards link a fix to its control where the user may use it.
        "editable_tenant_ids": {
            tenant.pk
            for tenant in tenants
            if user.is_superuser or access.role_allows(roles.get(tenant.pk), Role.EDITOR)
        },
    }
    if is_htmx(request) and request.htmx.target == CARD_GRID_ID:  # type: ignore[attr-defined]
        return vary_on_htmx(render(request, "capi_destinations/_card_grid.html", context))
    context["tenant_rows"] = [
        {
            "tenant": tenant,
            "role": Role.ADMIN if user.is_superuser else roles.get(tenant.pk, Role.VIEWER),
            "can_edit": user.is_superuser or access.role_allows(roles.get(tenant.pk), Role.EDITOR),
        }
        for tenant in tenants
    ]
    context["can_add"] = any(row["can_edit"] for row in context["tenant_rows"])
    return vary_on_htmx(render(request, "capi_destinations/overview.html", context))


@login_required
@require_GET
def overview_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every destination the overview shows with the same filters (all pages), as CSV."""
    tenants = list(access.tenants_for(request.user))
    form = OverviewFilterForm(request.GET, tenants=tenants)
    filters = form.filters()
    cards = reports.overview_cards(
        request.user,
        tenant_slug=filters["tenant_slug"],
        status=filters["status"],
        search=filters["search"],
        sort=filters["sort"],
    )
    return csv_response(exports.overview_rows(cards), "destinations.csv")


@login_required
@require_GET
def destination_card(request: HttpRequest, code: str) -> HttpResponse:
    """One overview card, for its own htmx refresh."""
    destination, tenant_access = access.destination_access(request.user, code)
    card = reports.single_card(destination)
    editable = {destination.tenant_id} if tenant_access.can_edit else set()
    return render(
        request,
        "capi_destinations/_destination_cards.html",
        {"cards": [card], "editable_tenant_ids": editable},
    )
