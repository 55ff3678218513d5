"""Tenant isolation, proven by walking every URL the app registers.

The routes come from Django's URL resolver, not from a list kept by hand: a view added later is
walked too, and a route with a URL parameter this file cannot fill fails the test until someone
teaches it here (``ROUTE_VALUES``). Each route is requested with GET and POST as:

- an anonymous visitor → sent to the login page (the ingest endpoint is the one public route:
  it answers with its own 401/403 instead);
- a member of another tenant, in each role → 404 for every URL naming this tenant's objects;
- a viewer of the right tenant → may read, but every POST is refused and changes nothing.

The admin pages of the app's models are walked the same way for a staff member of another tenant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from capi_destinations import clock, digest, invitations
from capi_destinations.models import (
    AlertDelivery,
    AttemptOutcome,
    AuditAction,
    AuditEntry,
    DeliveryAttempt,
    Destination,
    Event,
    Health,
    HealthCheck,
    ImportRun,
    Invitation,
    Membership,
    NotificationChannel,
    Role,
    Tenant,
)
from tests.conftest import make_token

APP_NAMESPACE = "capi_destinations"

# Routes reachable without a login, and why; everything else must send a visitor to log in.
PUBLIC_ROUTES = {
    "ingest_events": "authenticated by the destination's ingest key and secret or origin",
    "digest_unsubscribe": "authenticated by its signature, which names the person (one click)",
    "invitation_link": "the invitation's secret is the credential; it joins only its tenant",
    "invitation": "reads the invitation's secret from the session the link started",
}

# Read pages a viewer must be able to open (200), so a view that wrongly demands an editor
# role cannot pass by refusing everyone.
VIEWER_READABLE_ROUTES = {
    "overview",
    "destination",
    "destination_card",
    "health_card",
    "delivery_card",
    "event_log",
    "event_detail",
    "event_log_csv",
    "attempts_csv",
    "event",
    "overview_csv",
    "members",
    "tenant_exclusions",
}

# Routes about the signed-in person only (they name no tenant): any member may change their own.
PERSONAL_ROUTES = {
    "digest_settings": "the person's own daily-digest choice",
}

ROLES = (Role.VIEWER, Role.EDITOR, Role.ADMIN)


@dataclass(frozen=True)
class Route:
    """One URL pattern of the app: its name and the parameter names it takes."""

    name: str
    parameters: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{APP_NAMESPACE}:{self.name}"


def _parameters_of(pattern: URLPattern | URLResolver) -> tuple[str, ...]:
    converters = getattr(pattern.pattern, "converters", None)
    if converters:
        return tuple(converters)
    return tuple(pattern.pattern.regex.groupindex)


def _walk(
    patterns: list[URLPattern | URLResolver], inherited: tuple[str, ...]
) -> Iterator[tuple[URLPattern, tuple[str, ...]]]:
    for pattern in patterns:
        parameters = inherited + _parameters_of(pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, parameters)
        else:
            yield pattern, parameters


def app_routes() -> list[Route]:
    """Every named route under the app's namespace, read from the project's URL resolver."""
    _, resolver = get_resolver().namespace_dict[APP_NAMESPACE]
    routes = []
    for pattern, parameters in _walk(resolver.url_patterns, ()):
        assert pattern.name, f"every app URL needs a name: {pattern.pattern}"
        routes.append(Route(pattern.name, parameters))
    return routes


def admin_routes() -> list[tuple[str, tuple[str, ...]]]:
    """The admin's URL names (and parameters) for the app's models."""
    _, resolver = get_resolver().namespace_dict["admin"]
    return [
        (pattern.name, parameters)
        for pattern, parameters in _walk(resolver.url_patterns, ())
        if pattern.name and pattern.name.startswith(f"{APP_NAMESPACE}_")
    ]


ROUTES = app_routes()
PRIVATE_ROUTES = [route for route in ROUTES if route.name not in PUBLIC_ROUTES]
# Routes that name one tenant's objects; the overview names none and is tested on its own.
SCOPED_ROUTES = [route for route in PRIVATE_ROUTES if route.parameters]


@dataclass
class World:
    """Two tenants with a destination each, every kind of record, and users in every role."""

    tenant: Tenant
    destination: Destination
    event: Event
    attempt: DeliveryAttempt
    check: HealthCheck
    audit_entry: AuditEntry
    viewer: Any
    editor: Any
    admin: Any
    outsiders: dict[str, Any]
    other_destination: Destination
    channel: NotificationChannel
    invitation: Invitation
    invitation_token: str
    import_run: ImportRun


# How each URL parameter is filled for the target tenant. A new parameter name fails
# test_every_route_parameter_can_be_filled until it is added here.
ROUTE_VALUES: dict[str, Callable[[World], str]] = {
    "tenant_slug": lambda world: world.tenant.slug,
    "code": lambda world: str(world.destination.code),
    "username": lambda world: world.editor.get_username(),
    "ingest_key": lambda world: world.destination.ingest_key,
    "channel": lambda world: str(world.channel.code),
    "invitation_code": lambda world: str(world.invitation.code),
    "token": lambda world: world.invitation_token,
    "event_pk": lambda world: str(world.event.pk),
    "run": lambda world: str(world.import_run.code),
    "signature": lambda world: digest.unsubscribe_token(world.viewer),
}


def url_for(route: Route, world: World) -> str:
    """The route's URL for the target tenant's objects, with the query an event page needs."""
    kwargs = {name: ROUTE_VALUES[name](world) for name in route.parameters}
    url = reverse(route.qualified_name, kwargs=kwargs)
    # event_detail names its event in the query string; the others ignore these.
    return f"{url}?event_name={world.event.event_name}&event_id={world.event.event_id}"


def post_data(world: World) -> dict[str, str]:
    """Form fields that would make each POST do its work if the user were allowed to."""
    return {
        "name": "Taken over",
        "pixel_id": "1234567890123456",
        "access_token": make_token("attacker"),
        "enabled": "0",
        "consent_policy": "send_always",
        "missing_consent": "granted",
        "username": world.outsiders[Role.ADMIN].get_username(),
        "email": "attacker@example.com",
        "password1": "a long and unusual passphrase 42",
        "password2": "a long and unusual passphrase 42",
        "role": Role.ADMIN,
        "event_name": world.event.event_name,
        "event_id": world.event.event_id,
    }


@pytest.fixture
def world(
    make_tenant: Callable[..., Tenant],
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    tenant: Tenant,
    other_tenant: Tenant,
    use_sandbox: Any,
) -> World:
    destination = make_destination(name="Acme web pixel", allowed_origins="https://acme.test")
    destination.set_ingest_secret()
    destination.save()
    event = make_event(destination=destination, event_id="evt-isolation-1")
    event.status = "failed"
    event.status_reason = "Meta rejected this event"
    event.save()
    attempt = DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now(),
        event_count=1,
        http_status=400,
        outcome=AttemptOutcome.INVALID,
    )
    attempt.events.add(event)
    check = HealthCheck.objects.create(
        destination=destination,
        checked_at=clock.now() - timedelta(minutes=1),
        status=Health.HEALTHY,
        checks=[{"name": "meta_accepts_token", "ok": True, "message": "ok", "fix": ""}],
    )
    audit_entry = AuditEntry.objects.create(
        tenant=tenant,
        destination=destination,
        destination_label=str(destination),
        action=AuditAction.CREATED,
    )
    admin = make_user(tenant, Role.ADMIN)
    outsiders = {role: make_user(other_tenant, role) for role in ROLES}
    other_destination = make_destination(tenant=other_tenant, name="Globex pixel")
    invitation, invitation_token = invitations.invite(
        tenant, "invited@example.com", Role.ADMIN, actor=admin
    )
    return World(
        tenant=tenant,
        destination=destination,
        event=event,
        attempt=attempt,
        check=check,
        audit_entry=audit_entry,
        viewer=make_user(tenant, Role.VIEWER),
        editor=make_user(tenant, Role.EDITOR),
        admin=admin,
        outsiders=outsiders,
        other_destination=other_destination,
        # Saved as it is: its address would be refused by a save through the service.
        channel=NotificationChannel.objects.create(
            tenant=tenant,
            kind="webhook",
            name="Ops webhook",
            target="https://hooks.acme.test/capi",
            alert_kinds=["health"],
            signing_secret="whsec_isolation",
        ),
        invitation=invitation,
        invitation_token=invitation_token,
        import_run=ImportRun.objects.create(
            destination=destination, file_name="store.csv", mapping={"event_time": "Date"}
        ),
    )


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the app's tables and of the membership/user tables, to compare later."""
    tables = [
        model._meta.db_table for model in (Tenant, Membership, Destination, Event, Invitation)
    ]
    tables += [model._meta.db_table for model in (DeliveryAttempt, HealthCheck, AuditEntry)]
    tables += [model._meta.db_table for model in (NotificationChannel, AlertDelivery, ImportRun)]
    tables.append(settings.AUTH_USER_MODEL.replace(".", "_").lower())
    rows = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)} ORDER BY 1")  # noqa: S608
            rows[table] = [tuple(str(value) for value in row) for row in cursor.fetchall()]
    return rows


# --- the walk covers everything ---------------------------------------------------------------


def test_the_walk_finds_the_apps_pages() -> None:
    names = {route.name for route in ROUTES}
    # A sanity floor: if the resolver walk broke, these would silently vanish from every test.
    assert {"overview", "destination", "destination_add", "members", "ingest_events"} <= names
    assert len(SCOPED_ROUTES) >= 15


def test_every_route_parameter_can_be_filled() -> None:
    unknown = {
        route.name: [name for name in route.parameters if name not in ROUTE_VALUES]
        for route in ROUTES
    }
    unknown = {name: params for name, params in unknown.items() if params}
    assert not unknown, f"teach ROUTE_VALUES how to fill these URL parameters: {unknown}"


# --- anonymous --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("route", PRIVATE_ROUTES, ids=lambda route: route.name)
def test_anonymous_is_sent_to_login(world: World, route: Route, method: str) -> None:
    url = url_for(route, world)
    response = getattr(Client(), method)(url, post_data(world) if method == "post" else None)
    # require_GET/require_POST may answer a wrong method with 405 before the login check;
    # that reveals nothing. Everything else goes to the login page.
    if response.status_code == 405:
        return
    assert response.status_code == 302, (route.name, method, response.status_code)
    location = urlsplit(response["Location"])
    assert location.path == settings.LOGIN_URL
    assert "next=" in location.query


def test_anonymous_posts_change_nothing(world: World) -> None:
    before = snapshot()
    for route in PRIVATE_ROUTES:
        Client().post(url_for(route, world), post_data(world))
    assert snapshot() == before


def test_the_public_ingest_endpoint_needs_this_destinations_credentials(world: World) -> None:
    url = reverse(
        f"{APP_NAMESPACE}:ingest_events", kwargs={"ingest_key": world.destination.ingest_key}
    )
    event = {"event_name": "Purchase", "event_id": "evt-from-nowhere", "action_source": "website"}
    body = json.dumps(event)
    anonymous = Client().post(url, body, content_type="application/json")
    assert anonymous.status_code == 401
    # Another tenant's secret (its own destination's) opens nothing here.
    other_secret = world.other_destination.set_ingest_secret()
    world.other_destination.save()
    wrong = Client().post(
        url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {other_secret}"
    )
    assert wrong.status_code == 403
    foreign_origin = Client().post(
        url, body, content_type="application/json", HTTP_ORIGIN="https://globex.test"
    )
    assert foreign_origin.status_code == 403
    assert not Event.objects.filter(event_id="evt-from-nowhere").exists()


def test_the_invitation_pages_without_the_secret_change_nothing(world: World) -> None:
    page = reverse(
        f"{APP_NAMESPACE}:invitation", kwargs={"invitation_code": str(world.invitation.code)}
    )
    wrong_link = reverse(
        f"{APP_NAMESPACE}:invitation_link",
        kwargs={"invitation_code": str(world.invitation.code), "token": "x" * 43},
    )
    clients = [Client(), client_for(world.viewer), client_for(world.outsiders[Role.ADMIN])]
    before = snapshot()
    for client in clients:
        assert client.get(wrong_link).status_code == 404
        assert client.get(page).status_code == 404
        assert client.post(page, post_data(world)).status_code == 404
    assert snapshot() == before


@pytest.mark.parametrize("role", ROLES)
def test_another_tenants_member_with_the_link_is_not_let_in(world: World, role: str) -> None:
    # The invitation is for another address: the link shows who it is for and joins nobody.
    client = client_for(world.outsiders[role])
    link = url_for(next(route for route in ROUTES if route.name == "invitation_link"), world)
    before = snapshot()
    response = client.get(link, follow=True)
    assert response.status_code == 403
    assert client.post(response.wsgi_request.path, post_data(world)).status_code == 403
    assert snapshot() == before


# --- members of another tenant ----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", SCOPED_ROUTES, ids=lambda route: route.name)
def test_another_tenants_member_gets_404(world: World, route: Route, role: str) -> None:
    client = client_for(world.outsiders[role])
    url = url_for(route, world)
    for method in ("get", "post"):
        response = getattr(client, method)(url, post_data(world) if method == "post" else None)
        # 405 (wrong method) is answered before the lookup and tells nothing about the tenant.
        assert response.status_code in (404, 405), (route.name, role, method, response.status_code)
    htmx = client.post(url, post_data(world), HTTP_HX_REQUEST="true")
    assert htmx.status_code in (404, 405), (route.name, role, "htmx post")


@pytest.mark.parametrize("role", ROLES)
def test_another_tenants_member_changes_nothing(world: World, role: str) -> None:
    client = client_for(world.outsiders[role])
    before = snapshot()
    for route in SCOPED_ROUTES:
        client.post(url_for(route, world), post_data(world))
        client.post(url_for(route, world), post_data(world), HTTP_HX_REQUEST="true")
    assert snapshot() == before


@pytest.mark.parametrize("role", ROLES)
def test_the_overview_shows_another_tenants_member_nothing_of_this_tenant(
    world: World, role: str
) -> None:
    client = client_for(world.outsiders[role])
    for headers in ({}, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "capi-cards"}):
        response = client.get(reverse(f"{APP_NAMESPACE}:overview"), **headers)
        assert response.status_code == 200
        page = response.content.decode()
        assert str(world.destination.code) not in page
        assert world.destination.name not in page
        assert world.tenant.name not in page
        assert world.other_destination.name in page or headers


# --- a viewer of the right tenant -------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [route for route in PRIVATE_ROUTES if route.name not in PERSONAL_ROUTES],
    ids=lambda route: route.name,
)
def test_a_viewer_can_read_but_every_post_is_refused(world: World, route: Route) -> None:
    client = client_for(world.viewer)
    url = url_for(route, world)
    read = client.get(url)
    if route.name in VIEWER_READABLE_ROUTES:
        assert read.status_code == 200, (route.name, read.status_code)
    else:
        # A form that changes something is refused outright, or takes no GET at all.
        assert read.status_code in (200, 403, 405), (route.name, read.status_code)
    for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
        write = client.post(url, post_data(world), **headers)
        assert write.status_code in (403, 405), (route.name, headers, write.status_code)


def test_a_viewers_posts_change_nothing(world: World) -> None:
    client = client_for(world.viewer)
    before = snapshot()
    for route in PRIVATE_ROUTES:
        client.post(url_for(route, world), post_data(world))
        client.post(url_for(route, world), post_data(world), HTTP_HX_REQUEST="true")
    assert snapshot() == before


def test_viewers_and_editors_are_refused_the_alerts_pages(world: World) -> None:
    # A channel's URL may hold a token (Slack) and its addresses are the client's: admins only.
    clients = [client_for(user) for user in (world.viewer, world.editor)]
    before = snapshot()
    for client in clients:
        for name in ("alert_channels", "alert_channel_edit"):
            route = next(route for route in ROUTES if route.name == name)
            page = client.get(url_for(route, world))
            assert page.status_code == 403, (name, page.status_code)
            assert world.channel.target not in page.content.decode()
        for name in (
            "alert_channels",
            "alert_channel_edit",
            "alert_channel_delete",
            "alert_channel_secret",
            "alert_channel_test",
        ):
            route = next(route for route in ROUTES if route.name == name)
            assert client.post(url_for(route, world), post_data(world)).status_code == 403
    assert snapshot() == before


def test_an_editor_is_refused_the_member_pages_admin_actions(world: World) -> None:
    # The one place where the editor role is not enough: managing members.
    client = client_for(world.editor)
    before = snapshot()
    for name in ("members", "member_role", "member_remove", "invite"):
        route = next(route for route in ROUTES if route.name == name)
        assert client.post(url_for(route, world), post_data(world)).status_code == 403
    for name in ("invitation_resend", "invitation_revoke"):
        route = next(route for route in ROUTES if route.name == name)
        assert client.post(url_for(route, world), post_data(world)).status_code == 403
    assert snapshot() == before


# --- the admin --------------------------------------------------------------------------------


@pytest.fixture
def staff_outsider(world: World) -> Any:
    """A staff member of the other tenant with every permission on the app's models."""
    user = world.outsiders[Role.ADMIN]
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label=APP_NAMESPACE))
    return user


def _target_object(model_name: str, world: World) -> Any:
    objects = {
        "tenant": world.tenant,
        "membership": Membership.objects.get(user=world.viewer),
        "destination": world.destination,
        "event": world.event,
        "deliveryattempt": world.attempt,
        "healthcheck": world.check,
        "auditentry": world.audit_entry,
        "notificationchannel": world.channel,
        "importrun": world.import_run,
    }
    return objects[model_name]


def test_the_admin_walk_covers_every_model_of_the_app() -> None:
    names = {name for name, _ in admin_routes()}
    for model in (
        "tenant",
        "membership",
        "destination",
        "event",
        "deliveryattempt",
        "notificationchannel",
    ):
        assert f"{APP_NAMESPACE}_{model}_change" in names
    for model in ("healthcheck", "auditentry"):
        assert f"{APP_NAMESPACE}_{model}_history" in names


def test_the_admin_never_shows_another_tenants_objects(world: World, staff_outsider: Any) -> None:
    client = client_for(staff_outsider)
    admin_index = reverse("admin:index")
    before = snapshot()
    checked = 0
    for name, parameters in admin_routes():
        model_name = name.removeprefix(f"{APP_NAMESPACE}_").rsplit("_", 1)[0]
        target = _target_object(model_name, world)
        if "object_id" not in parameters:
            if name.endswith("_changelist"):
                page = client.get(reverse(f"admin:{name}")).content.decode()
                assert f"/{target.pk}/change/" not in page, name
            continue
        url = reverse(f"admin:{name}", kwargs={"object_id": str(target.pk)})
        for method in ("get", "post"):
            data = {"post": "yes", **post_data(world)} if method == "post" else None
            response = getattr(client, method)(url, data)
            # Django's admin answers an object outside the queryset by sending the user back
            # to the index ("doesn't exist"), never by showing or changing it; a POST to a
            # read-only model is refused (403) before any lookup, for every object alike.
            allowed = (302, 404) if method == "get" else (302, 403, 404)
            assert response.status_code in allowed, (name, method, response.status_code)
            if response.status_code == 302:
                assert urlsplit(response["Location"]).path == admin_index, (name, method)
            checked += 1
    assert checked >= 20
    assert snapshot() == before


# --- NUL characters ------------------------------------------------------------------------------
#
# PostgreSQL refuses a query carrying a NUL character with an error; before the guard in urls.py
# any viewer could turn that into a 500 (mailed to the admins) on the event detail, redeliver and
# member pages. Every route, each URL parameter, query parameter and form field in turn.

NUL = "\x00"
QUERY_PARAMETERS = ("event_name", "event_id", "page", "status", "q", "tenant", "since")


def url_with_nul_in(route: Route, world: World, parameter: str) -> str:
    """The route's URL with a NUL in ``parameter``'s value (percent-encoded, as a client sends)."""
    kwargs = {name: ROUTE_VALUES[name](world) for name in route.parameters}
    url = reverse(route.qualified_name, kwargs=kwargs)
    value = quote(kwargs[parameter])
    # Replace the parameter's own occurrence (a short number may also appear in the code).
    head, _, tail = url.rpartition(value) if parameter == "event_pk" else url.partition(value)
    assert url.count(value) == 1 or parameter == "event_pk", url
    return f"{head}{value[:3]}%00{value[3:]}{tail}"


@pytest.mark.parametrize(
    ("route", "parameter"),
    [(route, parameter) for route in ROUTES for parameter in route.parameters],
    ids=lambda value: value.name if isinstance(value, Route) else value,
)
def test_a_nul_in_a_url_parameter_is_a_404(world: World, route: Route, parameter: str) -> None:
    client = client_for(world.admin)
    url = url_with_nul_in(route, world, parameter)
    for method in ("get", "post"):
        response = getattr(client, method)(url, post_data(world) if method == "post" else None)
        if route.name == "ingest_events":
            # The ingest endpoint answers in JSON: a GET is refused before any lookup.
            expected = {"get": (405, "method_not_allowed"), "post": (404, "unknown_key")}[method]
            assert (response.status_code, response.json()["error"]["code"]) == expected
            continue
        assert response.status_code == 404, (method, url, response.status_code)


def test_the_ingest_endpoint_ignores_a_nul_in_its_query(world: World) -> None:
    # It reads no query: the events (NULs in their JSON are cleaned by ingest) are recorded.
    url = reverse(
        f"{APP_NAMESPACE}:ingest_events", kwargs={"ingest_key": ROUTE_VALUES["ingest_key"](world)}
    )
    response = Client().post(
        f"{url}?event_id=a%00b&x%00=1",
        json.dumps(
            {
                "event_name": "Lead\u0000",
                "event_id": "nul\u0000id",
                "user_data": {"em": "a@example.com"},
            }
        ),
        content_type="application/json",
        HTTP_ORIGIN="https://acme.test",
    )
    assert response.status_code == 202
    assert Event.objects.filter(event_id="nulid").exists()


@pytest.mark.parametrize("route", PRIVATE_ROUTES, ids=lambda route: route.name)
def test_a_nul_in_the_query_or_a_form_field_is_a_400(world: World, route: Route) -> None:
    client = client_for(world.admin)
    kwargs = {name: ROUTE_VALUES[name](world) for name in route.parameters}
    url = reverse(route.qualified_name, kwargs=kwargs)
    before = snapshot()
    for name in QUERY_PARAMETERS:
        for query in (f"{name}=a%00b", f"{name}%00=1"):
            response = client.get(f"{url}?{query}")
            assert response.status_code == 400, (url, query, response.status_code)
    for field, value in post_data(world).items():
        data = {**post_data(world), field: f"{value[:2]}{NUL}{value[2:]}"}
        for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
            response = client.post(url, data, **headers)
            assert response.status_code == 400, (url, field, response.status_code)
    assert snapshot() == before


ADMIN_QUERY_PARAMETERS = ("q", "o", "status__exact", "destination__id__exact", "tenant__slug", "p")


def test_the_admin_pages_refuse_a_nul_anywhere(world: World, staff_outsider: Any) -> None:
    # The admin's list filters put query values straight into a queryset (Event and
    # HealthCheck by status gave a 500 on PostgreSQL); its pages refuse NUL as the app's do.
    staff_outsider.is_superuser = True
    staff_outsider.save()
    client = client_for(staff_outsider)
    before = snapshot()
    for name, parameters in admin_routes():
        model_name = name.removeprefix(f"{APP_NAMESPACE}_").rsplit("_", 1)[0]
        kwargs = {"object_id": str(_target_object(model_name, world).pk)} if parameters else {}
        url = reverse(f"admin:{name}", kwargs=kwargs)
        for parameter in ADMIN_QUERY_PARAMETERS:
            response = client.get(f"{url}?{parameter}=a%00b")
            assert response.status_code == 400, (url, parameter, response.status_code)
        response = client.post(url, {**post_data(world), "name": f"a{NUL}b"})
        assert response.status_code == 400, (url, response.status_code)
        if parameters:
            nul_url = reverse(f"admin:{name}", kwargs={"object_id": f"1{NUL}"})
            assert client.get(nul_url).status_code == 404, nul_url
    assert snapshot() == before
