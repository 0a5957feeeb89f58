"""Reads of budgets, credits and spend. The request log is the ledger: spend is summed from it."""

from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from analytics.selectors import spend_total
from billing.models import Budget, CatalogModel, CreditGrant
from billing.periods import period_start
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


def spend_since(*, org_id: int, since: datetime | None, key_id: int | None = None,
                team_id: int | None = None) -> Decimal:
    """Settled spend since a moment: the log's rows, plus the ledger's days the log was pruned of."""
    return spend_total(org_id=org_id, since=since, key_id=key_id, team_id=team_id)


def budget_spent(*, budget: Budget, now: datetime | None = None) -> Decimal:
    since = period_start(budget.period, now or timezone.now())
    return spend_since(
        org_id=budget.org_id,
        since=since,
        key_id=budget.key_id if budget.scope == Budget.Scope.KEY else None,
        team_id=budget.team_id if budget.scope == Budget.Scope.TEAM else None,
    )


def credits_granted(*, org_id: int) -> Decimal:
    return CreditGrant.objects.filter(org_id=org_id).aggregate(total=Sum("amount"))["total"] or ZERO


def credit_balance(*, org: Organization) -> Decimal:
    return credits_granted(org_id=org.pk) - spend_since(org_id=org.pk, since=None)


def credit_grants(*, org: Organization) -> QuerySet[CreditGrant]:
    return CreditGrant.objects.filter(org=org).order_by("-created")


def catalog_list() -> QuerySet[CatalogModel]:
    """The model catalog is not tenant data: every org sees the same prices."""
    return CatalogModel.objects.order_by("name")
