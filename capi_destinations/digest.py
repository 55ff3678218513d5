"""The daily digest: one email summarising every destination, per tenant or per person.

Who gets what (``DigestPreference``; no row means the default):

- **per tenant** (the default): each tenant's admins get that tenant's digest, one email per
  tenant they administer;
- **combined**: one email across every tenant the person is a member of, in any role (an agency's
  account manager), instead of the per-tenant ones;
- **none**: nothing (what the unsubscribe link sets).

Each destination's line: status, events delivered/failed/rejected in the last 24 hours (hourly
counters), the top finding (the first health reason), match quality (our estimate over the last
24 hours) and what changed since yesterday (health changes and alerts raised or ended). Building
a digest costs a fixed number of queries whatever the number of destinations
(:func:`build_digests`). The unsubscribe link is signed per person (``django.core.signing``) and
works with one click, without a login.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from capi_destinations import alert_checks, clock, reports
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AlertKind,
    AlertState,
    Destination,
    DigestChoice,
    DigestPreference,
    Health,
    HealthCheck,
    MatchQualityReport,
    Membership,
    Role,
    Tenant,
)

logger = logging.getLogger("capi_destinations.digest")

DAY = timedelta(hours=24)
UNSUBSCRIBE_SALT = "capi_destinations.digest.unsubscribe"


@dataclass(frozen=True)
class DigestRow:
    """One destination in a digest."""

    card: reports.DestinationCard
    match_quality: float | None
    changes: list[str]
    url: str
    # Meta's own score as last fetched (``MatchQualityReport.headline``): (event name, score).
    meta_score: tuple[str, float] | None = None

    @property
    def status(self) -> str:
        """The status in words ("Healthy", "Unhealthy", "Not checked yet", "Disabled")."""
        destination = self.card.destination
        label = Health(destination.health).label
        return label if destination.enabled else f"{label} (sending off)"

    @property
    def top_finding(self) -> str:
        """The first thing to fix ("" when nothing is wrong)."""
        return self.card.first_reason


@dataclass(frozen=True)
class TenantDigest:
    """One tenant's part of a digest."""

    tenant: Tenant
    rows: list[DigestRow] = field(default_factory=list)

    @property
    def unhealthy(self) -> int:
        """How many of its destinations are Unhealthy."""
        return sum(row.card.destination.health == Health.UNHEALTHY for row in self.rows)


def build_digests(tenant_ids: Sequence[int], *, now: datetime | None = None) -> list[TenantDigest]:
    """The digest sections of these tenants, by tenant name: six queries in all."""
    now = now or clock.now()
    tenants = list(Tenant.objects.filter(pk__in=list(tenant_ids)).order_by("name", "pk"))
    destinations = list(
        Destination.objects.filter(tenant_id__in=[tenant.pk for tenant in tenants])
        .select_related("tenant", "match_quality_report")
        .defer(*reports.SECRET_COLUMNS)
        .annotate(waiting=reports.waiting_count())
        .order_by(reports.unhealthy_first(), "name", "pk")
    )
    ids = [destination.pk for destination in destinations]
    counts = reports.counts_last_24h(ids, now=now)
    quality = _match_quality(ids, now=now)
    changes = _changes_since_yesterday(ids, now=now)
    url_of = reports.destination_url_maker()
    by_tenant: dict[int, list[DigestRow]] = defaultdict(list)
    for destination in destinations:
        card = reports.card_for(destination, counts.get(destination.pk), url_of)
        by_tenant[destination.tenant_id].append(
            DigestRow(
                card=card,
                match_quality=quality.get(destination.pk),
                changes=changes.get(destination.pk, []),
                url=absolute(card.url),
                meta_score=_meta_score(destination),
            )
        )
    return [TenantDigest(tenant, by_tenant.get(tenant.pk, [])) for tenant in tenants]


def _meta_score(destination: Destination) -> tuple[str, float] | None:
    """Meta's score of the event the cards name, from the report loaded with the destination."""
    try:
        report = destination.match_quality_report
    except MatchQualityReport.DoesNotExist:
        return None
    headline = report.headline()
    if headline is None or headline[1] is None:
        return None
    return (headline[0], headline[1])


def _match_quality(ids: Sequence[int], *, now: datetime) -> dict[int, float]:
    averages = alert_checks.match_quality_averages(ids, since=now - DAY)
    return {pk: average for pk, (average, _count) in averages.items()}


def _changes_since_yesterday(ids: Sequence[int], *, now: datetime) -> dict[int, list[str]]:
    """Health changes and alert changes of the last 24 hours, oldest first, in two queries."""
    since = now - DAY
    dated: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    health_changes = HealthCheck.objects.filter(
        destination_id__in=list(ids), status_changed=True, checked_at__gte=since
    ).values_list("destination_id", "checked_at", "status")
    for pk, moment, status in health_changes:
        dated[pk].append((moment, f"{moment:%H:%M} UTC: became {Health(status).label}"))
    alert_changes = AlertState.objects.filter(
        destination_id__in=list(ids), changed_at__gte=since
    ).values_list("destination_id", "changed_at", "raised_at", "kind", "raised", "reason")
    for pk, changed_at, raised_at, kind, raised, reason in alert_changes:
        label = AlertKind(kind).label
        # An alert raised and ended since yesterday shows both.
        if raised_at is not None and raised_at >= since:
            dated[pk].append((raised_at, f"{raised_at:%H:%M} UTC: alert: {label} — {reason}"))
        if not raised and changed_at is not None:
            dated[pk].append((changed_at, f"{changed_at:%H:%M} UTC: alert ended: {label}"))
    return {pk: [text for _moment, text in sorted(items)] for pk, items in dated.items()}


# --- who receives what ----------------------------------------------------------------------


def choice_of(user: Any) -> str:
    """The person's digest choice (``DigestChoice``), the default when they never chose."""
    preference = DigestPreference.objects.filter(user=user).values_list("digest", flat=True)
    return preference.first() or DigestChoice.PER_TENANT


def set_choice(user: Any, choice: str) -> None:
    """Store the person's digest choice."""
    DigestPreference.objects.update_or_create(user=user, defaults={"digest": DigestChoice(choice)})


def _with_email(users: Iterable[Any]) -> list[Any]:
    email_field = get_user_model().get_email_field_name()
    return [user for user in users if user.is_active and getattr(user, email_field, "")]


def _choices(user_ids: Iterable[int]) -> dict[int, str]:
    return dict(
        DigestPreference.objects.filter(user_id__in=list(user_ids)).values_list("user_id", "digest")
    )


def recipients(tenant_ids: Sequence[int] | None = None) -> tuple[dict[int, list[Any]], list[Any]]:
    """``({tenant_id: [admins who get its digest]}, [people who get the combined one])``.

    Inactive people and people without an email address get nothing.
    """
    memberships = Membership.objects.select_related("user")
    if tenant_ids is not None:
        memberships = memberships.filter(tenant_id__in=list(tenant_ids))
    rows = list(memberships.order_by("tenant_id", "user_id"))
    choices = _choices({membership.user_id for membership in rows})
    per_tenant: dict[int, list[Any]] = defaultdict(list)
    combined: dict[int, Any] = {}
    for membership in rows:
        choice = choices.get(membership.user_id, DigestChoice.PER_TENANT)
        if choice == DigestChoice.PER_TENANT and membership.role == Role.ADMIN:
            per_tenant[membership.tenant_id].append(membership.user)
        elif choice == DigestChoice.COMBINED:
            combined[membership.user_id] = membership.user
    return (
        {pk: _with_email(users) for pk, users in per_tenant.items()},
        _with_email(combined.values()),
    )


def tenants_of(user: Any) -> list[int]:
    """The tenants the person is a member of (any role): what their combined digest covers."""
    return list(Membership.objects.filter(user=user).values_list("tenant_id", flat=True))


# --- the email --------------------------------------------------------------------------------


def absolute(path: str) -> str:
    """``path`` on the site (``SITE_URL``), or the path itself when the setting is empty."""
    base = str(app_settings.SITE_URL or "").rstrip("/")
    return f"{base}{path}" if base and path.startswith("/") else path


def _signer() -> signing.Signer:
    # "." rather than ":" between value and signature: the token stays one plain path segment.
    return signing.Signer(salt=UNSUBSCRIBE_SALT, sep=".")


def unsubscribe_token(user: Any) -> str:
    """The signed token of the person's unsubscribe link (no expiry: old emails keep working)."""
    return _signer().sign_object(user.pk)


def unsubscribe_url(user: Any) -> str:
    """The person's one-click unsubscribe link."""
    path = reverse(
        "capi_destinations:digest_unsubscribe", kwargs={"signature": unsubscribe_token(user)}
    )
    return absolute(path)


def unsubscribe(token: str) -> Any | None:
    """Stop the digest for the person the token was signed for; returns them (None: invalid)."""
    try:
        user_id = _signer().unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(user_id, int):
        return None
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is not None:
        set_choice(user, DigestChoice.NONE)
    return user


def render_digest(
    user: Any, sections: list[TenantDigest], *, now: datetime
) -> EmailMultiAlternatives:
    """The digest email for one person (plain text with an HTML alternative)."""
    destinations = sum(len(section.rows) for section in sections)
    unhealthy = sum(section.unhealthy for section in sections)
    if len(sections) == 1:
        subject = f"[{sections[0].tenant.name}] Daily Conversions API digest"
    else:
        subject = f"Daily Conversions API digest: {len(sections)} clients"
    subject += f" — {unhealthy} of {destinations} destinations unhealthy"
    link = unsubscribe_url(user)
    context = {
        "user": user,
        "sections": sections,
        "now": now,
        "unsubscribe_url": link,
        "overview_url": absolute(reverse("capi_destinations:overview")),
        "destinations": destinations,
        "unhealthy": unhealthy,
    }
    email_field = get_user_model().get_email_field_name()
    message = EmailMultiAlternatives(
        subject,
        render_to_string("capi_destinations/email/digest.txt", context),
        None,
        [getattr(user, email_field)],
        headers={
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message.attach_alternative(
        render_to_string("capi_destinations/email/digest.html", context), "text/html"
    )
    return message


def send_daily_digests(*, now: datetime | None = None) -> int:
    """Send today's digests: each tenant's to its admins, the combined ones; returns mails sent.

    A failing mail server for one person is logged and the others still get theirs.
    """
    now = now or clock.now()
    per_tenant, combined = recipients()
    sections = {section.tenant.pk: section for section in build_digests(list(per_tenant), now=now)}
    sent = 0
    for tenant_id, users in per_tenant.items():
        for user in users:
            sent += _send(user, [sections[tenant_id]], now=now)
    for user in combined:
        sent += _send(user, build_digests(tenants_of(user), now=now), now=now)
    return sent


def _send(user: Any, sections: list[TenantDigest], *, now: datetime) -> int:
    if not sections:
        return 0
    try:
        return render_digest(user, sections, now=now).send()
    except Exception:
        logger.exception("Could not send the daily digest to user %s", user.pk)
        return 0
