"""The app's optional middleware: ``ClickIdMiddleware`` and ``IngestMiddleware``.

``ClickIdMiddleware`` keeps Meta's click and browser IDs in first-party cookies.

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
when it is unknown. When that state refuses ad storage outright, cookies set before (while the
visitor still agreed) are taken out of the request, so no event of it carries them, and the
response expires them (any method). An unknown state removes nothing: the consent platform may
keep a yes where the server cannot read it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port
from django.urls import Resolver404, get_resolver, get_urlconf
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

from capi_destinations import click_ids, clock, consent
from capi_destinations.conf import app_settings

_SAFE_METHODS = ("GET", "HEAD")
# Every ingest URL ends so (``<mount>/v1/destinations/<key>/events``): other paths are not
# resolved twice.
_INGEST_PATH_END = "/events"
#: The attribute that marks the ingest view (``functools.wraps`` carries it to its wrappers).
INGEST_VIEW_MARK = "capi_ingest_endpoint"


class ClickIdMiddleware:
    """Set and renew ``_fbc``/``_fbp`` as first-party cookies; see the module's docstring."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        safe = request.method in _SAFE_METHODS
        carried = [name for name in _CLICK_ID_COOKIES if name in request.COOKIES]
        if not safe and not carried:
            return self.get_response(request)
        state = _consent_state(request)
        if carried and consent.refuses_ad_storage(state):
            return self._forgotten(request, carried)
        if not safe or not consent.allows_ad_storage(
            state, missing_consent=app_settings.CLICK_ID_MISSING_CONSENT
        ):
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

    def _forgotten(self, request: HttpRequest, carried: list[str]) -> HttpResponseBase:
        """The response to a request whose visitor refused ad storage after the click-ID
        cookies were set: the view does not see them, and the browser is told to drop them."""
        for name in carried:
            del request.COOKIES[name]
        response = self.get_response(request)
        for name in carried:
            response.delete_cookie(name, domain=app_settings.CLICK_ID_COOKIE_DOMAIN, samesite="Lax")
        # Cookies removed for one visitor: a shared cache must not hand that to another.
        patch_cache_control(response, private=True)
        patch_vary_headers(response, ("Cookie",))
        return response


_CLICK_ID_COOKIES = (click_ids.FBC_COOKIE, click_ids.FBP_COOKIE)


def _consent_state(request: HttpRequest) -> Any:
    """The visitor's consent state from the site's ``CLICK_ID_CONSENT`` function, or None."""
    if app_settings.CLICK_ID_CONSENT:
        return import_string(app_settings.CLICK_ID_CONSENT)(request)
    return None


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


class IngestMiddleware:
    """Answer the ingest endpoint without the middleware listed after this one.

    Optional, for sites that take many events over HTTP. Put
    ``"capi_destinations.middleware.IngestMiddleware"`` in ``MIDDLEWARE`` right after
    ``SecurityMiddleware`` (so HTTPS redirects and HSTS still apply) and before the session,
    CSRF, authentication and messages middleware: a request for the ingest URL is then answered
    here, and those never run for it (the view is CSRF-exempt and keeps no session; on the
    bench's single-event requests they cost a tenth of the request's CPU). Every other URL,
    the pages included, goes down the whole stack unchanged.

    What the view may still need is given lazily, as Django's own middleware gives it: the Host
    header is checked against ``ALLOWED_HOSTS`` (``CommonMiddleware`` does that for the pages),
    and ``request.user`` reads the session cookie only when it is used, which is when the
    destination's client excludes its staff's traffic (``Tenant.exclude_staff``); the answer then
    varies on the cookie, and a session the lookup changed is saved, as ``SessionMiddleware``
    does. ``ATOMIC_REQUESTS`` applies as for any view.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.uses_sessions = apps.is_installed("django.contrib.sessions") and apps.is_installed(
            "django.contrib.auth"
        )
        self.sessions = SessionMiddleware(get_response) if self.uses_sessions else None

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path_info.endswith(_INGEST_PATH_END):
            return self.get_response(request)
        urlconf = getattr(request, "urlconf", None) or get_urlconf()
        try:
            match = get_resolver(urlconf).resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if not getattr(match.func, INGEST_VIEW_MARK, False):
            return self.get_response(request)
        request.resolver_match = match
        # DisallowedHost (a 400, as for any view) when the Host header is not allowed.
        request.get_host()
        lazy_session = self.uses_sessions and not hasattr(request, "user")
        if lazy_session:
            request.user = SimpleLazyObject(lambda: _session_user(request))  # type: ignore[assignment]
        view: Callable[..., HttpResponseBase] = match.func
        for alias, database in connections.settings.items():
            if database.get("ATOMIC_REQUESTS") and alias not in getattr(
                view, "_non_atomic_requests", set()
            ):
                view = transaction.atomic(using=alias)(view)
        response = view(request, *match.args, **match.kwargs)
        session = request.__dict__.get("session")
        if lazy_session and session is not None and self.sessions is not None:
            response = self.sessions.process_response(request, response)  # type: ignore[arg-type]
        return response


def _session_user(request: HttpRequest) -> Any:
    """``request.user`` as ``SessionMiddleware`` and ``AuthenticationMiddleware`` give it."""
    from django.contrib.auth import get_user

    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    return get_user(request)
