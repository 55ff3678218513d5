"""A login view that slows password guessing: failures are counted per username and per client.

Two counters, apart, each over ``WINDOW_SECONDS``:

- a username that failed ``MAX_FAILURES`` times is refused, from every address, until the window
  ends — even with the right password, so a guesser learns nothing;
- a client address that failed ``ADDRESS_MAX_FAILURES`` times (any usernames) is refused, which
  slows trying one password on many accounts. The limit is much higher than the username's, as
  many people may share one address (an office, a mobile carrier).

The address is the client's as the app's ``TRUSTED_PROXY_HEADER`` tells it
(``capi_destinations.ratelimit.client_address``). Behind a reverse proxy that setting must name
the header the proxy sets, otherwise every visitor has the proxy's address and the address counter
becomes one counter for the whole site. Counters live in Django's cache (use a shared cache such
as Redis when running several web processes).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from capi_destinations.ratelimit import cache_key_part, client_address

MAX_FAILURES = 5
ADDRESS_MAX_FAILURES = 50
WINDOW_SECONDS = 15 * 60


def _username_key(username: str) -> str:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"login-failures:user:{digest}"


def _address_key(request: HttpRequest) -> str:
    return f"login-failures:ip:{cache_key_part(client_address(request) or 'unknown')}"


def _is_locked(request: HttpRequest, username: str) -> bool:
    return (
        cache.get(_username_key(username), 0) >= MAX_FAILURES
        or cache.get(_address_key(request), 0) >= ADDRESS_MAX_FAILURES
    )


def _record_failure(request: HttpRequest, username: str) -> None:
    for key in (_username_key(username), _address_key(request)):
        if not cache.add(key, 1, WINDOW_SECONDS):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, WINDOW_SECONDS)


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView with failure counters in front of it."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "")
        if _is_locked(request, username):
            form = self.get_form()
            form.errors.clear()
            form.add_error(
                None,
                "Too many failed sign-in attempts. Wait 15 minutes and try again, or ask an "
                "administrator to reset your password.",
            )
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            return response
        response = super().post(request, *args, **kwargs)
        if response.status_code != 302:
            _record_failure(request, username)
        return response
