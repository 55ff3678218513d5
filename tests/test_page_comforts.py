"""Small comforts of the pages (issue 16): times as ``<time>`` in UTC with a UTC title (the
browser rewrites them in the viewer's zone), "just now", copy buttons, a skip link, a favicon."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.staticfiles import finders
from django.template import Context, Template
from django.test import Client
from django.urls import reverse

from capi_destinations.models import Destination, Role
from capi_destinations.templatetags.capi_tags import time_ago
from tests.conftest import FROZEN_AT

TEMPLATES = Path(__file__).resolve().parent.parent / "capi_destinations" / "templates"


def render(source: str, **context: object) -> str:
    return Template("{% load capi_tags %}" + source).render(Context(context))


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_time_is_a_time_element_in_utc_with_a_utc_title() -> None:
    moment = datetime(2026, 11, 24, 12, 5, 9, tzinfo=UTC)
    assert render("{% capi_time moment %}", moment=moment) == (
        '<time datetime="2026-11-24T12:05:09Z" title="2026-11-24 12:05:09 UTC" '
        'data-capi-time="full">2026-11-24 12:05:09 UTC</time>'
    )
    assert ">Nov 24, 12:05:09 UTC</time>" in render('{% capi_time moment "short" %}', moment=moment)
    assert ">12:05 UTC</time>" in render('{% capi_time moment "time" %}', moment=moment)
    assert render("{% capi_time moment %}", moment=None) == ""


def test_a_moment_in_another_zone_is_written_in_utc() -> None:
    moment = datetime(2026, 11, 24, 13, 5, 9, tzinfo=ZoneInfo("Europe/Paris"))
    html = render("{% capi_time moment %}", moment=moment)
    assert 'datetime="2026-11-24T12:05:09Z"' in html
    assert ">2026-11-24 12:05:09 UTC</time>" in html


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (timedelta(seconds=0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=-30), "just now"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(hours=2, minutes=5), "2 hours, 5 minutes ago"),
    ],
)
def test_relative_times_say_just_now_under_a_minute(clock, ago, text) -> None:
    assert time_ago(FROZEN_AT - ago).replace("\xa0", " ") == text


def test_relative_time_keeps_the_utc_moment_on_hover(clock) -> None:
    html = render("{% capi_ago moment %}", moment=FROZEN_AT)
    assert html == (
        '<time datetime="2026-11-24T12:00:00Z" title="2026-11-24 12:00:00 UTC" '
        'data-capi-ago="1">just now</time>'
    )


def test_no_template_shows_a_time_outside_the_time_tags() -> None:
    """Every time on the pages goes through ``capi_time``/``capi_ago`` (so it is converted in the
    browser and says "just now"); Django's own ``date``/``timesince`` filters are not used."""
    offenders = [
        f"{path.name}: {match.group(0)}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        # Emails run no script to convert times: they print UTC and say so.
        if path.parent.name != "email"
        for match in re.finditer(
            r"\|\s*(timesince|naturaltime|date:[^}]*[HiYjs])", path.read_text()
        )
        # The chart's bars are named by their UTC hour, with "UTC" in their title.
        if "bar.hour" not in match.string[max(0, match.start() - 20) : match.start()]
    ]
    assert offenders == []


def test_the_overview_card_says_just_now_after_a_delivery(
    clock, make_user, tenant, make_destination
) -> None:
    destination = make_destination(name="Just delivered")
    Destination.objects.filter(pk=destination.pk).update(last_delivered_at=FROZEN_AT)
    user = make_user(tenant, Role.VIEWER)
    content = logged_in(user).get(reverse("capi_destinations:overview")).content.decode()
    assert re.search(r'data-testid="last-delivery"><time [^>]*>just now</time>', content)
    assert "0 minutes ago" not in content


def test_every_page_starts_with_a_skip_link_and_has_a_favicon(
    client, make_user, tenant, destination
) -> None:
    pages = {
        "login": client.get(reverse("login")).content.decode(),
        "overview": logged_in(make_user(tenant, Role.VIEWER))
        .get(reverse("capi_destinations:overview"))
        .content.decode(),
    }
    for name, content in pages.items():
        body = content[content.index("<body") :]
        first_focusable = re.search(r"<(a|button|input|select|textarea|summary)\b[^>]*>", body)
        assert first_focusable is not None, name
        assert 'data-testid="skip-link"' in first_focusable.group(0), name
        assert 'href="#content"' in first_focusable.group(0), name
        assert 'id="content"' in content, name
        icon = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)"', content)
        assert icon is not None, name
        assert icon.group(1).endswith("capi_destinations/favicon.svg"), name
    assert finders.find("capi_destinations/favicon.svg")
    logged_out = client.post(reverse("logout")).content.decode()
    assert "capi_destinations/favicon.svg" in logged_out


def test_the_snippet_server_key_and_curl_have_copy_buttons_for_their_exact_text(
    make_user, tenant
) -> None:
    editor = make_user(tenant, Role.EDITOR)
    response = logged_in(editor).post(
        reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug}),
        {
            "name": "Acme web",
            "pixel_id": "1234567890123456",
            "access_token": "EAA" + "x" * 187,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
        },
    )
    content = response.content.decode()
    for button, target in [
        ("copy-snippet", "capi-snippet"),
        ("copy-server-key", "capi-server-key"),
        ("copy-curl", "capi-curl"),
    ]:
        tag = re.search(rf'<button[^>]*data-testid="{button}"[^>]*>', content)
        assert tag is not None, button
        assert f'data-capi-copy="{target}"' in tag.group(0)
        assert re.search(rf'<pre [^>]*id="{target}"', content), target


def test_no_template_has_a_comment_django_would_print() -> None:
    """``{# … #}`` ends on its own line; one spread over lines is printed on the page as text."""
    from pathlib import Path

    templates = Path(__file__).resolve().parent.parent / "capi_destinations" / "templates"
    printed = [
        f"{path.name}:{number}"
        for path in templates.glob("**/*.html")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "{#" in line and "#}" not in line.split("{#", 1)[1]
    ]
    assert printed == []
