"""The support staff's page of an org: its tenants' records, and its credits and recent calls.

It reads keys, billing and analytics together, which only an app above all three may, so it is
registered here; each app's own records have their admin in that app. Every change goes through
the same services the product uses, with the staff user as the actor, so it is audited. An org is
never renamed (there is no service for it) nor deleted (that would delete its ledger and audit
trail).
"""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from analytics.models import RequestLog
from billing.admin import amount_usd
from billing.models import MONEY, Budget, CreditGrant
from billing.services import credits_grant, organization_create_with_credits
from dashboard.selectors import credit_balance
from dashboard.templatetags.nemo import duration_ms, when
from keys.admin import PastedKeySearchMixin, ReadOnlyAdminMixin, staff_actor
from keys.models import Membership, Organization, Team, VirtualKey
from keys.services import organization_settings_update
from money import usd_text

RECENT_CALLS = 20


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    show_change_link = True


class TeamInline(ReadOnlyInline):
    model = Team
    fields = ["name", "created"]


class MembershipInline(ReadOnlyInline):
    model = Membership
    fields = ["user", "role", "created"]


class VirtualKeyInline(ReadOnlyInline):
    model = VirtualKey
    fields = ["name", "team", "prefix", "revoked", "expires", "created"]


class BudgetInline(ReadOnlyInline):
    model = Budget
    fields = ["scope", "key", "team", "amount_usd", "period"]
    readonly_fields = ["amount_usd"]

    amount_usd = staticmethod(amount_usd)


class CreditGrantInline(ReadOnlyInline):
    model = CreditGrant
    fields = ["amount_usd", "reason", "granted_by_label", "created"]
    readonly_fields = ["amount_usd"]
    ordering = ["-created"]

    amount_usd = staticmethod(amount_usd)


class GrantCreditsForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=MONEY["max_digits"], decimal_places=MONEY["decimal_places"],
        help_text="USD. A negative amount corrects an earlier grant.",
    )
    reason = forms.CharField(max_length=200)

    def clean_amount(self) -> Decimal:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("A grant of $0 changes nothing.")
        return amount


@admin.register(Organization)
class OrganizationAdmin(PastedKeySearchMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "balance", "key_count", "created"]
    search_fields = ["name", "slug", "memberships__user__email", "keys__prefix"]
    ordering = ["-created"]
    readonly_fields = ["name", "slug", "created", "balance", "recent_calls"]
    change_form_template = "admin/keys/organization/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return super().get_queryset(request).annotate(key_count=Count("keys", distinct=True))

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:
        if obj is None:
            return ["name"]
        return ["name", "slug", "created", "cache_enabled", "store_prompts", "balance", "recent_calls"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        # A new org needs its name; afterwards there is no rename service, so it stays fixed.
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj=None) -> list:
        if obj is None:
            return []
        return [TeamInline, MembershipInline, VirtualKeyInline, BudgetInline, CreditGrantInline]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting an org would delete its ledger and audit trail.
        return False

    @admin.display(description="credit balance")
    def balance(self, org: Organization) -> str:
        return usd_text(credit_balance(org=org))

    @admin.display(description="keys", ordering="key_count")
    def key_count(self, org: Organization) -> int:
        return org.key_count

    @admin.display(description=f"last {RECENT_CALLS} calls")
    def recent_calls(self, org: Organization) -> str:
        rows = list(RequestLog.objects.filter(org=org).order_by("-created", "-id")[:RECENT_CALLS])
        if not rows:
            return "No calls yet."
        # Status, cost and latency first: the admin's read-only field is narrower than the page,
        # and what support looks for must not be what is cut off.
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td><a href='{}'>{}</a></td><td>{}</td></tr>",
            (
                (when(row.created), row.status, usd_text(row.cost), duration_ms(row.latency_ms), row.model,
                 row.key_prefix, reverse("admin:analytics_requestlog_change", args=[row.pk]), row.request_id,
                 row.deployment)
                for row in rows
            ),
        )
        return format_html(
            "<div class='recent-calls' style='max-width:100%;overflow-x:auto'><table><thead><tr><th>created</th>"
            "<th>status</th><th>cost</th><th>latency</th><th>model</th><th>key</th><th>request</th>"
            "<th>deployment</th></tr></thead><tbody>{}</tbody></table></div>",
            body,
        )

    def save_model(self, request: HttpRequest, obj: Organization, form, change: bool) -> None:
        if not change:
            created = organization_create_with_credits(name=obj.name, actor=staff_actor(request))
            obj.pk = created.pk
            obj.refresh_from_db()
            return
        changed = {field: form.cleaned_data[field] for field in form.changed_data}
        if changed:
            organization_settings_update(org=obj, actor=staff_actor(request), **changed)

    def get_urls(self) -> list:
        grant = path(
            "<path:object_id>/grant-credits/",
            self.admin_site.admin_view(self.grant_credits_view),
            name="keys_organization_grant_credits",
        )
        return [grant, *super().get_urls()]

    def grant_credits_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not request.user.has_perm("billing.add_creditgrant"):
            raise PermissionDenied
        org = self.get_object(request, unquote(object_id))
        if org is None:
            raise Http404("No such organization.")
        form = GrantCreditsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            grant = credits_grant(
                org=org, amount=form.cleaned_data["amount"], reason=form.cleaned_data["reason"],
                actor=staff_actor(request),
            )
            self.message_user(request, f"Granted {usd_text(grant.amount)} to {org}.", messages.SUCCESS)
            return redirect("admin:keys_organization_change", org.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Grant credits to {org}",
            "opts": self.opts,
            "original": org,
            "form": form,
            "balance": credit_balance(org=org),
        }
        return TemplateResponse(request, "admin/keys/organization/grant_credits.html", context)
