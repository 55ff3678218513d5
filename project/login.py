"""A login view that slows password guessing: failures are counted per username and per client IP.

After ``MAX_FAILURES`` failed attempts inside ``WINDOW_SECONDS``, further attempts for that
username or from that address are refused with HTTP 429 until the window ends — even with the right
password, so a guesser learns nothing. Counters live in Django's cache (use a shared cache such as
Redis when running several web processes).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


def _keys(request: HttpRequest, username: str) -> list[str]:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    address = request.META.get("REMOTE_ADDR", "")
    return [f"login-failures:user:{digest}", f"login-failures:ip:{address}"]


def _failures(keys: list[str]) -> int:
    return max((cache.get(key, 0) for key in keys), default=0)


def _record_failure(keys: list[str]) -> None:
    for key in keys:
        if not cache.add(key, 1, WINDOW_SECONDS):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, WINDOW_SECONDS)


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView with a failure counter in front of it."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        keys = _keys(request, request.POST.get("username", ""))
        if _failures(keys) >= MAX_FAILURES:
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
            _record_failure(keys)
        return response
