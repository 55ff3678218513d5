"""Forms of the pages: destination setup, token replacement, members, event-log filters.

Forms only validate. Saving goes through ``destinations.py`` (and ``access.py`` for members) so
the pages and the admin write the same audit entries and send the same signals.
"""

from __future__ import annotations

import copy
from datetime import UTC
from typing import Any, cast

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db.models import Field
from django.utils import timezone
from django.utils.text import capfirst

from capi_destinations import destinations, tokens
from capi_destinations.diagnostics import ACTION_SOURCES
from capi_destinations.imports import FIELDS as IMPORT_FIELDS
from capi_destinations.models import (
    Destination,
    DigestChoice,
    EventStatus,
    NotificationChannel,
    Role,
    Tenant,
)
from capi_destinations.reports import STATUS_FILTERS
from capi_destinations.routing import EventFilter
from capi_destinations.signals import ALERT_KINDS


def token_widget() -> forms.PasswordInput:
    """A write-only input: it never renders a value back to the browser.

    ``hx-preserve`` (with the field's stable id) lets htmx keep the input, with what was pasted,
    when the form posted through htmx comes back with an error: the browser keeps the token,
    the server never sends it back.
    """
    return forms.PasswordInput(
        render_value=False,
        attrs={
            "autocomplete": "off",
            "spellcheck": "false",
            "autocapitalize": "none",
            "data-testid": "token-input",
            "hx-preserve": True,
        },
    )


def token_needs_pasting_again(form: forms.BaseForm) -> bool:
    """Whether a form came back with an error after a token was pasted into it.

    The token field then renders empty (it is write-only); the page says so plainly.
    """
    pasted = str(form.data.get("access_token", "") or "").strip()
    return bool(form.is_bound and pasted and form.errors)


class WriteOnlySecretsMixin(forms.ModelForm):
    """A destination's access token and app secret as write-only fields: the base of the pages'
    destination form and of the admin's, so both keep secrets the same way.

    The fields always render empty (a stored secret is never sent back to the browser), blank on
    edit keeps what is stored (the model sees no change), and a new token is checked as
    ``tokens.clean_access_token`` checks it. Subclasses declare the two fields with their own
    labels and help texts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["access_token"] = ""
        self.initial["app_secret"] = ""
        if self.is_edit:
            self.fields["access_token"].help_text = (
                f"Stored: {self.instance.token_hint}. Leave blank to keep it; paste a new token "
                "to replace it."
            )

    @property
    def is_edit(self) -> bool:
        """Whether the form edits a stored destination (blank secrets then keep the stored)."""
        return self.instance.pk is not None

    def clean_access_token(self) -> str:
        value = self.cleaned_data.get("access_token", "")
        if not value and self.is_edit:
            return str(self.instance.access_token)
        return tokens.clean_access_token(value)

    def clean_app_secret(self) -> str:
        value = (self.cleaned_data.get("app_secret") or "").strip()
        if not value and self.is_edit:
            return str(self.instance.app_secret)
        if any(character.isspace() for character in value):
            raise ValidationError("The app secret contains whitespace.", code="secret_whitespace")
        return value


class DestinationsField(forms.ModelMultipleChoiceField):
    """Destinations to tick, each named with its client: "Acme Shoes: Web shop"."""

    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.tenant.name}: {obj.name}"


class DestinationForm(WriteOnlySecretsMixin):
    """Add or edit a destination. The token is write-only: blank on edit keeps the stored one."""

    access_token = forms.CharField(
        label="Conversions API access token",
        required=False,
        strip=True,
        widget=token_widget(),
        help_text="Events Manager → your pixel → Settings → Conversions API → Generate access "
        "token. It starts with “EAA” and is about 190 characters long.",
    )
    app_secret = forms.CharField(
        label="App secret",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Optional and write-only: only if the token's Meta app requires appsecret_proof.",
    )

    class Meta:
        model = Destination
        fields = [
            "name",
            "pixel_id",
            "access_token",
            "enabled",
            "test_event_code",
            "consent_policy",
            "missing_consent",
            "app_secret",
            "api_version",
            "default_country",
            "allowed_origins",
            "event_filter",
            "event_filter_names",
            "minimum_purchase_value",
        ]
        widgets = {
            "allowed_origins": forms.Textarea(attrs={"rows": 3}),
            "event_filter_names": forms.Textarea(attrs={"rows": 3}),
        }

    # Fan-out targets: offered on the edit page, among the destinations the user may edit.
    forward_to_destinations = DestinationsField(
        label="Also record its events for",
        queryset=Destination.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Events sent to this destination's endpoint are also recorded for these "
        "(each sent on its own, with the same event_id): the agency's own pixel, say.",
    )

    def __init__(self, *args: Any, tenant: Tenant, editor: Any = None, **kwargs: Any) -> None:
        instance = kwargs.get("instance")
        if instance is not None:
            # Validation writes the cleaned values into the form's instance; work on a copy so
            # the caller's destination stays as stored until the service saves the changes.
            kwargs["instance"] = copy.copy(instance)
        else:
            kwargs["instance"] = Destination(tenant=tenant)
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["pixel_id"].widget.attrs.update(
            {"inputmode": "numeric", "autocomplete": "off", "data-testid": "pixel-id-input"}
        )
        if self.is_edit:
            self.fields["access_token"].help_text += (
                " Changing the Pixel ID, app secret or Graph API version takes the token pasted "
                "again."
            )
            shared = destinations.shared_token_warning(self.instance)
            if shared:
                self.fields["access_token"].help_text += f" {shared}"
            if self.instance.app_secret:
                self.fields["app_secret"].help_text = "A secret is stored. Leave blank to keep it."
        targets = cast(DestinationsField, self.fields["forward_to_destinations"])
        if self.is_edit and editor is not None:
            targets.queryset = (
                Destination.objects.editable_by(editor)
                .exclude(pk=self.instance.pk)
                .select_related("tenant")
                .defer("access_token", "app_secret")
                .order_by("tenant__name", "name")
                .distinct()
            )
            self.initial["forward_to_destinations"] = [
                pk for pk in self.instance.forward_to or [] if isinstance(pk, int)
            ]
        else:
            del self.fields["forward_to_destinations"]

    def clean_forward_to_destinations(self) -> list[Destination]:
        return list(self.cleaned_data.get("forward_to_destinations") or [])

    def clean_event_filter(self) -> str:
        # Left out of a post (an older form, a script): keep what is stored.
        return (
            self.cleaned_data.get("event_filter") or self.instance.event_filter or EventFilter.ALL
        )

    def clean_pixel_id(self) -> str:
        pixel_id = (self.cleaned_data.get("pixel_id") or "").strip()
        duplicates = Destination.objects.filter(tenant=self.tenant, pixel_id=pixel_id)
        if self.instance.pk:
            duplicates = duplicates.exclude(pk=self.instance.pk)
        if duplicates.exists():
            raise ValidationError(
                f"{self.tenant} already has a destination for pixel {pixel_id}.",
                code="duplicate_pixel",
            )
        return pixel_id

    def changes(self) -> dict[str, Any]:
        """The fields the user changed, ready for ``destinations.update_destination``."""
        changes = {
            name: self.cleaned_data[name]
            for name in self.changed_data
            if name != "forward_to_destinations"
        }
        if "forward_to_destinations" in self.changed_data:
            changes["forward_to"] = sorted(
                target.pk for target in self.cleaned_data["forward_to_destinations"]
            )
        return changes

    def values(self) -> dict[str, Any]:
        """Every field, ready for ``destinations.create_destination``."""
        # The admin shows some fields read-only: those are not in cleaned_data.
        return {
            name: self.cleaned_data[name] for name in self.Meta.fields if name in self.cleaned_data
        }


class ReplaceTokenForm(forms.Form):
    """Paste a new token for a destination."""

    # Not ``required``: clean_access_token names what is missing in the same words as every
    # other token form ("Paste the Conversions API access token.").
    access_token = forms.CharField(
        label="New access token", strip=True, required=False, widget=token_widget()
    )

    def clean_access_token(self) -> str:
        return tokens.clean_access_token(self.cleaned_data.get("access_token", ""))


class TokenCheckForm(forms.Form):
    """The fields the "validate as you type" box reads (no validation here: check_token does)."""

    pixel_id = forms.CharField(required=False)
    access_token = forms.CharField(required=False, strip=False)


class AddMemberForm(forms.Form):
    """Add an existing user to a tenant with a role, named as they log in."""

    # Long enough for an email address, the login of many sites' user models.
    username = forms.CharField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "Username", or "Email address" where the site's users log in by email.
        user_model = get_user_model()
        login_field = cast("Field[Any, Any]", user_model._meta.get_field(user_model.USERNAME_FIELD))
        self.fields["username"].label = capfirst(login_field.verbose_name)


class ChannelForm(forms.ModelForm):
    """Add or edit a notification channel; the model checks the target (and its host)."""

    alert_kinds = forms.MultipleChoiceField(
        label="Alerts it receives",
        choices=list(ALERT_KINDS.items()),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=list(ALERT_KINDS),
    )

    class Meta:
        model = NotificationChannel
        fields = ["name", "kind", "target", "alert_kinds", "enabled"]
        widgets = {"target": forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"})}
        labels = {"target": "Email addresses or URL"}

    def values(self) -> dict[str, Any]:
        """The cleaned values, for ``alerts.create_channel`` / ``update_channel``."""
        # The admin shows some fields read-only: those are not in cleaned_data.
        return {
            name: self.cleaned_data[name] for name in self.Meta.fields if name in self.cleaned_data
        }


class ExclusionsForm(forms.ModelForm):
    """A client's exclusions; the model refuses a bad address range with the line."""

    class Meta:
        model = Tenant
        fields = ["exclude_staff", "excluded_networks", "test_flag"]
        widgets = {
            "excluded_networks": forms.Textarea(
                attrs={"rows": 4, "spellcheck": "false", "placeholder": "203.0.113.0/24"}
            ),
            "test_flag": forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
        }

    def values(self) -> dict[str, Any]:
        """The cleaned values, for ``exclusions.update_exclusions``."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields}


class InviteMemberForm(forms.Form):
    """Invite someone by email with a role; they join through the link the email holds."""

    email = forms.EmailField(max_length=254, label="Email address")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class JoinForm(forms.Form):
    """Create the account an invitation is for: a login name (unless the site's users log in by
    email, then it is the invited address), and a password the site's validators accept."""

    username = forms.CharField(max_length=150)
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html,
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email
        user_model = get_user_model()
        login_field = cast("Field[Any, Any]", user_model._meta.get_field(user_model.USERNAME_FIELD))
        if user_model.get_email_field_name() == user_model.USERNAME_FIELD:
            # The login is the address: nothing to choose.
            del self.fields["username"]
        else:
            field = cast("forms.CharField", self.fields["username"])
            field.label = capfirst(login_field.verbose_name)
            field.initial = email
            field.help_text = "What you log in with; your email address unless you pick another."
            field.max_length = login_field.max_length or 150
            field.validators = [*field.validators, *login_field.validators]

    @property
    def login_name(self) -> str:
        """The new account's ``USERNAME_FIELD`` value."""
        return str(self.cleaned_data.get("username") or self.email)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            user_model = get_user_model()
            fields = {user_model.USERNAME_FIELD: self.login_name}
            fields[user_model.get_email_field_name()] = self.email
            try:
                password_validation.validate_password(first, user=user_model(**fields))
            except ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


def search_field(label: str, placeholder: str, test_id: str) -> forms.CharField:
    """An optional search box (``type="search"``), its value stripped."""
    return forms.CharField(
        required=False,
        max_length=255,
        strip=True,
        label=label,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": placeholder, "data-testid": test_id}
        ),
    )


class OverviewFilterForm(forms.Form):
    """Filter the overview by tenant, by status and by a search of client, name or Pixel ID."""

    q = search_field("Search", "Client, destination or Pixel ID", "overview-search")
    tenant = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *STATUS_FILTERS.items()]
    )
    sort = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Unhealthy first"),
            ("attention", "Needs attention: lowest Meta score first"),
        ],
    )

    def __init__(self, *args: Any, tenants: list[Tenant], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenant_field = cast(forms.ChoiceField, self.fields["tenant"])
        tenant_field.choices = [
            ("", "All clients"),
            *((tenant.slug, tenant.name) for tenant in tenants),
        ]

    def filters(self) -> dict[str, str]:
        """``tenant_slug``, ``status`` and ``search`` for ``reports.overview_cards`` (an invalid
        field → no filter from it)."""
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        return {
            "tenant_slug": cleaned.get("tenant") or "",
            "status": cleaned.get("status") or "",
            "search": cleaned.get("q") or "",
            "sort": cleaned.get("sort") or "",
        }


class UTCDateTimeField(forms.DateTimeField):
    """A date and time typed without a zone, read as UTC whatever zone is active (the log and
    its exports show UTC, so the filter speaks the same)."""

    def to_python(self, value: Any) -> Any:
        with timezone.override(UTC):
            return super().to_python(value)

    @classmethod
    def optional(cls, label: str, test_id: str) -> UTCDateTimeField:
        """An optional field with the browser's date-and-time picker."""
        return cls(
            required=False,
            label=label,
            widget=forms.DateTimeInput(
                attrs={"type": "datetime-local", "data-testid": test_id}, format="%Y-%m-%dT%H:%M"
            ),
        )


class EventFilterForm(forms.Form):
    """Filter a destination's event log: status, event name, an event_id or order id, and a
    range of reception times (UTC)."""

    q = search_field("event_id or order id", "exact value", "event-search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *EventStatus.choices])
    event_name = forms.ChoiceField(required=False)
    received_from = UTCDateTimeField.optional("Received from (UTC)", "event-from")
    received_to = UTCDateTimeField.optional("to (UTC)", "event-to")

    def __init__(self, *args: Any, event_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        event_name_field = cast(forms.ChoiceField, self.fields["event_name"])
        event_name_field.choices = [
            ("", "Any event"),
            *((name, name) for name in event_names),
        ]

    def filters(self) -> dict[str, Any]:
        """The keyword arguments of ``reports.event_log``. A field that does not validate filters
        nothing; the others still apply (the form shows the error beside it)."""
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        return {
            "status": cleaned.get("status") or "",
            "event_name": cleaned.get("event_name") or "",
            "search": cleaned.get("q") or "",
            "received_from": cleaned.get("received_from"),
            "received_to": cleaned.get("received_to"),
        }


class DigestChoiceForm(forms.Form):
    """The person's daily-digest choice (``DigestPreference``)."""

    digest = forms.ChoiceField(choices=DigestChoice.choices, widget=forms.RadioSelect)


class ImportUploadForm(forms.Form):
    """The CSV file of store or CRM conversions (size and type checked by the view's service)."""

    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8 (Excel: “CSV UTF-8”), the first line naming the columns.",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".csv,text/csv", "data-testid": "import-file"}
        ),
    )


class ImportMappingForm(forms.Form):
    """Which column holds each field, and the defaults for rows that do not say."""

    event_name = forms.CharField(
        label="Event name when no column says",
        max_length=100,
        initial="Purchase",
    )
    action_source = forms.ChoiceField(
        label="Action source when no column says",
        choices=[(source, source) for source in ACTION_SOURCES],
        initial="physical_store",
        help_text="physical_store: Meta accepts sales up to 62 days old (other sources: 7 days).",
    )
    date_format = forms.CharField(
        label="Date format (optional)",
        max_length=40,
        required=False,
        help_text="Only for times that are not like 2026-11-30 14:05 or Unix seconds: "
        "e.g. %d/%m/%Y %H:%M for 30/11/2026 14:05.",
    )

    def __init__(self, *args: Any, columns: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "— not in the file —"), *((column, column) for column in columns)]
        for name, label in IMPORT_FIELDS.items():
            self.fields[f"map_{name}"] = forms.ChoiceField(
                label=label,
                choices=choices,
                required=name == "event_time",
                widget=forms.Select(attrs={"data-testid": f"map-{name}"}),
            )

    def mapping_fields(self) -> list[forms.BoundField]:
        return [self[f"map_{name}"] for name in IMPORT_FIELDS]

    def mapping(self) -> dict[str, str]:
        """The chosen field → column pairs (fields left out of the file are left out)."""
        return {
            name: self.cleaned_data[f"map_{name}"]
            for name in IMPORT_FIELDS
            if self.cleaned_data.get(f"map_{name}")
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        chosen = [cleaned.get(f"map_{name}") for name in IMPORT_FIELDS]
        repeated = sorted({column for column in chosen if column and chosen.count(column) > 1})
        if repeated:
            raise ValidationError(f"Each column can hold one field: {', '.join(repeated)}.")
        return cleaned
