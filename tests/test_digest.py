"""The daily digest: its content (plain and HTML), who gets which, unsubscribing, isolation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_q.models import Schedule

from capi_destinations import clock as app_clock
from capi_destinations import digest, tasks
from capi_destinations.models import (
    AlertKind,
    AlertState,
    Destination,
    DigestChoice,
    DigestPreference,
    EventStatus,
    Health,
    HealthCheck,
    MatchQualityReport,
    Membership,
    MetaScoreStatus,
    Role,
    Tenant,
)

pytestmark = pytest.mark.django_db

SITE = "https://capi.example.com"


@pytest.fixture
def site(settings: Any, clock: Any) -> Any:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "SITE_URL": SITE}
    return settings


def with_email(user: Any) -> Any:
    user.email = f"{user.username}@example.com"
    user.save()
    return user


@pytest.fixture
def acme(
    site: Any,
    tenant: Tenant,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
) -> dict[str, Destination]:
    """Acme's destinations (the default one, made for make_event, and three more): one unhealthy
    that changed today, with traffic and an alert."""
    now = app_clock.now()
    shop = make_destination(name="Shop pixel", health=Health.UNHEALTHY)
    Destination.objects.filter(pk=shop.pk).update(
        health_reasons=[{"name": "sending_enabled", "message": "Sending is turned off."}]
    )
    blog = make_destination(name="Blog pixel", health=Health.HEALTHY)
    make_destination(name="App pixel")
    for status in (EventStatus.DELIVERED, EventStatus.DELIVERED, EventStatus.FAILED):
        make_event(destination=shop, status=status, match_quality=8.0)
    make_event(destination=shop, status=EventStatus.REJECTED, match_quality=6.0)
    make_event(destination=blog, status=EventStatus.DELIVERED, match_quality=9.5)
    HealthCheck.objects.create(
        destination=shop,
        checked_at=now - timedelta(hours=3),
        status=Health.UNHEALTHY,
        status_changed=True,
    )
    HealthCheck.objects.create(
        destination=shop,
        checked_at=now - timedelta(days=2),
        status=Health.HEALTHY,
        status_changed=True,
    )
    MatchQualityReport.objects.create(
        destination=shop,
        status=MetaScoreStatus.AVAILABLE,
        events=[{"event_name": "Purchase", "composite_score": 6.8, "match_key_feedback": []}],
        lowest_score=6.8,
        fetched_at=now - timedelta(minutes=30),
    )
    AlertState.objects.create(
        destination=shop,
        kind=AlertKind.TRAFFIC_DROPPED,
        raised=True,
        reason="No events were recorded in the last 3 h.",
        changed_at=now - timedelta(hours=1),
        raised_at=now - timedelta(hours=1),
    )
    AlertState.objects.create(
        destination=shop,
        kind=AlertKind.FAILURE_RATE,
        raised=False,
        reason="9 of the 10 events of the last 6 h were refused.",
        raised_at=now - timedelta(hours=5),
        changed_at=now - timedelta(hours=2),
    )
    return {"shop": shop, "blog": blog}


def test_a_tenant_digest_summarises_every_destination_in_text_and_html(
    acme: dict[str, Destination], tenant: Tenant, make_user: Callable[..., Any]
) -> None:
    admin = with_email(make_user(tenant, Role.ADMIN, username="ada"))
    with_email(make_user(tenant, Role.VIEWER, username="vic"))

    assert digest.send_daily_digests() == 1

    (message,) = mail.outbox
    assert message.to == ["ada@example.com"]
    assert message.subject == (
        "[Acme Shoes] Daily Conversions API digest — 1 of 4 destinations unhealthy"
    )
    text = message.body
    shop_part = text.split("* Shop pixel")[1].split("* ")[0]
    assert "Unhealthy" in shop_part
    assert "Delivered 2 · failed 1 · rejected 1" in shop_part
    assert (
        "Match quality (our estimate): 7.5 of 10 · Meta's score (Purchase): 6.8 of 10" in shop_part
    )
    assert "Top finding: Sending is turned off." in shop_part
    assert "became Unhealthy" in shop_part
    assert "alert: Traffic dropped — No events were recorded in the last 3 h." in shop_part
    # Raised and ended since yesterday: both, in the order they happened.
    raised = shop_part.index("alert: Failure rate crossed the threshold — 9 of the 10 events")
    ended = shop_part.index("alert ended: Failure rate crossed the threshold")
    assert raised < ended
    assert "became Healthy" not in shop_part  # two days ago: not since yesterday
    assert f"{SITE}/capi/d/{acme['shop'].code}/" in shop_part
    blog_part = text.split("* Blog pixel")[1].split("* ")[0]
    assert "Healthy" in blog_part
    assert "Delivered 1 · failed 0 · rejected 0" in blog_part
    assert "Since yesterday: no change" in blog_part
    assert "* App pixel" in text
    assert "no events" in text
    token = digest.unsubscribe_token(admin)
    assert f"{SITE}/capi/digest/unsubscribe/{token}/" in text
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert "Shop pixel" in html
    assert "Blog pixel" in html
    assert "App pixel" in html
    assert "Sending is turned off." in html
    assert "alert: Traffic dropped" in html
    assert "7.5 / 10" in html
    assert "Meta (Purchase): 6.8" in html
    assert f'href="{SITE}/capi/digest/unsubscribe/{token}/"' in html
    # Never a secret: no token, not even its hint, in either part.
    for destination in Destination.objects.filter(tenant=tenant):
        assert destination.access_token not in text
        assert destination.access_token not in html
        assert destination.token_hint not in text


def test_one_click_unsubscribe_needs_no_login_and_stops_the_next_digest(
    acme: dict[str, Destination], tenant: Tenant, make_user: Callable[..., Any], client: Any
) -> None:
    admin = with_email(make_user(tenant, Role.ADMIN))
    url = reverse("capi_destinations:digest_unsubscribe", args=[digest.unsubscribe_token(admin)])

    response = client.get(url)

    assert response.status_code == 200
    assert b"You are unsubscribed" in response.content
    assert digest.choice_of(admin) == DigestChoice.NONE
    assert digest.send_daily_digests() == 0
    assert mail.outbox == []


def test_mail_clients_unsubscribe_with_a_post_without_csrf(
    acme: dict[str, Destination], tenant: Tenant, make_user: Callable[..., Any]
) -> None:
    from django.test import Client

    admin = with_email(make_user(tenant, Role.ADMIN))
    url = reverse("capi_destinations:digest_unsubscribe", args=[digest.unsubscribe_token(admin)])

    response = Client(enforce_csrf_checks=True).post(url, {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert digest.choice_of(admin) == DigestChoice.NONE


@pytest.mark.parametrize("token", ["garbage", "1:forged:signature", "\u00e9t\u00e9"])
def test_a_bad_unsubscribe_link_is_refused_without_an_error(
    site: Any, tenant: Tenant, make_user: Callable[..., Any], client: Any, token: str
) -> None:
    admin = with_email(make_user(tenant, Role.ADMIN))

    response = client.get(reverse("capi_destinations:digest_unsubscribe", args=[token]))

    assert response.status_code == 404
    assert b"not valid" in response.content
    assert digest.choice_of(admin) == DigestChoice.PER_TENANT


def test_a_link_signed_for_another_purpose_does_not_unsubscribe(
    site: Any, tenant: Tenant, make_user: Callable[..., Any], client: Any
) -> None:
    from django.core import signing

    admin = with_email(make_user(tenant, Role.ADMIN))
    other_salt = signing.Signer(salt="something-else", sep=".").sign_object(admin.pk)

    response = client.get(reverse("capi_destinations:digest_unsubscribe", args=[other_salt]))

    assert response.status_code == 404
    assert digest.choice_of(admin) == DigestChoice.PER_TENANT


def test_the_combined_digest_covers_only_the_persons_tenants(
    acme: dict[str, Destination],
    tenant: Tenant,
    other_tenant: Tenant,
    make_tenant: Callable[..., Tenant],
    make_destination: Callable[..., Destination],
    make_user: Callable[..., Any],
) -> None:
    make_destination(tenant=other_tenant, name="Globex pixel")
    stranger = make_tenant("Initech", "initech")
    make_destination(tenant=stranger, name="Initech secret pixel")
    agency = with_email(make_user(tenant, Role.VIEWER, username="agency"))
    Membership.objects.create(user=agency, tenant=other_tenant, role=Role.ADMIN)
    digest.set_choice(agency, DigestChoice.COMBINED)

    assert digest.send_daily_digests() == 1

    (message,) = mail.outbox
    assert message.to == ["agency@example.com"]
    assert message.subject.startswith("Daily Conversions API digest: 2 clients")
    assert "== Acme Shoes ==" in message.body
    assert "== Globex Coffee ==" in message.body
    assert "Globex pixel" in message.body
    assert "Shop pixel" in message.body
    assert "Initech" not in message.body
    assert "Initech" not in message.alternatives[0][0]


def test_a_tenant_digest_never_lists_another_tenants_destinations(
    acme: dict[str, Destination],
    tenant: Tenant,
    other_tenant: Tenant,
    make_destination: Callable[..., Destination],
    make_user: Callable[..., Any],
) -> None:
    make_destination(tenant=other_tenant, name="Globex pixel")
    with_email(make_user(tenant, Role.ADMIN, username="ada"))
    with_email(make_user(other_tenant, Role.ADMIN, username="gus"))

    assert digest.send_daily_digests() == 2

    by_recipient = {message.to[0]: message for message in mail.outbox}
    assert "Globex" not in by_recipient["ada@example.com"].body
    assert "Shop pixel" not in by_recipient["gus@example.com"].body
    assert "Globex pixel" in by_recipient["gus@example.com"].body


def test_people_without_an_email_or_inactive_get_nothing(
    acme: dict[str, Destination], tenant: Tenant, make_user: Callable[..., Any]
) -> None:
    make_user(tenant, Role.ADMIN)  # no email address
    inactive = with_email(make_user(tenant, Role.ADMIN))
    inactive.is_active = False
    inactive.save()

    assert digest.send_daily_digests() == 0


def test_building_a_digest_costs_the_same_queries_for_few_or_many_destinations(
    site: Any,
    tenant: Tenant,
    other_tenant: Tenant,
    make_destination: Callable[..., Destination],
) -> None:
    make_destination(tenant=tenant)
    with CaptureQueriesContext(connection) as few:
        digest.build_digests([tenant.pk])
    for _ in range(8):
        make_destination(tenant=other_tenant)
    with CaptureQueriesContext(connection) as many:
        sections = digest.build_digests([tenant.pk, other_tenant.pk])

    assert sum(len(section.rows) for section in sections) == 9
    assert len(few) == len(many) == 6


def test_the_command_sends_the_digest_now(
    acme: dict[str, Destination], tenant: Tenant, make_user: Callable[..., Any], capsys: Any
) -> None:
    with_email(make_user(tenant, Role.ADMIN))

    call_command("capi_digest")

    assert len(mail.outbox) == 1
    assert "Sent 1 digest email." in capsys.readouterr().out


def test_the_daily_schedule_runs_at_the_digest_hour(site: Any) -> None:
    site.CAPI_DESTINATIONS = {**site.CAPI_DESTINATIONS, "DIGEST_HOUR": 7}
    Schedule.objects.filter(name=tasks.DIGEST_SCHEDULE).delete()  # made by migrate, real time

    tasks.ensure_schedules()

    schedule = Schedule.objects.get(name=tasks.DIGEST_SCHEDULE)
    assert schedule.func == "capi_destinations.tasks.send_daily_digests"
    assert schedule.schedule_type == Schedule.DAILY
    # The held clock is 12:00 UTC: the first run is 07:00 the next day.
    assert schedule.next_run == app_clock.now().replace(hour=7) + timedelta(days=1)


def test_a_person_chooses_their_digest_on_the_page(
    site: Any, tenant: Tenant, make_user: Callable[..., Any], client: Any
) -> None:
    user = make_user(tenant, Role.VIEWER)
    client.force_login(user)
    url = reverse("capi_destinations:digest_settings")

    assert client.get(url).status_code == 200
    response = client.post(url, {"digest": DigestChoice.COMBINED})

    assert response.status_code == 302
    assert DigestPreference.objects.get(user=user).digest == DigestChoice.COMBINED
    assert client.post(url, {"digest": "everything"}).status_code == 200  # refused, no 500
    assert DigestPreference.objects.get(user=user).digest == DigestChoice.COMBINED
