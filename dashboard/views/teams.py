"""Teams and budgets: each team's budget and spend, the org's budget, credits and their grants."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from analytics.selectors import spend_total
from billing.models import Budget
from billing.selectors import budget_list, credit_grants
from dashboard.forms import OrgBudgetForm, TeamForm
from dashboard.orgs import org_page, render_confirm, render_page
from dashboard.selectors import budget_spent, credit_balance
from dashboard.services import org_budget_save, team_save
from keys.access import MANAGE
from keys.audit import Actor
from keys.models import Membership, Team
from keys.selectors import team_get, team_list
from keys.services import team_delete

GRANTS_SHOWN = 50


@dataclass(frozen=True)
class TeamRow:
    team: Team
    budget: Budget | None
    spent: Decimal


def _org_budget(membership: Membership) -> Budget | None:
    return budget_list(org=membership.org).filter(scope=Budget.Scope.ORG).first()


def _team_budget(membership: Membership, team: Team) -> Budget | None:
    return budget_list(org=membership.org).filter(scope=Budget.Scope.TEAM, team=team).first()


def _teams_page(request: HttpRequest, membership: Membership, *, team_form: TeamForm | None = None,
                budget_form: OrgBudgetForm | None = None, status: int = 200) -> HttpResponse:
    org = membership.org
    budgets = list(budget_list(org=org))
    team_budgets = {b.team_id: b for b in budgets if b.scope == Budget.Scope.TEAM}
    org_budget = next((b for b in budgets if b.scope == Budget.Scope.ORG), None)
    rows = []
    for team in team_list(org=org):
        budget = team_budgets.get(team.pk)
        # With a budget, the spend that counts against it (this period); without, all of it.
        spent = budget_spent(budget=budget) if budget else spend_total(org_id=org.pk, team_id=team.pk)
        rows.append(TeamRow(team=team, budget=budget, spent=spent))
    initial = {"budget": org_budget.amount, "budget_period": org_budget.period} if org_budget else None
    return render_page(request, membership, "dashboard/teams.html", {
        "rows": rows,
        "org_budget": org_budget,
        "org_budget_spent": budget_spent(budget=org_budget) if org_budget else None,
        "balance": credit_balance(org=org),
        "grants": credit_grants(org=org)[:GRANTS_SHOWN],
        "team_form": team_form or TeamForm(org=org),
        "budget_form": budget_form or OrgBudgetForm(initial=initial),
    }, status=status)


@org_page()
def teams(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _teams_page(request, membership)


@require_POST
@org_page(MANAGE)
def team_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = TeamForm(request.POST, org=membership.org)
    if not form.is_valid():
        return _teams_page(request, membership, team_form=form, status=400)
    team = team_save(org=membership.org, actor=Actor.of_user(request.user), name=form.cleaned_data["name"],
                     budget=form.cleaned_data["budget"], budget_period=form.cleaned_data["budget_period"])
    messages.success(request, f"Created team {team.name}.")
    return redirect("dashboard:teams")


@org_page(MANAGE)
def team_edit(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    team = team_get(org=membership.org, pk=pk)
    budget = _team_budget(membership, team)
    initial = {"name": team.name, "budget": budget.amount if budget else None,
               "budget_period": budget.period if budget else Budget.Period.MONTHLY}
    form = TeamForm(request.POST or None, initial=initial, org=membership.org, team_id=team.pk)
    if request.method == "POST" and form.is_valid():
        team_save(org=membership.org, actor=Actor.of_user(request.user), team=team, current_budget=budget,
                  name=form.cleaned_data["name"], budget=form.cleaned_data["budget"],
                  budget_period=form.cleaned_data["budget_period"])
        messages.success(request, f"Saved team {form.cleaned_data['name']}.")
        return redirect("dashboard:teams")
    return render_page(request, membership, "dashboard/team_form.html", {"form": form, "team": team})


@org_page(MANAGE)
def team_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    team = team_get(org=membership.org, pk=pk)
    if request.method == "POST":
        team_delete(team=team, actor=Actor.of_user(request.user))
        messages.success(request, f"Deleted team {team.name}.")
        return redirect("dashboard:teams")
    return render_confirm(
        request,
        membership,
        title=f"Delete team {team.name}?",
        text="Its budget goes with it; its keys stay, without a team.",
        button="Delete team",
        cancel=reverse("dashboard:teams"),
    )


@require_POST
@org_page(MANAGE)
def org_budget(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = OrgBudgetForm(request.POST)
    if not form.is_valid():
        return _teams_page(request, membership, budget_form=form, status=400)
    org_budget_save(org=membership.org, actor=Actor.of_user(request.user), amount=form.cleaned_data["budget"],
                    period=form.cleaned_data["budget_period"], current=_org_budget(membership))
    messages.success(request, "Saved the organization's budget.")
    return redirect("dashboard:teams")
