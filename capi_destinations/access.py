"""Who may see and do what: membership lookups, role checks and the tenant's member list.

A user sees the tenants they are a member of (a superuser sees every tenant and counts as an
admin in each). Someone who is not a member gets a 404 for a tenant's URLs, never a 403: a 403
would confirm that the tenant or destination exists. A member whose role is too low gets a 403.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from capi_destinations.models import (
    AuditAction,
    AuditEntry,
    Destination,
    Membership,
    Role,
    Tenant,
)

MEMBER_ACTIONS = (
    AuditAction.MEMBER_INVITED,
    AuditAction.INVITATION_REVOKED,
    AuditAction.MEMBER_ADDED,
    AuditAction.MEMBER_ROLE_CHANGED,
    AuditAction.MEMBER_REMOVED,
)

# Higher rank, more rights; each role can do everything the roles below it can.
ROLE_RANK: dict[str, int] = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}


def role_allows(role: str | None, needed: str) -> bool:
    """Whether ``role`` (None: no membership) is at least ``needed``."""
    return role is not None and ROLE_RANK.get(role, 0) >= ROLE_RANK[needed]


@dataclass(frozen=True)
class TenantAccess:
    """A user's standing in one tenant: the tenant and the role they act with."""

    tenant: Tenant
    role: str

    @property
    def can_edit(self) -> bool:
        """Create, edit, test, redeliver, enable/disable, replace tokens."""
        return role_allows(self.role, Role.EDITOR)

    @property
    def can_manage_members(self) -> bool:
        """Add, re-role and remove the tenant's members."""
        return role_allows(self.role, Role.ADMIN)

    def require(self, needed: str) -> None:
        """Raise ``PermissionDenied`` (403) unless the role is at least ``needed``."""
        if not role_allows(self.role, needed):
            raise PermissionDenied(f"This needs the {Role(needed).label.lower()} role or higher.")


def tenants_for(user: Any) -> QuerySet[Tenant]:
    """The tenants ``user`` may see: their memberships' tenants, or all for a superuser."""
    if not user.is_authenticated:
        return Tenant.objects.none()
    if user.is_superuser:
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user)


def roles_by_tenant(user: Any) -> dict[int, str]:
    """``{tenant_id: role}`` for every tenant ``user`` belongs to, in one query.

    Superusers get no entries here; callers treat them as admins everywhere.
    """
    if not user.is_authenticated:
        return {}
    return dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))


def editable_tenants(user: Any) -> QuerySet[Tenant]:
    """The tenants where ``user`` may create and edit destinations."""
    if not user.is_authenticated:
        return Tenant.objects.none()
    if user.is_superuser:
        return Tenant.objects.all()
    return Tenant.objects.filter(
        memberships__user=user, memberships__role__in=[Role.EDITOR, Role.ADMIN]
    )


def _role_subquery(user: Any, tenant_ref: str) -> Subquery:
    return Subquery(
        Membership.objects.filter(tenant=OuterRef(tenant_ref), user=user).values("role")[:1]
    )


def tenant_access(user: Any, slug: str, *, needed: str = Role.VIEWER) -> TenantAccess:
    """The tenant with ``slug`` and ``user``'s role in it, in one query.

    Raises ``Http404`` when the tenant does not exist or ``user`` is not a member (the two are
    indistinguishable on purpose) and ``PermissionDenied`` when the role is below ``needed``.
    """
    if not user.is_authenticated:
        raise Http404("No such tenant.")
    tenant = Tenant.objects.filter(slug=slug).annotate(user_role=_role_subquery(user, "pk")).first()
    role = _effective_role(user, getattr(tenant, "user_role", None))
    if tenant is None or role is None:
        raise Http404("No such tenant.")
    access = TenantAccess(tenant=tenant, role=role)
    access.require(needed)
    return access


def destination_access(
    user: Any, code: uuid.UUID | str, *, needed: str = Role.VIEWER
) -> tuple[Destination, TenantAccess]:
    """The destination with public ``code``, its tenant and ``user``'s role there, in one query.

    Same rules as :func:`tenant_access`: 404 for outsiders and unknown codes, 403 for a role
    below ``needed``.
    """
    if not user.is_authenticated:
        raise Http404("No such destination.")
    try:
        code = uuid.UUID(str(code))
    except ValueError:
        raise Http404("No such destination.") from None
    destination = (
        Destination.objects.select_related("tenant")
        .filter(code=code)
        .annotate(user_role=_role_subquery(user, "tenant_id"))
        .first()
    )
    role = _effective_role(user, getattr(destination, "user_role", None))
    if destination is None or role is None:
        raise Http404("No such destination.")
    access = TenantAccess(tenant=destination.tenant, role=role)
    access.require(needed)
    return destination, access


def _effective_role(user: Any, membership_role: str | None) -> str | None:
    # A superuser acts as an admin of every tenant, whatever their own memberships say.
    if user.is_superuser:
        return Role.ADMIN
    return membership_role


# --- The tenant's member list -------------------------------------------------------------------


def members_of(tenant: Tenant) -> QuerySet[Membership]:
    """The tenant's memberships with their users, admins first, then by the name users log in
    with (``USERNAME_FIELD``: a site's user model may have no ``username``)."""
    return (
        Membership.objects.filter(tenant=tenant)
        .select_related("user")
        .order_by("role", f"user__{get_user_model().USERNAME_FIELD}")
    )


# Every member change below runs in one transaction that first locks the row of each tenant it
# touches (lowest id first), then reads the memberships it changes. Two changes to one tenant's
# members thus run one after the other, whether they come from the pages or the admin, and the
# "a tenant keeps one admin" rule is checked on what the other change left, never on a stale
# read. Locking the tenant first, always, is also what keeps two changes from deadlocking.
# SQLite ignores FOR UPDATE, but its writers run one at a time (with IMMEDIATE transactions they
# queue at BEGIN); threads sharing an in-memory database do not queue but fail with "table is
# locked", so on SQLite the threads of a process also take turns (as dispatch.py's do).
_SQLITE_TURN = threading.RLock()


def _sqlite_turn() -> AbstractContextManager[Any]:
    return _SQLITE_TURN if connection.vendor == "sqlite" else nullcontext()


@contextmanager
def member_change(*tenant_ids: int | None) -> Iterator[None]:
    """One transaction holding the locks of the tenants whose members change (also taken by
    ``invitations`` to invite, revoke and accept)."""
    with _sqlite_turn(), transaction.atomic():
        _lock_tenants(*tenant_ids)
        yield


def add_member(tenant: Tenant, username: str, role: str, *, actor: Any = None) -> Membership:
    """Give the existing user ``username`` a ``role`` in ``tenant``, audited as ``actor``'s.

    Raises ``ValidationError`` when no such user exists or they are already a member.
    """
    user_model = get_user_model()
    try:
        user = user_model.objects.get(**{user_model.USERNAME_FIELD: username.strip()})
    except user_model.DoesNotExist:
        raise ValidationError(
            f"There is no user “{username.strip()}” on this site. Check the spelling, or invite "
            "them by email instead.",
            code="no_such_user",
        ) from None
    return save_new_membership(Membership(tenant=tenant, user=user, role=Role(role)), actor=actor)


def save_new_membership(membership: Membership, *, actor: Any = None) -> Membership:
    """Save a new ``membership`` (unsaved, with tenant, user and role), audited as added.

    Raises ``ValidationError`` when the user is already a member of the tenant.
    """
    with member_change(membership.tenant_id):
        if Membership.objects.filter(
            tenant_id=membership.tenant_id, user_id=membership.user_id
        ).exists():
            raise ValidationError(
                f"{membership.user.get_username()} is already a member of {membership.tenant}.",
                code="already_member",
            )
        membership.save()
        audit_member_change(membership, AuditAction.MEMBER_ADDED, actor=actor)
    return membership


def change_role(membership: Membership, role: str, *, actor: Any = None) -> Membership:
    """Set a member's role, audited as ``actor``'s; the last admin cannot be demoted.

    Raises ``ValidationError`` when this would leave the tenant without an admin, or when the
    membership was removed meanwhile.
    """
    role = Role(role)
    with member_change(membership.tenant_id):
        current = _current(membership.pk, membership.tenant_id)
        previous = current.role
        if role == previous:
            membership.role = role
            return membership
        check_admin_kept(current, role=role, tenant_id=current.tenant_id)
        membership.role = role
        membership.save(update_fields=["role"])
        audit_member_change(
            membership, AuditAction.MEMBER_ROLE_CHANGED, actor=actor, previous_role=previous
        )
    return membership


def remove_member(membership: Membership, *, actor: Any = None) -> None:
    """Remove a member, audited as ``actor``'s; the last admin of a tenant cannot be removed."""
    with member_change(membership.tenant_id):
        current = _current(membership.pk, membership.tenant_id)
        refuse_to_orphan(Membership.objects.filter(pk=current.pk))
        audit_member_change(current, AuditAction.MEMBER_REMOVED, actor=actor)
        current.delete()


def remove_members(memberships: QuerySet[Membership], *, actor: Any = None) -> int:
    """Remove all of ``memberships`` at once (the admin's "Delete selected"); returns how many.

    Raises ``ValidationError`` naming the tenants it would leave without an admin, removing none.
    """
    with _sqlite_turn(), member_change(*memberships.values_list("tenant_id", flat=True)):
        refuse_to_orphan(memberships, many=True)
        removed = list(memberships.select_related("user"))
        for membership in removed:
            audit_member_change(membership, AuditAction.MEMBER_REMOVED, actor=actor)
        Membership.objects.filter(pk__in=[membership.pk for membership in removed]).delete()
    return len(removed)


def update_membership(
    membership: Membership, *, user: Any, tenant: Tenant, role: str, actor: Any = None
) -> Membership:
    """Change a membership's user, tenant and role at once (the admin's change form).

    Audited in each tenant's own log: a move to another tenant is ``member_removed`` in the old
    tenant and ``member_added`` in the new; another user is ``member_removed`` for the old user
    and ``member_added`` for the new; otherwise a new role is ``member_role_changed``. Raises
    ``ValidationError`` when the old tenant would be left without an admin.
    """
    role = Role(role)
    # ``membership`` may already hold the new values (a model form fills them in): the stored
    # row says which tenant it leaves.
    with _sqlite_turn():
        stored_tenant_id = (
            Membership.objects.filter(pk=membership.pk).values_list("tenant_id", flat=True).first()
        )
        return _update_membership(membership, stored_tenant_id, user, tenant, role, actor)


def _update_membership(
    membership: Membership,
    stored_tenant_id: int | None,
    user: Any,
    tenant: Tenant,
    role: Role,
    actor: Any,
) -> Membership:
    with member_change(stored_tenant_id, tenant.pk):
        before = _current(membership.pk, stored_tenant_id)
        check_admin_kept(before, role=role, tenant_id=tenant.pk)
        membership.user, membership.tenant, membership.role = user, tenant, role
        membership.save(update_fields=["user", "tenant", "role"])
        if before.tenant_id != tenant.pk or before.user_id != user.pk:
            audit_member_change(before, AuditAction.MEMBER_REMOVED, actor=actor)
            audit_member_change(membership, AuditAction.MEMBER_ADDED, actor=actor)
        elif before.role != role:
            audit_member_change(
                membership,
                AuditAction.MEMBER_ROLE_CHANGED,
                actor=actor,
                previous_role=before.role,
            )
    return membership


def _lock_tenants(*tenant_ids: int | None) -> None:
    # ORDER BY pk: PostgreSQL locks rows after sorting, so every change locks in the same order.
    ids = sorted({tenant_id for tenant_id in tenant_ids if tenant_id is not None})
    list(Tenant.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk"))


def _current(membership_id: int | None, tenant_id: int | None) -> Membership:
    """The membership as stored now (under the tenant's lock); ``ValidationError`` when it was
    removed or moved to another tenant meanwhile."""
    current = None
    if membership_id is not None and tenant_id is not None:
        current = (
            Membership.objects.select_related("user").filter(pk=membership_id, tenant_id=tenant_id)
        ).first()
    if current is None:
        raise ValidationError(
            "This member was removed or moved meanwhile; reload the page to see who is a member.",
            code="not_a_member",
        )
    return current


def audit_member_change(
    membership: Membership,
    action: str,
    *,
    actor: Any = None,
    previous_role: str = "",
    invited_by: str = "",
) -> AuditEntry:
    """Record that ``actor`` (None or anonymous: the system) did ``action`` to a membership;
    ``invited_by``: the member joined through an invitation that person sent."""
    detail = {"member": membership.user.get_username(), "role": str(membership.role)}
    if previous_role:
        detail["previous_role"] = str(previous_role)
    if invited_by:
        detail["invited_by"] = invited_by
    is_person = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEntry.objects.create(
        tenant_id=membership.tenant_id,
        actor=actor if is_person else None,
        action=action,
        detail=detail,
    )


def member_history(tenant: Tenant, *, limit: int = 50) -> QuerySet[AuditEntry]:
    """The latest changes to ``tenant``'s members, newest first, with who made them."""
    return (
        AuditEntry.objects.filter(tenant=tenant, action__in=MEMBER_ACTIONS)
        .select_related("actor")
        .order_by("-created_at", "-pk")[:limit]
    )


# --- The one rule: a tenant keeps an admin ----------------------------------------------------
# Without an admin nobody (but a superuser) could manage a tenant's members again. The services
# above check it under the tenant's lock, so no other change can take the other admin away
# meanwhile; forms and confirmation pages may ask the same functions early, for a clear error.

LAST_ADMIN_MESSAGE = "This is the tenant's last admin. Make someone else an admin first."


def refuse_to_orphan(leaving: QuerySet[Membership], *, many: bool = False) -> None:
    """Raise ``ValidationError`` (code ``last_admin``) when taking the admin role away from all
    of ``leaving`` (removing them, demoting them or moving them to another tenant) would leave a
    tenant without an admin. ``many``: the message of a bulk removal, naming the tenants."""
    orphaned = tenants_left_without_admin(leaving)
    if not orphaned:
        return
    if many:
        raise ValidationError(
            f"Nothing deleted: {', '.join(orphaned)} would be left without an admin. "
            "Make someone else an admin first.",
            code="last_admin",
        )
    raise ValidationError(LAST_ADMIN_MESSAGE, code="last_admin")


def check_admin_kept(stored: Membership, *, role: str, tenant_id: int | None) -> None:
    """Refuse (``ValidationError``) to give the ``stored`` membership ``role`` in tenant
    ``tenant_id`` when that takes its tenant's last admin away."""
    takes_admin_away = stored.role == Role.ADMIN and (
        role != Role.ADMIN or tenant_id != stored.tenant_id
    )
    if stored.pk is not None and takes_admin_away:
        refuse_to_orphan(Membership.objects.filter(pk=stored.pk))


def tenants_left_without_admin(memberships: QuerySet[Membership]) -> list[str]:
    """Names of the tenants that removing all of ``memberships`` would leave without an admin."""
    selected = list(memberships.values_list("pk", flat=True))
    tenant_ids = set(
        Membership.objects.filter(pk__in=selected, role=Role.ADMIN)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    kept = set(
        Membership.objects.filter(tenant_id__in=tenant_ids, role=Role.ADMIN)
        .exclude(pk__in=selected)
        .values_list("tenant_id", flat=True)
    )
    return sorted(Tenant.objects.filter(pk__in=tenant_ids - kept).values_list("name", flat=True))
