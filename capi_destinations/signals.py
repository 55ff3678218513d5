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
