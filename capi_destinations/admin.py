"""Admin: health badges, masked write-only tokens, tenant scoping for non-superuser staff.

Destinations are saved, enabled, redelivered and deleted through ``destinations.py``, the same
functions the pages use, so both write the same audit entries and send the same signals.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Imported for its side effect: django-q2's admins are registered before they are restricted
# below, whatever the order of INSTALLED_APPS.
import django_q.admin  # noqa: F401
from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin import actions as django_actions
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from capi_destinations import access, alerts, destinations, exclusions, health
from capi_destinations.forms import ChannelForm, WriteOnlySecretsMixin
from capi_destinations.models import (
    AuditEntry,
    DeliveryAttempt,
    Destination,
    Event,
    Health,
    HealthCheck,
    ImportRun,
    Membership,
    NotificationChannel,
    Role,
    Tenant,
)
from capi_destinations.views.common import refuse_nul_characters

HEALTH_COLOURS = {"healthy": "#15803d", "unhealthy": "#b91c1c", "unknown": "#6b7280"}


def tenant_ids_for(request: HttpRequest, *, role: str = Role.VIEWER) -> list[int] | None:
    """The tenants where a staff user has at least ``role``; None means all (superuser)."""
    if request.user.is_superuser:
        return None
    return [
        tenant_id
        for tenant_id, member_role in _roles_of(request).items()
        if access.role_allows(member_role, role)
    ]


def _roles_of(request: HttpRequest) -> dict[int, str]:
    # One query per request: the permission hooks ask once per row of a list.
    roles = getattr(request, "_capi_admin_roles", None)
    if roles is None:
        roles = access.roles_by_tenant(request.user)
        request._capi_admin_roles = roles  # type: ignore[attr-defined]
    return roles


class TenantScopedAdmin(admin.ModelAdmin):
    """Limits lists, change pages and related choices to the user's tenants, and changes to
    the tenants where the user's membership role allows them.

    Django's model permissions still apply on top: a staff user needs both. ``tenant_path`` is
    the lookup from the model to its tenant id; ``role_to_change`` is the role the pages ask
    for the same change (any member may view).
    """

    tenant_path = "tenant_id"
    role_to_change: str = Role.EDITOR

    def get_urls(self) -> list[URLPattern]:
        # The admin's list filters put query values straight into the queryset (a NUL there
        # is a 500 on PostgreSQL): its pages refuse NUL characters as the app's own pages do.
        return [
            URLPattern(
                pattern.pattern,
                refuse_nul_characters(pattern.callback),
                pattern.default_args,
                pattern.name,
            )
            for pattern in super().get_urls()
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        tenant_ids = tenant_ids_for(request)
        if tenant_ids is None:
            return queryset
        return queryset.filter(**{f"{self.tenant_path}__in": tenant_ids})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Only where the user may change things: a viewer cannot file a record under a tenant.
        tenant_ids = tenant_ids_for(request, role=self.role_to_change)
        if tenant_ids is not None:
            if db_field.related_model is Tenant:
                kwargs["queryset"] = Tenant.objects.filter(pk__in=tenant_ids)
            elif db_field.related_model is Destination:
                kwargs["queryset"] = Destination.objects.filter(tenant_id__in=tenant_ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def tenant_id_of(self, obj: Any) -> int | None:
        """The id of the tenant ``obj`` belongs to, followed along ``tenant_path``."""
        value = obj
        for name in self.tenant_path.split("__"):
            value = getattr(value, name, None)
        return value

    def has_role_to_change(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whether the user's role allows changes in ``obj``'s tenant (no ``obj``: in any)."""
        if request.user.is_superuser:
            return True
        roles = _roles_of(request)
        if obj is None:
            return any(access.role_allows(role, self.role_to_change) for role in roles.values())
        tenant_id = self.tenant_id_of(obj)
        role = roles.get(tenant_id) if tenant_id is not None else None
        return access.role_allows(role, self.role_to_change)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self.has_role_to_change(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self.has_role_to_change(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self.has_role_to_change(request, obj)

    def rows_to_change(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        """``queryset`` when the user may change every selected row; else None, and says why.

        Actions check the rows themselves: the permission hooks of an action see no rows. All
        or nothing, like "Delete selected", so an action is never half done.
        """
        tenant_ids = tenant_ids_for(request, role=self.role_to_change)
        if tenant_ids is None:
            return queryset
        refused = queryset.exclude(**{f"{self.tenant_path}__in": tenant_ids}).count()
        if not refused:
            return queryset
        self.message_user(
            request,
            f"Nothing done: {refused} of the selected rows belong to a client account where "
            f"this needs the {Role(self.role_to_change).label.lower()} role or higher.",
            messages.ERROR,
        )
        return None


class DestinationAdminForm(WriteOnlySecretsMixin):
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
        # Fan-out targets are ids picked on the destination's edit page, among the destinations
        # the user may edit; not a raw list to type here.
        fields = [
            "tenant",
            *(name for name in destinations.EDITABLE_FIELDS if name != "forward_to"),
        ]


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_path = "id"
    role_to_change = Role.ADMIN
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A new tenant has no members yet, so only a superuser could ever see it again.
        return request.user.is_superuser and super().has_add_permission(request)

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # The exclusions through the service the Exclusions page uses: checked and audited
        # alike (it compares with the stored row, so it runs before the rest is saved).
        with transaction.atomic():
            values = {
                name: form.cleaned_data[name]
                for name in exclusions.FIELDS
                if name in form.cleaned_data
            }
            exclusions.update_exclusions(obj, actor=request.user, **values)
            super().save_model(request, obj, form, change)


class MembershipAdminForm(forms.ModelForm):
    """Refuses to leave a tenant without an admin, as the members page does."""

    class Meta:
        model = Membership
        fields = ["user", "tenant", "role"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or self.cleaned_data
        # Early, for an error on the form; access.update_membership decides under the lock.
        tenant = cleaned.get("tenant")
        if "role" in cleaned and tenant is not None:
            access.check_admin_kept(self.instance, role=cleaned["role"], tenant_id=tenant.pk)
        return cleaned


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    form = MembershipAdminForm
    list_display = ["user", "tenant", "role"]
    list_filter = ["role"]
    raw_id_fields = ["user"]
    role_to_change = Role.ADMIN
    # Django's "Delete selected" under its own name (the method below), so it replaces the
    # site's action on every Django version without overriding get_actions() (6.1 changed it).
    actions = ["delete_selected"]

    # Every change goes through access.py's member services, which lock the tenant and keep its
    # last admin, as the members page does; the form's check above only makes the error early.
    # A refusal found under the lock (someone else changed the members meanwhile) comes back as
    # a message, with nothing saved.
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as error:
            return self._refused(request, error, object_id)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        membership = self.get_object(request, object_id)
        try:
            if membership is not None and request.method != "POST":
                # The confirmation page says it at once; access.remove_member decides.
                access.refuse_to_orphan(Membership.objects.filter(pk=membership.pk))
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as error:
            return self._refused(request, error, object_id)

    def _refused(
        self, request: HttpRequest, error: ValidationError, object_id: str | None
    ) -> HttpResponse:
        self.message_user(request, " ".join(error.messages), messages.ERROR)
        if object_id and Membership.objects.filter(pk=object_id).exists():
            return HttpResponseRedirect(
                reverse("admin:capi_destinations_membership_change", args=[object_id])
            )
        return HttpResponseRedirect(reverse("admin:capi_destinations_membership_changelist"))

    @admin.action(
        permissions=["delete"],
        # Django's own (translated) label; the stubs do not know the attribute.
        description=getattr(django_actions.delete_selected, "short_description", None),
    )
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Membership]
    ) -> HttpResponse | None:
        """Django's "Delete selected", refused when it would leave a tenant without an admin.

        A method listed in ``actions`` rather than a swap in ``get_actions()``, whose signature
        Django 6.1 changed.
        """
        try:
            if "post" not in request.POST:
                # The confirmation page says it at once; access.remove_members decides.
                access.refuse_to_orphan(queryset, many=True)
            # One transaction: a refusal under the lock also undoes the admin's log entries.
            with transaction.atomic():
                return django_actions.delete_selected(self, request, queryset)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return None

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        if not change:
            access.save_new_membership(obj, actor=request.user)
        else:
            access.update_membership(
                obj, user=obj.user, tenant=obj.tenant, role=obj.role, actor=request.user
            )

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        access.remove_member(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        access.remove_members(queryset, actor=request.user)


class RecentRowsFormSet(BaseInlineFormSet):
    """An inline formset that shows only the newest rows (a destination has thousands)."""

    max_rows = 10

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_recent_rows"):
            self._recent_rows = super().get_queryset()[: self.max_rows]
        return self._recent_rows


class ReadOnlyInline(admin.TabularInline):
    """Records written by the engine, shown on the destination's change page."""

    formset = RecentRowsFormSet
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecentAttemptsInline(ReadOnlyInline):
    model = DeliveryAttempt
    verbose_name_plural = "Recent delivery attempts (newest 10)"
    fields = readonly_fields = (
        "started_at",
        "event_count",
        "test_event_code",
        "http_status",
        "events_received",
        "outcome",
        "error_code",
        "error_subcode",
        "error_message",
        "fbtrace_id",
    )


class RecentChecksInline(ReadOnlyInline):
    model = HealthCheck
    verbose_name_plural = "Recent health checks (newest 10)"
    fields = readonly_fields = ("checked_at", "status", "failing_checks", "duration_ms")

    @admin.display(description="Failing checks")
    def failing_checks(self, obj: HealthCheck) -> str:
        failing = [
            str(check.get("message", check.get("name", "")))
            for check in obj.checks or []
            if isinstance(check, dict) and not check.get("ok") and check.get("severity") != "info"
        ]
        return "; ".join(failing) or "—"


@admin.register(Destination)
class DestinationAdmin(TenantScopedAdmin):
    """Destinations, saved through the same service functions as the pages.

    So the admin writes the same audit entries and sends the same signals (a new token is
    health-checked at once, enabling resumes delivery) as the HTMX pages.
    """

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
    # Only the tenants the user can see are offered as filter choices.
    list_filter = ["health", "enabled", ("tenant", admin.RelatedOnlyFieldListFilter)]
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
    inlines = [RecentChecksInline, RecentAttemptsInline]
    actions = ["run_health_check", "enable", "disable", "redeliver_failed_events"]

    @admin.display(description="Health", ordering="health")
    def health_badge(self, obj: Destination) -> str:
        return format_html(
            '<span style="color:#fff;background:{};padding:2px 8px;border-radius:9px">{}</span>',
            HEALTH_COLOURS.get(obj.health, "#6b7280"),
            obj.get_health_display(),
        )

    @method_decorator(sensitive_variables())
    @method_decorator(sensitive_post_parameters("access_token", "app_secret"))
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The add and change forms carry the token: keep it out of Django's error reports, both
        # the POST data and the local variables of every frame below (form validation's too).
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            # A view-only page shows every field as text: that would be the decrypted secrets.
            fields = [name for name in fields if name not in destinations.SECRET_FIELDS]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Moving a destination to another client is not an edit: its audit trail stays put.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "tenant"] if obj is not None else fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        # The inlines are read-only: a POST has nothing of theirs to save or to carry.
        if obj is None or request.method == "POST":
            return []
        return list(self.inlines)

    @method_decorator(sensitive_variables("values", "changes", "secret"))
    def save_model(self, request: HttpRequest, obj: Destination, form: Any, change: bool) -> None:
        values = {
            name: form.cleaned_data[name]
            for name in form.cleaned_data
            if name in destinations.EDITABLE_FIELDS
        }
        if change:
            stored = Destination.objects.get(pk=obj.pk)
            changes = {name: values[name] for name in form.changed_data if name in values}
            changed = destinations.update_destination(stored, actor=request.user, **changes)
            if "access_token" in changed:
                self._warn_if_token_shared(request, stored)
            return
        created, secret = destinations.create_destination(
            form.cleaned_data["tenant"], actor=request.user, **values
        )
        self._warn_if_token_shared(request, created)
        # The admin goes on with ``obj`` (log entry, redirect): make it the saved destination.
        obj.__dict__.update(
            {key: value for key, value in created.__dict__.items() if key != "_state"}
        )
        obj._state.adding = False
        obj._state.db = created._state.db
        # Shown once by response_add; kept on the request only, never stored.
        request._capi_ingest_secret = secret  # type: ignore[attr-defined]

    def _warn_if_token_shared(self, request: HttpRequest, destination: Destination) -> None:
        warning = destinations.shared_token_warning(destination)
        if warning:
            self.message_user(request, warning, messages.WARNING)

    @method_decorator(sensitive_variables("secret"))
    def response_add(
        self, request: HttpRequest, obj: Destination, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, "_capi_ingest_secret", None)
        if secret is None or "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        # Not a redirect: the server key exists only in this response.
        return TemplateResponse(
            request,
            "capi_destinations/admin_ingest_secret.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"{obj.name} added",
                "destination": obj,
                "ingest_secret": secret,
                "change_url": reverse("admin:capi_destinations_destination_change", args=[obj.pk]),
                "changelist_url": reverse("admin:capi_destinations_destination_changelist"),
            },
        )

    def delete_model(self, request: HttpRequest, obj: Destination) -> None:
        destinations.delete_destination(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        for destination in queryset:
            destinations.delete_destination(destination, actor=request.user)

    # "Check now" on the pages needs the editor role too: it calls Meta with the token.
    @admin.action(description="Run health check", permissions=["change"])
    def run_health_check(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        rows = self.rows_to_change(request, queryset)
        if rows is None:
            return
        checks = health.check_all_destinations(
            destination_ids=list(rows.values_list("pk", flat=True))
        )
        outcome = Counter(Health(check.status).label for check in checks)
        summary = ", ".join(f"{count} {label}" for label, count in sorted(outcome.items()))
        self.message_user(request, f"Checked {len(checks)}: {summary or 'nothing'}.")

    @admin.action(description="Enable sending via Conversions API", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        rows = self.rows_to_change(request, queryset)
        if rows is None:
            return
        changed = sum(
            destinations.set_enabled(destination, True, actor=request.user) for destination in rows
        )
        self.message_user(request, f"Enabled {changed} destination(s).")

    @admin.action(description="Disable sending (events are still recorded)", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        rows = self.rows_to_change(request, queryset)
        if rows is None:
            return
        changed = sum(
            destinations.set_enabled(destination, False, actor=request.user) for destination in rows
        )
        self.message_user(request, f"Disabled {changed} destination(s).")

    @admin.action(description="Redeliver failed events", permissions=["change"])
    def redeliver_failed_events(
        self, request: HttpRequest, queryset: QuerySet[Destination]
    ) -> None:
        rows = self.rows_to_change(request, queryset)
        if rows is None:
            return
        count = sum(
            destinations.redeliver_failed(destination, actor=request.user) for destination in rows
        )
        self.message_user(
            request,
            f"{count} failed event(s) inside Meta's window (7 days; 62 for store events) put "
            "back in the queue.",
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

    actions = ["redeliver"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Event._meta.fields]

    @admin.action(
        description="Redeliver (failed or expired, inside Meta's window)", permissions=["change"]
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        rows = self.rows_to_change(request, queryset)
        if rows is None:
            return
        count = destinations.redeliver(rows, actor=request.user)
        self.message_user(request, f"{count} event(s) put back in the queue.")


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


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyScopedAdmin):
    # The destination page's import pages start and follow imports; here they are only listed.
    tenant_path = "destination__tenant_id"
    list_display = [
        "created_at",
        "destination",
        "file_name",
        "status",
        "rows_read",
        "stored",
        "duplicates",
        "rejected",
        "suppressed",
        "created_by",
    ]
    list_filter = ["status"]
    list_select_related = ["destination", "created_by"]
    search_fields = ["file_name"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyScopedAdmin):
    # Deleting history is for the tenant's admins only.
    role_to_change = Role.ADMIN
    list_display = ["created_at", "tenant", "destination_label", "action", "actor"]
    list_filter = ["action"]
    list_select_related = ["tenant", "actor"]


@admin.register(NotificationChannel)
class NotificationChannelAdmin(TenantScopedAdmin):
    """A tenant's notification channels, for its admins only (targets may hold tokens).

    The signing secret is never a field here: it is made when a channel is added on the Alerts
    page, which shows it once, so the admin changes and deletes channels but adds none.
    """

    role_to_change = Role.ADMIN
    form = ChannelForm
    list_display = ["name", "tenant", "kind", "enabled", "failing_since"]
    list_filter = ["kind", "enabled"]
    list_select_related = ["tenant"]
    # The kind stays: a channel made a webhook here would get a secret nobody was shown.
    readonly_fields = ["tenant", "kind", "failing_since", "last_error"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = admin.ModelAdmin.get_queryset(self, request)
        tenant_ids = tenant_ids_for(request, role=Role.ADMIN)
        if tenant_ids is None:
            return queryset
        return queryset.filter(tenant_id__in=tenant_ids)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        alerts.update_channel(obj, actor=request.user, **form.values())

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        alerts.delete_channel(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for channel in queryset:
            alerts.delete_channel(channel, actor=request.user)


# --- django-q2's own admin: superusers only -----------------------------------------------------
# Its task, result and schedule pages show every tenant's task arguments (destination ids, whole
# results) to any staff user with the model permission; they are not scoped by tenant, so only
# superusers, who see every tenant anyway, may open them.


class SuperusersOnlyAdminMixin:
    """Every permission of a ModelAdmin also needs ``is_superuser``."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser and super().has_module_permission(request)  # type: ignore[misc]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)  # type: ignore[misc]


def restrict_django_q_admin(site: admin.AdminSite = admin.site) -> list[str]:
    """Re-register django-q2's model admins on ``site`` for superusers only; the models done."""
    restricted = []
    for model in apps.get_app_config("django_q").get_models():
        if not site.is_registered(model):
            continue
        model_admin = type(site.get_model_admin(model))
        if issubclass(model_admin, SuperusersOnlyAdminMixin):
            continue
        site.unregister(model)
        site.register(
            model,
            type(
                f"SuperusersOnly{model_admin.__name__}", (SuperusersOnlyAdminMixin, model_admin), {}
            ),
        )
        restricted.append(model._meta.label)
    return restricted


restrict_django_q_admin()
