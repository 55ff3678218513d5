"""Template tags: ``{% load capi_tags %}{% capi_snippet destination %}``, ``{% capi_time %}``,
``{% capi_ago %}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from capi_destinations import clock, problems
from capi_destinations.models import Destination, Health

register = template.Library()


def ingest_endpoint_url(destination: Destination, *, request: HttpRequest | None = None) -> str:
    """The destination's ingest endpoint, absolute when a request says which host serves it."""
    url = reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})
    return request.build_absolute_uri(url) if request is not None else url


def render_snippet(destination: Destination, *, request: HttpRequest | None = None) -> SafeString:
    """The ``<script>`` tag that loads capi.js configured for ``destination``.

    With ``request`` the URLs are absolute, so the snippet can be pasted into another site
    (whose origin must then be among the destination's allowed origins).
    """
    script_url = static("capi_destinations/capi.js")
    if request is not None:
        script_url = request.build_absolute_uri(script_url)
    return render_to_string(
        "capi_destinations/snippet.html",
        {
            "destination": destination,
            "script_url": script_url,
            "endpoint_url": ingest_endpoint_url(destination, request=request),
        },
    )


@register.simple_tag(takes_context=True)
def capi_snippet(context: dict[str, Any], destination: Destination) -> SafeString:
    """Render the browser helper's snippet for ``destination``."""
    return render_snippet(destination, request=context.get("request"))


def _health_label(destination: Destination) -> str:
    if destination.health_check_pending:
        return "Checking…"
    # Checked but unknown: Meta would not let the token read the pixel and no delivery has
    # shown yet whether it may send (a send-only token, or a mistyped Pixel ID).
    if destination.health == Health.UNKNOWN and destination.health_checked_at is not None:
        return "Waiting for first delivery"
    return destination.get_health_display()


@register.simple_tag
def health_badge(destination: Destination) -> SafeString:
    """The health badge: the word and the colour, never the colour alone; plus "Sending off" and
    "Test mode" when they apply. A tag, not an included template: the overview draws 500."""
    badge = format_html(
        '<span class="capi-badge capi-badge--{0}" data-testid="health-badge" data-health="{0}">'
        "{1}</span>",
        destination.shown_health,
        _health_label(destination),
    )
    if not destination.enabled:
        badge += SafeString(
            ' <span class="capi-badge capi-badge--off" data-testid="disabled-badge">'
            "Sending off</span>"
        )
    if destination.is_test_mode:
        badge += SafeString(
            ' <span class="capi-badge capi-badge--test" data-testid="test-mode-badge">'
            "Test mode</span>"
        )
    return badge


# Controls that only an editor may use; the failed events are every member's to read.
_EDITOR_ACTIONS = frozenset({problems.REPLACE_TOKEN, problems.EDIT, problems.ENABLE})


def fix_url(destination: Destination, action: str) -> str:
    """Where the control that applies a fix lives (``problems`` names it), or ""."""
    code = {"code": destination.code}
    if action == problems.REPLACE_TOKEN:
        return reverse("capi_destinations:replace_token", kwargs=code)
    if action == problems.EDIT:
        return reverse("capi_destinations:destination_edit", kwargs=code)
    if action == problems.ENABLE:
        # The Enable button is in the page's Sending panel.
        return reverse("capi_destinations:destination", kwargs=code) + "#controls"
    if action == problems.FAILED_EVENTS:
        return reverse("capi_destinations:event_log", kwargs=code) + "?status=failed"
    return ""


@register.simple_tag
def fix_link(destination: Destination, problem_key: str, can_edit: bool = False) -> SafeString:
    """The link from a fix to the button or page that applies it ("Replace token", …).

    Nothing when the problem has no such control, or when it is an editor's and the reader
    may not edit (the fix is still said in words).
    """
    found = problems.problem(problem_key)
    if found is None or not found.action:
        return SafeString("")
    if found.action in _EDITOR_ACTIONS and not can_edit:
        return SafeString("")
    return format_html(
        '<a class="capi-button capi-fix__action" href="{}" data-testid="fix-link" '
        'data-action="{}">{}</a>',
        fix_url(destination, found.action),
        found.action,
        found.action_label,
    )


#: How ``{% capi_time %}`` writes a moment (Django date formats); static/capi_destinations/
#: pages.js writes the same styles in the viewer's time zone.
TIME_STYLES = {
    "full": "Y-m-d H:i:s",
    "minute": "Y-m-d H:i",
    "short": "M j, H:i:s",
    "time": "H:i",
    "seconds": "H:i:s",
}


def _in_utc(value: datetime) -> datetime:
    # A naive value (a site with USE_TZ off) is taken as UTC, as the app stores it.
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value.astimezone(UTC)


def _time_element(moment: datetime, text: str, *, kind: str, value: str) -> SafeString:
    # ``data-capi-time`` (a style pages.js rewrites in the viewer's zone) or ``data-capi-ago``.
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    title = f"{dateformat.format(moment, TIME_STYLES['full'])} UTC"
    return format_html(
        '<time datetime="{}" title="{}" data-capi-{}="{}">{}</time>', iso, title, kind, value, text
    )


@register.simple_tag
def capi_time(value: datetime | None, style: str = "full") -> SafeString | str:
    """A moment as ``<time>``: in UTC on the page as sent, with its UTC title for the hover;
    pages.js rewrites the text in the viewer's time zone (the title stays UTC)."""
    if not value:
        return ""
    moment = _in_utc(value)
    text = f"{dateformat.format(moment, TIME_STYLES[style])} UTC"
    return _time_element(moment, text, kind="time", value=style)


def time_ago(value: datetime, now: datetime | None = None) -> str:
    """ "just now" under a minute (and for a moment a clock puts ahead), else "5 minutes ago"."""
    now = now or clock.now()
    if (now - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value, now)} ago"


@register.simple_tag
def capi_ago(value: datetime | None) -> SafeString | str:
    """How long ago a moment was ("just now", "5 minutes ago"), as ``<time>`` with its UTC
    title for the hover."""
    if not value:
        return ""
    moment = _in_utc(value)
    return _time_element(moment, time_ago(moment), kind="ago", value="1")
