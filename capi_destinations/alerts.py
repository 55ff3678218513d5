"""A tenant's notification channels: what the Alerts page and the admin do with them.

Create, edit and delete a channel, send it a test alert, and read the page's rows at a fixed
number of queries. A webhook's signing secret is made here, returned once to be shown, and never
again. Sending lives in :mod:`capi_destinations.alert_delivery`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Prefetch, Q
from django.http import Http404

from capi_destinations import alert_delivery
from capi_destinations.models import (
    AlertAttempt,
    AlertDeliveryStatus,
    ChannelKind,
    NotificationChannel,
    Tenant,
)
from capi_destinations.signals import ALERT_KINDS

# Attempts shown per channel on the page.
RECENT_ATTEMPTS = 5
EDITABLE_FIELDS = ("name", "kind", "target", "alert_kinds", "enabled")


@dataclass(frozen=True)
class ChannelRow:
    """A channel on the Alerts page: its recent attempts and how many alerts wait."""

    channel: NotificationChannel
    recent_attempts: list[AlertAttempt]
    waiting: int

    @property
    def kind_labels(self) -> list[str]:
        return [label for kind, label in ALERT_KINDS.items() if kind in self.channel.alert_kinds]


def channel_rows(tenant: Tenant) -> list[ChannelRow]:
    """The tenant's channels for the page, in two queries whatever their number."""
    channels = (
        NotificationChannel.objects.filter(tenant=tenant)
        .annotate(
            waiting=Count(
                "deliveries",
                filter=Q(
                    deliveries__status__in=(
                        AlertDeliveryStatus.PENDING,
                        AlertDeliveryStatus.SENDING,
                    ),
                    deliveries__is_test=False,
                ),
            )
        )
        .prefetch_related(
            Prefetch(
                "attempts",
                queryset=AlertAttempt.objects.order_by("-started_at", "-pk")[:RECENT_ATTEMPTS],
                to_attr="recent",
            )
        )
        .order_by("name", "pk")
    )
    return [ChannelRow(channel, list(channel.recent), channel.waiting) for channel in channels]


def channel_of(tenant: Tenant, code: uuid.UUID | str) -> NotificationChannel:
    """The tenant's channel with public ``code``; 404 for another tenant's or an unknown one."""
    channel = NotificationChannel.objects.select_related("tenant").filter(tenant=tenant, code=code)
    found = channel.first()
    if found is None:
        raise Http404("No such channel.")
    return found


def _apply(channel: NotificationChannel, values: dict[str, Any]) -> str:
    for name in EDITABLE_FIELDS:
        if name in values:
            setattr(channel, name, values[name])
    secret = ""
    if channel.kind == ChannelKind.WEBHOOK and not channel.signing_secret:
        secret = channel.set_signing_secret()
    channel.full_clean()
    channel.save()
    return secret


@transaction.atomic
def create_channel(tenant: Tenant, **values: Any) -> tuple[NotificationChannel, str]:
    """Create a channel; returns it and its new signing secret (webhooks; "" otherwise).

    The secret is returned this once to be shown; it is stored encrypted and never shown again.
    Raises ``ValidationError`` for a bad target (address, scheme, or a host the settings refuse).
    """
    channel = NotificationChannel(tenant=tenant)
    secret = _apply(channel, values)
    return channel, secret


@transaction.atomic
def update_channel(channel: NotificationChannel, **values: Any) -> str:
    """Change a channel; returns a new signing secret if it just became a webhook, else ""."""
    return _apply(channel, values)


def new_signing_secret(channel: NotificationChannel) -> str:
    """Replace a webhook's signing secret; returns the new one (shown once). The old one stops
    working at once: alerts still waiting are signed with the new one when they are sent."""
    if channel.kind != ChannelKind.WEBHOOK:
        raise ValidationError("Only a webhook channel has a signing secret.")
    secret = channel.set_signing_secret()
    channel.save(update_fields=["signing_secret"])
    return secret


def delete_channel(channel: NotificationChannel) -> None:
    """Delete a channel with its waiting alerts and attempts."""
    channel.delete()


def send_test_alert(channel: NotificationChannel) -> AlertAttempt:
    """Send a test alert now and return the receiver's answer (status code or error)."""
    return alert_delivery.send_test_alert(channel)
