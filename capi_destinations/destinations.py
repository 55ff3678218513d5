"""Destination services: create, edit, enable, re-key, delete, redeliver, check a token, test.

The pages, the admin and the shell all change destinations through these functions, so every
change writes the same AuditEntry and sends the same signals whichever path it came from. An
audit entry never holds a token: token changes record only the new hint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.views.decorators.debug import sensitive_variables

from capi_destinations import (
    clock,
    dispatch,
    graph,
    health,
    problems,
    signals,
    testevents,
    tokens,
)
from capi_destinations.findings import Diagnostic
from capi_destinations.models import (
    AuditAction,
    AuditEntry,
    Destination,
    Event,
    EventStatus,
    Tenant,
    new_ingest_key,
    pixel_id_validator,
)
from capi_destinations.testevents import TestEventResult

# Fields a person may set on a destination (through a page, the admin or the shell), in the
# order forms show them.
EDITABLE_FIELDS: tuple[str, ...] = (
    "name",
    "pixel_id",
    "access_token",
    "app_secret",
    "enabled",
    "test_event_code",
    "api_version",
    "default_country",
    "consent_policy",
    "missing_consent",
    "event_filter",
    "event_filter_names",
    "minimum_purchase_value",
    "forward_to",
    "allowed_origins",
)

# Secrets: an audit entry names them as changed, never their values.
SECRET_FIELDS = frozenset({"access_token", "app_secret"})

# Events a "Redeliver failed" puts back in the queue (dispatch keeps only those still inside
# Meta's window (7 days; 62 for store events)).
REDELIVERABLE_STATUSES = (EventStatus.FAILED, EventStatus.EXPIRED)


def audit(
    destination: Destination,
    action: str,
    *,
    actor: Any,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Record that ``actor`` did ``action`` to ``destination`` (never pass a token in detail)."""
    return AuditEntry.objects.create(
        tenant_id=destination.tenant_id,
        destination=destination if destination.pk else None,
        destination_label=str(destination),
        actor=_user_or_none(actor),
        action=action,
        detail=detail or {},
    )


def _user_or_none(actor: Any) -> Any:
    # Anonymous users and system actions (commands, tasks) are recorded as "no actor".
    if actor is None or not getattr(actor, "is_authenticated", False):
        return None
    return actor


def _refuse_unknown_fields(fields: Iterable[str]) -> None:
    unknown = sorted(set(fields).difference(EDITABLE_FIELDS))
    if unknown:
        raise TypeError(f"Not an editable destination field: {', '.join(unknown)}")


# Error reports (HTML mails to ADMINS) show local variables, also those of the frames a function
# calls, and Django's model and form code holds the token there under other names (``value``,
# ``raw_value``, ``kwargs``): so these functions hide every variable, not just their own names.
@sensitive_variables()
def create_destination(tenant: Tenant, *, actor: Any, **fields: Any) -> tuple[Destination, str]:
    """Create a destination in ``tenant`` and return it with its ingest secret.

    The secret is shown to the user once; only its hash is stored. Raises ``ValidationError``
    for invalid fields (a malformed token, a Pixel ID the tenant already has, …).
    """
    _refuse_unknown_fields(fields)
    destination = Destination(tenant=tenant, **fields)
    secret = destination.set_ingest_secret()
    destination.full_clean()
    with transaction.atomic():
        destination.save()
        audit(
            destination,
            AuditAction.CREATED,
            actor=actor,
            detail={"pixel_id": destination.pixel_id, "token_hint": destination.token_hint},
        )
        audit_shared_token(destination, actor=actor)
    # A new token is a token put in place: the health check runs at once through the receivers.
    signals.destination_token_replaced.send(
        sender=Destination, destination=destination, actor=actor
    )
    return destination, secret


@sensitive_variables()
def update_destination(destination: Destination, *, actor: Any, **changes: Any) -> list[str]:
    """Apply ``changes`` to ``destination``, save, audit, and return the changed field names.

    A blank ``access_token`` or ``app_secret`` keeps the stored one. A new token sends
    ``destination_token_replaced``; a change of ``enabled`` sends ``destination_enabled_changed``.
    Raises ``ValidationError`` for invalid values (nothing is saved then).
    """
    _refuse_unknown_fields(changes)
    _keep_blank_secrets(changes)
    changed = [name for name, value in changes.items() if getattr(destination, name) != value]
    if not changed:
        return []
    previous = {name: getattr(destination, name) for name in changed}
    was_enabled = destination.enabled
    for name in changed:
        setattr(destination, name, changes[name])
    token_replaced = destination.token_changed()
    try:
        destination.full_clean()
    except ValidationError:
        # Leave the caller's instance as it was: nothing was saved.
        for name, value in previous.items():
            setattr(destination, name, value)
        raise
    if destination.enabled and not was_enabled:
        destination.sending_resumed_at = clock.now()
    with transaction.atomic():
        destination.save()
        _audit_update(
            destination,
            changed,
            actor=actor,
            token_replaced=token_replaced,
            was_enabled=was_enabled,
        )
    if token_replaced:
        signals.destination_token_replaced.send(
            sender=Destination, destination=destination, actor=actor
        )
    if destination.enabled != was_enabled:
        signals.destination_enabled_changed.send(
            sender=Destination, destination=destination, enabled=destination.enabled, actor=actor
        )
    return changed


@sensitive_variables()
def _keep_blank_secrets(changes: dict[str, Any]) -> None:
    # A blank secret keeps the stored one; surrounding whitespace is a paste artefact, not a
    # different secret.
    for secret_field in SECRET_FIELDS:
        if secret_field in changes:
            changes[secret_field] = (changes[secret_field] or "").strip()
            if not changes[secret_field]:
                del changes[secret_field]


def _audit_update(
    destination: Destination,
    changed: list[str],
    *,
    actor: Any,
    token_replaced: bool,
    was_enabled: bool,
) -> None:
    """The audit entries of one saved edit: fields, a new app secret, a new token, on/off."""
    plain = sorted(name for name in changed if name not in SECRET_FIELDS)
    secret = {"app_secret": "replaced"} if "app_secret" in changed else {}
    if plain or secret:
        detail = {"fields": plain, **secret} if plain else secret
        audit(destination, AuditAction.UPDATED, actor=actor, detail=detail)
    if token_replaced:
        audit(
            destination,
            AuditAction.TOKEN_REPLACED,
            actor=actor,
            detail={"token_hint": destination.token_hint},
        )
        audit_shared_token(destination, actor=actor)
    if destination.enabled != was_enabled:
        audit(
            destination,
            AuditAction.ENABLED if destination.enabled else AuditAction.DISABLED,
            actor=actor,
        )


# --- One token for several clients ---------------------------------------------------------------


def destinations_sharing_token(destination: Destination) -> list[Destination]:
    """The destinations of other tenants whose stored token is ``destination``'s (by fingerprint).

    An agency's system-user token serving many clients is legitimate; it also means whoever can
    send with it for one client could for the others, so it is shown and audited, never hidden.
    """
    if not destination.token_fingerprint:
        return []
    return list(
        Destination.objects.filter(token_fingerprint=destination.token_fingerprint)
        .exclude(tenant_id=destination.tenant_id)
        .order_by("pk")
    )


def describe_other_clients(others: list[Destination]) -> str:
    """``2 destinations of 1 other client``: how many, naming no client."""
    clients = len({other.tenant_id for other in others})
    return (
        f"{len(others)} destination{'s' if len(others) != 1 else ''} of {clients} other "
        f"client{'s' if clients != 1 else ''}"
    )


def shared_token_warning(destination: Destination) -> str:
    """The warning the forms show when the token also serves other clients ("" when not)."""
    others = destinations_sharing_token(destination)
    if not others:
        return ""
    return (
        f"This token also serves {describe_other_clients(others)}. That is expected for an "
        "agency's system-user token; each of those clients' audit logs records that their "
        "token is shared."
    )


def audit_shared_token(destination: Destination, *, actor: Any) -> int:
    """Write ``token_shared`` in the audit log of every tenant that uses the token just saved.

    This destination's tenant learns how many destinations of how many other clients share it;
    each of those destinations gets an entry saying another client's destination now uses its
    token. No entry names the other client, its pixel or its people (the actor is recorded only
    in the actor's own tenant). Returns the number of other destinations.
    """
    others = destinations_sharing_token(destination)
    if not others:
        return 0
    audit(
        destination,
        AuditAction.TOKEN_SHARED,
        actor=actor,
        detail={
            "token_hint": destination.token_hint,
            "also_used_by": describe_other_clients(others),
        },
    )
    for other in others:
        audit(
            other,
            AuditAction.TOKEN_SHARED,
            actor=None,
            detail={
                "token_hint": other.token_hint,
                "also_used_by": describe_other_clients([destination]),
            },
        )
    return len(others)


def set_enabled(destination: Destination, enabled: bool, *, actor: Any) -> bool:
    """Turn sending on or off; returns whether anything changed.

    A disabled destination still records events; nothing is sent until it is enabled again.
    """
    if destination.enabled == enabled:
        return False
    with transaction.atomic():
        destination.enabled = enabled
        fields = ["enabled", "updated_at"]
        if enabled:
            destination.sending_resumed_at = clock.now()
            fields.append("sending_resumed_at")
        destination.save(update_fields=fields)
        audit(destination, AuditAction.ENABLED if enabled else AuditAction.DISABLED, actor=actor)
    signals.destination_enabled_changed.send(
        sender=Destination, destination=destination, enabled=enabled, actor=actor
    )
    return True


@sensitive_variables("secret")
def regenerate_ingest_keys(destination: Destination, *, actor: Any) -> str:
    """Replace the public ingest key and the server secret; return the new secret (shown once).

    The old key and secret stop working at once: update the snippet and the servers that post
    events.
    """
    with transaction.atomic():
        destination.ingest_key = new_ingest_key()
        secret = destination.set_ingest_secret()
        destination.save(update_fields=["ingest_key", "ingest_secret_hash", "updated_at"])
        audit(destination, AuditAction.KEYS_REGENERATED, actor=actor)
    return secret


def delete_destination(destination: Destination, *, actor: Any) -> None:
    """Delete a destination with its events, attempts and checks; the audit entry stays."""
    with transaction.atomic():
        audit(
            destination, AuditAction.DELETED, actor=actor, detail={"pixel_id": destination.pixel_id}
        )
        destination.delete()


def redeliver(events: QuerySet[Event] | Iterable[int], *, actor: Any) -> int:
    """Put failed/expired events still inside Meta's window back in the queue; returns how many.

    ``events`` is a queryset or event ids, of any destinations. Each destination concerned gets
    an AuditEntry (``redelivered``, with the count) naming ``actor`` (a user, or None for the
    system). The retry budget starts over, and a dispatch is enqueued after commit
    (:func:`capi_destinations.dispatch.requeue`).
    """
    actor_user = _user_or_none(actor)
    who = actor_user.get_username() if actor_user is not None else "the system"
    with transaction.atomic():
        counts = dispatch.requeue(events, reason=f"Redelivery requested by {who}.")
        destinations = Destination.objects.in_bulk(list(counts))
        for destination_id, count in counts.items():
            audit(
                destinations[destination_id],
                AuditAction.REDELIVERED,
                actor=actor_user,
                detail={"count": count},
            )
    return sum(counts.values())


def redeliver_failed(
    destination: Destination, *, actor: Any, event_ids: Iterable[int] | None = None
) -> int:
    """Put the destination's failed and expired events (or the given ones) back in the queue.

    Only events still inside Meta's window (7 days; 62 for store events) go back; returns how
    many did (see :func:`redeliver`, which writes the audit entry).
    """
    # Only events inside Meta's window can go back: bounding ``created_at`` keeps the search
    # on the (destination, created_at) index (the event table has no index on ``status``).
    events = Event.objects.filter(
        dispatch.may_be_inside_window(clock.now()),
        destination=destination,
        status__in=REDELIVERABLE_STATUSES,
    )
    if event_ids is not None:
        events = events.filter(pk__in=list(event_ids))
    return redeliver(events, actor=actor)


# The diagnostic the dispatcher adds when Meta refuses one event on its own (dispatch._fail).
META_REFUSAL_CODE = "meta_rejected"


@dataclass(frozen=True)
class DataRefusal:
    """A failed event Meta refused for its data: Meta's words and what to fix in what is sent."""

    event_name: str
    event_id: str
    reason: str
    fix: str


@dataclass(frozen=True)
class RefusedAgain:
    """What a **Redeliver** would send that Meta refused for its data, unchanged since."""

    count: int
    examples: list[DataRefusal] = field(default_factory=list)


def refused_for_their_data(
    destination: Destination, *, event_ids: Iterable[int] | None = None, examples: int = 3
) -> RefusedAgain:
    """The failed events (of ``event_ids``, else all) that Meta refused for their own data.

    Such an event is unchanged since Meta refused it: a failed event's payload is never replaced
    (a later copy under its key is a duplicate, ``eventstore.plan``), and anything that moves it
    (a redelivery) ends its ``failed`` status. Sent again as it is, Meta refuses it again, so
    **Redeliver** asks first. An event that failed for another reason (it expired, the token was
    refused) is not one: a redelivery may well get it through.
    """
    # Only what a Redeliver would send: events inside Meta's window (see redeliver_failed).
    events = Event.objects.filter(
        dispatch.may_be_inside_window(clock.now()),
        destination=destination,
        status=EventStatus.FAILED,
    )
    if event_ids is not None:
        events = events.filter(pk__in=list(event_ids))
    count = 0
    found: list[DataRefusal] = []
    rows = events.order_by("-updated_at", "-pk").values_list(
        "event_name", "event_id", "diagnostics"
    )
    for event_name, event_id, stored in rows.iterator():
        refusal = _data_refusal(event_name, event_id, stored)
        if refusal is None:
            continue
        count += 1
        if len(found) < examples:
            found.append(refusal)
    return RefusedAgain(count, found)


def _data_refusal(event_name: str, event_id: str, stored: Any) -> DataRefusal | None:
    findings = [
        Diagnostic.from_dict(item)
        for item in stored or []
        if isinstance(item, dict) and "code" in item
    ]
    refusals = [item for item in findings if item.code == META_REFUSAL_CODE]
    if not refusals:
        return None
    meta = refusals[-1]
    info = graph.classify(None, meta.meta_code, meta.meta_subcode, None, message=meta.message)
    if info.category != graph.INVALID:
        return None
    # Our own finding on the same field says what to change in what the site sends.
    own = next(
        (
            item
            for item in findings
            if item.code != META_REFUSAL_CODE and meta.field and item.field == meta.field
        ),
        None,
    )
    return DataRefusal(event_name, event_id, meta.message, own.fix if own else meta.fix)


# --- Checking a token before it is saved --------------------------------------------------------


@dataclass(frozen=True)
class TokenCheck:
    """What the "validate as you type" box shows: Connected to pixel '…', or why not."""

    ok: bool
    message: str
    pixel_name: str = ""
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    fix: str = ""
    # Meta refused to let the token read the pixel: normal for a send-only token, so not a
    # verdict (the health check decides from the destination's deliveries).
    read_refused: bool = False
    # Meta refused the Pixel ID and token (not an outage, not a read refused): saving them
    # anyway takes a confirmation, since the destination could send nothing.
    refused: bool = False
    # The problem Meta's answer is (``problems``): the same words as the health card's.
    problem: str = ""


@sensitive_variables()
def check_token(
    pixel_id: str,
    token: str,
    *,
    app_secret: str = "",
    api_version: str = "",
) -> TokenCheck:
    """Check a Pixel ID and token pair: format rules at once, then Meta's answer.

    Nothing is saved. The answer never repeats the token.
    """
    field_errors: dict[str, list[str]] = {}
    pixel_id = (pixel_id or "").strip()
    try:
        pixel_id_validator(pixel_id)
    except ValidationError as error:
        field_errors["pixel_id"] = list(error.messages)
    try:
        token = tokens.clean_access_token(token)
    except ValidationError as error:
        field_errors["access_token"] = list(error.messages)
    if field_errors:
        first = next(iter(field_errors.values()))[0]
        if "pixel_id" not in field_errors:
            # A token that breaks the format rules was not pasted whole: the card's words.
            not_whole = problems.TOKEN_NOT_WHOLE
            return TokenCheck(
                ok=False,
                message=f"{not_whole.reason} {first}",
                field_errors=field_errors,
                fix=not_whole.fix,
                problem=not_whole.key,
            )
        return TokenCheck(ok=False, message=first, field_errors=field_errors)

    # An unsaved stand-in carries what the Graph client reads: pixel, version, app secret.
    candidate = Destination(
        pixel_id=pixel_id, access_token=token, app_secret=app_secret, api_version=api_version
    )
    try:
        pixel = graph.get_pixel(candidate, access_token=token)
    except graph.GraphError as error:
        if error.category == graph.TRANSIENT:
            return TokenCheck(
                ok=False,
                message=f"Could not reach Meta to check the token: {error.explanation}",
                fix="You can still save; the health check tries again within minutes.",
            )
        if health.TokenProbe(error=error).read_refused:
            return TokenCheck(
                ok=False,
                message=f"{health.SEND_ONLY_NOTE} It can also mean the Pixel ID is mistyped.",
                fix="You can save: the health check decides from the first events Meta accepts "
                "or refuses. Confirm the Pixel ID matches the pixel the token was made for.",
                read_refused=True,
            )
        return TokenCheck(
            ok=False,
            message=error.explanation,
            fix=error.fix,
            refused=True,
            problem=error.problem,
        )
    name = pixel.name or f"Pixel {pixel_id}"
    return TokenCheck(ok=True, message=f"Connected to pixel '{name}'", pixel_name=name)


CHECK_OF_ANOTHER_PIXEL_REFUSED = (
    "The stored token is only ever checked against pixel {stored}, the pixel it was saved for. "
    "To use pixel {typed}, paste the access token again."
)


@sensitive_variables()
def check_destination_token(destination: Destination, *, pixel_id: str, token: str) -> TokenCheck:
    """The edit form's check: the typed token, or with a blank one the stored token.

    The stored token is only ever tried against the Pixel ID it was saved for: with a blank
    token and another Pixel ID nothing is sent to Meta (else an editor could read back the name
    of any pixel the token can reach, another client's included).
    """
    pixel_id = (pixel_id or "").strip()
    if (token or "").strip():
        return check_token(
            pixel_id or destination.pixel_id,
            token,
            app_secret=destination.app_secret,
            api_version=destination.api_version,
        )
    if pixel_id and pixel_id != destination.pixel_id:
        message = CHECK_OF_ANOTHER_PIXEL_REFUSED.format(stored=destination.pixel_id, typed=pixel_id)
        return TokenCheck(ok=False, message=message, field_errors={"access_token": [message]})
    return check_token(
        destination.pixel_id,
        destination.access_token,
        app_secret=destination.app_secret,
        api_version=destination.api_version,
    )


# --- Test events --------------------------------------------------------------------------------


def send_test_event(
    destination: Destination, *, actor: Any, test_event_code: str = ""
) -> TestEventResult:
    """Send one synthetic event with the destination's test code (else ``test_event_code``,
    copied from Events Manager) and return Meta's answer.

    Only when a person asks (the **Send test event** button, which says what follows); the
    sending and its DeliveryAttempt are :func:`capi_destinations.testevents.send_test_event`'s.
    Without a code it raises ``ValidationError`` and sends nothing. This service adds the audit
    entry naming ``actor``.
    """
    result = testevents.send_test_event(destination, test_event_code=test_event_code)
    audit(
        destination,
        AuditAction.TEST_EVENT_SENT,
        actor=actor,
        detail={
            "test_event_code": result.test_event_code,
            "ok": result.ok,
            "fbtrace_id": result.fbtrace_id,
        },
    )
    return result
