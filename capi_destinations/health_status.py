"""The health status of a destination: how a verdict is recorded and announced.

``Destination.health`` changes in one place, :func:`record_verdict`: a compare-and-set
(``UPDATE … WHERE id = x AND health = old``) so two processes never both record one change, a
``HealthCheck`` row per verdict, and ``signals.destination_health_changed`` (plus the email to
the tenant's admins, with ``HEALTH_EMAIL_ADMINS``) once per change, after commit. The health
checks (:mod:`capi_destinations.health`) decide a verdict from their questions; the delivery
engine (:mod:`capi_destinations.dispatch`) records Meta's refusal of a delivery through
:func:`mark_unhealthy_from_delivery`. This module imports neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction

from capi_destinations import clock, findings, graph, problems, signals
from capi_destinations.conf import app_settings
from capi_destinations.models import Destination, Health, HealthCheck, Membership, Role

logger = logging.getLogger("capi_destinations.health")

# Check severities are the findings' severities: one order, one home.
ERROR = findings.ERROR
INFO = findings.INFO

#: How a block's reason begins, on the card and in the emails, whoever recorded it (a delivery
#: Meta refused, or the health check that found the block still there).
DELIVERIES_REFUSED = (
    "Meta refused events for this destination, so sending is stopped until this is fixed:"
)

# Check names, in the order they run and are shown.
SENDING_ENABLED = "sending_enabled"
TOKEN_FORMAT = "token_format"  # noqa: S105 (a check name, not a secret)
META_ACCEPTS_TOKEN = "meta_accepts_token"  # noqa: S105
DELIVERIES_ACCEPTED = "deliveries_accepted"
DELIVERY_FAILURE_RATE = "delivery_failure_rate"
QUEUE_MOVING = "queue_moving"
TRAFFIC_FLOWING = "traffic_flowing"
GRAPH_API_VERSION = "graph_api_version"
TEST_MODE = "test_mode"
MATCH_QUALITY = "match_quality"


@dataclass(frozen=True)
class CheckResult:
    """The answer to one question about a destination, as stored in ``HealthCheck.checks``."""

    name: str
    ok: bool
    message: str
    fix: str = ""
    severity: str = ERROR
    #: The key of the problem it reports (``problems.PROBLEMS``): the card links its fix to the
    #: control that applies it. Empty for a passing check or a problem without one.
    problem: str = ""

    @property
    def failed(self) -> bool:
        """Whether this check makes the destination unhealthy."""
        return not self.ok and self.severity == ERROR

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: name, ok, message, fix, severity."""
        return asdict(self)

    def reason(self) -> dict[str, str]:
        """What ``Destination.health_reasons`` keeps of a failed check."""
        return {
            "name": self.name,
            "message": self.message,
            "fix": self.fix,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Verdict:
    """What one check run (or a refused delivery) concludes about a destination."""

    health: str
    reasons: list[dict[str, str]]
    checks: list[CheckResult]
    transient_failures: int


@dataclass(frozen=True)
class Snapshot:
    """The health fields of a destination as last read."""

    health: str
    reasons: list[dict[str, str]]
    transient_failures: int


def notes_of(checks: list[CheckResult]) -> list[str]:
    """The problem keys of the notes among ``checks`` (test mode, low match quality, …), in order.

    A note is an informational check that did not pass and whose problem is a note
    (``problems.Problem.note``): shown on the cards, it never turns one red.
    """
    notes = []
    for check in checks:
        found = problems.problem(check.problem)
        if not check.ok and check.severity == INFO and found is not None and found.note:
            notes.append(found.key)
    return notes


def record_verdict(
    destination: Destination,
    verdict_for: Callable[[Snapshot], Verdict],
    *,
    now: datetime,
    duration_ms: int,
    pixel_name: str | None,
    count_as_checked: bool = True,
) -> HealthCheck:
    """Write the verdict with a compare-and-set on ``health``; announce a change after commit.

    When another process changed the status in the meantime, the verdict is worked out again
    from what it wrote, so a change is recorded (and announced) exactly once.
    """
    old = Snapshot(
        destination.health,
        list(destination.health_reasons or []),
        destination.health_transient_failures,
    )
    with transaction.atomic():
        for _ in range(5):
            verdict: Verdict = verdict_for(old)
            changed = verdict.health != old.health
            updates: dict[str, Any] = {
                "health": verdict.health,
                "health_reasons": verdict.reasons,
                "health_transient_failures": verdict.transient_failures,
            }
            if count_as_checked:
                updates["health_checked_at"] = now
                updates["health_notes"] = notes_of(verdict.checks)
            if changed:
                updates["health_changed_at"] = now
            if pixel_name:
                updates["pixel_name"] = pixel_name
            written = Destination.objects.filter(pk=destination.pk, health=old.health).update(
                **updates
            )
            if written:
                break
            current = (
                Destination.objects.filter(pk=destination.pk)
                .values_list("health", "health_reasons", "health_transient_failures")
                .first()
            )
            if current is None:
                raise Destination.DoesNotExist(f"Destination {destination.pk} was deleted")
            old = Snapshot(current[0], list(current[1] or []), current[2])
        else:  # pragma: no cover - five concurrent changes in a row
            raise RuntimeError(f"Could not record the health of destination {destination.pk}")
        check = HealthCheck.objects.create(
            destination_id=destination.pk,
            checked_at=now,
            status=verdict.health,
            checks=[result.to_dict() for result in verdict.checks],
            duration_ms=max(0, duration_ms),
            status_changed=changed,
        )
        # Before the commit, so receivers of the signal see the destination as stored.
        for name, value in updates.items():
            setattr(destination, name, value)
        if changed:
            transaction.on_commit(
                partial(_announce_change, destination, old.health, verdict.health, check)
            )
    return check


def _announce_change(destination: Destination, old: str, new: str, check: HealthCheck) -> None:
    signals.destination_health_changed.send(
        sender=Destination, destination=destination, old=old, new=new, check=check
    )
    if app_settings.HEALTH_EMAIL_ADMINS:
        try:
            email_tenant_admins(destination, old=old, new=new, check=check)
        except Exception:
            # A mail server problem must not undo or hide the recorded change.
            logger.exception("Could not email the admins about destination %s", destination.pk)


# --- called by the delivery engine -------------------------------------------------------------


def mark_unhealthy_from_delivery(
    destination: Destination, error: graph.GraphError, *, now: datetime | None = None
) -> HealthCheck:
    """Record that Meta refused the token while delivering: unhealthy at once, with the reason.

    For the dispatcher, on an ``auth`` or ``permission`` answer. Same compare-and-set and
    signal as a full check; the failing check is stored as a HealthCheck of its own.
    """
    now = now or clock.now()
    result = CheckResult(
        DELIVERIES_ACCEPTED,
        False,
        f"{DELIVERIES_REFUSED} {error.explanation}",
        error.fix,
        problem=error.problem,
    )

    def verdict_for(old: Snapshot) -> Verdict:
        others = [reason for reason in old.reasons if reason.get("name") != DELIVERIES_ACCEPTED]
        return Verdict(
            Health.UNHEALTHY, [result.reason(), *others], [result], old.transient_failures
        )

    return record_verdict(
        destination,
        verdict_for,
        now=now,
        duration_ms=0,
        pixel_name=None,
        count_as_checked=False,
    )


# --- notifications -------------------------------------------------------------------------


def email_tenant_admins(destination: Destination, *, old: str, new: str, check: HealthCheck) -> int:
    """Email the admins of the destination's tenant about a health change; returns mails sent.

    Only news worth an email is sent: turning unhealthy, and recovering from unhealthy.
    """
    if new != Health.UNHEALTHY and old != Health.UNHEALTHY:
        return 0
    # The site's user model names its email field (EMAIL_FIELD), which need not be "email".
    email = f"user__{get_user_model().get_email_field_name()}"
    recipients = sorted(
        set(
            Membership.objects.filter(
                tenant_id=destination.tenant_id, role=Role.ADMIN, user__is_active=True
            )
            .exclude(**{email: ""})
            .values_list(email, flat=True)
        )
    )
    if not recipients:
        return 0
    label = Health(new).label
    subject = f"[{destination.tenant.name}] {destination.name} is now {label}"
    lines = [
        f"The Conversions API destination “{destination.name}” (pixel {destination.pixel_id}) "
        f"changed from {Health(old).label} to {label} at {check.checked_at:%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    for item in check.checks:
        if not item["ok"] and item["severity"] == ERROR:
            lines += [f"- {item['message']}", f"  Fix: {item['fix']}", ""]
    send_mail(subject, "\n".join(lines), None, recipients)
    return len(recipients)


def request_check(destination: Destination) -> None:
    """Note that a change asked for a check at once; the card shows "Checking…" until it ran."""
    now = clock.now()
    Destination.objects.filter(pk=destination.pk).update(health_check_requested_at=now)
    destination.health_check_requested_at = now
