"""Models: tenants and their members, destinations, events, delivery attempts, health checks, audit.

Invariants live here: a destination's token is validated and its hint refreshed whenever the
token changes, whichever code path saves it; statuses are ``TextChoices``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator, validate_email
from django.db import models
from fernet_fields import EncryptedTextField

from capi_destinations import alert_transport, clock, tokens
from capi_destinations.conf import app_settings
from capi_destinations.consent import ConsentPolicy, MissingConsent
from capi_destinations.graph_errors import Category
from capi_destinations.routing import EventFilter, validate_event_names, validate_networks
from capi_destinations.signals import ALERT_KINDS


class StrictJSONEncoder(json.JSONEncoder):
    """JSON and nothing else: NaN and ±Infinity are refused with ``ValueError``.

    Python writes them as ``NaN``/``Infinity``, which is not JSON: PostgreSQL's jsonb refuses
    them, some SQLite versions keep them, and the dispatcher would send such a payload to Meta
    as it is stored. An event's JSON columns refuse them on every database alike, before
    anything is written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)


class Tenant(models.Model):
    """A client account: a brand, a shop, an agency's client. Everything else hangs off one."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    # Staff and test traffic, recorded as suppressed (never sent) on every destination of the
    # client (``routing``).
    exclude_staff = models.BooleanField(
        "Exclude staff traffic",
        default=False,
        help_text="Events recorded in a request of a logged-in staff user are not sent.",
    )
    excluded_networks = models.TextField(
        "Excluded IP ranges",
        blank=True,
        validators=[validate_networks],
        help_text="Events from these addresses are not sent: one address or range per line "
        "(203.0.113.0/24, 2001:db8::/32).",
    )
    test_flag = models.CharField(
        "Test-order flag",
        max_length=50,
        blank=True,
        default="test_order",
        help_text="Events whose custom_data holds this key with a true value are not sent "
        "(blank: none).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"  # manage destinations, tokens and members
    EDITOR = "editor", "Editor"  # manage destinations and tokens
    VIEWER = "viewer", "Viewer"  # read only


class Membership(models.Model):
    """A user's role in one tenant. Every page and admin query is scoped through these."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="capi_memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="capi_membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.tenant} ({self.role})"

    @property
    def can_edit(self) -> bool:
        return self.role in (Role.ADMIN, Role.EDITOR)

    @property
    def can_manage_members(self) -> bool:
        return self.role == Role.ADMIN


class InvitationState(models.TextChoices):
    """Where an invitation stands. "Expired" is not stored: it is a pending invitation whose
    ``sent_at`` is older than ``INVITATION_MAX_AGE`` (``Invitation.is_expired``)."""

    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REVOKED = "revoked", "Revoked"


def hash_invitation_token(token: str) -> str:
    # The token has 256 bits of entropy, so a plain SHA-256 is enough (no password hashing).
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    """An invitation by email to join a tenant with a role, sent as a one-time link.

    Only a hash of the link's secret is stored (``token_hash``): the secret itself is in the
    email and nowhere else. A pending invitation is used once (``accepted``), can be revoked,
    and expires ``INVITATION_MAX_AGE`` seconds after it was last sent.
    """

    # Public id in URLs (the link and the revoke/resend buttons), never the integer key.
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    # Stored in lower case: addresses are compared without regard to case.
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    state = models.CharField(
        max_length=10, choices=InvitationState.choices, default=InvitationState.PENDING
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # From the app clock so tests can move time; ``sent_at`` moves on each resend.
    created_at = models.DateTimeField(default=clock.now)
    sent_at = models.DateTimeField(default=clock.now)
    # When it was accepted or revoked, and by whom.
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            # One pending invitation per address and tenant: inviting again sends it anew.
            models.UniqueConstraint(
                fields=["tenant", "email"],
                condition=models.Q(state="pending"),
                name="capi_invitation_one_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} · {self.tenant} ({self.role}, {self.state})"

    def __repr__(self) -> str:
        # Never the hash either: it names the link as well as an id does.
        return f"<Invitation {self.pk}: {self.email} {self.state}>"

    def new_token(self) -> str:
        """Make a new secret for the link, store its hash, and return it (for the email only)."""
        token = secrets.token_urlsafe(32)
        self.token_hash = hash_invitation_token(token)
        return token

    def token_matches(self, token: str) -> bool:
        """Whether ``token`` is this invitation's secret (compared in constant time)."""
        return secrets.compare_digest(self.token_hash, hash_invitation_token(token))

    @property
    def expires_at(self) -> datetime:
        return self.sent_at + timedelta(seconds=app_settings.INVITATION_MAX_AGE)

    @property
    def is_expired(self) -> bool:
        return self.state == InvitationState.PENDING and clock.now() >= self.expires_at

    @property
    def is_usable(self) -> bool:
        return self.state == InvitationState.PENDING and not self.is_expired


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"


pixel_id_validator = RegexValidator(
    r"^[0-9]{10,20}$",
    "A Pixel ID is digits only, usually 15 or 16 (Events Manager → Data Sources → your pixel).",
    code="pixel_id_format",
)

country_validator = RegexValidator(
    r"^[a-z]{2}$", "Use a two-letter ISO country code such as “us” or “de”.", code="country"
)


# What a stored token is bound to: changing one of them takes the token, pasted again.
TOKEN_BINDING_FIELDS = ("pixel_id", "api_version", "app_secret")
_BINDING_NAMES = {
    "pixel_id": "the Pixel ID",
    "api_version": "the Graph API version",
    "app_secret": "the app secret",
}


def rebind_message(fields: Iterable[str]) -> str:
    """Why a change of ``fields`` (some of TOKEN_BINDING_FIELDS) needs the token again."""
    what = " and ".join(_BINDING_NAMES[name] for name in TOKEN_BINDING_FIELDS if name in fields)
    return (
        f"Paste the access token again to change {what}: a stored token stays with the pixel "
        "it was saved for."
    )


api_version_validator = RegexValidator(
    r"^v[0-9]{1,3}\.[0-9]{1,3}\Z",
    "Write a Graph API version as Meta does, for example “v26.0” (or leave it blank).",
    code="api_version",
)

# A host name (letters, digits, hyphens between dots), an IPv4 address or a bracketed IPv6 one.
_ORIGIN_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\]"
)


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not a browser origin (scheme://host[:port]), or None when it is."""
    if origin in ("*", "null") or "*" in origin:
        return "wildcards and “null” would let any page post events with the public key"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return "not an address"
    if parts.scheme not in ("http", "https"):
        return "it must start with https:// (or http://)"
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if "@" in parts.netloc or not _ORIGIN_HOST.fullmatch(host.lower()):
        return "no host name after the scheme"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "an origin has no path: write https://shop.example.com, not a page address"
    return None


def validate_allowed_origins(value: str) -> None:
    """Each line must be an origin: ``https://shop.example.com`` with an optional ``:port``."""
    problems = [
        f"“{line.strip()[:100]}”: {problem}"
        for line in value.splitlines()
        if line.strip() and (problem := _origin_problem(line.strip())) is not None
    ]
    if problems:
        raise ValidationError(
            "Write one origin per line, as scheme://host with an optional :port "
            f"(https://shop.example.com). {'; '.join(problems)}.",
            code="allowed_origins",
        )


def new_ingest_key() -> str:
    """A public, URL-safe key that names a destination in the ingest endpoint."""
    return "pk_" + secrets.token_urlsafe(24)


def new_ingest_secret() -> str:
    """A server-side secret for the ingest endpoint; only its hash is stored."""
    return "sk_" + secrets.token_urlsafe(32)


def hash_ingest_secret(secret: str) -> str:
    # The secret has 256 bits of entropy, so a plain SHA-256 is enough (no password hashing).
    return hashlib.sha256(secret.encode()).hexdigest()


class BlockKind(models.TextChoices):
    """Why a destination's delivery is blocked (blank while it is not)."""

    # Meta refused the token (an ``auth`` or ``permission`` answer): a new token lifts it.
    TOKEN = "token", "Meta refused the token"
    # Meta refuses every request whatever its events (a wrong test event code, Limited Data
    # Use required): a canary Meta accepts lifts it.
    EVERY_REQUEST = "every_request", "Meta refuses every request"


class DestinationQuerySet(models.QuerySet["Destination"]):
    def for_user(self, user: Any) -> DestinationQuerySet:
        """Destinations of the tenants ``user`` belongs to (all of them for a superuser)."""
        if user.is_superuser:
            return self
        return self.filter(tenant__memberships__user=user)

    def editable_by(self, user: Any) -> DestinationQuerySet:
        """Destinations of the tenants where ``user`` is an editor or an admin."""
        if user.is_superuser:
            return self
        return self.filter(
            tenant__memberships__user=user,
            tenant__memberships__role__in=[Role.EDITOR, Role.ADMIN],
        )


class Destination(models.Model):
    """One Meta pixel (dataset) that events are sent to, with its encrypted token and health."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="destinations")
    name = models.CharField(max_length=200)
    pixel_id = models.CharField("Pixel ID", max_length=20, validators=[pixel_id_validator])
    access_token = EncryptedTextField()
    token_hint = models.CharField(max_length=16, blank=True, editable=False)
    # A keyed hash of the token (tokens.token_fingerprint), written by save() with the token: it
    # finds the destinations of other clients that use the same token, and tells whether a block
    # was earned by the token stored now. A ``QuerySet.update(access_token=…)`` leaves it stale
    # until the dispatcher or a health check next reads the token (see dispatch.py).
    token_fingerprint = models.CharField(max_length=64, blank=True, editable=False, db_index=True)
    app_secret = EncryptedTextField(
        blank=True,
        default="",
        help_text="Optional: your Meta app's secret, to sign requests with appsecret_proof.",
    )
    enabled = models.BooleanField(
        "Send events via Conversions API",
        default=True,
        help_text="Unticked, events are still recorded but nothing is sent to Meta.",
    )
    test_event_code = models.CharField(
        max_length=50,
        blank=True,
        help_text="From Events Manager → Test Events, where events sent with it also show. Meta "
        "still records them in the dataset like any other event.",
    )
    api_version = models.CharField(
        "Graph API version",
        max_length=10,
        blank=True,
        validators=[api_version_validator],
        help_text="Blank uses the app default.",
    )
    default_country = models.CharField(
        max_length=2,
        blank=True,
        validators=[country_validator],
        help_text="Country used to read phone numbers that have no country code.",
    )
    consent_policy = models.CharField(
        max_length=20, choices=ConsentPolicy.choices, default=ConsentPolicy.SEND_ALWAYS
    )
    missing_consent = models.CharField(
        "When an event carries no consent state",
        max_length=10,
        choices=MissingConsent.choices,
        default=MissingConsent.GRANTED,
    )
    ingest_key = models.CharField(max_length=64, unique=True, default=new_ingest_key)
    ingest_secret_hash = models.CharField(max_length=64, blank=True, editable=False)
    # Which events this destination sends (``routing``); the others are recorded as suppressed.
    event_filter = models.CharField(
        "Events to send",
        max_length=5,
        choices=EventFilter.choices,
        default=EventFilter.ALL,
        # Optional in forms: a form that leaves it out (an older admin form, an API client)
        # keeps the stored choice; blank sends all, as ALL does.
        blank=True,
    )
    event_filter_names = models.TextField(
        "Event names",
        blank=True,
        validators=[validate_event_names],
        help_text="One event name per line, for 'only these' or 'all but these'.",
    )
    # Fan-out: the ingest endpoint also records this destination's events for these destinations
    # (ids), each independently, with the same event_id (one hop: theirs are not followed).
    forward_to = models.JSONField("Also record its events for", default=list, blank=True)
    minimum_purchase_value = models.DecimalField(
        "Minimum Purchase value",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Purchases worth less are not sent (blank: all).",
    )
    allowed_origins = models.TextField(
        blank=True,
        validators=[validate_allowed_origins],
        help_text="Browser origins allowed to post events with the public key, one per line "
        "(https://shop.example.com).",
    )

    # Health, written by health.py.
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_reasons = models.JSONField(default=list, blank=True)
    # The notes of the latest full check (problem keys such as "low_match_quality"): shown on the
    # cards, never turning one red.
    health_notes = models.JSONField(default=list, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_changed_at = models.DateTimeField(null=True, blank=True)
    health_transient_failures = models.PositiveIntegerField(default=0)
    # When a change (Enable, Disable, a new token) asked for a check at once: until that check
    # has run, the stored verdict describes the destination before the change.
    health_check_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    pixel_name = models.CharField(max_length=255, blank=True)

    # Delivery state, written by delivery_state.py.
    paused_until = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    blocked_reason = models.TextField(
        blank=True, help_text="Set when Meta refused the token; sending stops until it is fixed."
    )
    blocked_at = models.DateTimeField(null=True, blank=True)
    # What kind of refusal the block is (blank while not blocked, and for a block written
    # before kinds existed, which counts as a refused token).
    block_kind = models.CharField(
        max_length=16, choices=BlockKind.choices, blank=True, editable=False
    )
    # The fingerprint of the token Meta refused: a block never outlives that token, whichever
    # path replaced it (blank: a block written before fingerprints, taken as the current token's).
    blocked_token_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    # While blocked: when the dispatcher next sends one of the destination's own waiting events
    # alone (a canary) to see whether Meta still refuses; never a synthetic event.
    canary_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When sending last resumed after events were held on purpose (enabled again, a block
    # lifted): the health check counts their wait from here, not from when they fell due.
    sending_resumed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_delivered_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DestinationQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "pixel_id"], name="capi_destination_unique_pixel_per_tenant"
            )
        ]
        indexes = [models.Index(fields=["health"], name="capi_dest_health")]

    def __str__(self) -> str:
        return f"{self.name} ({self.pixel_id})"

    def __repr__(self) -> str:
        return (
            f"<Destination {self.pk}: {self.name!r} pixel={self.pixel_id} token={self.token_hint}>"
        )

    @classmethod
    def from_db(cls, *args: Any, **kwargs: Any) -> Self:
        # Whatever Django passes along (6.1 adds ``fetch_mode``), passed on as it came.
        instance = super().from_db(*args, **kwargs)
        instance._remember_stored()
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
        super().refresh_from_db(*args, **kwargs)
        # Only what was read again: a value changed in memory but not saved stays a change.
        self._remember_stored(only=None if fields is None else set(fields))

    def _remember_stored(self, only: set[str] | None = None) -> None:
        # The stored token and what it was saved with, so save() and clean() can tell a new
        # token from a stored token that would be pointed at another pixel.
        loaded = self.__dict__
        if (only is None or "access_token" in only) and "access_token" in loaded:
            self._stored_token = loaded["access_token"]
        binding = dict(getattr(self, "_token_binding", {}))
        for name in TOKEN_BINDING_FIELDS:
            if (only is None or name in only) and name in loaded:
                binding[name] = loaded[name]
        self._token_binding = binding

    @property
    def graph_api_version(self) -> str:
        return self.api_version or app_settings.GRAPH_API_VERSION

    @property
    def has_token(self) -> bool:
        return bool(self.access_token)

    @property
    def is_blocked(self) -> bool:
        return bool(self.blocked_reason)

    @property
    def is_test_mode(self) -> bool:
        return bool(self.test_event_code)

    @property
    def allowed_origin_list(self) -> list[str]:
        return [
            line.strip().rstrip("/") for line in self.allowed_origins.splitlines() if line.strip()
        ]

    def set_ingest_secret(self) -> str:
        """Make a new ingest secret, store its hash, and return it (shown to the user once)."""
        secret = new_ingest_secret()
        self.ingest_secret_hash = hash_ingest_secret(secret)
        return secret

    def check_ingest_secret(self, secret: str) -> bool:
        if not self.ingest_secret_hash or not secret:
            return False
        return secrets.compare_digest(self.ingest_secret_hash, hash_ingest_secret(secret))

    # How long a card shows "Checking…" for a check a change asked for: a worker runs it within
    # seconds; past this, the stored verdict shows again (a queue that runs nothing is a problem
    # the scheduled checks and the card must not hide).
    HEALTH_CHECK_PENDING_FOR = timedelta(minutes=2)

    @property
    def health_check_pending(self) -> bool:
        """A change asked for a check that has not run yet (for two minutes at most)."""
        requested = self.health_check_requested_at
        if requested is None:
            return False
        if self.health_checked_at is not None and self.health_checked_at >= requested:
            return False
        return clock.now() - requested < self.HEALTH_CHECK_PENDING_FOR

    @property
    def shown_health(self) -> str:
        """What the card shows: ``checking`` while a change's own check is pending, so a verdict
        from before Enable or a new token never shows as the state after it."""
        return "checking" if self.health_check_pending else self.health

    def token_changed(self) -> bool:
        return self.access_token != getattr(self, "_stored_token", None)

    def token_binding_changes(self, fields: Iterable[str] | None = None) -> list[str]:
        """The fields the stored token is bound to that changed without a new token.

        A stored token stays with the Pixel ID, Graph API version and app secret it was saved
        with: pointing it elsewhere takes the token itself, pasted again (an editor never sees
        a stored token, so they cannot send with it to a pixel it was not saved for).
        """
        if self.token_changed():
            return []
        names = [name for name in TOKEN_BINDING_FIELDS if fields is None or name in fields]
        bound = getattr(self, "_token_binding", {})
        unknown = [name for name in names if name not in bound]
        if unknown and not self._state.adding and self.pk is not None:
            # Deferred when loaded and set before being read: the stored value decides.
            stored = type(self)._base_manager.filter(pk=self.pk).values(*unknown).first()
            bound = {**bound, **(stored or {})}
        return [name for name in names if name in bound and getattr(self, name) != bound[name]]

    def _refuse_unbound_changes(self, fields: Iterable[str] | None = None) -> None:
        changed = self.token_binding_changes(fields)
        if changed:
            raise ValidationError({"access_token": [rebind_message(changed)]}, code="token_rebind")

    @property
    def block_outlived_token(self) -> bool:
        """Whether a block was earned by a token that is no longer the stored one.

        Decrypts the token, to compare fingerprints: only the dispatcher and the health check,
        which read the token to send with it, ask this.
        """
        if not self.blocked_reason or not self.blocked_token_fingerprint:
            return False
        return not tokens.fingerprint_matches(self.access_token, self.blocked_token_fingerprint)

    def sync_token_fingerprint(self) -> bool:
        """Bring the stored hint and fingerprint up to the stored token; returns whether stale.

        ``save()`` keeps them in step; a ``QuerySet.update(access_token=…)`` does not, so the
        health check calls this (it reads the token anyway). Compare-and-set on the old value.
        """
        fingerprint = tokens.token_fingerprint(self.access_token)
        if fingerprint == self.token_fingerprint:
            return False
        hint = tokens.token_hint(self.access_token)
        Destination.objects.filter(pk=self.pk, token_fingerprint=self.token_fingerprint).update(
            token_fingerprint=fingerprint, token_hint=hint
        )
        self.token_fingerprint, self.token_hint = fingerprint, hint
        return True

    def clean_fields(self, exclude: Collection[str] | None = None) -> None:
        # The token rule is a rule of the field: a form that already refused the token (so
        # excludes the field) shows its message once, not a second time from the model.
        errors: dict[str, Any] = {}
        try:
            super().clean_fields(exclude=exclude)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        skip = "access_token" in (exclude or ()) or "access_token" in errors
        if not skip and self.token_changed():
            try:
                self.access_token = tokens.clean_access_token(self.access_token)
            except ValidationError as error:
                errors["access_token"] = error.messages
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        super().clean()
        self._refuse_unbound_changes()
        if self.default_country:
            self.default_country = self.default_country.lower()
        forward_to = self.forward_to if isinstance(self.forward_to, list) else None
        if forward_to is None or not all(
            isinstance(pk, int) and not isinstance(pk, bool) for pk in forward_to
        ):
            raise ValidationError({"forward_to": "A list of destination ids."})
        if self.pk is not None and self.pk in forward_to:
            raise ValidationError({"forward_to": "A destination cannot record its events twice."})
        self.forward_to = sorted(set(forward_to))

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Whatever path saves a new token (form, admin, shell, API), it is validated and the hint
        # and fingerprint follow it, so a bad paste can never be stored, the hint never goes
        # stale, and a block earned by the old token goes with it. Whatever path saves a new
        # Pixel ID, API version or app secret, it comes with a new token.
        update_fields = kwargs.get("update_fields")
        self._refuse_unbound_changes(update_fields)
        bound_pixel = getattr(self, "_token_binding", {}).get("pixel_id", self.pixel_id)
        if bound_pixel != self.pixel_id and (update_fields is None or "pixel_id" in update_fields):
            # The name Meta reported was the old pixel's.
            self.pixel_name = ""
            if update_fields is not None:
                kwargs["update_fields"] = update_fields = {*update_fields, "pixel_name"}
        if self.token_changed() and (update_fields is None or "access_token" in update_fields):
            self.access_token = tokens.clean_access_token(self.access_token)
            self.token_hint = tokens.token_hint(self.access_token)
            self.token_fingerprint = tokens.token_fingerprint(self.access_token)
            written = {"token_hint", "token_fingerprint"}
            if self.blocked_reason and not tokens.fingerprint_matches(
                self.access_token, self.blocked_token_fingerprint
            ):
                self.blocked_reason = ""
                self.blocked_at = None
                self.block_kind = ""
                self.blocked_token_fingerprint = ""
                # The held events count as due from now (the health check's queue check).
                self.sending_resumed_at = clock.now()
                written |= {
                    "sending_resumed_at",
                    "blocked_reason",
                    "blocked_at",
                    "block_kind",
                    "blocked_token_fingerprint",
                }
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, *written}
        super().save(*args, **kwargs)
        self._remember_stored()


class EventStatus(models.TextChoices):
    # Waiting to be sent, retried, or on its way: it has a QueuedEvent (due time, lease).
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    REJECTED = "rejected", "Rejected"  # local validation errors; never sent
    SUPPRESSED = "suppressed", "Suppressed"  # consent policy; never sent
    FAILED = "failed", "Failed"  # Meta rejected this event itself
    EXPIRED = (
        "expired",
        "Expired",
    )  # not delivered inside Meta's window (7 days; 62 for store events)


#: The final statuses of an event that was not delivered: few beside the delivered ones, and
#: what the event log is filtered by to find what needs a look (``Event.problem_status``).
PROBLEM_EVENT_STATUSES = (
    EventStatus.REJECTED,
    EventStatus.SUPPRESSED,
    EventStatus.FAILED,
    EventStatus.EXPIRED,
)


def problem_status_of(status: str) -> str | None:
    """What the database computes into ``Event.problem_status`` for ``status``."""
    return status if status in PROBLEM_EVENT_STATUSES else None


FINAL_EVENT_STATUSES = (
    EventStatus.DELIVERED,
    EventStatus.REJECTED,
    EventStatus.SUPPRESSED,
    EventStatus.FAILED,
    EventStatus.EXPIRED,
)


class Event(models.Model):
    """One server event for one destination. Holds hashed PII only, never plaintext."""

    # No index of its own: the unique constraint and the pages' indexes start with it, and every
    # index costs each insert and status change (docs/BENCHMARKS.md, dispatch).
    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    event_name = models.CharField(max_length=100)
    event_id = models.CharField(max_length=255)
    event_time = models.DateTimeField()
    action_source = models.CharField(max_length=32, blank=True)
    # The Meta-ready server event as it will be sent (user_data hashed where Meta hashes).
    payload = models.JSONField(default=dict, encoder=StrictJSONEncoder)
    # SHA-256 of the canonical payload: tells a retry from an event_id reused for another event.
    payload_hash = models.CharField(max_length=64, blank=True)
    consent = models.JSONField(null=True, blank=True, encoder=StrictJSONEncoder)
    status = models.CharField(
        max_length=10, choices=EventStatus.choices, default=EventStatus.PENDING
    )
    status_reason = models.TextField(blank=True)
    # The status when it is one of PROBLEM_EVENT_STATUSES, else NULL; computed by the database.
    # Its partial index finds a big destination's few failed or rejected events without an index
    # on ``status``, which the delivery writes: pending → delivered leaves this NULL, so the
    # delivery's UPDATE stays HOT.
    problem_status = models.GeneratedField(
        expression=models.Case(
            models.When(status__in=PROBLEM_EVENT_STATUSES, then=models.F("status")),
            default=models.Value(None),
            output_field=models.CharField(max_length=10, null=True),
        ),
        output_field=models.CharField(max_length=10, null=True),
        db_persist=True,
    )
    # Requests that carried the event and ended (delivered, refused, retried): what the pages
    # show and what the retry schedule counts. Written with the outcome, never by a claim.
    attempts = models.PositiveIntegerField(default=0)
    diagnostics = models.JSONField(default=list, blank=True, encoder=StrictJSONEncoder)
    match_quality = models.FloatField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The request that delivered the event. The delivering UPDATE sets it, instead of a row per
    # event in ``DeliveryAttempt.events`` (those rows cost dispatch a fifth of its time;
    # docs/BENCHMARKS.md). No constraint and no index: purging old attempts leaves old events
    # alone, and a purged attempt simply reads as none.
    delivered_by = models.ForeignKey(
        "DeliveryAttempt",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="delivered_events",
    )
    # From the app clock (not auto_now) so tests can move time; bulk_create fills them too.
    created_at = models.DateTimeField(default=clock.now)
    updated_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "event_name", "event_id"], name="capi_event_unique_id"
            )
        ]
        # The delivery queue (due time, lease) is QueuedEvent's: a claim never writes this wide
        # row, and the outcome writes it once. No index may hold a column the delivery's UPDATE
        # writes (status, status_reason, attempts, delivered_at, delivered_by, updated_at):
        # with the free space of the table's fillfactor (migration 0002) that UPDATE is then a
        # HOT update, with no new index entry (docs/BENCHMARKS.md, issue 21; a test checks
        # it). Pending events are counted from the queue, outcomes from HourlyOutcomes.
        indexes = [
            # Pages: a destination's log; retention and Redeliver by time received.
            models.Index(fields=["destination", "-created_at"], name="capi_event_dest_created"),
            # The log filtered by a status that needs a look (failed, rejected, …).
            models.Index(
                fields=["destination", "problem_status", "-created_at"],
                name="capi_event_dest_problem",
                condition=models.Q(problem_status__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.event_id} ({self.status})"

    @property
    def next_attempt_at(self) -> datetime | None:
        """When the event is due to be sent next (its queue entry's), or None once it left the
        queue. While a worker holds it, the moment its lease runs out."""
        try:
            queued = self.queued
        except QueuedEvent.DoesNotExist:
            return None
        return queued.lease_expires_at or queued.due_at

    def delivery_history(self, limit: int = 20) -> list[DeliveryAttempt]:
        """The requests that carried this event, newest first: the failed ones and the one that
        delivered it."""
        attempts = list(self.delivery_attempts.order_by("-started_at")[:limit])
        if self.delivered_by_id is not None:
            attempts += DeliveryAttempt.objects.filter(pk=self.delivered_by_id)
        return sorted(attempts, key=lambda attempt: attempt.started_at, reverse=True)[:limit]

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Queryset .update() calls must set updated_at themselves.
        self.updated_at = clock.now()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "updated_at"}
        super().save(*args, **kwargs)


class QueuedEvent(models.Model):
    """A pending event in the delivery queue: when it is due, and the lease of the worker
    sending it.

    The dispatcher's hot path lives here, in a narrow row, instead of in the event's wide row
    (the payload, the pages' indexes): a claim rewrites only this row, and an outcome deletes
    it while writing the event once (docs/BENCHMARKS.md, issue 21). An event is ``pending``
    exactly while it has one; whoever moves an event into or out of ``pending`` adds or deletes
    it in the same transaction (``eventstore`` at ingest, ``dispatch`` afterwards).

    A claim sets ``lease_token`` and ``lease_expires_at`` and leaves ``due_at`` as it is: a
    claimed event is not due while its lease runs, and one whose worker died is due again when
    its lease ends without anything having to notice first. No index holds a lease column, so
    on PostgreSQL (the table at fillfactor 40, migration 0002) the claim's UPDATE is a HOT
    update: no new index entries (docs/BENCHMARKS.md, issue 21).
    """

    event = models.OneToOneField(
        Event, on_delete=models.CASCADE, primary_key=True, related_name="queued"
    )
    # The event's destination, copied so a claim reads only this table's index. No constraint
    # and no index of its own: the event's foreign key holds, and the due index starts with it.
    destination = models.ForeignKey(
        Destination,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    due_at = models.DateTimeField()
    # Set while a worker holds the event, until the lease runs out. Not indexed (a HOT claim).
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # A claim takes one destination's due events, oldest first.
            models.Index(fields=["destination", "due_at"], name="capi_queue_due_by_destination"),
            # Which destination's oldest due event is the oldest; overdue events.
            models.Index(fields=["due_at"], name="capi_queue_due"),
        ]

    def __str__(self) -> str:
        if self.lease_token and self.lease_expires_at:
            return f"event {self.event_id} leased until {self.lease_expires_at:%Y-%m-%d %H:%M:%S}"
        return f"event {self.event_id} due at {self.due_at:%Y-%m-%d %H:%M:%S}"


class ClickIdSighting(models.Model):
    """An ``fbc`` or ``fbp`` seen on an event together with a person's identifier, per client.

    Kept so a later event for the same person that arrives without a browser (a payment
    webhook, a CRM update) can carry the click (``click_memory``). The identifier is the SHA-256
    digest of the person's email, phone or external_id exactly as it was sent to Meta; no raw
    email or phone is ever stored. Only sightings on events whose consent allowed ad storage are
    kept. Purged after ``RETENTION_DAYS``; ``capi_destinations.forget()`` erases a person's.
    """

    # No index of its own: the unique constraint starts with it.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    identifier = models.CharField(max_length=64)  # SHA-256 hex digest
    identifier_key = models.CharField(max_length=16)  # "em", "ph" or "external_id"
    key = models.CharField(max_length=3)  # "fbc" or "fbp"
    value = models.CharField(max_length=600)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # The event's consent for ad storage: "granted", or "default" (the event carried no state
    # and its destination counts that as granted).
    ad_storage = models.CharField(max_length=10)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "identifier", "key", "value"], name="capi_click_sighting"
            )
        ]
        indexes = [
            models.Index(fields=["last_seen_at"], name="capi_click_sighting_seen"),
            # recall(): a person's latest sighting of a key, found without reading the others.
            models.Index(
                fields=["tenant", "identifier", "key", "-last_seen_at"],
                name="capi_click_sighting_recall",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} for {self.identifier_key} {self.identifier[:8]}…"


class RuleFiring(models.Model):
    """A conversion rule has recorded its event for one object (``rules``): at most once."""

    rule = models.CharField(max_length=100)
    # "<app_label>.<model>:<pk>" of the object whose change fired the rule.
    object_key = models.CharField(max_length=255)
    fired_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "object_key"], name="capi_rule_firing")
        ]

    def __str__(self) -> str:
        return f"{self.rule} fired for {self.object_key}"


class HourlyOutcomes(models.Model):
    """How many of a destination's events reached each outcome in one UTC hour.

    Written where the outcome happens (one UPSERT per request or batch, not per event), so the
    overview sums 24 small rows per destination instead of counting a day of events
    (docs/BENCHMARKS.md, pages). Counts only go up: an event that failed and was then
    redelivered counts once as failed and once as delivered, as both happened.
    """

    # No index of its own: the unique constraint starts with it.
    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="hourly_outcomes", db_index=False
    )
    hour = models.DateTimeField()  # the start of the UTC hour
    delivered = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)  # Meta refused the event, or it expired
    rejected = models.PositiveIntegerField(default=0)  # refused by our own checks at ingest
    # Recorded but never to be sent: consent, the destination's filter, the client's exclusions.
    suppressed = models.PositiveIntegerField(default=0)
    # Events stored at ingest this hour, whatever their status: what "traffic" means for the
    # traffic-dropped alert (the outcomes above depend on sending, this does not).
    recorded = models.PositiveIntegerField(default=0)
    # The sum of the estimated match quality of those recorded events, and how many had one:
    # a week's average for the match-quality alert without reading a week of events.
    quality_sum = models.FloatField(default=0.0)
    quality_events = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "hour"], name="capi_hourly_unique")
        ]

    def __str__(self) -> str:
        return (
            f"{self.destination_id} {self.hour:%Y-%m-%d %H:00}: {self.delivered} delivered, "
            f"{self.failed} failed, {self.rejected} rejected"
        )


class IngestRefusal(models.TextChoices):
    """Why the ingest endpoint refused a call it could attribute to a destination (its key)."""

    ORIGIN_NOT_ALLOWED = "origin_not_allowed", "Origin not allowed"
    MISSING_CREDENTIALS = "missing_credentials", "No server key, no allowed origin"
    WRONG_SECRET = "wrong_secret", "Wrong server key"
    RATE_LIMITED = "rate_limited", "Rate limited"
    BAD_BODY = "bad_body", "Body not readable"


class RefusedCalls(models.Model):
    """How many calls to a destination's ingest endpoint were refused, per UTC hour and reason.

    One UPSERT per refused call (``counters.add_refused_call``), no row per request; only calls
    that named an existing destination's key are counted (an unknown key belongs to nobody).
    ``last_origin`` is the ``Origin`` of the latest refused call that sent one: what a browser
    claimed, shown escaped, never trusted.
    """

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="refused_calls", db_index=False
    )
    hour = models.DateTimeField()  # the start of the UTC hour
    reason = models.CharField(max_length=24, choices=IngestRefusal.choices)
    count = models.PositiveIntegerField(default=0)
    last_origin = models.CharField(max_length=200, blank=True)
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "hour", "reason"], name="capi_refused_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.destination_id} {self.hour:%Y-%m-%d %H:00} {self.reason}: {self.count}"


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    RETRY = "retry", "Will retry"
    RATE_LIMITED = "rate_limited", "Rate limited"
    BLOCKED = "blocked", "Token refused"
    INVALID = "invalid", "Invalid request"
    BISECTED = "bisected", "Split to find the bad event"


class DeliveryAttempt(models.Model):
    """One request to Meta carrying some events, with Meta's answer (never the token)."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="attempts")
    # The events of a request that did not deliver them (retried, bisected, refused…). Those a
    # request delivered point at it instead (``Event.delivered_by``); ``Event.delivery_history``
    # reads both.
    events = models.ManyToManyField(Event, related_name="delivery_attempts", blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    test_event_code = models.CharField(max_length=50, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    events_received = models.PositiveIntegerField(null=True, blank=True)
    fbtrace_id = models.CharField(max_length=100, blank=True)
    # Empty for a request Meta accepted.
    category = models.CharField(max_length=20, blank=True, choices=Category.choices)
    error_code = models.IntegerField(null=True, blank=True)
    error_subcode = models.IntegerField(null=True, blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    error_user_title = models.CharField(max_length=255, blank=True)
    error_user_msg = models.TextField(blank=True)
    # Meta's answer kept whole: the "messages" of an accepted request, and an error's
    # "error_data" (which may hold "blame_field_specs"). Never the token.
    messages = models.JSONField(default=list, blank=True)
    error_data = models.JSONField(null=True, blank=True)
    # One of a blocked destination's own waiting events, sent alone to see if the block holds.
    canary = models.BooleanField(default=False)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["destination", "-started_at"], name="capi_attempt_dest_started")
        ]

    def __str__(self) -> str:
        return f"{self.destination_id} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def error_data_text(self) -> str:
        """Meta's ``error_data`` as compact JSON for pages ("" when Meta sent none)."""
        if self.error_data in (None, "", {}):
            return ""
        if isinstance(self.error_data, str):
            return self.error_data
        return json.dumps(self.error_data, sort_keys=True, ensure_ascii=False)

    @property
    def received_mismatch(self) -> bool:
        return (
            self.outcome == AttemptOutcome.DELIVERED
            and self.events_received is not None
            and self.events_received != self.event_count
        )


class HealthCheck(models.Model):
    """One run of the health checks for a destination."""

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="health_checks"
    )
    checked_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Health.choices)
    # [{"name", "ok", "message", "fix", "severity"}]
    checks = models.JSONField(default=list)
    duration_ms = models.PositiveIntegerField(default=0)
    status_changed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            models.Index(fields=["destination", "-checked_at"], name="capi_check_dest_checked")
        ]

    def __str__(self) -> str:
        return f"{self.destination_id} {self.checked_at:%Y-%m-%d %H:%M} {self.status}"


class AlertKind(models.TextChoices):
    """The alerts raised by the checks (``signals.ALERT_KINDS`` without "health", which is
    ``Destination.health`` itself)."""

    TRAFFIC_DROPPED = "traffic_dropped", "Traffic dropped"
    VERSION_ENDING = "version_ending", "Graph API version ending"
    MATCH_QUALITY_FELL = "match_quality_fell", "Match quality fell"
    FAILURE_RATE = "failure_rate", "Failure rate crossed the threshold"


class AlertState(models.Model):
    """Whether one alert condition is raised on a destination, with its debounce streak.

    Edge-triggered: ``alert_checks.record_conditions`` changes ``raised`` (a compare-and-set on
    ``raised`` and ``streak``) only after the opposite was observed ``ALERT_DEBOUNCE_CHECKS``
    evaluations in a row, and sends ``signals.destination_alert`` once per change. A row of its
    own, never read by the pages, so the overview's queries stay as they were.
    """

    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="alert_states", db_index=False
    )
    kind = models.CharField(max_length=24, choices=AlertKind.choices)
    raised = models.BooleanField(default=False)
    # Evaluations in a row that observed the opposite of ``raised`` (0: it agrees).
    streak = models.PositiveSmallIntegerField(default=0)
    reason = models.TextField(blank=True)
    fix = models.TextField(blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    # When it was last raised (kept after it ends, so a digest can say both).
    raised_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "kind"], name="capi_alert_state_unique")
        ]

    def __str__(self) -> str:
        return f"{self.destination_id} {self.kind}: {'raised' if self.raised else 'clear'}"


class DigestChoice(models.TextChoices):
    """Which daily digest a person receives."""

    PER_TENANT = "per_tenant", "One digest per client I administer"
    COMBINED = "combined", "One digest across all my clients"
    NONE = "none", "No digest"


class DigestPreference(models.Model):
    """A person's daily-digest choice. No row means the default, ``PER_TENANT``: the admins of
    each tenant get that tenant's digest; the combined digest (every tenant the person is a
    member of, in any role) is chosen here."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="capi_digest_preference"
    )
    digest = models.CharField(
        max_length=12, choices=DigestChoice.choices, default=DigestChoice.PER_TENANT
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.digest}"


class MetaScoreStatus(models.TextChoices):
    """Whether Meta's Dataset Quality API let the destination's token read its scores."""

    AVAILABLE = "available", "Available"
    # Meta refused the token for this endpoint: normal for a token made in the dataset's
    # Conversions API settings ("can't be used to run API GET data requests"); never a health
    # problem, the destination sends as before.
    NOT_AVAILABLE = "not_available", "Not available with this token"


class MatchQualityReport(models.Model):
    """Meta's own Event Match Quality for a destination, as last fetched (one row each).

    Written only by :mod:`capi_destinations.match_quality`. Holds Meta's latest answer: one entry
    per event name, replaced whole by each successful fetch, and beside it the scores of each
    day's last fetch for a week (``daily_scores``). A failure that is not a refusal (an outage, a
    timeout, a rate limit) leaves the row as it was.
    """

    destination = models.OneToOneField(
        Destination,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="match_quality_report",
    )
    status = models.CharField(max_length=16, choices=MetaScoreStatus.choices)
    # [{"event_name", "composite_score", "match_key_feedback": [{"identifier", "coverage"}]}]
    # as Meta sent them (coverage a percentage, or null).
    events = models.JSONField(default=list, blank=True)
    # The lowest composite score of ``events`` (null: none), so pages can sort "needs
    # attention" first in SQL.
    lowest_score = models.FloatField(null=True, blank=True)
    # When Meta last answered (with scores or with a refusal).
    fetched_at = models.DateTimeField()
    # Our own estimate at the same moment, {event name: [average 0-10, events]} over the last
    # 24 hours, so an overview card shows both numbers without counting events.
    ours = models.JSONField(default=dict, blank=True)
    # Meta's scores of the last fetch of each UTC day, {"YYYY-MM-DD": {event name: score}}, for
    # the last MatchQualityReport.DAYS_KEPT days: the "match quality fell" alert compares the
    # latest scores with a week before. A refusal or a failed fetch leaves them as they were.
    daily_scores = models.JSONField(default=dict, blank=True)

    DAYS_KEPT = 8

    def __str__(self) -> str:
        return f"{self.destination_id} {self.status} {self.fetched_at:%Y-%m-%d %H:%M}"

    def headline(self) -> tuple[str, float | None, float | None] | None:
        """(event name, Meta's score, ours) of the event a card names: Purchase when there is
        one, else the event with the most events; None when neither score exists."""
        meta = {
            entry["event_name"]: entry.get("composite_score")
            for entry in (self.events if isinstance(self.events, list) else [])
            if isinstance(entry, dict) and isinstance(entry.get("event_name"), str)
        }
        ours = {
            name: value
            for name, value in (self.ours if isinstance(self.ours, dict) else {}).items()
            if isinstance(value, list) and len(value) == 2
        }
        names = set(meta) | set(ours)
        if not names:
            return None
        name = (
            "Purchase"
            if "Purchase" in names
            else max(names, key=lambda event_name: (ours.get(event_name, [0, 0])[1], event_name))
        )
        score = meta.get(name)
        our = ours.get(name, [None, 0])[0]
        return (
            name,
            float(score) if isinstance(score, int | float) else None,
            float(our) if isinstance(our, int | float) else None,
        )


class AuditAction(models.TextChoices):
    CREATED = "created", "Created"
    UPDATED = "updated", "Updated"
    TOKEN_REPLACED = "token_replaced", "Token replaced"
    # The token saved is also stored for a destination of another client (tenant): written in
    # the audit log of each tenant involved, naming no other client.
    TOKEN_SHARED = "token_shared", "Token also used by another client"
    ENABLED = "enabled", "Enabled"
    DISABLED = "disabled", "Disabled"
    DELETED = "deleted", "Deleted"
    REDELIVERED = "redelivered", "Events redelivered"
    KEYS_REGENERATED = "keys_regenerated", "Ingest keys regenerated"
    TEST_EVENT_SENT = "test_event_sent", "Test event sent"
    # A tenant's members (no destination): written by access.add_member/change_role/remove_member.
    MEMBER_ADDED = "member_added", "Member added"
    MEMBER_ROLE_CHANGED = "member_role_changed", "Member's role changed"
    MEMBER_REMOVED = "member_removed", "Member removed"
    # A tenant's notification channels (no destination): written by alerts.py. The detail names
    # the channel and its kind, never its addresses, URL or secret.
    CHANNEL_ADDED = "channel_added", "Alert channel added"
    CHANNEL_CHANGED = "channel_changed", "Alert channel changed"
    CHANNEL_DELETED = "channel_deleted", "Alert channel deleted"
    CHANNEL_SECRET_REPLACED = "channel_secret", "Alert channel's signing secret replaced"
    # Invitations by email (access.invite/revoke; acceptance is MEMBER_ADDED). Never the link.
    MEMBER_INVITED = "member_invited", "Invitation sent"
    INVITATION_REVOKED = "invitation_revoked", "Invitation revoked"
    # A tenant's exclusions (staff traffic, IP ranges, test-order flag; no destination): written
    # by exclusions.update_exclusions, from the Exclusions page and the admin alike.
    EXCLUSIONS_CHANGED = "exclusions_changed", "Exclusions changed"


class AuditEntry(models.Model):
    """Who did what to a destination, or to a tenant's members, and when. Never holds a token."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_entries")
    destination = models.ForeignKey(
        Destination, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries"
    )
    # Kept so the entry still reads well after the destination is deleted.
    destination_label = models.CharField(max_length=255, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.destination_label}"


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    SLACK = "slack", "Slack"
    WEBHOOK = "webhook", "Webhook"


def _email_addresses(target: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;\s]+", target) if part.strip()]


class NotificationChannel(models.Model):
    """Where a tenant's alerts go: email addresses, a Slack incoming webhook or a webhook URL.

    A webhook's signing secret is stored encrypted (the app signs with it), shown once when it is
    made, and never in a page, a log line or a repr. ``failing_since`` is set when an alert
    could not be delivered within ``ALERT_RETRY_FOR_SECONDS`` and cleared by the next delivery.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="notification_channels"
    )
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    name = models.CharField(max_length=200)
    target = models.TextField(
        help_text="Email addresses (separated by commas), or the Slack / webhook URL."
    )
    # A subset of signals.ALERT_KINDS.
    alert_kinds = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    signing_secret = EncryptedTextField(blank=True, default="", editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=clock.now, editable=False)

    class Meta:
        ordering = ["tenant__name", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def __repr__(self) -> str:
        # Never the target (a Slack URL holds a token) nor the secret.
        return f"<NotificationChannel {self.pk}: {self.name!r} {self.kind}>"

    @property
    def email_addresses(self) -> list[str]:
        return _email_addresses(self.target) if self.kind == ChannelKind.EMAIL else []

    def set_signing_secret(self) -> str:
        """Make a new signing secret, store it (encrypted) and return it (shown once)."""
        self.signing_secret = "whsec_" + secrets.token_urlsafe(32)
        return str(self.signing_secret)

    def clean(self) -> None:
        super().clean()
        unknown = sorted(set(self.alert_kinds or []) - set(ALERT_KINDS))
        if unknown or not isinstance(self.alert_kinds, list):
            raise ValidationError({"alert_kinds": "Choose among the alert kinds listed."})
        self.target = self.target.strip()
        if self.kind == ChannelKind.EMAIL:
            addresses = _email_addresses(self.target)
            if not addresses:
                raise ValidationError({"target": "Give at least one email address."})
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError(
                        {"target": f"“{address[:100]}” is not an email address."}
                    ) from None
            return
        try:
            alert_transport.refuse_unsafe_url(self.target)
        except alert_transport.UnsafeURL as error:
            raise ValidationError({"target": str(error)}) from None


class AlertDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Waiting"  # due at next_attempt_at
    SENDING = "sending", "Sending"  # claimed by a worker under a lease
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"  # not taken within ALERT_RETRY_FOR_SECONDS


class AlertDelivery(models.Model):
    """One alert for one channel: what is sent, and where its delivery stands."""

    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The same for every channel that receives one alert, so a receiver can tell repeats apart.
    alert_id = models.UUIDField(default=uuid.uuid4)
    kind = models.CharField(max_length=30)
    payload = models.JSONField(default=dict, encoder=StrictJSONEncoder)
    is_test = models.BooleanField(default=False)
    status = models.CharField(
        max_length=10, choices=AlertDeliveryStatus.choices, default=AlertDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "alert deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="capi_alert_due")]

    def __str__(self) -> str:
        return f"{self.kind} → channel {self.channel_id} ({self.status})"


class AlertAttempt(models.Model):
    """One try at delivering an alert: the receiver's status code, or the error (no secrets)."""

    delivery = models.ForeignKey(AlertDelivery, on_delete=models.CASCADE, related_name="tries")
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, related_name="attempts"
    )
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    answer = models.TextField(blank=True)  # the start of the receiver's answer
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["channel", "-started_at"], name="capi_alert_attempt_channel")
        ]

    def __str__(self) -> str:
        return f"{self.channel_id} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status_code or '-'}"


class ImportStatus(models.TextChoices):
    """Where an import run stands: uploaded (being mapped), queued, running, done or failed."""

    UPLOADED = "uploaded", "Uploaded"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ImportRun(models.Model):
    """One CSV import of store or CRM conversions into a destination, and what became of it.

    The mapping (field → column) of a destination's latest run pre-fills its next one. The
    counters always add up to ``rows_read`` once done; ``rejected_rows`` keeps line, reason and
    the non-personal fields of the first rejected rows (never email, phone or names).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    destination = models.ForeignKey(
        Destination, on_delete=models.CASCADE, related_name="import_runs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    file_name = models.CharField(max_length=255, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    mapping = models.JSONField(default=dict, blank=True)
    event_name = models.CharField(max_length=100, blank=True)
    action_source = models.CharField(max_length=32, blank=True)
    date_format = models.CharField(max_length=40, blank=True)
    status = models.CharField(
        max_length=10, choices=ImportStatus.choices, default=ImportStatus.UPLOADED
    )
    bytes_read = models.PositiveBigIntegerField(default=0)
    rows_read = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    suppressed = models.PositiveIntegerField(default=0)
    rejected_rows = models.JSONField(default=list, blank=True, encoder=StrictJSONEncoder)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=clock.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The worker running a slice holds the run by this token until ``lease_expires_at``, renewed
    # after every chunk; a run whose worker died is queued again once its lease has run out.
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["destination", "-created_at"], name="capi_import_destination")
        ]

    def __str__(self) -> str:
        return f"{self.file_name or 'import'} → {self.destination_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (ImportStatus.DONE, ImportStatus.FAILED)

    @property
    def waits_for_a_worker(self) -> bool:
        """Queued for over a minute: no django-q2 worker (``qcluster``) has taken it yet."""
        return self.status == ImportStatus.QUEUED and self.created_at < clock.now() - timedelta(
            minutes=1
        )

    @property
    def percent(self) -> int:
        """How far the import has read the file, 0 to 100."""
        if self.status == ImportStatus.DONE:
            return 100
        if not self.file_size:
            return 0
        return min(99, int(100 * self.bytes_read / self.file_size))

    @property
    def is_stalled(self) -> bool:
        """Running, but its worker stopped renewing its lease: it will be queued again."""
        return (
            self.status == ImportStatus.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at < clock.now()
        )

    def finish(self, counts: dict[str, int], rejected_rows: list[dict[str, Any]]) -> bool:
        """Record the import's outcome: done, with its counters and rejected rows.

        Like :meth:`pause` and :meth:`finish_failed`, it writes only while this object still
        holds the run's lease (a run given to another worker is that worker's); returns
        whether it wrote.
        """
        return self._save_if_holder(
            **counts,
            rejected_rows=rejected_rows,
            status=ImportStatus.DONE,
            bytes_read=self.file_size,
            finished_at=clock.now(),
        )

    def pause(self, counts: dict[str, int], rejected_rows: list[dict[str, Any]]) -> bool:
        """Record where a slice of the import stopped; queued again for the next slice."""
        return self._save_if_holder(
            **counts, rejected_rows=rejected_rows, status=ImportStatus.QUEUED
        )

    def finish_failed(self, error: str) -> bool:
        """Record that the file could not be imported at all, and why."""
        return self._save_if_holder(
            status=ImportStatus.FAILED, error=error, finished_at=clock.now()
        )

    def _save_if_holder(self, **values: Any) -> bool:
        values.update(lease_token=None, lease_expires_at=None)
        written = ImportRun.objects.filter(pk=self.pk, lease_token=self.lease_token).update(
            **values
        )
        if written:
            for name, value in values.items():
                setattr(self, name, value)
        return bool(written)


def forget_fernet_keys(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver (``receivers`` connects it) for the encrypted fields."""
    # fernet_fields caches the keys on each field instance; drop them when FERNET_KEYS changes
    # (tests with override_settings, key rotation) so the new keys take effect.
    if setting not in ("FERNET_KEYS", "SECRET_KEY"):
        return
    for model in (Destination, NotificationChannel):
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                for cached in ("keys", "fernet_keys", "fernet"):
                    field.__dict__.pop(cached, None)
