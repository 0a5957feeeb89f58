"""The management API (``/api/v1/``): thin views over the services and selectors of keys,
billing and analytics, and over dashboard.selectors where spend is weighed against budgets or
credits.

Every view is an ``OrgAPIView``: by the time a handler runs, ``self.access`` names the caller's
org, role and audit actor. Objects are only fetched through org-scoped selectors, so another
org's id gets the very same 404 as an id that does not exist.

One view per operation, each a few lines over its serializers, all here (over 400 lines): the
API reads as one table of operations, in the order of its URLs (dashboard/api/urls.py).
"""

import re
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import selectors as analytics_selectors
from billing.models import Budget
from billing.periods import period_start
from billing.selectors import budget_get, budget_list, budgets_for_key, catalog_list, credit_grants
from billing.services import budget_delete, budget_set
from dashboard.api import serializers as api
from dashboard.api.pagination import keyset_page
from dashboard.api.permissions import OrgAccess, OrgAPIView
from dashboard.api.renderers import SpendCSVRenderer
from dashboard.selectors import budget_spent, credit_balance, key_spend, run_with_budget
from keys import secrets
from keys.models import Organization, Team, VirtualKey
from keys.selectors import key_get, key_list, team_get, team_list
from keys.services import (
    KEY_EDITABLE_FIELDS,
    team_create,
    team_delete,
    team_update,
    virtual_key_create,
    virtual_key_revoke,
    virtual_key_rotate,
    virtual_key_update,
)
from webhooks.selectors import delivery_list, webhook_get, webhook_list
from webhooks.services import WebhookInvalid, webhook_create, webhook_delete, webhook_update

ZERO = Decimal("0")


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(api.ErrorSerializer, description=description)


READ_ERRORS = {
    401: _error("No credentials, or an unknown or revoked token."),
    403: _error("Not a member of the org, or the role may not do this (members only read)."),
}
LIST_ERRORS = {400: _error("Bad input; `param` names the field."), **READ_ERRORS}
OBJECT_ERRORS = {404: _error("No such object in the org (the same answer for another org's)."), **READ_ERRORS}
WRITE_ERRORS = {**LIST_ERRORS, **OBJECT_ERRORS}


def _id_parameter(what: str) -> OpenApiParameter:
    return OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description=f"The {what}'s id.")


def _valid(serializer_class: type[serializers.Serializer], data, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _page_or_400(queryset, *, ordering: tuple[str, ...], params: dict):
    try:
        return keyset_page(queryset, ordering=ordering, cursor=params.get("cursor"), limit=params["limit"])
    except ValueError as exc:
        raise serializers.ValidationError({"cursor": "Not a cursor this list gave out."}) from exc


def _in_org_or_400(getter, *, org: Organization, pk: int | None, field: str):
    """A team or key named in a request body: an unknown one is bad input (400), not a 404."""
    if pk is None:
        return None
    try:
        return getter(org=org, pk=pk)
    except Http404 as exc:
        raise serializers.ValidationError({field: f"No such {field} in this organization."}) from exc


def _budget_figures(budget: Budget) -> dict:
    now = timezone.now()
    spent = budget_spent(budget=budget, now=now)
    return {
        "id": budget.pk,
        "scope": budget.scope,
        "key": budget.key_id,
        "team": budget.team_id,
        "amount": budget.amount,
        "period": budget.period,
        "period_start": period_start(budget.period, now),
        "spent": spent,
        "remaining": max(budget.amount - spent, ZERO),
        "created": budget.created,
    }


def _key_context(org: Organization, keys: list[VirtualKey]) -> dict:
    key_budgets = budget_list(org=org).filter(scope=Budget.Scope.KEY, key__in=keys)
    return {
        "budgets": {budget.key_id: _budget_figures(budget) for budget in key_budgets},
        "spend": key_spend(org=org),
    }


def _team_context(org: Organization, teams: list[Team]) -> dict:
    team_budgets = budget_list(org=org).filter(scope=Budget.Scope.TEAM, team__in=teams)
    return {"budgets": {budget.team_id: _budget_figures(budget) for budget in team_budgets}}


# --- keys -------------------------------------------------------------------------------------

class KeyListView(OrgAPIView):
    """The org's virtual keys, newest first, each with its budget and spend."""

    @extend_schema(operation_id="keys_list", tags=["keys"], parameters=[api.PageParams],
                   responses={200: api.paged(api.KeyOutputSerializer, "PaginatedKeyList"), **LIST_ERRORS})
    def get(self, request: Request) -> Response:
        params = _valid(api.PageParams, request.query_params)
        page = _page_or_400(key_list(org=self.access.org), ordering=("-created", "-id"), params=params)
        context = _key_context(self.access.org, page.rows)
        return Response({"results": api.KeyOutputSerializer(page.rows, many=True, context=context).data,
                         "next": page.next_cursor})

    @extend_schema(operation_id="keys_create", tags=["keys"], request=api.KeyInputSerializer,
                   responses={201: api.KeyWithSecretSerializer, **LIST_ERRORS},
                   description="Issues a key. The answer holds its secret, which is never shown again.")
    def post(self, request: Request) -> Response:
        org, actor = self.access.org, self.access.actor
        data = _valid(api.KeyInputSerializer, request.data)
        team = _in_org_or_400(team_get, org=org, pk=data.get("team"), field="team")
        with transaction.atomic():
            key, secret = virtual_key_create(
                org=org, actor=actor, name=data["name"], team=team,
                allowed_models=data.get("allowed_models", ()), rpm_limit=data.get("rpm_limit"),
                tpm_limit=data.get("tpm_limit"), max_parallel=data.get("max_parallel"),
                default_max_tokens=data.get("default_max_tokens"), run_budget=data.get("run_budget"),
                run_max_steps=data.get("run_max_steps"), loop_limit=data.get("loop_limit", 0),
                expires=data.get("expires"), metadata=data.get("metadata"),
            )
            if data.get("budget") is not None:
                budget_set(org=org, actor=actor, key=key, amount=data["budget"],
                           period=data.get("budget_period", Budget.Period.NONE))
        context = {**_key_context(org, [key]), "secret": secret}
        return Response(api.KeyWithSecretSerializer(key, context=context).data, status=status.HTTP_201_CREATED)


def _change_key_budget(*, key: VirtualKey, data: dict, access: OrgAccess) -> None:
    """Applies ``budget`` / ``budget_period`` of a key change: set, re-period, or remove (null)."""
    current = budgets_for_key(key=key).get("key")
    if "budget" in data and data["budget"] is None:
        if current is not None:
            budget_delete(budget=current, actor=access.actor)
        return
    if "budget" not in data and current is None:
        raise serializers.ValidationError({"budget_period": "This key has no budget; send `budget` too."})
    amount = data["budget"] if "budget" in data else current.amount
    default_period = current.period if current is not None else Budget.Period.NONE
    budget_set(org=access.org, actor=access.actor, key=key, amount=amount,
               period=data.get("budget_period", default_period))


class KeyDetailView(OrgAPIView):
    """One virtual key of the org, with its budget and spend."""

    @extend_schema(operation_id="keys_get", tags=["keys"], parameters=[_id_parameter("key")],
                   responses={200: api.KeyOutputSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, id: str) -> Response:
        key = key_get(org=self.access.org, pk=id)
        return Response(api.KeyOutputSerializer(key, context=_key_context(self.access.org, [key])).data)

    @extend_schema(operation_id="keys_update", tags=["keys"], parameters=[_id_parameter("key")],
                   request=api.KeyInputSerializer, responses={200: api.KeyOutputSerializer, **WRITE_ERRORS},
                   description="Changes a key's name, team, models, limits, expiry, metadata or budget "
                               "(`budget: null` removes the key's budget).")
    def patch(self, request: Request, id: str) -> Response:
        org = self.access.org
        key = key_get(org=org, pk=id)
        data = _valid(api.KeyInputSerializer, request.data, partial=True)
        changes = {field: data[field] for field in KEY_EDITABLE_FIELDS if field in data}
        if "team" in data:
            changes["team"] = _in_org_or_400(team_get, org=org, pk=data["team"], field="team")
        with transaction.atomic():
            if changes:
                key = virtual_key_update(key=key, actor=self.access.actor, **changes)
            if "budget" in data or "budget_period" in data:
                _change_key_budget(key=key, data=data, access=self.access)
        return Response(api.KeyOutputSerializer(key, context=_key_context(org, [key])).data)

    @extend_schema(operation_id="keys_revoke", tags=["keys"], parameters=[_id_parameter("key")], request=None,
                   responses={200: api.KeyOutputSerializer, **OBJECT_ERRORS},
                   description="Revokes the key: its next call is refused. The key stays listed with "
                               "`revoked` set (its history and spend are kept), and the answer is the revoked "
                               "key. Revoking a revoked key changes nothing.")
    def delete(self, request: Request, id: str) -> Response:
        key = virtual_key_revoke(key=key_get(org=self.access.org, pk=id), actor=self.access.actor)
        return Response(api.KeyOutputSerializer(key, context=_key_context(self.access.org, [key])).data)


class KeyRotateView(OrgAPIView):
    """A new secret for a key."""

    @extend_schema(operation_id="keys_rotate", tags=["keys"], parameters=[_id_parameter("key")], request=None,
                   responses={200: api.KeyWithSecretSerializer, **WRITE_ERRORS},
                   description="Gives the key a new secret (same limits, budget and history); the old secret "
                               "stops working at once. The answer holds the new secret, shown only here.")
    def post(self, request: Request, id: str) -> Response:
        key = key_get(org=self.access.org, pk=id)
        if key.revoked is not None:
            raise serializers.ValidationError("This key is revoked; issue a new one instead.", code="key_revoked")
        key, secret = virtual_key_rotate(key=key, actor=self.access.actor)
        context = {**_key_context(self.access.org, [key]), "secret": secret}
        return Response(api.KeyWithSecretSerializer(key, context=context).data)


# --- teams ------------------------------------------------------------------------------------

def _team_name_taken() -> serializers.ValidationError:
    return serializers.ValidationError({"name": "This organization already has a team of that name."},
                                       code="unique")


class TeamListView(OrgAPIView):
    """The org's teams, by name, each with its budget."""

    @extend_schema(operation_id="teams_list", tags=["teams"], parameters=[api.PageParams],
                   responses={200: api.paged(api.TeamOutputSerializer, "PaginatedTeamList"), **LIST_ERRORS})
    def get(self, request: Request) -> Response:
        params = _valid(api.PageParams, request.query_params)
        page = _page_or_400(team_list(org=self.access.org), ordering=("name", "id"), params=params)
        context = _team_context(self.access.org, page.rows)
        return Response({"results": api.TeamOutputSerializer(page.rows, many=True, context=context).data,
                         "next": page.next_cursor})

    @extend_schema(operation_id="teams_create", tags=["teams"], request=api.TeamInputSerializer,
                   responses={201: api.TeamOutputSerializer, **LIST_ERRORS})
    def post(self, request: Request) -> Response:
        data = _valid(api.TeamInputSerializer, request.data)
        try:
            team = team_create(org=self.access.org, name=data["name"], actor=self.access.actor)
        except IntegrityError as exc:
            raise _team_name_taken() from exc
        return Response(api.TeamOutputSerializer(team, context={"budgets": {}}).data, status=status.HTTP_201_CREATED)


class TeamDetailView(OrgAPIView):
    """One team of the org, with its budget."""

    @extend_schema(operation_id="teams_get", tags=["teams"], parameters=[_id_parameter("team")],
                   responses={200: api.TeamOutputSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, id: str) -> Response:
        team = team_get(org=self.access.org, pk=id)
        return Response(api.TeamOutputSerializer(team, context=_team_context(self.access.org, [team])).data)

    @extend_schema(operation_id="teams_update", tags=["teams"], parameters=[_id_parameter("team")],
                   request=api.TeamInputSerializer, responses={200: api.TeamOutputSerializer, **WRITE_ERRORS})
    def patch(self, request: Request, id: str) -> Response:
        team = team_get(org=self.access.org, pk=id)
        data = _valid(api.TeamInputSerializer, request.data, partial=True)
        if "name" in data:
            try:
                team = team_update(team=team, name=data["name"], actor=self.access.actor)
            except IntegrityError as exc:
                raise _team_name_taken() from exc
        return Response(api.TeamOutputSerializer(team, context=_team_context(self.access.org, [team])).data)

    @extend_schema(operation_id="teams_delete", tags=["teams"], parameters=[_id_parameter("team")], request=None,
                   responses={204: None, **OBJECT_ERRORS},
                   description="Deletes the team and its budget; its keys stay, without a team.")
    def delete(self, request: Request, id: str) -> Response:
        team_delete(team=team_get(org=self.access.org, pk=id), actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- budgets ----------------------------------------------------------------------------------

class BudgetListView(OrgAPIView):
    """The budgets of the org's keys, teams and of the org itself."""

    @extend_schema(operation_id="budgets_list", tags=["budgets"], parameters=[api.PageParams],
                   responses={200: api.paged(api.BudgetOutputSerializer, "PaginatedBudgetList"), **LIST_ERRORS})
    def get(self, request: Request) -> Response:
        params = _valid(api.PageParams, request.query_params)
        page = _page_or_400(budget_list(org=self.access.org), ordering=("scope", "id"), params=params)
        figures = [_budget_figures(budget) for budget in page.rows]
        return Response({"results": api.BudgetOutputSerializer(figures, many=True).data, "next": page.next_cursor})

    @extend_schema(operation_id="budgets_create", tags=["budgets"], request=api.BudgetCreateInputSerializer,
                   responses={201: api.BudgetOutputSerializer, 200: api.BudgetOutputSerializer, **LIST_ERRORS},
                   description="Sets the budget of a key, a team or the org. A key, team or org has one budget: "
                               "if it already has one, that budget is changed and the answer is 200, not 201.")
    def post(self, request: Request) -> Response:
        org = self.access.org
        data = _valid(api.BudgetCreateInputSerializer, request.data)
        key = _in_org_or_400(key_get, org=org, pk=data.get("key"), field="key")
        team = _in_org_or_400(team_get, org=org, pk=data.get("team"), field="team")
        existed = budget_list(org=org).filter(scope=data["scope"], key=key, team=team).exists()
        budget = budget_set(org=org, actor=self.access.actor, key=key, team=team, amount=data["amount"],
                            period=data["period"])
        return Response(api.BudgetOutputSerializer(_budget_figures(budget)).data,
                        status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)


class BudgetDetailView(OrgAPIView):
    """One budget, with what was spent of it in its current period."""

    @extend_schema(operation_id="budgets_get", tags=["budgets"], parameters=[_id_parameter("budget")],
                   responses={200: api.BudgetOutputSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, id: str) -> Response:
        budget = budget_get(org=self.access.org, pk=id)
        return Response(api.BudgetOutputSerializer(_budget_figures(budget)).data)

    @extend_schema(operation_id="budgets_update", tags=["budgets"], parameters=[_id_parameter("budget")],
                   request=api.BudgetUpdateInputSerializer, responses={200: api.BudgetOutputSerializer, **WRITE_ERRORS})
    def patch(self, request: Request, id: str) -> Response:
        budget = budget_get(org=self.access.org, pk=id)
        data = _valid(api.BudgetUpdateInputSerializer, request.data, partial=True)
        if data:
            budget = budget_set(org=self.access.org, actor=self.access.actor, key=budget.key, team=budget.team,
                                amount=data.get("amount", budget.amount), period=data.get("period", budget.period))
        return Response(api.BudgetOutputSerializer(_budget_figures(budget)).data)

    @extend_schema(operation_id="budgets_delete", tags=["budgets"], parameters=[_id_parameter("budget")],
                   request=None, responses={204: None, **OBJECT_ERRORS})
    def delete(self, request: Request, id: str) -> Response:
        budget_delete(budget=budget_get(org=self.access.org, pk=id), actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- the request log and runs -----------------------------------------------------------------

LARGEST_ID = 2**63 - 1
NO_KEY = -1


def _key_filter(value: str | None) -> dict:
    """``key=`` is a key's id (all digits) or its prefix, with or without the ``sk-nemo-`` scheme."""
    if not value:
        return {}
    if re.fullmatch(r"\d+", value):
        # An id past the largest key id a database holds names no key (SQLite cannot even bind it).
        return {"key_id": int(value) if int(value) <= LARGEST_ID else NO_KEY}
    return {"key_prefix": value.removeprefix(secrets.KEY_SCHEME)}


class LogListView(OrgAPIView):
    """The request log."""

    @extend_schema(operation_id="logs_list", tags=["logs"], parameters=[api.LogFilterSerializer],
                   responses={200: api.paged(api.LogRowSerializer, "PaginatedLogList"), **LIST_ERRORS},
                   description="The request log, newest first, filtered by any of the parameters.")
    def get(self, request: Request) -> Response:
        params = _valid(api.LogFilterSerializer, request.query_params)
        try:
            page = analytics_selectors.log_list(
                org=self.access.org, **_key_filter(params.get("key")), run=params.get("run"),
                model=params.get("model"), deployment=params.get("deployment"), status=params.get("status"),
                cache=params.get("cache"), since=params.get("since"), until=params.get("until"),
                tag=params.get("tag"), cursor=params.get("cursor"), limit=params["limit"],
            )
        except ValueError as exc:
            raise serializers.ValidationError({"cursor": "Not a cursor this list gave out."}) from exc
        return Response({"results": api.LogRowSerializer(page.rows, many=True).data, "next": page.next_cursor})


class LogDetailView(OrgAPIView):
    """One call: its attempts, tokens, cost, tool calls and, if the org stores prompts, its bodies."""

    @extend_schema(operation_id="logs_get", tags=["logs"],
                   parameters=[OpenApiParameter("request_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                description="The call's `x-nemo-request-id`.")],
                   responses={200: api.LogDetailSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, request_id: str) -> Response:
        row = analytics_selectors.log_get(org=self.access.org, request_id=request_id)
        return Response(api.LogDetailSerializer(row).data)


class RunListView(OrgAPIView):
    """Recent agent runs."""

    @extend_schema(operation_id="runs_list", tags=["runs"], parameters=[api.RunFilterSerializer],
                   responses={200: api.paged(api.RunListItemSerializer, "PaginatedRunList"), **LIST_ERRORS},
                   description="The most recent runs, newest first (without their steps).")
    def get(self, request: Request) -> Response:
        params = _valid(api.RunFilterSerializer, request.query_params)
        runs = analytics_selectors.run_list(org=self.access.org, key_id=params.get("key"), limit=params["limit"])
        return Response({"results": api.RunListItemSerializer(runs, many=True).data, "next": None})


class RunDetailView(OrgAPIView):
    """A run: its calls in order, the steps that fell back, its status, spend and budget."""

    @extend_schema(operation_id="runs_get", tags=["runs"],
                   parameters=[OpenApiParameter("run_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                description="The run's `X-Nemo-Run`.")],
                   responses={200: api.RunSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, run_id: str) -> Response:
        run = run_with_budget(org=self.access.org, run_id=run_id)
        return Response(api.RunSerializer(run).data)


# --- spend, credits, catalog ------------------------------------------------------------------

class SpendView(OrgAPIView):
    """Spend totals by group."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, SpendCSVRenderer]

    @extend_schema(operation_id="spend_list", tags=["spend"], parameters=[api.SpendFilterSerializer],
                   responses={
                       (200, "application/json"): api.paged(api.SpendRowSerializer, "SpendRowList"),
                       (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The same rows as CSV."),
                       **{(code, "application/json"): error for code, error in LIST_ERRORS.items()},
                   },
                   description="Spend grouped by day, key, team or model. As CSV with `format=csv`.")
    def get(self, request: Request) -> Response:
        params = _valid(api.SpendFilterSerializer, request.query_params)
        try:
            rows = analytics_selectors.spend_rows(org=self.access.org, group_by=params["group_by"],
                                                  since=params.get("since"), until=params.get("until"))
        except ValueError as exc:
            raise serializers.ValidationError({"group_by": str(exc)}) from exc
        response = Response({"results": api.SpendRowSerializer(rows, many=True).data, "next": None})
        if request.accepted_renderer.format == SpendCSVRenderer.format:
            response["Content-Disposition"] = f'attachment; filename="nemo-spend-by-{params["group_by"]}.csv"'
        return response

    def handle_exception(self, exc):
        # An error is a JSON error body even when CSV was asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class CreditsView(OrgAPIView):
    """The org's credit balance (grants less spend) and its grants, newest first."""

    @extend_schema(operation_id="credits_get", tags=["credits"], responses={200: api.CreditsSerializer,
                                                                           **READ_ERRORS})
    def get(self, request: Request) -> Response:
        org = self.access.org
        return Response(api.CreditsSerializer({"balance": credit_balance(org=org),
                                               "grants": credit_grants(org=org)}).data)


# --- webhooks ---------------------------------------------------------------------------------

RECENT_DELIVERIES = 20


def _webhook_write(write, **changes):
    try:
        return write(**changes)
    except WebhookInvalid as exc:
        raise serializers.ValidationError({exc.field: str(exc)}) from exc


class WebhookListView(OrgAPIView):
    """The org's budget-alert webhooks."""

    @extend_schema(operation_id="webhooks_list", tags=["webhooks"], parameters=[api.PageParams],
                   responses={200: api.paged(api.WebhookOutputSerializer, "PaginatedWebhookList"), **LIST_ERRORS})
    def get(self, request: Request) -> Response:
        params = _valid(api.PageParams, request.query_params)
        page = _page_or_400(webhook_list(org=self.access.org), ordering=("id",), params=params)
        return Response({"results": api.WebhookOutputSerializer(page.rows, many=True).data, "next": page.next_cursor})

    @extend_schema(operation_id="webhooks_create", tags=["webhooks"], request=api.WebhookInputSerializer,
                   responses={201: api.WebhookWithSecretSerializer, **LIST_ERRORS},
                   description="Adds a webhook. The answer holds its signing secret (the one sent, or one made "
                               "for it), which is never shown again.")
    def post(self, request: Request) -> Response:
        data = _valid(api.WebhookInputSerializer, request.data)
        webhook = _webhook_write(webhook_create, org=self.access.org, actor=self.access.actor, url=data["url"],
                                 events=data.get("events"), secret=data.get("secret"))
        if data.get("enabled") is False:
            webhook = webhook_update(webhook=webhook, actor=self.access.actor, enabled=False)
        return Response(api.WebhookWithSecretSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(OrgAPIView):
    """One webhook of the org, with its latest deliveries."""

    def _answer(self, webhook, serializer_class=api.WebhookDetailSerializer) -> Response:
        deliveries = delivery_list(org=self.access.org, webhook=webhook, limit=RECENT_DELIVERIES)
        return Response(serializer_class(webhook, context={"deliveries": deliveries}).data)

    @extend_schema(operation_id="webhooks_get", tags=["webhooks"], parameters=[_id_parameter("webhook")],
                   responses={200: api.WebhookDetailSerializer, **OBJECT_ERRORS})
    def get(self, request: Request, id: str) -> Response:
        return self._answer(webhook_get(org=self.access.org, pk=id))

    @extend_schema(operation_id="webhooks_update", tags=["webhooks"], parameters=[_id_parameter("webhook")],
                   request=api.WebhookInputSerializer, responses={200: api.WebhookDetailSerializer, **WRITE_ERRORS},
                   description="Changes a webhook's url, events, secret or enabled. A new secret is in the "
                               "answer (as `secret`) this once.")
    def patch(self, request: Request, id: str) -> Response:
        webhook = webhook_get(org=self.access.org, pk=id)
        data = _valid(api.WebhookInputSerializer, request.data, partial=True)
        webhook = _webhook_write(webhook_update, webhook=webhook, actor=self.access.actor, **data)
        answer = self._answer(webhook)
        if "secret" in data:
            answer.data["secret"] = webhook.secret
        return answer

    @extend_schema(operation_id="webhooks_delete", tags=["webhooks"], parameters=[_id_parameter("webhook")],
                   request=None, responses={204: None, **OBJECT_ERRORS},
                   description="Removes the webhook; events not yet delivered to it are not sent.")
    def delete(self, request: Request, id: str) -> Response:
        webhook_delete(webhook=webhook_get(org=self.access.org, pk=id), actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelListView(OrgAPIView):
    """The model catalog."""

    @extend_schema(operation_id="models_list", tags=["models"],
                   responses={200: api.paged(api.CatalogModelSerializer, "CatalogModelList"), **READ_ERRORS},
                   description="The model catalog, with list prices per million tokens.")
    def get(self, request: Request) -> Response:
        # Not tenant data: every org sees the same catalog (and billing has no selector for it yet).
        catalog = catalog_list()
        return Response({"results": api.CatalogModelSerializer(catalog, many=True).data, "next": None})
