"""``ClickIdMiddleware``: keep Meta's click and browser IDs in first-party cookies.

Add ``"capi_destinations.middleware.ClickIdMiddleware"`` to ``MIDDLEWARE`` (optional). On a
``GET`` whose URL carries an ``fbclid``, it sets ``_fbc`` (``fb.<index>.<ms>.<fbclid>``) unless
the cookie already holds that click; it sets ``_fbp`` when there is none; it renews both for
Meta's 90 days on every ``GET``, as the Pixel does. Set by the site's own server, the cookies are
first-party: Safari's seven-day cap on cookies written by scripts and blockers of Meta's script
do not shorten them. The view sees the new values at once (``request.COOKIES``), so a ``track()``
with ``request=`` in the same request carries them.

A response that sets them is marked ``Cache-Control: private`` and ``Vary: Cookie``: it carries
one visitor's cookies, which a shared cache must not hand to the next visitor.

Nothing is set or renewed when the visitor's consent refuses ad storage: the consent state comes
from ``CLICK_ID_CONSENT`` (a function of the request), and ``CLICK_ID_MISSING_CONSENT`` decides
when it is unknown.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.module_loading import import_string

from capi_destinations import click_ids, clock, consent
from capi_destinations.conf import app_settings

_SAFE_METHODS = ("GET", "HEAD")


class ClickIdMiddleware:
    """Set and renew ``_fbc``/``_fbp`` as first-party cookies; see the module's docstring."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method not in _SAFE_METHODS or not _ad_storage_allowed(request):
            return self.get_response(request)
        cookies = _cookies_to_keep(request)
        # The view reads the values of this very visit (track(..., request=request)).
        request.COOKIES.update(cookies)
        response = self.get_response(request)
        for name, value in cookies.items():
            response.set_cookie(
                name,
                value,
                max_age=click_ids.COOKIE_MAX_AGE,
                domain=app_settings.CLICK_ID_COOKIE_DOMAIN,
                secure=request.is_secure(),
                httponly=False,  # the Pixel and capi.js read them
                samesite="Lax",
            )
        if cookies:
            # The response now carries this visitor's own cookies: a shared cache (Django's
            # per-site cache, a CDN) must never hand them to another visitor.
            patch_cache_control(response, private=True)
            patch_vary_headers(response, ("Cookie",))
        return response


def _ad_storage_allowed(request: HttpRequest) -> bool:
    state: Any = None
    if app_settings.CLICK_ID_CONSENT:
        state = import_string(app_settings.CLICK_ID_CONSENT)(request)
    return consent.allows_ad_storage(state, missing_consent=app_settings.CLICK_ID_MISSING_CONSENT)


def _cookies_to_keep(request: HttpRequest) -> dict[str, str]:
    """The cookie values to write on this response: new ones, and the current ones renewed."""
    created_ms = int(clock.now().timestamp() * 1000)
    domain = app_settings.CLICK_ID_COOKIE_DOMAIN or split_domain_port(request.get_host())[0]
    index = click_ids.subdomain_index(domain)
    kept: dict[str, str] = {}

    fbc = request.COOKIES.get(click_ids.FBC_COOKIE, "")
    fbclid = click_ids.first_fbclid(request.GET.getlist("fbclid"))
    if fbclid is not None and (
        not click_ids.is_click_id_value(fbc) or click_ids.fbclid_of_fbc(fbc) != fbclid
    ):
        kept[click_ids.FBC_COOKIE] = click_ids.build_fbc(fbclid, created_ms=created_ms, index=index)
    elif click_ids.is_click_id_value(fbc):
        kept[click_ids.FBC_COOKIE] = fbc

    fbp = request.COOKIES.get(click_ids.FBP_COOKIE, "")
    if click_ids.is_click_id_value(fbp):
        kept[click_ids.FBP_COOKIE] = fbp
    else:
        random_number = secrets.randbelow(2**31)
        kept[click_ids.FBP_COOKIE] = click_ids.build_fbp(
            random_number, created_ms=created_ms, index=index
        )
    return kept
