"""Prices, budgets and credits.

Money is Decimal in USD with six places (one micro-dollar); the hot path counts in integer
micro-dollars, so a settled cost is always a whole number of micro-dollars. What was spent is
not billing's to store: the request log is the ledger, and its daily rollup (``DailySpend``) is
analytics' too.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from keys.models import Organization, Team, VirtualKey

MONEY = {"max_digits": 18, "decimal_places": 6}
PRICE = {"max_digits": 12, "decimal_places": 4}


class CatalogModel(models.Model):
    """A model we can serve, with its list price per million tokens."""

    name = models.CharField(max_length=120, unique=True)
    vendor = models.CharField(max_length=60)
    input_price = models.DecimalField(**PRICE, help_text="USD per million input tokens")
    cached_input_price = models.DecimalField(**PRICE, help_text="USD per million cached input tokens")
    output_price = models.DecimalField(**PRICE, help_text="USD per million output tokens")
    cache_write_price = models.DecimalField(**PRICE, null=True, blank=True,
                                            help_text="USD per million input tokens written to the prompt cache "
                                                      "(Claude's cache writes); empty: the input price")
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    capabilities = models.JSONField(default=list, help_text="e.g. tools, vision, json, streaming")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Budget(models.Model):
    class Scope(models.TextChoices):
        KEY = "key"
        TEAM = "team"
        ORG = "org"

    class Period(models.TextChoices):
        NONE = "none"
        DAILY = "daily"
        WEEKLY = "weekly"
        MONTHLY = "monthly"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.ForeignKey(VirtualKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    amount = models.DecimalField(**MONEY)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.NONE)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(scope="key"), name="one_budget_per_key"),
            models.UniqueConstraint(fields=["team"], condition=models.Q(scope="team"), name="one_budget_per_team"),
            models.UniqueConstraint(fields=["org"], condition=models.Q(scope="org"), name="one_org_budget"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} budget ${self.amount} ({self.period})"


class CreditGrant(models.Model):
    """Credits added to an org's balance (negative for a correction). Balance = grants − spend."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="credit_grants")
    amount = models.DecimalField(**MONEY)
    reason = models.CharField(max_length=200)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    granted_by_label = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"${self.amount} to {self.org} ({self.reason})"
