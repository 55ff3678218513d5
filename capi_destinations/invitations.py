"""Invitations by email: an admin invites an address with a role; the link joins the tenant.

The link holds a random secret (256 bits) of which only a SHA-256 hash is stored, so neither
the database, the admin, the audit log nor a log line can give it back. A link works once,
until ``INVITATION_MAX_AGE`` seconds after it was last sent, and not after an admin revoked it.
Inviting, revoking and accepting take the tenant's lock like every other member change
(``access.member_change``), and accepting goes through the same rules: one membership per user
and tenant, audited as ``member_added``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db.models import Q, QuerySet
from django.views.decorators.debug import sensitive_variables

from capi_destinations import access, clock
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    AuditAction,
    AuditEntry,
    Invitation,
    InvitationState,
    Membership,
    Role,
    Tenant,
    hash_invitation_token,
)

logger = logging.getLogger(__name__)


class InvitationUnusable(Exception):
    """The link cannot be used (any more): unknown, expired, already used or revoked."""

    def __init__(self, invitation: Invitation | None, reason: str) -> None:
        super().__init__(reason)
        self.invitation = invitation
        self.reason = reason


# The reasons an invitation cannot be used, as the page names them.
UNKNOWN, EXPIRED, USED, REVOKED = "unknown", "expired", "used", "revoked"


def normalize_email(email: str) -> str:
    """Addresses are compared without regard to case: stored and looked up in lower case."""
    return email.strip().lower()


def _email_field() -> str:
    return str(get_user_model().get_email_field_name())


def email_of(user: Any) -> str:
    """The address of ``user`` (the site's ``EMAIL_FIELD``; "" when it has none)."""
    return str(getattr(user, _email_field(), "") or "")


def accounts_with_email(email: str) -> QuerySet[Any]:
    """Accounts whose address, or whose login name, is ``email`` (ignoring case)."""
    user_model = get_user_model()
    email = normalize_email(email)
    return user_model._default_manager.filter(
        Q(**{f"{_email_field()}__iexact": email})
        | Q(**{f"{user_model.USERNAME_FIELD}__iexact": email})
    )


def max_age_days() -> int:
    """``INVITATION_MAX_AGE`` in whole days (at least one), as the email and the page say it."""
    return max(1, round(app_settings.INVITATION_MAX_AGE / 86400))


# --- what an admin does ----------------------------------------------------------------------


@sensitive_variables("token")
def invite(tenant: Tenant, email: str, role: str, *, actor: Any) -> tuple[Invitation, str]:
    """Invite ``email`` to ``tenant`` with ``role``; returns the invitation and its secret.

    Inviting an address that has a pending invitation sends that one again with the new role
    (a new secret: the older link stops working). Raises ``ValidationError`` when an account
    with that address is a member already. The caller mails the secret (``send_invitation``).
    """
    email, role = normalize_email(email), Role(role)
    with access.member_change(tenant.pk):
        member = (
            Membership.objects.filter(tenant=tenant, user__in=accounts_with_email(email))
            .select_related("user")
            .first()
        )
        if member is not None:
            raise ValidationError(
                f"{member.user.get_username()} ({email}) is already a member of {tenant}.",
                code="already_member",
            )
        invitation = Invitation.objects.filter(
            tenant=tenant, email=email, state=InvitationState.PENDING
        ).first() or Invitation(tenant=tenant, email=email)
        resent = invitation.pk is not None
        invitation.role, invitation.invited_by, invitation.sent_at = role, actor, clock.now()
        token = invitation.new_token()
        invitation.save()
        _audit(invitation, AuditAction.MEMBER_INVITED, actor, resent=resent)
    return invitation, token


@sensitive_variables("token")
def resend(invitation: Invitation, *, actor: Any) -> str:
    """A new secret for a pending invitation (expired ones too), valid from now; the older
    link stops working. Raises ``InvitationUnusable`` when it was used or revoked meanwhile."""
    with access.member_change(invitation.tenant_id):
        current = _pending(invitation)
        current.invited_by, current.sent_at = actor, clock.now()
        token = current.new_token()
        current.save(update_fields=["invited_by", "sent_at", "token_hash"])
        _audit(current, AuditAction.MEMBER_INVITED, actor, resent=True)
    invitation.token_hash, invitation.sent_at = current.token_hash, current.sent_at
    return token


def revoke(invitation: Invitation, *, actor: Any) -> None:
    """Withdraw a pending invitation: its link no longer works. Raises ``InvitationUnusable``
    when it was used or revoked meanwhile."""
    with access.member_change(invitation.tenant_id):
        current = _pending(invitation)
        _close(current, InvitationState.REVOKED, actor)
        _audit(current, AuditAction.INVITATION_REVOKED, actor)
    invitation.state = InvitationState.REVOKED


def pending_invitations(tenant: Tenant) -> QuerySet[Invitation]:
    """The tenant's pending invitations (expired ones too, to resend), newest first."""
    return (
        Invitation.objects.filter(tenant=tenant, state=InvitationState.PENDING)
        .select_related("invited_by")
        .order_by("-sent_at", "-pk")
    )


def invitation_of(tenant: Tenant, code: Any) -> Invitation | None:
    """The invitation with public ``code`` of ``tenant`` (never another tenant's)."""
    return Invitation.objects.filter(tenant=tenant, code=code).select_related("tenant").first()


@sensitive_variables("link", "body")
def send_invitation(invitation: Invitation, link: str) -> None:
    """Email the invitation's ``link`` (which holds the secret) to the invited address."""
    inviter = invitation.invited_by
    who = inviter.get_username() if inviter is not None else "An admin"
    days = max_age_days()
    role = Role(invitation.role).label.lower()
    body = "\n".join(
        [
            f"{who} invited you to {invitation.tenant.name}'s Conversions API destinations "
            f"as {role}.",
            "",
            f"Open this link to join (it works once, for {days} day{'s' if days != 1 else ''}):",
            link,
            "",
            "If you did not expect this invitation, ignore this email.",
        ]
    )
    send_mail(
        f"[{invitation.tenant.name}] Invitation to join as {role}",
        body,
        None,
        [invitation.email],
    )


# --- what the invited person does ------------------------------------------------------------


@sensitive_variables("token")
def find(code: Any, token: str) -> Invitation:
    """The invitation that ``code`` and ``token`` name, whatever its state (the page says why
    it cannot be used). Raises ``InvitationUnusable`` (``UNKNOWN``) when they name none."""
    invitation = Invitation.objects.select_related("tenant", "invited_by").filter(code=code).first()
    if invitation is None or not invitation.token_matches(token):
        raise InvitationUnusable(None, UNKNOWN)
    return invitation


def check_usable(invitation: Invitation) -> None:
    """Raise ``InvitationUnusable`` with the reason unless the invitation can be accepted."""
    if invitation.state == InvitationState.ACCEPTED:
        raise InvitationUnusable(invitation, USED)
    if invitation.state == InvitationState.REVOKED:
        raise InvitationUnusable(invitation, REVOKED)
    if invitation.is_expired:
        raise InvitationUnusable(invitation, EXPIRED)


@dataclass(frozen=True)
class Accepted:
    """What accepting did: the membership, and whether it is new (else it existed already)."""

    membership: Membership
    created: bool


@sensitive_variables("token")
def accept(invitation: Invitation, token: str, user: Any) -> Accepted:
    """Join ``user`` (whose address must be the invited one) to the invitation's tenant.

    Uses the invitation up under the tenant's lock. A user who is a member already keeps their
    role. Raises ``InvitationUnusable`` when the link cannot be used (any more), and
    ``ValidationError`` when ``user``'s address is not the invited one.
    """
    if normalize_email(email_of(user)) != invitation.email:
        raise ValidationError(
            f"This invitation is for {invitation.email}, not for {user.get_username()}.",
            code="wrong_account",
        )
    with access.member_change(invitation.tenant_id):
        _use_up(invitation, token, user)
        existing = Membership.objects.filter(tenant_id=invitation.tenant_id, user=user).first()
        if existing is not None:
            return Accepted(existing, created=False)
        return Accepted(_join(invitation, user), created=True)


@sensitive_variables("token", "password")
def create_account_and_accept(
    invitation: Invitation, token: str, *, username: str, password: str
) -> Accepted:
    """Create the invited person's account (login ``username``, the invited address) and join it
    to the tenant, in one transaction: no account is left behind when the link is refused.

    Raises ``InvitationUnusable`` when the link cannot be used (any more), and
    ``ValidationError`` when an account with that address or login name exists meanwhile.
    """
    user_model = get_user_model()
    with access.member_change(invitation.tenant_id):
        check_usable(invitation)
        if (
            accounts_with_email(invitation.email).exists()
            or user_model._default_manager.filter(
                **{f"{user_model.USERNAME_FIELD}__iexact": username}
            ).exists()
        ):
            raise ValidationError(
                "An account with this address or name exists already: log in with it, then "
                "open the link again.",
                code="account_exists",
            )
        fields = {user_model.USERNAME_FIELD: username, _email_field(): invitation.email}
        user = user_model._default_manager.create_user(**fields, password=password)
        _use_up(invitation, token, user)
        return Accepted(_join(invitation, user), created=True)


def _join(invitation: Invitation, user: Any) -> Membership:
    membership = Membership.objects.create(
        tenant_id=invitation.tenant_id, user=user, role=invitation.role
    )
    inviter = invitation.invited_by
    access.audit_member_change(
        membership,
        AuditAction.MEMBER_ADDED,
        actor=user,
        invited_by=inviter.get_username() if inviter is not None else "an admin",
    )
    return membership


@sensitive_variables("token")
def _use_up(invitation: Invitation, token: str, user: Any) -> None:
    """Mark the invitation accepted, if it still is pending, unexpired and this token's: one
    conditional update, so a link used twice at once is accepted once."""
    now = clock.now()
    used = Invitation.objects.filter(
        pk=invitation.pk,
        state=InvitationState.PENDING,
        token_hash=hash_invitation_token(token),
        sent_at__gt=now - timedelta(seconds=app_settings.INVITATION_MAX_AGE),
    ).update(state=InvitationState.ACCEPTED, closed_at=now, closed_by=user)
    if not used:
        invitation.refresh_from_db()
        check_usable(invitation)
        raise InvitationUnusable(invitation, UNKNOWN)  # another link of it was sent since
    invitation.state, invitation.closed_at, invitation.closed_by = (
        InvitationState.ACCEPTED,
        now,
        user,
    )


def _pending(invitation: Invitation) -> Invitation:
    current = Invitation.objects.filter(pk=invitation.pk).select_related("tenant").first()
    if current is None:
        raise InvitationUnusable(invitation, UNKNOWN)
    if current.state != InvitationState.PENDING:
        used = current.state == InvitationState.ACCEPTED
        raise InvitationUnusable(current, USED if used else REVOKED)
    return current


def _close(invitation: Invitation, state: str, actor: Any) -> None:
    invitation.state, invitation.closed_at = state, clock.now()
    invitation.closed_by = actor if getattr(actor, "is_authenticated", False) else None
    invitation.save(update_fields=["state", "closed_at", "closed_by"])


def _audit(invitation: Invitation, action: str, actor: Any, *, resent: bool = False) -> None:
    # The address and the role; never the link or its hash.
    detail: dict[str, Any] = {"email": invitation.email, "role": str(invitation.role)}
    if resent:
        detail["sent_again"] = True
    AuditEntry.objects.create(
        tenant_id=invitation.tenant_id,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        detail=detail,
    )
