"""Signals a host site (and the app's own modules) can connect to.

The service functions that change a destination send these; delivery and health checks react to
them, so the page button, the admin and the shell all trigger the same follow-up work.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent after a destination's access token was replaced. kwargs: destination, actor.
destination_token_replaced = Signal()

# Sent after a destination was enabled or disabled. kwargs: destination, enabled, actor.
destination_enabled_changed = Signal()

# Sent once per change of Destination.health. kwargs: destination, old, new, check (HealthCheck).
destination_health_changed = Signal()

# Sent after commit once ingestion stored events that are waiting to be sent.
# kwargs: destination_id, count (how many pending events that call stored).
events_recorded = Signal()

# Sent once when a condition worth an alert starts on a destination, and once when it ends
# (traffic dropped, the Graph API version ending, match quality fell, failure rate crossed).
# kwargs: destination, kind (an ``AlertKind`` value, see ALERT_KINDS), raised (True when it
# starts, False when it ends), reason (plain words), fix (plain words, "" when it ended).
# A health change has its own signal, destination_health_changed (alert kind "health").
destination_alert = Signal()

#: The alert kinds a notification channel can subscribe to, with their labels.
ALERT_KINDS: dict[str, str] = {
    "health": "Destination turned Unhealthy or recovered",
    "traffic_dropped": "Traffic dropped",
    "version_ending": "Graph API version ending",
    "match_quality_fell": "Match quality fell",
    "failure_rate": "Failure rate crossed the threshold",
}
