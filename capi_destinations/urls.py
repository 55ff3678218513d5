"""The app's URLs. A host site mounts them under any prefix (the demo uses ``/capi/``).

Pages name a destination by its public UUID ``code`` and a tenant by its ``slug``, never by an
integer key. Every view goes through ``security.secure_view``: error reports that hide secrets
and customer data even with ``DEBUG`` on, and a Content-Security-Policy.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from capi_destinations.security import secure_view
from capi_destinations.views import destination as destination_views
from capi_destinations.views import events as event_views
from capi_destinations.views import ingest as ingest_views
from capi_destinations.views import members as member_views
from capi_destinations.views import overview as overview_views
from capi_destinations.views import setup as setup_views

app_name = "capi_destinations"

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "v1/destinations/<str:ingest_key>/events",
        secure_view(ingest_views.ingest_events),
        name="ingest_events",
    ),
    # Pages.
    path("", secure_view(overview_views.overview), name="overview"),
    path(
        "t/<slug:tenant_slug>/new/",
        secure_view(setup_views.destination_add),
        name="destination_add",
    ),
    path(
        "t/<slug:tenant_slug>/check-token/",
        secure_view(setup_views.tenant_token_check),
        name="tenant_token_check",
    ),
    path("t/<slug:tenant_slug>/members/", secure_view(member_views.members), name="members"),
    path(
        "t/<slug:tenant_slug>/members/<str:username>/role/",
        secure_view(member_views.member_role),
        name="member_role",
    ),
    path(
        "t/<slug:tenant_slug>/members/<str:username>/remove/",
        secure_view(member_views.member_remove),
        name="member_remove",
    ),
    path("d/<uuid:code>/", secure_view(destination_views.destination_detail), name="destination"),
    path(
        "d/<uuid:code>/card/", secure_view(overview_views.destination_card), name="destination_card"
    ),
    path("d/<uuid:code>/health/", secure_view(destination_views.health_card), name="health_card"),
    path(
        "d/<uuid:code>/deliveries/",
        secure_view(destination_views.delivery_card),
        name="delivery_card",
    ),
    path("d/<uuid:code>/check/", secure_view(destination_views.check_now), name="check_now"),
    path(
        "d/<uuid:code>/test-event/",
        secure_view(destination_views.send_test_event),
        name="send_test_event",
    ),
    path("d/<uuid:code>/redeliver/", secure_view(destination_views.redeliver), name="redeliver"),
    path("d/<uuid:code>/enabled/", secure_view(destination_views.set_enabled), name="set_enabled"),
    path(
        "d/<uuid:code>/keys/",
        secure_view(destination_views.regenerate_keys),
        name="regenerate_keys",
    ),
    path("d/<uuid:code>/edit/", secure_view(setup_views.destination_edit), name="destination_edit"),
    path("d/<uuid:code>/token/", secure_view(setup_views.replace_token), name="replace_token"),
    path(
        "d/<uuid:code>/check-token/",
        secure_view(setup_views.destination_token_check),
        name="destination_token_check",
    ),
    path(
        "d/<uuid:code>/delete/",
        secure_view(setup_views.destination_delete),
        name="destination_delete",
    ),
    path("d/<uuid:code>/events/", secure_view(event_views.event_log), name="event_log"),
    path(
        "d/<uuid:code>/events/detail/", secure_view(event_views.event_detail), name="event_detail"
    ),
]
