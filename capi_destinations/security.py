"""What every view of the app adds for safety: error reports without secrets, and a CSP.

Error reports (the HTML mail to ``ADMINS``, the ``DEBUG`` error page) print each frame's local
variables and the request's POST data. The functions that hold an ingest secret, a token or
customer data mark them with ``sensitive_variables`` / ``sensitive_post_parameters``; Django's own
filter honours those marks only while ``DEBUG`` is off. The app's views install
:class:`AlwaysSafeExceptionReporterFilter`, which honours them always.

The pages need no inline script (htmx is a static file, its indicator styles are in the app's
stylesheet and the charts are inline SVG drawn with attributes), so the Content-Security-Policy
allows scripts and styles from the site itself only: an injected ``<script>`` or ``on…=``
attribute does not run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.debug import SafeExceptionReporterFilter

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "AlwaysSafeExceptionReporterFilter",
    "secure_view",
]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class AlwaysSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's safe filter, active whatever ``DEBUG`` says.

    A host can make it the filter of its whole site with ``DEFAULT_EXCEPTION_REPORTER_FILTER =
    "capi_destinations.security.AlwaysSafeExceptionReporterFilter"``.
    """

    def is_active(self, request: HttpRequest | None) -> bool:
        return True


_FILTER = AlwaysSafeExceptionReporterFilter()


def secure_view(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """``view`` with the safe error-report filter and, unless it set its own, the app's CSP."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Django asks the request for its filter (get_exception_reporter_filter).
        request.exception_reporter_filter = _FILTER  # type: ignore[attr-defined]
        response = view(request, *args, **kwargs)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    wrapper.secure_view = True  # type: ignore[attr-defined]
    return wrapper
