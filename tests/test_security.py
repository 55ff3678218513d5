"""Hardening of issue 14: every view of the app is a ``secure_view`` and its pages carry a CSP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
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
