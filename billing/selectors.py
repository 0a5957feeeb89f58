"""Reads of budgets, credits and the catalog.

Spend is not read here: the request log is the ledger, and summing it is analytics' job
(analytics.selectors). Reads that weigh spend against budgets or credits are composed above both
apps (dashboard.selectors). A budget's counter is rebuilt from the ledger by the gateway
(gateway/rebuild.py), which reads it through analytics.selectors.settled_spend_micros.
"""

from decimal import Decimal

from django.db.models import QuerySet, Sum
from django.http import Http404

from billing.models import Budget, CatalogModel, CreditGrant
from keys.models import Organization

ZERO = Decimal("0")


def budget_list(*, org: Organization) -> QuerySet[Budget]:
    return Budget.objects.filter(org=org).select_related("key", "team").order_by("scope", "id")


def budget_get(*, org: Organization, pk) -> Budget:
    try:
        return Budget.objects.select_related("org", "key", "team").get(org=org, pk=int(pk))
    except (ValueError, TypeError, Budget.DoesNotExist) as exc:
        raise Http404("No such budget.") from exc


def budgets_for_key(*, key) -> dict[str, Budget]:
    """The budgets that apply to a call made with this key, by level."""
    found: dict[str, Budget] = {}
    for budget in Budget.objects.filter(org_id=key.org_id):
        if budget.scope == Budget.Scope.KEY and budget.key_id == key.pk:
            found["key"] = budget
        elif budget.scope == Budget.Scope.TEAM and key.team_id and budget.team_id == key.team_id:
            found["team"] = budget
        elif budget.scope == Budget.Scope.ORG:
            found["org"] = budget
    return found


def credits_granted(*, org_id: int) -> Decimal:
    return CreditGrant.objects.filter(org_id=org_id).aggregate(total=Sum("amount"))["total"] or ZERO


def credit_grants(*, org: Organization) -> QuerySet[CreditGrant]:
    return CreditGrant.objects.filter(org=org).order_by("-created")


def catalog_list() -> QuerySet[CatalogModel]:
    """The model catalog is not tenant data: every org sees the same prices."""
    return CatalogModel.objects.order_by("name")
