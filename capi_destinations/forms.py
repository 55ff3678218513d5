"""Forms of the pages: destination setup, token replacement, members, event-log filters.

Forms only validate. Saving goes through ``destinations.py`` (and ``access.py`` for members) so
the pages and the admin write the same audit entries and send the same signals.
"""

from __future__ import annotations

import copy
from typing import Any, cast

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Field
from django.utils.text import capfirst

from capi_destinations import destinations, tokens
from capi_destinations.models import Destination, DigestChoice, EventStatus, Role, Tenant
from capi_destinations.reports import STATUS_FILTERS


def token_widget() -> forms.PasswordInput:
    """A write-only input: it never renders a value back to the browser."""
    return forms.PasswordInput(
        render_value=False,
        attrs={"autocomplete": "off", "spellcheck": "false", "data-testid": "token-input"},
    )


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
        ]
        widgets = {"allowed_origins": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
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
        return {name: self.cleaned_data[name] for name in self.changed_data}

    def values(self) -> dict[str, Any]:
        """Every field, ready for ``destinations.create_destination``."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields}


class ReplaceTokenForm(forms.Form):
    """Paste a new token for a destination."""

    access_token = forms.CharField(
        label="New access token", strip=True, required=True, widget=token_widget()
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


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class OverviewFilterForm(forms.Form):
    """Filter the overview by tenant and by status."""

    tenant = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *STATUS_FILTERS.items()]
    )

    def __init__(self, *args: Any, tenants: list[Tenant], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenant_field = cast(forms.ChoiceField, self.fields["tenant"])
        tenant_field.choices = [
            ("", "All clients"),
            *((tenant.slug, tenant.name) for tenant in tenants),
        ]

    def filters(self) -> dict[str, str]:
        """``tenant_slug`` and ``status`` for ``reports.overview_cards`` (invalid → no filter)."""
        if not self.is_valid():
            return {"tenant_slug": "", "status": ""}
        return {
            "tenant_slug": self.cleaned_data.get("tenant") or "",
            "status": self.cleaned_data.get("status") or "",
        }


class EventFilterForm(forms.Form):
    """Filter a destination's event log by status and event name."""

    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *EventStatus.choices])
    event_name = forms.ChoiceField(required=False)

    def __init__(self, *args: Any, event_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        event_name_field = cast(forms.ChoiceField, self.fields["event_name"])
        event_name_field.choices = [
            ("", "Any event"),
            *((name, name) for name in event_names),
        ]

    def filters(self) -> dict[str, str]:
        """``status`` and ``event_name`` for ``reports.event_log`` (invalid → no filter)."""
        if not self.is_valid():
            return {"status": "", "event_name": ""}
        return {
            "status": self.cleaned_data.get("status") or "",
            "event_name": self.cleaned_data.get("event_name") or "",
        }


class DigestChoiceForm(forms.Form):
    """The person's daily-digest choice (``DigestPreference``)."""

    digest = forms.ChoiceField(choices=DigestChoice.choices, widget=forms.RadioSelect)
