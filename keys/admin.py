"""The support staff's admin for tenants and their credentials.

Every change a staff member makes goes through the same services the product uses, with the
staff user as the actor, so it lands in the audit trail like any other write. What has no
service (removing a member) is read-only here. Secrets are never stored, and their hashes are
never shown. The org's own page shows its credits and recent calls too, which keys may not
read: it is dashboard.admin's.
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from keys.audit import Actor
from keys.models import AuditEvent, Membership, OrgToken, Team, VirtualKey
from keys.secrets import KEY_SCHEME, prefix_of
from keys.services import (
    KEY_EDITABLE_FIELDS,
    membership_add,
    org_token_revoke,
    team_create,
    team_delete,
    team_update,
    virtual_key_revoke,
    virtual_key_update,
)

admin.site.site_header = "Nemo Router support"
admin.site.site_title = "Nemo Router support"
# The app list beside every page would take a quarter of a 1366 px screen from the tables.
admin.site.enable_nav_sidebar = False


def staff_actor(request: HttpRequest) -> Actor:
    return Actor.of_user(request.user)


def pasted_key_prefix(term: str) -> str:
    """A key as support gets it pasted: as the dashboard shows it (``sk-nemo-YSHC7LSKgtP5…``) or
    whole (a leaked secret), searched by its stored prefix; any other term as it is."""
    term = term.strip().rstrip("…").rstrip(".")
    return prefix_of(term, KEY_SCHEME) if term.startswith(KEY_SCHEME) else term


class PastedKeySearchMixin:
    """Admin search that finds a key, and what is of it, by the key as it was pasted."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        return super().get_search_results(request, queryset, pasted_key_prefix(search_term))


class ReadOnlyAdminMixin:
    """For records nobody edits by hand: logs, ledgers, the audit trail."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "org", "created"]
    list_select_related = ["org"]
    search_fields = ["name", "org__name"]
    autocomplete_fields = ["org"]

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return ["org", "name"] if obj is None else ["org", "name", "created"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [] if obj is None else ["org", "created"]

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        if change:
            team_update(team=obj, name=obj.name, actor=staff_actor(request))
            return
        created = team_create(org=obj.org, name=obj.name, actor=staff_actor(request))
        obj.pk = created.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        team_delete(team=obj, actor=staff_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset.select_related("org"):
            team_delete(team=team, actor=staff_actor(request))


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "org", "role", "created"]
    list_select_related = ["user", "org"]
    list_filter = ["role"]
    search_fields = ["user__email", "user__username", "org__name"]
    autocomplete_fields = ["org", "user"]

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return ["org", "user", "role"] if obj is None else ["org", "user", "role", "created"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [] if obj is None else ["org", "user", "created"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # There is no audited service that removes a member yet.
        return False

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        saved = membership_add(org=obj.org, user=obj.user, role=obj.role, actor=staff_actor(request))
        obj.pk = saved.pk
        obj.refresh_from_db()


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("active", "active"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> QuerySet[VirtualKey]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(Q(expires__isnull=True) | Q(expires__gt=now), revoked__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked__isnull=True, expires__lte=now)
        return queryset


class VirtualKeyAdminForm(forms.ModelForm):
    class Meta:
        model = VirtualKey
        fields = list(KEY_EDITABLE_FIELDS)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "team" in self.fields and self.instance.pk is not None:
            # A key can only move between teams of its own org (the service refuses others too).
            self.fields["team"].queryset = Team.objects.filter(org_id=self.instance.org_id).order_by("name")


@admin.register(VirtualKey)
class VirtualKeyAdmin(PastedKeySearchMixin, admin.ModelAdmin):
    form = VirtualKeyAdminForm
    list_display = ["name", "org", "team", "prefix", "revoked", "expires", "created"]
    list_select_related = ["org", "team"]
    list_filter = [KeyStatusFilter, "org"]
    search_fields = ["prefix", "name", "org__name"]
    fields = [
        "org", "prefix", "name", "team", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel", "expires",
        "metadata", "revoked", "created_by", "created",
    ]
    readonly_fields = ["org", "prefix", "revoked", "created_by", "created"]
    actions = ["revoke_keys"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A new key's secret must be shown once to its owner: keys are issued in the dashboard or by createkey.
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # A key is revoked, not deleted: its request log and spend keep pointing at it.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("keys.change_virtualkey")

    def save_model(self, request: HttpRequest, obj: VirtualKey, form, change: bool) -> None:
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in KEY_EDITABLE_FIELDS}
        if changes:
            virtual_key_update(key=obj, actor=staff_actor(request), **changes)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> None:
        keys = list(queryset.filter(revoked__isnull=True).select_related("org"))
        for key in keys:
            virtual_key_revoke(key=key, actor=staff_actor(request))
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)


@admin.register(OrgToken)
class OrgTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["name", "org", "prefix", "revoked", "created"]
    list_select_related = ["org"]
    list_filter = ["org"]
    search_fields = ["prefix", "name", "org__name"]
    fields = ["org", "name", "prefix", "revoked", "created"]
    actions = ["revoke_tokens"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("keys.change_orgtoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[OrgToken]) -> None:
        tokens = list(queryset.filter(revoked__isnull=True).select_related("org"))
        for token in tokens:
            org_token_revoke(token=token, actor=staff_actor(request))
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created", "org", "actor_label", "action", "target_type", "target_id"]
    list_select_related = ["org"]
    list_filter = ["action", "org"]
    search_fields = ["actor_label", "target_type", "target_id"]
    date_hierarchy = "created"
    ordering = ["-created", "-id"]
