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
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404

from capi_destinations import alert_delivery
from capi_destinations.models import (
    AlertAttempt,
    AlertDeliveryStatus,
    AuditAction,
    AuditEntry,
    ChannelKind,
    NotificationChannel,
    Tenant,
)
from capi_destinations.signals import ALERT_KINDS

# Attempts shown per channel on the page.
RECENT_ATTEMPTS = 5
EDITABLE_FIELDS = ("name", "kind", "target", "alert_kinds", "enabled")
CHANNEL_ACTIONS = (
    AuditAction.CHANNEL_ADDED,
    AuditAction.CHANNEL_CHANGED,
    AuditAction.CHANNEL_DELETED,
    AuditAction.CHANNEL_SECRET_REPLACED,
)


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
                    # Tried at least once: a health alert still settling is not "waiting to be
                    # retried".
                    deliveries__attempts__gt=0,
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


def _apply(channel: NotificationChannel, values: dict[str, Any]) -> tuple[str, list[str]]:
    """Set ``values``, make a webhook's missing secret, save; returns (secret, changed fields)."""
    # Compared with the stored row: a model form has already set its values on the instance.
    stored: dict[str, Any] = {}
    if channel.pk is not None:
        query = NotificationChannel.objects.filter(pk=channel.pk).values(*EDITABLE_FIELDS)
        stored = query.first() or {}
    changed = [
        name for name in EDITABLE_FIELDS if name in values and stored.get(name) != values[name]
    ]
    for name in changed:
        setattr(channel, name, values[name])
    secret = ""
    if channel.kind == ChannelKind.WEBHOOK and not channel.signing_secret:
        secret = channel.set_signing_secret()
    channel.full_clean()
    channel.save()
    return secret, changed


def _audit(channel: NotificationChannel, action: str, actor: Any, **detail: Any) -> AuditEntry:
    """Record ``action`` on a channel: its name and kind, never its target or secret."""
    is_person = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEntry.objects.create(
        tenant_id=channel.tenant_id,
        actor=actor if is_person else None,
        action=action,
        detail={"channel": channel.name, "kind": channel.get_kind_display(), **detail},
    )


def channel_history(tenant: Tenant, *, limit: int = 50) -> QuerySet[AuditEntry]:
    """The latest changes to ``tenant``'s channels, newest first, with who made them."""
    return (
        AuditEntry.objects.filter(tenant=tenant, action__in=CHANNEL_ACTIONS)
        .select_related("actor")
        .order_by("-created_at", "-pk")[:limit]
    )


@transaction.atomic
def create_channel(
    tenant: Tenant, *, actor: Any = None, **values: Any
) -> tuple[NotificationChannel, str]:
    """Create a channel; returns it and its new signing secret (webhooks; "" otherwise).

    The secret is returned this once to be shown; it is stored encrypted and never shown again.
    Raises ``ValidationError`` for a bad target (address, scheme, or a host the settings refuse).
    """
    channel = NotificationChannel(tenant=tenant)
    secret, _ = _apply(channel, values)
    _audit(channel, AuditAction.CHANNEL_ADDED, actor)
    return channel, secret


@transaction.atomic
def update_channel(channel: NotificationChannel, *, actor: Any = None, **values: Any) -> str:
    """Change a channel; returns a new signing secret if it just became a webhook, else ""."""
    secret, changed = _apply(channel, values)
    if changed:
        _audit(channel, AuditAction.CHANNEL_CHANGED, actor, changed=changed)
    return secret


@transaction.atomic
def new_signing_secret(channel: NotificationChannel, *, actor: Any = None) -> str:
    """Replace a webhook's signing secret; returns the new one (shown once). The old one stops
    working at once: alerts still waiting are signed with the new one when they are sent."""
    if channel.kind != ChannelKind.WEBHOOK:
        raise ValidationError("Only a webhook channel has a signing secret.")
    secret = channel.set_signing_secret()
    channel.save(update_fields=["signing_secret"])
    _audit(channel, AuditAction.CHANNEL_SECRET_REPLACED, actor)
    return secret


@transaction.atomic
def delete_channel(channel: NotificationChannel, *, actor: Any = None) -> None:
    """Delete a channel with its waiting alerts and attempts."""
    _audit(channel, AuditAction.CHANNEL_DELETED, actor)
    channel.delete()


def send_test_alert(channel: NotificationChannel) -> AlertAttempt:
    """Send a test alert now and return the receiver's answer (status code or error)."""
    return alert_delivery.send_test_alert(channel)
