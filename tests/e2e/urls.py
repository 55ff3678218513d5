"""The test site's URLs plus a shop page carrying a destination's snippet, for browser tests.

Browsers refuse a page whose address they cannot place (one handed over by Playwright, say)
access to loopback servers, so the shop page is served by the live server itself. Opened as
http://127.0.0.1:<port>/ it is another origin than the endpoint at http://localhost:<port>/.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import path

from capi_destinations.middleware import ClickIdMiddleware
from capi_destinations.models import Destination
from tests.urls import urlpatterns as site_urlpatterns

FBP = "fb.1.1700000000000.1234567890"
BUY = (
    "window.lastEventId = capi.track("
    "'Purchase', {value: 49.9, currency: 'EUR'}, {email: 'Jane.Doe@Example.com'})"
)


def shop_page(request: HttpRequest, ingest_key: str) -> HttpResponse:
    """A checkout page with the snippet and a Pixel stand-in that records its calls.

    ``?beacon=0`` takes ``navigator.sendBeacon`` away so capi.js falls back to fetch.
    """
    destination = get_object_or_404(Destination, ingest_key=ingest_key)
    # The snippet points at the endpoint on "localhost", another origin than this page's.
    endpoint_host = RequestFactory().get("/", HTTP_HOST=f"localhost:{request.get_port()}")
    snippet = Template("{% load capi_tags %}{% capi_snippet destination %}").render(
        Context({"destination": destination, "request": endpoint_host})
    )
    no_beacon = "navigator.sendBeacon = undefined;" if request.GET.get("beacon") == "0" else ""
    return HttpResponse(
        f"""<!doctype html>
<html><head><title>Shop</title>
<script>
  // Stands in for Meta's Pixel: nothing reaches Meta, every call is recorded.
  window.fbqCalls = [];
  window.fbq = function () {{ window.fbqCalls.push(Array.prototype.slice.call(arguments)); }};
  document.cookie = "_fbp={FBP}; path=/";
  {no_beacon}
</script>
{snippet}
</head><body><button id="buy" onclick="{BUY}">Buy</button></body></html>"""
    )


def shop_page_behind_click_id_middleware(request: HttpRequest, ingest_key: str) -> HttpResponse:
    """The shop page served through ``ClickIdMiddleware``, as a host site that installed it."""
    return ClickIdMiddleware(lambda inner: shop_page(inner, ingest_key))(request)  # type: ignore[return-value]


def consent_from_cookie(request: HttpRequest) -> dict[str, str] | None:
    """The site's CLICK_ID_CONSENT: its consent banner's cookie says whether ads may store."""
    value = request.COOKIES.get("consent")
    return {"ad_storage": value} if value else None


urlpatterns = [
    *site_urlpatterns,
    path("e2e/shop/<str:ingest_key>/checkout", shop_page, name="e2e_shop"),
    path("e2e/landing/<str:ingest_key>/checkout", shop_page_behind_click_id_middleware),
]
