"""The keys page: issue a key per agent, see its spend against its budget, revoke, rotate, edit."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from analytics.selectors import KeyTotals
from billing.models import Budget
from billing.periods import period_end
from billing.selectors import budget_list, catalog_list
from dashboard.forms import KeyForm
from dashboard.orgs import org_page, render_confirm, render_page
from dashboard.playground import SNIPPET_MODEL, key_test_model
from dashboard.selectors import KeyUse, budget_spent, credit_balance, key_period_totals, keys_last_used
from dashboard.services import key_change, key_issue
from dashboard.templatetags.nemo import percent_of
from keys.access import MANAGE
from keys.audit import Actor
from keys.models import Membership, VirtualKey
from keys.selectors import key_get, key_list
from keys.services import virtual_key_revoke, virtual_key_rotate

ZERO = Decimal("0")
# Where a new secret waits, between the POST that made it and the one GET that shows it.
SESSION_SECRET = "key_secret_shown_once"


@dataclass(frozen=True)
class KeyRow:
    key: VirtualKey
    spend: Decimal
    budget: Budget | None
    # Why the key refuses every call (402), if it does: the level, what is left of it, and what
    # the smallest call it can make costs.
    refusing: tuple[str, Decimal, Decimal] | None = None
    # Its calls and failures in its budget's period (the spend's window), and its last call.
    use: KeyUse | None = None

    @property
    def state(self) -> str:
        if self.key.revoked:
            return "revoked"
        if not self.key.is_active():
            return "expired"
        if self.refusing is None:
            return "active"
        # What the 402s say, in the words of the level that sends them.
        return "out of credits" if self.refusing[0] == "credits" else "over budget"

    @property
    def meter(self) -> int:
        """How full the key's budget meter is: full when that budget is what refuses the calls,
        though a reservation's worth of it is still unspent."""
        if self.budget is None:
            return 0
        if self.refusing is not None and self.refusing[0] == "key budget":
            return 100
        return percent_of(self.spend, self.budget.amount)

    @property
    def budget_resets(self) -> datetime | None:
        """When the key's budget period ends and its spend counts from zero again."""
        return period_end(self.budget.period, timezone.now()) if self.budget is not None else None

    @property
    def near_budget(self) -> bool:
        """Refusing calls already, or with 80% of its own budget spent."""
        return self.key.is_active() and not self.key.revoked and (self.refusing is not None or self.meter >= 80)


def key_rows(membership: Membership, keys: list[VirtualKey], credits_left: Decimal | None = None) -> list[KeyRow]:
    """The keys with their spend, budget, state and use; ``credits_left`` if the page read it already
    (it sums the org's whole log)."""
    org = membership.org
    # Each key's spend, calls and failures in its budget's current period, all time without one:
    # the calls and error rate beside the meter are of the same window as the spend it shows.
    period_totals = key_period_totals(org=org)
    all_budgets = list(budget_list(org=org))
    budgets = {b.key_id: b for b in all_budgets if b.scope == Budget.Scope.KEY}
    # What is left of the team and org budgets, each read once for the page.
    team_left = {b.team_id: b.amount - budget_spent(budget=b) for b in all_budgets if b.scope == Budget.Scope.TEAM}
    org_left = next((b.amount - budget_spent(budget=b) for b in all_budgets if b.scope == Budget.Scope.ORG), None)
    if credits_left is None:
        credits_left = credit_balance(org=org)
    # Chat models only: an embedding writes no output, and a key that can chat is judged by its chats.
    output_prices = {model.name: model.output_price for model in catalog_list()
                     if "embeddings" not in model.capabilities}
    last_used = keys_last_used(org=org, key_ids=[key.pk for key in keys])
    rows = []
    for key in keys:
        since, totals = period_totals.get(key.pk, (None, KeyTotals(cost=ZERO, calls=0, errors=0)))
        row_spend, budget = totals.cost, budgets.get(key.pk)
        smallest = _smallest_call(key, output_prices)
        refusing = None
        if smallest is not None:
            levels = [("key budget", budget.amount - row_spend if budget is not None else None),
                      ("team budget", team_left.get(key.team_id)), ("org budget", org_left),
                      ("credits", credits_left)]
            short = [(level, left) for level, left in levels if left is not None and left < smallest]
            if short:
                level, left = short[0]
                refusing = (level, max(left, ZERO), smallest)
        use = KeyUse(calls=totals.calls, errors=totals.errors, last_used=last_used.get(key.pk), since=since)
        rows.append(KeyRow(key=key, spend=row_spend, budget=budget, refusing=refusing, use=use))
    return rows


def _smallest_call(key: VirtualKey, output_prices: dict[str, Decimal]) -> Decimal | None:
    """What the cheapest call the key may make reserves at the least: the fewest output tokens a
    call is sent (NEMO_MIN_OUTPUT_TOKENS) of its cheapest model, its prompt aside."""
    prices = [price for name, price in output_prices.items() if not key.allowed_models or name in key.allowed_models]
    if not prices:
        return None
    return min(prices) * settings.NEMO_MIN_OUTPUT_TOKENS / 1_000_000


@org_page()
def keys(request: HttpRequest, membership: Membership) -> HttpResponse:
    rows = key_rows(membership, list(key_list(org=membership.org)))
    return render_page(request, membership, "dashboard/keys.html", {"rows": rows})


@org_page()
def key_detail(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    key = key_get(org=membership.org, pk=pk)
    (row,) = key_rows(membership, [key])
    return render_page(request, membership, "dashboard/key_detail.html",
                       {"row": row, "key": key, "min_output_tokens": settings.NEMO_MIN_OUTPUT_TOKENS,
                        "test_model": key_test_model(key)})



def _form_values(form: KeyForm) -> dict:
    return {name: form.cleaned_data[name] for name in (
        "name", "team", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel", "default_max_tokens", "run_budget",
        "run_max_steps", "loop_limit", "expires", "budget", "budget_period")}


@never_cache
@org_page(MANAGE)
def key_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = KeyForm(request.POST or None, org=membership.org)
    if request.method == "POST" and form.is_valid():
        key, secret = key_issue(org=membership.org, actor=Actor.of_user(request.user), **_form_values(form))
        return _redirect_to_secret(request, key, secret, "issued")
    return render_page(request, membership, "dashboard/key_form.html", {"form": form, "key": None})


def _redirect_to_secret(request: HttpRequest, key: VirtualKey, secret: str, what: str) -> HttpResponse:
    """Post/redirect/get: the POST that made a secret hands it to one GET through the session, so
    a reload repeats the GET (which finds nothing more to show), never the POST (a second key)."""
    request.session[SESSION_SECRET] = {"key": key.pk, "secret": secret, "what": what}
    return redirect("dashboard:key_secret", pk=key.pk)


@never_cache
@org_page(MANAGE)
def key_secret(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    """The new secret, once: taken out of the session by the first GET after the POST."""
    key = key_get(org=membership.org, pk=pk)
    shown = request.session.get(SESSION_SECRET)
    if not shown or shown.get("key") != key.pk:
        return render_page(request, membership, "dashboard/key_secret.html", {"key": key, "secret": None})
    del request.session[SESSION_SECRET]
    test_model = key_test_model(key)
    return render_page(request, membership, "dashboard/key_secret.html",
                       {"key": key, "secret": shown["secret"], "what": shown["what"], "test_model": test_model,
                        "snippet_model": test_model or SNIPPET_MODEL})


@org_page(MANAGE)
def key_edit(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    key = key_get(org=membership.org, pk=pk)
    budget = budget_list(org=membership.org).filter(scope=Budget.Scope.KEY, key=key).first()
    initial = {
        "name": key.name, "team": key.team_id, "allowed_models": key.allowed_models,
        "rpm_limit": key.rpm_limit, "tpm_limit": key.tpm_limit, "max_parallel": key.max_parallel,
        "default_max_tokens": key.default_max_tokens, "run_budget": key.run_budget,
        "run_max_steps": key.run_max_steps, "loop_limit": key.loop_limit, "expires": key.expires,
        "budget": budget.amount if budget else None,
        "budget_period": budget.period if budget else Budget.Period.MONTHLY,
    }
    form = KeyForm(request.POST or None, initial=initial, org=membership.org, current_models=key.allowed_models)
    if request.method == "POST" and form.is_valid():
        key_change(key=key, actor=Actor.of_user(request.user), **_form_values(form))
        messages.success(request, f"Saved the limits of {key.name}.")
        return redirect("dashboard:key_detail", pk=key.pk)
    return render_page(request, membership, "dashboard/key_form.html", {"form": form, "key": key})


@org_page(MANAGE)
def key_revoke(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    key = key_get(org=membership.org, pk=pk)
    if request.method == "POST":
        virtual_key_revoke(key=key, actor=Actor.of_user(request.user))
        messages.success(request, f"Revoked {key.name} ({key.prefix}…). Calls with it are refused from now on.")
        return redirect("dashboard:keys")
    return render_confirm(
        request,
        membership,
        title=f"Revoke {key.name}?",
        text=f"Calls with {key.prefix}… will be refused at once. This cannot be undone.",
        button="Revoke key",
        cancel=reverse("dashboard:key_detail", args=[key.pk]),
    )


@never_cache
@org_page(MANAGE)
def key_rotate(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    key = key_get(org=membership.org, pk=pk)
    if key.revoked is not None:
        messages.error(request, "A revoked key cannot be rotated.")
        return redirect("dashboard:key_detail", pk=key.pk)
    if request.method == "POST":
        key, secret = virtual_key_rotate(key=key, actor=Actor.of_user(request.user))
        return _redirect_to_secret(request, key, secret, "rotated")
    return render_confirm(
        request,
        membership,
        title=f"Rotate {key.name}?",
        text=(f"A new secret replaces {key.prefix}…; the old one stops working at once. "
              "Budget, limits and history stay with the key."),
        button="Rotate secret",
        cancel=reverse("dashboard:key_detail", args=[key.pk]),
        danger=False,
    )

