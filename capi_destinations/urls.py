"""The app's URLs. A host site mounts them under any prefix (the demo uses ``/capi/``).

Pages name a destination by its public UUID ``code`` and a tenant by its ``slug``, never by an
integer key. Every view goes through ``security.secure_view``: error reports that hide secrets
and customer data even with ``DEBUG`` on, and a Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, path

from capi_destinations.security import secure_view
from capi_destinations.views import alerts as alert_views
from capi_destinations.views import destination as destination_views
from capi_destinations.views import digest as digest_views
from capi_destinations.views import events as event_views
from capi_destinations.views import exclusions as exclusion_views
from capi_destinations.views import imports as import_views
from capi_destinations.views import ingest as ingest_views
from capi_destinations.views import invitations as invitation_views
from capi_destinations.views import members as member_views
from capi_destinations.views import overview as overview_views
from capi_destinations.views import setup as setup_views
from capi_destinations.views.common import refuse_nul_characters

app_name = "capi_destinations"


def _page(route: str, view: Callable[..., HttpResponseBase], name: str) -> URLPattern:
    """A page's URL pattern: ``secure_view`` around a view that refuses NUL characters first."""
    return path(route, secure_view(refuse_nul_characters(view)), name=name)


urlpatterns: list[URLPattern | URLResolver] = [
    # The ingest endpoint is not wrapped: it refuses any key but [A-Za-z0-9_-] itself (with its
    # own JSON 404), reads neither the query nor a form, and cleans NULs out of the JSON it reads.
    path(
        "v1/destinations/<str:ingest_key>/events",
        secure_view(ingest_views.ingest_events),
        name="ingest_events",
    ),
    # Pages.
    _page("", overview_views.overview, name="overview"),
    _page("digest/", digest_views.digest_settings, name="digest_settings"),
    # No login: the signed token names the person (see digest.unsubscribe_token).
    _page(
        "digest/unsubscribe/<str:signature>/",
        digest_views.digest_unsubscribe,
        name="digest_unsubscribe",
    ),
    _page("destinations.csv", overview_views.overview_csv, name="overview_csv"),
    _page("t/<slug:tenant_slug>/new/", setup_views.destination_add, name="destination_add"),
    _page(
        "t/<slug:tenant_slug>/check-token/",
        setup_views.tenant_token_check,
        name="tenant_token_check",
    ),
    _page("t/<slug:tenant_slug>/members/", member_views.members, name="members"),
    _page(
        "t/<slug:tenant_slug>/members/<str:username>/role/",
        member_views.member_role,
        name="member_role",
    ),
    _page(
        "t/<slug:tenant_slug>/members/<str:username>/remove/",
        member_views.member_remove,
        name="member_remove",
    ),
    _page(
        "t/<slug:tenant_slug>/exclusions/",
        exclusion_views.tenant_exclusions,
        name="tenant_exclusions",
    ),
    _page("t/<slug:tenant_slug>/alerts/", alert_views.alert_channels, name="alert_channels"),
    _page(
        "t/<slug:tenant_slug>/alerts/<uuid:channel>/edit/",
        alert_views.alert_channel_edit,
        name="alert_channel_edit",
    ),
    _page(
        "t/<slug:tenant_slug>/alerts/<uuid:channel>/delete/",
        alert_views.alert_channel_delete,
        name="alert_channel_delete",
    ),
    _page(
        "t/<slug:tenant_slug>/alerts/<uuid:channel>/secret/",
        alert_views.alert_channel_secret,
        name="alert_channel_secret",
    ),
    _page(
        "t/<slug:tenant_slug>/alerts/<uuid:channel>/test/",
        alert_views.alert_channel_test,
        name="alert_channel_test",
    ),
    _page("t/<slug:tenant_slug>/invitations/", member_views.invite, name="invite"),
    _page(
        "t/<slug:tenant_slug>/invitations/<uuid:invitation_code>/resend/",
        member_views.invitation_resend,
        name="invitation_resend",
    ),
    _page(
        "t/<slug:tenant_slug>/invitations/<uuid:invitation_code>/revoke/",
        member_views.invitation_revoke,
        name="invitation_revoke",
    ),
    # The invited person's pages, open without a login: the link's secret is the credential.
    _page(
        "invitation/<uuid:invitation_code>/<str:token>/",
        invitation_views.invitation_link,
        name="invitation_link",
    ),
    _page("invitation/<uuid:invitation_code>/", invitation_views.invitation, name="invitation"),
    _page("d/<uuid:code>/", destination_views.destination_detail, name="destination"),
    _page("d/<uuid:code>/card/", overview_views.destination_card, name="destination_card"),
    _page("d/<uuid:code>/health/", destination_views.health_card, name="health_card"),
    _page("d/<uuid:code>/deliveries/", destination_views.delivery_card, name="delivery_card"),
    _page("d/<uuid:code>/check/", destination_views.check_now, name="check_now"),
    _page("d/<uuid:code>/test-event/", destination_views.send_test_event, name="send_test_event"),
    _page("d/<uuid:code>/redeliver/", destination_views.redeliver, name="redeliver"),
    _page("d/<uuid:code>/enabled/", destination_views.set_enabled, name="set_enabled"),
    _page("d/<uuid:code>/keys/", destination_views.regenerate_keys, name="regenerate_keys"),
    _page("d/<uuid:code>/edit/", setup_views.destination_edit, name="destination_edit"),
    _page("d/<uuid:code>/token/", setup_views.replace_token, name="replace_token"),
    _page(
        "d/<uuid:code>/check-token/",
        setup_views.destination_token_check,
        name="destination_token_check",
    ),
    _page("d/<uuid:code>/delete/", setup_views.destination_delete, name="destination_delete"),
    _page("d/<uuid:code>/import/", import_views.import_upload, name="import_upload"),
    _page("d/<uuid:code>/import/<uuid:run>/", import_views.import_run, name="import_run"),
    _page(
        "d/<uuid:code>/import/<uuid:run>/preview/",
        import_views.import_preview,
        name="import_preview",
    ),
    _page(
        "d/<uuid:code>/import/<uuid:run>/progress/",
        import_views.import_progress,
        name="import_progress",
    ),
    _page(
        "d/<uuid:code>/import/<uuid:run>/rejected.csv",
        import_views.import_rejected_csv,
        name="import_rejected_csv",
    ),
    _page("d/<uuid:code>/events/", event_views.event_log, name="event_log"),
    _page("d/<uuid:code>/events.csv", event_views.event_log_csv, name="event_log_csv"),
    _page("d/<uuid:code>/attempts.csv", event_views.attempts_csv, name="attempts_csv"),
    # The old address of an event (its natural key in the query string) redirects to its own.
    _page("d/<uuid:code>/events/detail/", event_views.event_detail_by_key, name="event_detail"),
    _page("d/<uuid:code>/events/<int:event_pk>/", event_views.event_detail, name="event"),
]
