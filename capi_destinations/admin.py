"""Admin: health badges, masked write-only tokens, tenant scoping for non-superuser staff."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from capi_destinations import tokens
from capi_destinations.models import (
    AuditEntry,
    DeliveryAttempt,
    Destination,
    Event,
    HealthCheck,
    Membership,
    Tenant,
)

HEALTH_COLOURS = {"healthy": "#15803d", "unhealthy": "#b91c1c", "unknown": "#6b7280"}


def tenant_ids_for(request: HttpRequest) -> list[int] | None:
    """The tenants a staff user may see in the admin; None means all (superuser)."""
    if request.user.is_superuser:
        return None
    return list(Membership.objects.filter(user=request.user).values_list("tenant_id", flat=True))


class TenantScopedAdmin(admin.ModelAdmin):
    """Limits lists, change pages and related choices to the user's tenants.

    ``tenant_path`` is the lookup from the model to its tenant id.
    """

    tenant_path = "tenant_id"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        tenant_ids = tenant_ids_for(request)
        if tenant_ids is None:
            return queryset
        return queryset.filter(**{f"{self.tenant_path}__in": tenant_ids})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        tenant_ids = tenant_ids_for(request)
        if tenant_ids is not None:
            if db_field.related_model is Tenant:
                kwargs["queryset"] = Tenant.objects.filter(pk__in=tenant_ids)
            elif db_field.related_model is Destination:
                kwargs["queryset"] = Destination.objects.filter(tenant_id__in=tenant_ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class DestinationAdminForm(forms.ModelForm):
    """The token is write-only: the field is always empty, and blank keeps the stored token."""

    access_token = forms.CharField(
        label="Access token",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. Leave blank to keep the stored token.",
    )
    app_secret = forms.CharField(
        label="App secret",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only and optional. Leave blank to keep the stored secret.",
    )

    class Meta:
        model = Destination
        fields = [
            "tenant",
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
            "allowed_origins",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Never send a stored secret back to the browser.
        self.initial["access_token"] = ""
        self.initial["app_secret"] = ""
        if self.instance.pk:
            self.fields["access_token"].help_text = (
                f"Stored: {self.instance.token_hint}. Leave blank to keep it; paste a new token "
                "to replace it."
            )

    def clean_access_token(self) -> str:
        value = self.cleaned_data.get("access_token", "")
        if not value and self.instance.pk:
            return self.instance.access_token
        return tokens.clean_access_token(value)

    def clean_app_secret(self) -> str:
        value = self.cleaned_data.get("app_secret", "").strip()
        if not value and self.instance.pk:
            return self.instance.app_secret
        if value and any(character.isspace() for character in value):
            raise ValidationError("The app secret contains whitespace.")
        return value


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_path = "id"
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role"]
    raw_id_fields = ["user"]


@admin.register(Destination)
class DestinationAdmin(TenantScopedAdmin):
    form = DestinationAdminForm
    list_display = [
        "name",
        "tenant",
        "pixel_id",
        "pixel_name",
        "enabled",
        "health_badge",
        "token_hint",
        "health_checked_at",
    ]
    list_filter = ["health", "enabled", "tenant"]
    search_fields = ["name", "pixel_id", "pixel_name"]
    readonly_fields = [
        "code",
        "token_hint",
        "health",
        "health_reasons",
        "health_checked_at",
        "health_changed_at",
        "pixel_name",
        "paused_until",
        "pause_reason",
        "blocked_reason",
        "blocked_at",
        "last_delivered_at",
    ]
    list_select_related = ["tenant"]

    @admin.display(description="Health", ordering="health")
    def health_badge(self, obj: Destination) -> str:
        return format_html(
            '<span style="color:#fff;background:{};padding:2px 8px;border-radius:9px">{}</span>',
            HEALTH_COLOURS.get(obj.health, "#6b7280"),
            obj.get_health_display(),
        )


@admin.register(Event)
class EventAdmin(TenantScopedAdmin):
    tenant_path = "destination__tenant_id"
    list_display = ["event_name", "event_id", "destination", "status", "event_time", "attempts"]
    list_filter = ["status", "event_name"]
    search_fields = ["event_id"]
    list_select_related = ["destination"]
    raw_id_fields = ["destination"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Event._meta.fields]


class ReadOnlyScopedAdmin(TenantScopedAdmin):
    """Records written by the engine: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyScopedAdmin):
    tenant_path = "destination__tenant_id"
    list_display = [
        "started_at",
        "destination",
        "event_count",
        "http_status",
        "events_received",
        "outcome",
        "error_code",
        "fbtrace_id",
    ]
    list_filter = ["outcome", "category"]
    list_select_related = ["destination"]
    exclude = ["events"]


@admin.register(HealthCheck)
class HealthCheckAdmin(ReadOnlyScopedAdmin):
    tenant_path = "destination__tenant_id"
    list_display = ["checked_at", "destination", "status", "duration_ms", "status_changed"]
    list_filter = ["status"]
    list_select_related = ["destination"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyScopedAdmin):
    list_display = ["created_at", "tenant", "destination_label", "action", "actor"]
    list_filter = ["action"]
    list_select_related = ["tenant", "actor"]
