from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from capi_destinations import clock as app_clock
from capi_destinations import delivery_state, destinations
from capi_destinations.diagnostics import Diagnostic
from capi_destinations.models import (
    AttemptOutcome,
    AuditAction,
    AuditEntry,
    BlockKind,
    DeliveryAttempt,
    Destination,
    EventStatus,
    Health,
    HealthCheck,
    Membership,
    Role,
)
from tests.conftest import make_token, server_event

HTMX = {"HTTP_HX_REQUEST": "true"}


# --- the people ---------------------------------------------------------------------------------


@pytest.fixture
def owner(make_user, tenant):
    return make_user(tenant, Role.ADMIN, username="olivia")


@pytest.fixture
def editor(make_user, tenant):
    return make_user(tenant, Role.EDITOR, username="eddie")


@pytest.fixture
def viewer(make_user, tenant):
    return make_user(tenant, Role.VIEWER, username="vera")


@pytest.fixture
def outsider(make_user, other_tenant):
    return make_user(other_tenant, Role.ADMIN, username="oscar")


def logged_in(user, **client_options) -> Client:
    client = Client(**client_options)
    client.force_login(user)
    return client


@pytest.fixture
def known_token() -> str:
    return make_token("a-token-that-must-never-be-shown")


@pytest.fixture
def shown(destination, known_token, make_event, clock):
    """A destination with a known token and something on every part of its page."""
    destination.access_token = known_token
    destination.pixel_name = "Acme Shoes - Web"
    destination.save()
    HealthCheck.objects.create(
        destination=destination,
        checked_at=clock.now(),
        status=Health.HEALTHY,
        checks=[
            {"name": "meta_accepts_token", "ok": True, "message": "Meta accepts it.", "fix": ""}
        ],
    )
    delivered = make_event(event_id="order-1", status=EventStatus.DELIVERED)
    failed = make_event(
        event_id="order-2",
        status=EventStatus.FAILED,
        status_reason="Meta refused the event.",
        diagnostics=[
            Diagnostic(
                code="missing_fbc",
                field="user_data.fbc",
                severity="warning",
                message="No fbc: clicks from ads cannot be matched.",
                fix="Send the _fbc cookie.",
            ).to_dict()
        ],
        match_quality=4.5,
    )
    attempt = DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now(),
        event_count=2,
        http_status=400,
        fbtrace_id="AbCdTrace",
        error_code=100,
        error_subcode=2804003,
        error_message="Invalid parameter",
        outcome=AttemptOutcome.INVALID,
    )
    attempt.events.set([delivered, failed])
    AuditEntry.objects.create(
        tenant=destination.tenant,
        destination=destination,
        destination_label=str(destination),
        action=AuditAction.TOKEN_REPLACED,
        detail={"token_hint": destination.token_hint},
    )
    return destination


def destination_urls(destination) -> dict[str, str]:
    code = {"code": destination.code}
    return {
        name: reverse(f"capi_destinations:{name}", kwargs=code)
        for name in (
            "destination",
            "destination_card",
            "health_card",
            "delivery_card",
            "destination_edit",
            "replace_token",
            "destination_delete",
            "event_log",
        )
    } | {
        "event_detail": reverse("capi_destinations:event_detail", kwargs=code)
        + "?"
        + urlencode({"event_name": "Purchase", "event_id": "order-2"})
    }


def tenant_get_urls(tenant) -> dict[str, str]:
    slug = {"tenant_slug": tenant.slug}
    return {
        "destination_add": reverse("capi_destinations:destination_add", kwargs=slug),
        "members": reverse("capi_destinations:members", kwargs=slug),
    }


def post_urls(destination) -> dict[str, tuple[str, dict[str, str]]]:
    """Every POST of the pages, with a body that would be valid, and the role it needs."""
    code = {"code": destination.code}
    slug = {"tenant_slug": destination.tenant.slug}
    return {
        "check_now": (reverse("capi_destinations:check_now", kwargs=code), {}),
        "send_test_event": (reverse("capi_destinations:send_test_event", kwargs=code), {}),
        "redeliver": (reverse("capi_destinations:redeliver", kwargs=code), {}),
        "set_enabled": (reverse("capi_destinations:set_enabled", kwargs=code), {"enabled": "0"}),
        "regenerate_keys": (reverse("capi_destinations:regenerate_keys", kwargs=code), {}),
        "destination_edit": (
            reverse("capi_destinations:destination_edit", kwargs=code),
            {"name": "Changed"},
        ),
        "replace_token": (
            reverse("capi_destinations:replace_token", kwargs=code),
            {"access_token": make_token("post")},
        ),
        "destination_delete": (reverse("capi_destinations:destination_delete", kwargs=code), {}),
        "destination_token_check": (
            reverse("capi_destinations:destination_token_check", kwargs=code),
            {"access_token": ""},
        ),
        "tenant_token_check": (
            reverse("capi_destinations:tenant_token_check", kwargs=slug),
            {"access_token": ""},
        ),
        "destination_add": (reverse("capi_destinations:destination_add", kwargs=slug), {}),
        "members": (reverse("capi_destinations:members", kwargs=slug), {"username": "x"}),
        "member_role": (
            reverse("capi_destinations:member_role", kwargs={**slug, "username": "olivia"}),
            {"role": "viewer"},
        ),
        "member_remove": (
            reverse("capi_destinations:member_remove", kwargs={**slug, "username": "vera"}),
            {},
        ),
    }


ADMIN_ONLY_POSTS = {"members", "member_role", "member_remove"}


# --- who gets in ---------------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_log_in(client, shown) -> None:
    urls = [reverse("capi_destinations:overview"), *destination_urls(shown).values()]
    urls += tenant_get_urls(shown.tenant).values()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_outsiders_get_404_for_every_page_and_fragment(shown, outsider) -> None:
    client = logged_in(outsider)
    urls = {**destination_urls(shown), **tenant_get_urls(shown.tenant)}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 404, name
        assert shown.name.encode() not in response.content, name


def test_outsiders_get_404_for_every_post(shown, outsider) -> None:
    client = logged_in(outsider)
    for name, (url, body) in post_urls(shown).items():
        response = client.post(url, body, **HTMX)
        assert response.status_code == 404, name
    shown.refresh_from_db()
    assert shown.name == "Acme web pixel"
    assert shown.enabled
    assert Membership.objects.filter(tenant=shown.tenant).count() == 0  # nobody was added


def test_outsiders_overview_does_not_list_other_tenants(shown, outsider) -> None:
    page = logged_in(outsider).get(reverse("capi_destinations:overview")).content.decode()
    assert shown.name not in page
    assert "Acme Shoes" not in page


def test_viewers_see_every_page_but_no_buttons(shown, viewer) -> None:
    client = logged_in(viewer)
    for name, url in destination_urls(shown).items():
        expected = (
            403 if name in {"destination_edit", "replace_token", "destination_delete"} else 200
        )
        assert client.get(url).status_code == expected, name
    page = client.get(reverse("capi_destinations:destination", kwargs={"code": shown.code}))
    content = page.content.decode()
    for button in ("check-now", "send-test-event", "redeliver-failed", "toggle-enabled"):
        assert f'data-testid="{button}"' not in content, button
    assert client.get(tenant_get_urls(shown.tenant)["destination_add"]).status_code == 403
    assert client.get(tenant_get_urls(shown.tenant)["members"]).status_code == 200


def test_viewers_get_403_for_every_post(shown, viewer) -> None:
    client = logged_in(viewer)
    for name, (url, body) in post_urls(shown).items():
        assert client.post(url, body, **HTMX).status_code == 403, name
    shown.refresh_from_db()
    assert shown.enabled
    assert shown.name == "Acme web pixel"


def test_editors_may_not_manage_members(shown, owner, editor) -> None:
    client = logged_in(editor)
    for name, (url, body) in post_urls(shown).items():
        if name in ADMIN_ONLY_POSTS:
            assert client.post(url, body).status_code == 403, name
    assert Membership.objects.get(user__username="olivia").role == Role.ADMIN


def test_superusers_see_every_tenant(shown, make_user, make_destination, other_tenant) -> None:
    make_destination(tenant=other_tenant, name="Globex pixel")
    client = logged_in(make_user(is_superuser=True))
    page = client.get(reverse("capi_destinations:overview")).content.decode()
    assert "Acme web pixel" in page
    assert "Globex pixel" in page
    assert client.get(destination_urls(shown)["destination"]).status_code == 200


# --- the token never shows --------------------------------------------------------------------


def assert_token_absent(content: bytes | str, token: str, where: str) -> None:
    text = content.decode() if isinstance(content, bytes) else content
    assert token not in text, where
    assert token[:20] not in text, where


def test_the_token_never_appears_on_any_page_or_fragment(shown, owner, known_token) -> None:
    client = logged_in(owner)
    urls = {
        "overview": reverse("capi_destinations:overview"),
        **destination_urls(shown),
        **tenant_get_urls(shown.tenant),
    }
    for name, url in urls.items():
        for headers in ({}, HTMX):
            response = client.get(url, **headers)
            assert response.status_code == 200, name
            assert_token_absent(response.content, known_token, name)
    # The pages show the hint instead.
    page = client.get(urls["destination"]).content.decode()
    assert shown.token_hint in page
    edit = client.get(urls["destination_edit"]).content.decode()
    assert shown.token_hint in edit


def test_the_token_is_not_rendered_back_when_a_form_is_invalid(
    owner, tenant, known_token, shown
) -> None:
    client = logged_in(owner)
    url = tenant_get_urls(tenant)["destination_add"]
    response = client.post(
        url, {"name": "Typo", "pixel_id": "12ab", "access_token": known_token, "enabled": "on"}
    )
    assert response.status_code == 200
    assert "digits only" in response.content.decode()
    assert_token_absent(response.content, known_token, "add form")
    url = reverse("capi_destinations:replace_token", kwargs={"code": shown.code})
    response = client.post(url, {"access_token": known_token[:60]})
    assert "looks truncated" in response.content.decode()
    assert_token_absent(response.content, known_token, "replace form")


def test_the_token_is_not_in_the_token_check_answer(graph_settings, owner, shown, known_token):
    graph_settings.register_pixel(shown.pixel_id, "Acme Shoes - Web", [known_token])
    client = logged_in(owner)
    url = reverse("capi_destinations:destination_token_check", kwargs={"code": shown.code})
    response = client.post(url, {"pixel_id": "", "access_token": ""}, **HTMX)
    assert "Connected to pixel &#x27;Acme Shoes - Web&#x27;" in response.content.decode()
    assert_token_absent(response.content, known_token, "token check")


def test_the_token_is_not_on_error_pages(shown, owner, known_token) -> None:
    client = logged_in(owner)
    response = client.get(
        reverse("capi_destinations:event_detail", kwargs={"code": shown.code})
        + "?event_name=Purchase&event_id=nope"
    )
    assert response.status_code == 404
    assert_token_absent(response.content, known_token, "404")


# --- the overview -------------------------------------------------------------------------------


def test_overview_cards_show_health_counts_and_reason_unhealthy_first(
    owner, destination, make_destination, make_event, clock
) -> None:
    destination.health = Health.HEALTHY
    destination.save()
    healthy = make_destination(name="Alpha", health=Health.HEALTHY, pixel_name="Alpha pixel")
    make_destination(
        name="Zulu",
        health=Health.UNHEALTHY,
        health_reasons=[{"name": "meta_accepts_token", "message": "Meta refused the token."}],
    )
    make_destination(name="Mike")
    make_event(destination=healthy, status=EventStatus.DELIVERED)
    make_event(destination=healthy, status=EventStatus.DELIVERED)
    make_event(destination=healthy, status=EventStatus.FAILED)
    make_event(destination=healthy, status=EventStatus.REJECTED)
    make_event(destination=healthy, status=EventStatus.REJECTED)
    with clock.held_at(clock.now() - timedelta(hours=24)):  # the hour before the 24 shown
        make_event(destination=healthy, status=EventStatus.DELIVERED)
    page = logged_in(owner).get(reverse("capi_destinations:overview")).content.decode()
    names = re.findall(r'data-testid="destination-link">([^<]+)<', page)
    # Unhealthy first, then not checked yet, then healthy; by name within each.
    assert names == ["Zulu", "Mike", "Acme web pixel", "Alpha"]
    cards = dict(
        zip(
            names,
            re.split(r'data-testid="destination-card"', page)[1:],
            strict=True,
        )
    )
    assert "Unhealthy</span>" in cards["Zulu"]
    assert "Meta refused the token." in cards["Zulu"]
    assert "Not checked yet</span>" in cards["Mike"]
    assert "Healthy</span>" in cards["Alpha"]
    assert "Alpha pixel" in cards["Alpha"]
    assert "2 delivered" in cards["Alpha"]
    assert "1 failed" in cards["Alpha"]
    assert "2 rejected" in cards["Alpha"]
    assert 'class="capi-badge capi-badge--unhealthy"' in cards["Zulu"]


def test_overview_filters_by_tenant_and_status(
    owner, make_destination, other_tenant, tenant
) -> None:
    Membership.objects.create(user=owner, tenant=other_tenant, role=Role.VIEWER)
    make_destination(name="Acme healthy", health=Health.HEALTHY)
    make_destination(name="Acme off", enabled=False)
    make_destination(name="Globex red", tenant=other_tenant, health=Health.UNHEALTHY)
    client = logged_in(owner)
    url = reverse("capi_destinations:overview")

    def names(query: dict[str, str]) -> set[str]:
        page = client.get(url, query).content.decode()
        return set(re.findall(r'data-testid="destination-link">([^<]+)<', page))

    assert names({}) == {"Acme healthy", "Acme off", "Globex red"}
    assert names({"tenant": "globex"}) == {"Globex red"}
    assert names({"status": "healthy"}) == {"Acme healthy"}
    assert names({"status": "disabled"}) == {"Acme off"}
    assert names({"tenant": "acme", "status": "unhealthy"}) == set()
    assert names({"tenant": "not-mine"}) == {"Acme healthy", "Acme off", "Globex red"}


def test_overview_grid_is_a_polling_fragment_for_htmx(owner, destination) -> None:
    client = logged_in(owner)
    response = client.get(
        reverse("capi_destinations:overview"), {"status": ""}, HTTP_HX_TARGET="capi-cards", **HTMX
    )
    content = response.content.decode()
    assert not content.lstrip().startswith("<!doctype")
    assert content.lstrip().startswith('<section id="capi-cards"')
    assert 'hx-trigger="every 30s"' in content
    assert 'hx-swap="outerHTML"' in content
    assert "Acme web pixel" in content
    full = client.get(reverse("capi_destinations:overview")).content.decode()
    assert full.startswith("<!doctype html>")
    assert 'id="capi-cards"' in full  # the same partial inside the page


def test_single_card_fragment(owner, destination) -> None:
    response = logged_in(owner).get(
        reverse("capi_destinations:destination_card", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    assert content.lstrip().startswith("<article")
    assert f'data-code="{destination.code}"' in content


@pytest.mark.parametrize("count", [3, 30])
def test_overview_query_count_does_not_grow_with_destinations(
    count, owner, make_destination, make_event, django_assert_num_queries
) -> None:
    for number in range(count - 1):  # make_event brings one destination of its own
        destination = make_destination(name=f"Pixel {number:02d}")
        make_event(destination=destination, status=EventStatus.DELIVERED)
        make_event(destination=destination, status=EventStatus.FAILED)
        make_event(destination=destination, status=EventStatus.REJECTED)
        make_event(destination=destination)  # waiting: counted inside the destinations' query
    client = logged_in(owner)
    client.get(reverse("capi_destinations:overview"))  # warm the session
    # session, user, tenants, health totals (also the pager's count), one page of destinations
    # (with their waiting events), their 24-hour counts, memberships (roles)
    with django_assert_num_queries(7):
        response = client.get(reverse("capi_destinations:overview"))
    assert response.content.decode().count('data-testid="destination-card"') == count


def test_cards_say_what_is_waiting_and_for_what(
    owner, make_destination, make_event, django_assert_max_num_queries
) -> None:
    """Issue 16: a held destination never reads "0 failed · 0 rejected" alone."""
    blocked = make_destination(name="Blocked")
    assert delivery_state.write_block(
        blocked, "Meta refused the token (#190).", BlockKind.TOKEN, app_clock.now()
    )
    off = make_destination(name="Off", enabled=False)
    on_its_way = make_destination(name="On its way")
    idle = make_destination(name="Idle")
    for _ in range(15):
        make_event(destination=blocked)
    make_event(destination=off)
    make_event(destination=off, status=EventStatus.DELIVERED)
    make_event(destination=on_its_way, lease_expires_at=app_clock.now() + timedelta(minutes=5))
    client = logged_in(owner)

    overview = client.get(reverse("capi_destinations:overview")).content.decode()
    waiting = dict(
        re.findall(
            r'data-code="([^"]+)".*?(?:data-testid="waiting">([^<]*)<|</article>)', overview, re.S
        )
    )
    assert waiting[str(blocked.code)] == "15 events waiting for a new token"
    assert waiting[str(off.code)] == "1 event waiting while sending is off"
    assert waiting[str(on_its_way.code)] == "1 event waiting"
    assert waiting[str(idle.code)] == ""  # nothing waits: no line

    # The card's own refresh and the destination page's delivery card say the same.
    card = client.get(
        reverse("capi_destinations:destination_card", kwargs={"code": blocked.code}), **HTMX
    ).content.decode()
    assert 'data-testid="waiting">15 events waiting for a new token<' in card
    with django_assert_max_num_queries(12):
        delivery = client.get(
            reverse("capi_destinations:delivery_card", kwargs={"code": off.code}), **HTMX
        ).content.decode()
    assert re.search(r'data-testid="waiting"[^>]*>1 event waiting while sending is off<', delivery)
    idle_delivery = client.get(
        reverse("capi_destinations:delivery_card", kwargs={"code": idle.code}), **HTMX
    ).content.decode()
    assert 'data-testid="waiting"' not in idle_delivery


# --- adding and editing -------------------------------------------------------------------------


def test_add_destination_shows_the_ingest_secret_once(owner, tenant, known_token) -> None:
    client = logged_in(owner)
    url = tenant_get_urls(tenant)["destination_add"]
    form = client.get(url).content.decode()
    assert 'type="password"' in form
    assert "hx-post=" in form
    assert "check-token" in form
    response = client.post(
        url,
        {
            "name": "New shop",
            "pixel_id": "1234567890123456",
            "access_token": known_token,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert response.status_code == 200
    content = response.content.decode()
    destination = Destination.objects.get(name="New shop")
    secret = re.search(r'data-testid="ingest-secret">(sk_[^<]+)<', content).group(1)
    assert destination.check_ingest_secret(secret)
    assert destination.access_token == known_token
    assert_token_absent(content, known_token, "created page")
    assert AuditEntry.objects.get(action=AuditAction.CREATED).actor == owner
    # The secret is not on the destination page afterwards.
    page = client.get(reverse("capi_destinations:destination", kwargs={"code": destination.code}))
    assert secret not in page.content.decode()


def test_add_destination_refuses_a_pixel_the_tenant_already_has(owner, destination) -> None:
    response = logged_in(owner).post(
        tenant_get_urls(destination.tenant)["destination_add"],
        {
            "name": "Twice",
            "pixel_id": destination.pixel_id,
            "access_token": make_token("twice"),
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    assert response.status_code == 200
    assert "already has a destination for pixel" in response.content.decode()
    assert Destination.objects.count() == 1


ADD_FORM = {
    "name": "New shop",
    "pixel_id": "1234567890123456",
    "enabled": "on",
    "consent_policy": "send_always",
    "missing_consent": "granted",
}


def test_saving_a_pair_meta_refused_asks_first_and_says_what_follows(
    owner, tenant, use_sandbox
) -> None:
    """Issue 16: a wrong Pixel ID saved silently, then "the card turns Healthy within minutes"."""
    use_sandbox.register_pixel(ADD_FORM["pixel_id"], "Acme", [make_token("the-right-one")])
    token = make_token("refused-pair")  # a token Meta does not know
    client = logged_in(owner)
    url = tenant_get_urls(tenant)["destination_add"]
    form = {**ADD_FORM, "access_token": token}

    first = client.post(url, form).content.decode()
    assert not Destination.objects.exists()
    assert "Not saved yet: Meta refused this Pixel ID and token" in first
    assert 'name="save_refused"' in first
    assert "If you save anyway" in first
    assert "its card turns <strong>Unhealthy</strong>" in first
    assert_token_absent(first, token, "refused add form")

    created = client.post(url, {**form, "save_refused": "1"}).content.decode()
    destination = Destination.objects.get()
    assert destination.access_token == token
    assert "Meta refused it:" in created
    assert "turns Healthy within minutes" not in created


def test_a_pair_meta_accepts_or_cannot_answer_for_saves_at_once(owner, tenant, use_sandbox) -> None:
    token = make_token("accepted-pair")
    use_sandbox.register_pixel(ADD_FORM["pixel_id"], "Acme", [token])
    response = logged_in(owner).post(
        tenant_get_urls(tenant)["destination_add"], {**ADD_FORM, "access_token": token}
    )
    assert response.status_code == 200
    assert Destination.objects.filter(name="New shop").exists()
    assert "save_refused" not in response.content.decode()

    # A Pixel ID the token cannot read: a send-only token, or a mistyped Pixel ID (Meta answers
    # both alike), so no refusal to confirm; but no promise of Healthy within minutes either.
    other = logged_in(owner).post(
        tenant_get_urls(tenant)["destination_add"],
        {**ADD_FORM, "name": "Typo", "pixel_id": "6543210987654321", "access_token": token},
    )
    content = other.content.decode()
    assert Destination.objects.filter(name="Typo").exists()
    assert "within minutes" not in content
    assert "Confirm the Pixel ID matches the pixel the token was made for" in content


def test_editing_in_a_refused_token_asks_first_but_a_rename_does_not(
    owner, shown, use_sandbox
) -> None:
    use_sandbox.register_pixel(shown.pixel_id, "Acme", [make_token("the-right-one")])
    client = logged_in(owner)
    url = destination_urls(shown)["destination_edit"]
    refused = make_token("refused-on-edit")
    first = client.post(url, edit_form(shown, access_token=refused))
    assert first.status_code == 200
    assert 'name="save_refused"' in first.content.decode()
    shown.refresh_from_db()
    assert shown.access_token != refused

    saved = client.post(url, edit_form(shown, access_token=refused, save_refused="1"))
    assert saved.status_code == 302
    shown.refresh_from_db()
    assert shown.access_token == refused
    # The stored token is refused too, but a rename changes neither: no question asked.
    assert client.post(url, edit_form(shown, name="Renamed")).status_code == 302


def test_only_the_destination_form_offers_to_save_a_refused_pair(owner, shown, use_sandbox) -> None:
    use_sandbox.register_pixel(shown.pixel_id, "Acme", [make_token("the-right-one")])
    client = logged_in(owner)
    url = reverse("capi_destinations:destination_token_check", kwargs={"code": shown.code})
    typed = {"pixel_id": shown.pixel_id, "access_token": make_token("refused-check")}
    on_the_form = client.post(url, {**typed, "offer_save_anyway": "1"}, **HTMX).content.decode()
    assert 'name="save_refused"' in on_the_form
    on_replace_token = client.post(url, typed, **HTMX).content.decode()
    assert 'data-state="error"' in on_replace_token
    assert 'name="save_refused"' not in on_replace_token


def edit_form(destination, **changes) -> dict[str, str]:
    form = {
        "name": destination.name,
        "pixel_id": destination.pixel_id,
        "access_token": "",
        "enabled": "on" if destination.enabled else "",
        "test_event_code": destination.test_event_code,
        "consent_policy": destination.consent_policy,
        "missing_consent": destination.missing_consent,
        "app_secret": "",
        "api_version": destination.api_version,
        "default_country": destination.default_country,
        "allowed_origins": destination.allowed_origins,
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value != ""}


def test_edit_with_a_blank_token_keeps_it(owner, shown, known_token) -> None:
    client = logged_in(owner)
    url = destination_urls(shown)["destination_edit"]
    response = client.post(url, edit_form(shown, name="Renamed", test_event_code="TEST123"))
    assert response.status_code == 302
    shown.refresh_from_db()
    assert (shown.name, shown.test_event_code, shown.access_token) == (
        "Renamed",
        "TEST123",
        known_token,
    )
    entry = AuditEntry.objects.filter(action=AuditAction.UPDATED).get()
    assert entry.detail == {"fields": ["name", "test_event_code"]}


def test_edit_with_a_new_token_replaces_it(owner, shown) -> None:
    new_token = make_token("edited")
    response = logged_in(owner).post(
        destination_urls(shown)["destination_edit"], edit_form(shown, access_token=new_token)
    )
    assert response.status_code == 302
    shown.refresh_from_db()
    assert shown.access_token == new_token
    assert AuditEntry.objects.filter(action=AuditAction.TOKEN_REPLACED).count() == 2


def test_replace_token_page(owner, shown) -> None:
    new_token = make_token("replaced-from-the-page")
    client = logged_in(owner)
    url = destination_urls(shown)["replace_token"]
    assert shown.token_hint in client.get(url).content.decode()
    response = client.post(url, {"access_token": f"  {new_token}\n"})
    assert response.status_code == 302
    shown.refresh_from_db()
    assert shown.access_token == new_token


def test_delete_destination(owner, shown) -> None:
    client = logged_in(owner)
    url = destination_urls(shown)["destination_delete"]
    assert "2 recorded events" in client.get(url).content.decode()
    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("capi_destinations:overview")
    assert not Destination.objects.exists()
    assert AuditEntry.objects.filter(action=AuditAction.DELETED).exists()


# --- validate as you type ---------------------------------------------------------------------


def test_token_check_shows_format_problems_at_once(owner, tenant, sandbox) -> None:
    url = reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug})
    response = logged_in(owner).post(
        url, {"pixel_id": "1234567890123456", "access_token": "EAA abc"}, **HTMX
    )
    content = response.content.decode()
    assert 'data-state="error"' in content
    assert "contains a space or line break" in content
    assert sandbox.requests() == []


def test_token_check_shows_the_pixel_name_before_saving(
    graph_settings, owner, tenant, known_token
) -> None:
    graph_settings.register_pixel("1234567890123456", "Acme Shoes - Web", [known_token])
    url = reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug})
    response = logged_in(owner).post(
        url, {"pixel_id": "1234567890123456", "access_token": known_token}, **HTMX
    )
    content = response.content.decode()
    assert 'data-state="ok"' in content
    assert "Connected to pixel &#x27;Acme Shoes - Web&#x27;" in content
    assert not Destination.objects.exists()


def test_token_check_shows_metas_refusal(graph_settings, owner, tenant, known_token) -> None:
    graph_settings.revoke(known_token)
    url = reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug})
    response = logged_in(owner).post(
        url, {"pixel_id": "1234567890123456", "access_token": known_token}, **HTMX
    )
    content = response.content.decode()
    assert 'data-state="error"' in content
    assert "Fix:" in content


def test_the_attempts_table_leaves_room_for_metas_answer(owner, shown) -> None:
    content = logged_in(owner).get(destination_urls(shown)["destination"]).content.decode()
    table = re.search(
        r'<table class="capi-table capi-attempts" data-testid="attempts">(.*?)</table>',
        content,
        re.S,
    )
    assert table is not None
    # Four columns: the request's figures share one, so Meta's answer gets the room it needs.
    headers = re.findall(r"<th[^>]*>([^<]+)</th>", table.group(1))
    assert headers == ["Time", "Request", "Outcome", "Meta's answer"]
    row = re.search(r'data-testid="attempt-row".*?</tr>', table.group(1), re.S).group(0)
    assert "2 events" in row
    assert "HTTP 400" in row
    answer = re.search(r'<td class="capi-answer">(.*?)</td>', row, re.S).group(1)
    assert "#100/2804003" in answer
    assert "AbCdTrace" in answer


def test_the_match_quality_labels_stay_clear_of_each_other_and_the_line(owner, shown) -> None:
    content = logged_in(owner).get(destination_urls(shown)["destination"]).content.decode()
    chart = re.search(r'data-testid="match-quality-chart".*?</svg>', content, re.S).group(0)
    labels = re.findall(r'<text x="([\d.]+)" y="([\d.]+)"[^>]*>(\d [a-z]+)</text>', chart)
    assert [label for _, _, label in labels] == ["7 good", "5 weak"]
    plot_width = float(re.search(r'<line x1="0" y1="[\d.]+" x2="([\d.]+)"', chart).group(1))
    # Right of the plotted hours, and farther apart than the labels are tall (11 units).
    assert all(float(x) > plot_width for x, _, _ in labels)
    assert abs(float(labels[0][1]) - float(labels[1][1])) >= 14


def test_token_check_with_nothing_typed_waits(owner, tenant) -> None:
    url = reverse("capi_destinations:tenant_token_check", kwargs={"tenant_slug": tenant.slug})
    response = logged_in(owner).post(url, {"pixel_id": "", "access_token": ""}, **HTMX)
    assert 'data-state="idle"' in response.content.decode()


# --- the destination page ----------------------------------------------------------------------


def test_destination_page_shows_every_part(owner, shown) -> None:
    response = logged_in(owner).get(destination_urls(shown)["destination"])
    content = response.content.decode()
    for testid in (
        "health-card",
        "health-badge",
        "check-now",
        "controls",
        "send-test-event",
        "redeliver-failed",
        "toggle-enabled",
        "replace-token",
        "regenerate-keys",
        "delivery-card",
        "hourly-chart",
        "attempts",
        "event-log",
        "diagnostics-summary",
        "match-quality-chart",
        "snippet",
        "curl-example",
        "audit-log",
    ):
        assert f'data-testid="{testid}"' in content, testid
    assert "<svg" in content
    assert "AbCdTrace" in content  # the attempt's fbtrace_id
    assert "#100/2804003" in content
    assert "Meta accepts it." in content
    # The snippet is shown as text, not run on our own page.
    assert "&lt;script src=" in content
    assert "capi.js" in content
    assert (
        reverse("capi_destinations:ingest_events", kwargs={"ingest_key": shown.ingest_key})
        in content
    )
    assert "Token replaced" in content
    assert 'hx-headers=\'{"X-CSRFToken": "' in content


def test_chart_counts_the_last_24_hours_by_hour(owner, destination, make_event, clock) -> None:
    with clock.held_at(clock.now() - timedelta(hours=2)):
        make_event(status=EventStatus.DELIVERED)
        make_event(status=EventStatus.DELIVERED)
        make_event(status=EventStatus.FAILED)
        make_event(status=EventStatus.REJECTED)
        make_event(status=EventStatus.REJECTED)
    make_event(status=EventStatus.PENDING)
    with clock.held_at(clock.now() - timedelta(hours=30)):
        make_event(status=EventStatus.DELIVERED)
    response = logged_in(owner).get(
        reverse("capi_destinations:delivery_card", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    assert content.lstrip().startswith('<section id="delivery-card"')
    assert 'hx-trigger="every 30s' in content
    bars = re.findall(r'data-series="(\w+)" data-count="(\d+)"', content)
    assert sorted(bars) == [
        ("delivered", "2"),
        ("failed", "1"),
        ("pending", "1"),
        ("rejected", "2"),
    ]
    assert "2 delivered" in content
    # Rejected (our own checks, never sent) is not counted as failed by Meta.
    assert "1 failed" in content
    assert "2 rejected" in content
    assert "1 pending" in content
    legend = re.search(r'<figcaption class="capi-legend">(.*?)</figcaption>', content, re.S)
    assert legend is not None
    assert "capi-key--rejected" in legend.group(1)
    assert "never sent" in legend.group(1)


def test_diagnostics_summary_shows_shares(owner, destination, make_event) -> None:
    for number in range(4):
        payload = server_event(f"p{number}")
        if number == 3:
            payload["user_data"]["fbc"] = "fb.1.1700000000000.AbCdEf"
        make_event(
            event_id=f"p{number}",
            payload=payload,
            diagnostics=[{"code": "no_fbc", "field": "user_data.fbc", "severity": "info"}]
            if number < 3
            else [],
        )
    make_event(event_id="lead-1", event_name="Lead")
    content = logged_in(owner).get(destination_urls(destination)["destination"]).content.decode()
    assert 'data-code="no_fbc" data-percent="75"' in content
    assert "75%</strong> of Purchase events have no fbc" in content
    assert "100%</strong> of Lead events have no fbc" in content


def test_health_card_fragment_polls(owner, destination) -> None:
    content = (
        logged_in(owner).get(destination_urls(destination)["health_card"], **HTMX).content.decode()
    )
    assert content.lstrip().startswith('<section id="health-card"')
    assert "every 30s" in content
    assert 'hx-swap="outerHTML"' in content
    assert "Not checked yet" in content


def test_check_now_turns_the_card_healthy(graph_settings, owner, destination) -> None:
    graph_settings.register_pixel(destination.pixel_id, "Acme pixel", [destination.access_token])
    response = logged_in(owner).post(
        reverse("capi_destinations:check_now", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    assert response["HX-Trigger"] == "capi:destination-changed"
    assert 'data-health="healthy"' in content
    assert ">Healthy</span>" in content
    assert "Acme pixel" in content


def test_check_now_shows_the_reason_when_unhealthy(graph_settings, owner, destination) -> None:
    graph_settings.revoke(destination.access_token)
    response = logged_in(owner).post(
        reverse("capi_destinations:check_now", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    assert ">Unhealthy</span>" in content
    assert 'data-testid="first-reason"' in content
    assert 'data-ok="false"' in content


def test_send_test_event_shows_metas_answer_inline(graph_settings, editor, destination) -> None:
    response = logged_in(editor).post(
        reverse("capi_destinations:send_test_event", kwargs={"code": destination.code}),
        {"test_event_code": "TEST31337"},
        **HTMX,
    )
    content = response.content.decode()
    assert 'data-testid="test-event-result" data-ok="true"' in content
    assert 'data-testid="test-event-code">TEST31337<' in content
    assert graph_settings.events(test_event_code="TEST31337")


def test_send_test_event_without_a_code_asks_for_the_one_events_manager_shows(
    graph_settings, editor, destination
) -> None:
    """Issue 16: no code is made up (Meta would show the event under no Test events tab)."""
    client = logged_in(editor)
    page = client.get(reverse("capi_destinations:destination", kwargs={"code": destination.code}))
    assert 'data-testid="test-event-code-input"' in page.content.decode()
    response = client.post(
        reverse("capi_destinations:send_test_event", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    assert 'data-testid="test-event-code-needed"' in content
    assert "Copy the code from" in content
    assert graph_settings.events() == []


def test_a_destination_with_its_own_test_code_asks_for_none(editor, make_destination) -> None:
    destination = make_destination(test_event_code="TEST4242")
    page = logged_in(editor).get(
        reverse("capi_destinations:destination", kwargs={"code": destination.code})
    )
    content = page.content.decode()
    assert "test-event-code-input" not in content
    assert "this destination's test code <code>TEST4242</code>" in content


def test_redeliver_button_requeues_failed_events(editor, shown, clock) -> None:
    response = logged_in(editor).post(
        reverse("capi_destinations:redeliver", kwargs={"code": shown.code}), **HTMX
    )
    assert "1 event put back in the queue." in response.content.decode()
    assert shown.events.get(event_id="order-2").status == EventStatus.PENDING


def test_redeliver_one_event_from_its_detail(editor, shown, clock) -> None:
    response = logged_in(editor).post(
        reverse("capi_destinations:redeliver", kwargs={"code": shown.code}),
        {"event_name": "Purchase", "event_id": "order-2"},
        **HTMX,
    )
    assert "1 event put back" in response.content.decode()


def test_enable_and_disable_buttons(editor, destination) -> None:
    client = logged_in(editor)
    url = reverse("capi_destinations:set_enabled", kwargs={"code": destination.code})
    content = client.post(url, {"enabled": "0"}, **HTMX).content.decode()
    destination.refresh_from_db()
    assert not destination.enabled
    assert "Sending is off" in content
    assert ">Enable</button>" in content
    client.post(url, {"enabled": "1"}, **HTMX)
    destination.refresh_from_db()
    assert destination.enabled
    assert list(AuditEntry.objects.values_list("action", flat=True).order_by("pk")) == [
        AuditAction.DISABLED,
        AuditAction.ENABLED,
    ]
    # Without htmx the button still works and comes back to the page.
    response = client.post(url, {"enabled": "0"})
    assert response.status_code == 302


def test_regenerate_keys_shows_the_new_secret_once(editor, destination) -> None:
    old_key = destination.ingest_key
    response = logged_in(editor).post(
        reverse("capi_destinations:regenerate_keys", kwargs={"code": destination.code}), **HTMX
    )
    content = response.content.decode()
    destination.refresh_from_db()
    assert destination.ingest_key != old_key
    secret = re.search(r'data-testid="ingest-secret">(sk_[^<]+)<', content).group(1)
    assert destination.check_ingest_secret(secret)
    assert content.lstrip().startswith('<section id="ingest-keys"')


# --- events ------------------------------------------------------------------------------------


def test_event_log_filters_by_status_and_name(owner, destination, make_event) -> None:
    make_event(event_id="a", status=EventStatus.DELIVERED, event_name="Purchase")
    make_event(event_id="b", status=EventStatus.FAILED, event_name="Purchase")
    make_event(event_id="c", status=EventStatus.FAILED, event_name="Lead")
    client = logged_in(owner)
    url = destination_urls(destination)["event_log"]

    def rows(query: dict[str, str]) -> int:
        content = client.get(url, query, **HTMX).content.decode()
        return content.count('data-testid="event-row"')

    assert rows({}) == 3
    assert rows({"status": "failed"}) == 2
    assert rows({"status": "failed", "event_name": "Lead"}) == 1
    assert rows({"event_name": "Lead"}) == 1
    # A page of its own without htmx.
    assert client.get(url).content.decode().startswith("<!doctype html>")


def test_event_detail_shows_hashed_payload_diagnostics_and_attempts(owner, shown) -> None:
    url = destination_urls(shown)["event_detail"]
    content = logged_in(owner).get(url, **HTMX).content.decode()
    assert content.lstrip().startswith("<article")
    assert "jane.doe@example.com" not in content
    assert shown.events.get(event_id="order-2").payload["user_data"]["em"][0] in content
    assert 'data-code="missing_fbc"' in content
    assert "Send the _fbc cookie." in content
    assert 'data-testid="event-attempts"' in content
    assert 'data-testid="redeliver-event"' in content


# --- members ------------------------------------------------------------------------------------


def test_admin_manages_members(owner, viewer, make_user, tenant) -> None:
    make_user(username="newbie")
    client = logged_in(owner)
    url = reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug})
    page = client.get(url).content.decode()
    assert 'data-username="vera" data-role="viewer"' in page
    assert client.post(url, {"username": "newbie", "role": "editor"}).status_code == 302
    assert Membership.objects.get(user__username="newbie").role == Role.EDITOR
    response = client.post(url, {"username": "ghost", "role": "viewer"})
    assert "There is no user" in response.content.decode()

    role_url = reverse(
        "capi_destinations:member_role", kwargs={"tenant_slug": tenant.slug, "username": "vera"}
    )
    client.post(role_url, {"role": "editor"})
    assert Membership.objects.get(user=viewer).role == Role.EDITOR

    remove_url = reverse(
        "capi_destinations:member_remove", kwargs={"tenant_slug": tenant.slug, "username": "vera"}
    )
    client.post(remove_url)
    assert not Membership.objects.filter(user=viewer).exists()

    last_admin = reverse(
        "capi_destinations:member_remove",
        kwargs={"tenant_slug": tenant.slug, "username": "olivia"},
    )
    response = client.post(last_admin, follow=True)
    assert "last admin" in response.content.decode()
    assert Membership.objects.filter(user=owner).exists()

    # Every change is on the members page: who did what, newest first.
    page = client.get(url).content.decode()
    history = re.findall(r'data-testid="member-change" data-action="(\w+)"', page)
    assert history == ["member_removed", "member_role_changed", "member_added"]
    assert "Member removed" in page
    assert "previous role: viewer" in page


def test_viewer_sees_the_member_list_without_forms(viewer, tenant) -> None:
    page = (
        logged_in(viewer)
        .get(reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug}))
        .content.decode()
    )
    assert 'data-username="vera"' in page
    assert 'data-testid="add-member-form"' not in page


# --- CSRF ---------------------------------------------------------------------------------------


def test_posts_need_the_csrf_token_and_htmx_sends_it(editor, destination) -> None:
    client = logged_in(editor, enforce_csrf_checks=True)
    page = client.get(destination_urls(destination)["destination"]).content.decode()
    csrf_token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    url = reverse("capi_destinations:set_enabled", kwargs={"code": destination.code})
    assert client.post(url, {"enabled": "0"}, **HTMX).status_code == 403
    destination.refresh_from_db()
    assert destination.enabled
    response = client.post(url, {"enabled": "0"}, HTTP_X_CSRFTOKEN=csrf_token, **HTMX)
    assert response.status_code == 200
    destination.refresh_from_db()
    assert not destination.enabled


# --- the demo site's login page (tests/settings.py serves the demo's templates) ------------------


def test_demo_login_and_logged_out_pages(client, owner) -> None:
    page = client.get("/accounts/login/?next=/capi/").content.decode()
    assert 'data-testid="login"' in page
    assert 'name="password"' in page
    response = client.post(
        "/accounts/login/?next=/capi/",
        {"username": "olivia", "password": "correct horse battery staple", "next": "/capi/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/capi/"
    overview = client.get("/capi/").content.decode()
    assert 'data-testid="logout"' in overview
    assert 'data-testid="logged-out"' in client.post("/accounts/logout/").content.decode()


def test_service_functions_and_pages_write_the_same_audit(editor, destination) -> None:
    destinations.set_enabled(destination, False, actor=editor)
    logged_in(editor).post(
        reverse("capi_destinations:set_enabled", kwargs={"code": destination.code}),
        {"enabled": "1"},
        **HTMX,
    )
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor")) == [
        (AuditAction.DISABLED, editor.pk),
        (AuditAction.ENABLED, editor.pk),
    ]


def _curl_example(content: str) -> str:
    """The curl command of a page, as a user copies it (HTML entities decoded)."""
    import html

    match = re.search(r'data-testid="curl-example">(.*?)</pre>', content, re.S)
    assert match, "no curl example on the page"
    return html.unescape(match.group(1))


def _add_destination(client: Client, tenant, token: str, **extra):
    return client.post(
        tenant_get_urls(tenant)["destination_add"],
        {
            "name": "New shop",
            "pixel_id": "1234567890123456",
            "access_token": token,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
        **extra,
    )


def test_the_created_page_curl_example_names_the_full_ingest_url(
    owner, tenant, known_token
) -> None:
    """Issue 16: the one page that shows the server key had ``curl -X POST ''``."""
    response = _add_destination(logged_in(owner), tenant, known_token)

    command = _curl_example(response.content.decode())
    destination = Destination.objects.get(name="New shop")
    path = reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})
    assert f"curl -X POST 'http://testserver{path}'" in command
    assert "''" not in command


@pytest.mark.django_db(transaction=True)
def test_the_created_page_curl_example_records_an_event_when_run(
    owner, tenant, known_token, live_server, graph_settings
) -> None:
    """The command copied from the created page, run as is by curl over a real socket.

    (``graph_settings``: the health check that runs on the save talks to the sandbox.)
    """
    import subprocess
    from urllib.parse import urlsplit

    host = urlsplit(live_server.url).netloc
    response = _add_destination(logged_in(owner), tenant, known_token, HTTP_HOST=host)
    command = _curl_example(response.content.decode())
    assert f"'{live_server.url}/" in command

    ran = subprocess.run(
        ["bash", "-c", command + " --silent --show-error --write-out '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip().splitlines()[-1] in ("200", "201", "202"), ran.stdout
    destination = Destination.objects.get(name="New shop")
    assert destination.events.filter(event_id="order-1001", event_name="Purchase").exists()


def test_the_health_card_that_ends_a_checks_wait_refreshes_the_deliveries(
    owner, destination, clock
) -> None:
    """While a change's check is pending the card polls with ``after_check``; the answer that
    shows the verdict tells the delivery card (HX-Trigger) to refresh with it (issue 16)."""
    url = reverse("capi_destinations:health_card", kwargs={"code": destination.code})
    Destination.objects.filter(pk=destination.pk).update(
        health_check_requested_at=clock.now(), health_checked_at=None
    )
    client = logged_in(owner)

    waiting = client.get(url, {"after_check": "1"}, **HTMX)
    assert "HX-Trigger" not in waiting
    assert f"{url}?after_check=1" in waiting.content.decode()

    Destination.objects.filter(pk=destination.pk).update(health_checked_at=clock.now())
    checked = client.get(url, {"after_check": "1"}, **HTMX)
    assert checked["HX-Trigger"] == "capi:health-checked"
    assert "after_check" not in checked.content.decode()
    # An ordinary poll triggers nothing.
    assert "HX-Trigger" not in client.get(url, **HTMX)
