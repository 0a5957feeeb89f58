"""The support staff's admin for prices, budgets and credits.

Budgets and credits change only through billing.services, with the staff user as the actor, so
each change is audited. Credit grants are a ledger: added, never edited or deleted.
"""

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import MONEY, Budget, CatalogModel, CreditGrant
from billing.services import budget_delete, budget_set, credits_grant
from keys.admin import PastedKeySearchMixin, staff_actor
from keys.invalidation import catalog_changed
from money import usd_text


@admin.display(description="amount", ordering="amount")
def amount_usd(row: Budget | CreditGrant) -> str:
    return usd_text(row.amount)


class BudgetAdminForm(forms.ModelForm):
    amount = forms.DecimalField(min_value=0, max_digits=MONEY["max_digits"], decimal_places=MONEY["decimal_places"])

    class Meta:
        model = Budget
        fields = ["org", "key", "team", "amount", "period"]

    def clean(self) -> dict:
        # budget_set refuses these too; checking here turns them into form errors instead of a 500.
        cleaned = super().clean()
        org, key, team = cleaned.get("org"), cleaned.get("key"), cleaned.get("team")
        if key is not None and team is not None:
            raise forms.ValidationError("A budget belongs to a key, a team or the whole org: pick one.")
        if org is not None and key is not None and key.org_id != org.pk:
            self.add_error("key", "This key belongs to another organization.")
        if org is not None and team is not None and team.org_id != org.pk:
            self.add_error("team", "This team belongs to another organization.")
        return cleaned


@admin.register(Budget)
class BudgetAdmin(PastedKeySearchMixin, admin.ModelAdmin):
    form = BudgetAdminForm
    list_display = ["org", "scope", "key", "team", amount_usd, "period", "created"]
    list_select_related = ["org", "key", "team"]
    list_filter = ["scope", "period"]
    search_fields = ["org__name", "key__prefix", "key__name", "team__name"]
    autocomplete_fields = ["org", "key", "team"]

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:
        if obj is None:
            return ["org", "key", "team", "amount", "period"]
        return ["org", "scope", "key", "team", "amount", "period", "created"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        # Whose budget it is never changes; only how much and for which period.
        return [] if obj is None else ["org", "scope", "key", "team", "created"]

    def save_model(self, request: HttpRequest, obj: Budget, form, change: bool) -> None:
        budget = budget_set(
            org=obj.org, key=obj.key, team=obj.team, amount=obj.amount, period=obj.period, actor=staff_actor(request)
        )
        obj.pk = budget.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budget_delete(budget=obj, actor=staff_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        for budget in queryset.select_related("org"):
            budget_delete(budget=budget, actor=staff_actor(request))


@admin.register(CreditGrant)
class CreditGrantAdmin(admin.ModelAdmin):
    list_display = ["created", "org", amount_usd, "reason", "granted_by_label"]
    list_select_related = ["org"]
    search_fields = ["org__name", "org__slug", "reason", "granted_by_label"]
    date_hierarchy = "created"
    ordering = ["-created", "-id"]
    autocomplete_fields = ["org"]

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:
        if obj is None:
            return ["org", "amount", "reason"]
        return ["org", "amount", "reason", "granted_by_label", "created"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CreditGrant, form, change: bool) -> None:
        grant = credits_grant(org=obj.org, amount=obj.amount, reason=obj.reason, actor=staff_actor(request))
        obj.pk = grant.pk
        obj.refresh_from_db()


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "name", "vendor", "input_price", "cached_input_price", "cache_write_price", "output_price", "context_window",
        "max_output_tokens",
    ]
    list_editable = ["input_price", "cached_input_price", "cache_write_price", "output_price"]
    list_filter = ["vendor"]
    search_fields = ["name", "vendor"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # Gateway workers price calls from their cached routing config: tell them to reload it.
        transaction.on_commit(catalog_changed)
