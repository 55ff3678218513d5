"""Hardening of issue 14: every view of the app is a ``secure_view`` and its pages carry a CSP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import URLPattern, reverse

from capi_destinations import urls as app_urls
from capi_destinations.models import Destination, Role, Tenant
from capi_destinations.security import CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "pattern",
    [p for p in app_urls.urlpatterns if isinstance(p, URLPattern)],
    ids=lambda p: p.name,
)
def test_every_view_of_the_app_is_a_secure_view(pattern: URLPattern) -> None:
    assert getattr(pattern.callback, "secure_view", False), pattern.name


def test_every_page_carries_the_csp(
    client: Client,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    tenant: Tenant,
) -> None:
    client.force_login(make_user(tenant, Role.ADMIN))
    destination = make_destination()
    code = destination.code
    pages = [
        reverse("capi_destinations:overview"),
        reverse("capi_destinations:destination", kwargs={"code": code}),
        reverse("capi_destinations:destination_card", kwargs={"code": code}),
        reverse("capi_destinations:health_card", kwargs={"code": code}),
        reverse("capi_destinations:delivery_card", kwargs={"code": code}),
        reverse("capi_destinations:event_log", kwargs={"code": code}),
        reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug}),
        reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug}),
        reverse("capi_destinations:destination_edit", kwargs={"code": code}),
        reverse("capi_destinations:replace_token", kwargs={"code": code}),
        reverse("capi_destinations:destination_delete", kwargs={"code": code}),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url


def test_the_policy_allows_no_inline_script_or_style() -> None:
    directives = dict(directive.split(" ", 1) for directive in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


# --- a destination's allowed origins and Graph API version ---------------------------------


@pytest.mark.parametrize(
    "origins",
    [
        "https://shop.example.com",
        "https://shop.example.com/",
        "http://localhost:8000\nhttps://www.example.org",
        "https://Shop.Example.COM:8443",
        "http://127.0.0.1:5173",
        "http://[::1]:8000",
        "",
    ],
)
def test_origins_are_accepted(make_destination, origins: str) -> None:
    destination = make_destination(allowed_origins=origins)
    destination.full_clean()


@pytest.mark.parametrize(
    ("origins", "why"),
    [
        ("*", "wildcards"),
        ("null", "wildcards"),
        ("https://*.example.com", "wildcards"),
        ("shop.example.com", "https://"),
        ("our web shop", "https://"),
        ("ftp://shop.example.com", "https://"),
        ("https://shop.example.com/checkout", "no path"),
        ("https://shop.example.com?x=1", "no path"),
        ("https://user@shop.example.com", "no host"),
        ("https://", "no host"),
        ("https://shop.example.com:99999", "not an address"),
        ("https://shop.example.com\njavascript:alert(1)", "https://"),
    ],
)
def test_origins_that_are_not_origins_are_refused_with_why(
    make_destination, origins: str, why: str
) -> None:
    destination = make_destination()
    destination.allowed_origins = origins
    with pytest.raises(ValidationError) as raised:
        destination.full_clean()
    (message,) = raised.value.message_dict["allowed_origins"]
    assert "scheme://host" in message
    assert why in message


def test_the_destination_form_shows_the_origin_error(
    client: Client, make_user, tenant: Tenant, make_destination
) -> None:
    client.force_login(make_user(tenant, Role.EDITOR))
    destination = make_destination(allowed_origins="https://shop.example.com")
    url = reverse("capi_destinations:destination_edit", kwargs={"code": destination.code})
    response = client.post(
        url,
        {
            "name": destination.name,
            "pixel_id": destination.pixel_id,
            "consent_policy": "send_always",
            "missing_consent": "granted",
            "allowed_origins": "*",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "wildcards" in response.content.decode()
    destination.refresh_from_db()
    assert destination.allowed_origins == "https://shop.example.com"


@pytest.mark.parametrize("version", ["", "v26.0", "v19.0", "v100.12"])
def test_graph_api_versions_are_accepted(make_destination, version: str) -> None:
    make_destination(api_version=version).full_clean()


@pytest.mark.parametrize("version", ["26.0", "v26", "latest", "v26.0/", "V26.0", "v26.0\n"])
def test_a_graph_api_version_not_like_metas_is_refused(make_destination, version: str) -> None:
    destination = make_destination()
    destination.api_version = version
    with pytest.raises(ValidationError) as raised:
        destination.full_clean()
    assert "v26.0" in raised.value.message_dict["api_version"][0]
