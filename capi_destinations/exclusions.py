"""A client's exclusions: staff traffic, IP ranges and the test-order flag, read and changed.

What the tenant's **Exclusions** page and the admin's client page do with them, the same way:
the values are checked by the model (a bad address range is refused with the line), saved, and
audited (``exclusions_changed``, naming the fields changed with their new values: address
ranges are not secret, and the log says who excluded what). Which events
they suppress, and why, is :mod:`capi_destinations.routing`'s job.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from capi_destinations import routing
from capi_destinations.models import AuditAction, AuditEntry, Tenant

__all__ = ["FIELDS", "history", "update_exclusions"]

#: The tenant's fields that are its exclusions.
FIELDS = ("exclude_staff", "excluded_networks", "test_flag")


def _normalized(name: str, value: Any) -> Any:
    # An address range per line, stripped: the audit and the page read what is applied.
    if name == "excluded_networks":
        return "\n".join(routing.lines(value))
    if name == "test_flag":
        return (value or "").strip()
    return bool(value)


@transaction.atomic
def update_exclusions(tenant: Tenant, *, actor: Any = None, **values: Any) -> list[str]:
    """Set ``tenant``'s exclusions to ``values`` (any of :data:`FIELDS`); the fields changed.

    Raises ``ValidationError`` (the model's message, e.g. "'office wifi' is not an IP address or
    range") and saves nothing when a value is refused. Nothing changed, nothing audited.
    """
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"Not an exclusion: {', '.join(sorted(unknown))}")
    # Compared with the stored row, under its lock: a model form has already set its values on
    # the instance, and two admins saving at once each audit what they changed.
    stored = Tenant.objects.select_for_update().filter(pk=tenant.pk).values(*FIELDS).get()
    new = {name: _normalized(name, value) for name, value in values.items()}
    changed = [name for name in FIELDS if name in new and new[name] != stored[name]]
    for name in FIELDS:
        setattr(tenant, name, new[name] if name in changed else stored[name])
    tenant.full_clean(
        exclude=[field.name for field in Tenant._meta.fields if field.name not in FIELDS]
    )
    if not changed:
        return []
    tenant.save(update_fields=changed)
    AuditEntry.objects.create(
        tenant=tenant,
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        action=AuditAction.EXCLUSIONS_CHANGED,
        detail={_label(name): _shown(name, new[name]) for name in changed},
    )
    return changed


def _label(name: str) -> str:
    """The field's label on the page ("Excluded IP ranges"), as the audit log names it."""
    field = Tenant._meta.get_field(name)
    return str(getattr(field, "verbose_name", name))


def _shown(name: str, value: Any) -> Any:
    """A value as the audit log shows it: ranges as a list, a cleared flag as "none"."""
    if name == "excluded_networks":
        return routing.lines(value) or "none"
    if name == "test_flag":
        return value or "none"
    return value


def history(tenant: Tenant, *, limit: int = 50) -> QuerySet[AuditEntry]:
    """The latest changes to ``tenant``'s exclusions, newest first, with who made them."""
    return (
        AuditEntry.objects.filter(tenant=tenant, action=AuditAction.EXCLUSIONS_CHANGED)
        .select_related("actor")
        .order_by("-created_at", "-pk")[:limit]
    )
