"""The page after sign-in: today and this month at a glance, the keys near their budget, and the
calls of the last 24 hours."""

from datetime import UTC, datetime, timedelta

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from dashboard.orgs import org_page, render_page
from dashboard.selectors import activity, calls_by_hour, credit_balance
from dashboard.views.keys import key_rows
from keys.models import Membership
from keys.selectors import key_list

CHART_HOURS = 24


@org_page()
def overview(request: HttpRequest, membership: Membership) -> HttpResponse:
    org = membership.org
    now = timezone.now().astimezone(UTC)
    today = _start_of_day(now)
    month = today.replace(day=1)
    balance = credit_balance(org=org)
    return render_page(request, membership, "dashboard/overview.html", {
        "today": activity(org=org, since=today),
        "month": activity(org=org, since=month),
        "month_start": month,
        "balance": balance,
        "near_budget": [row for row in key_rows(membership, list(key_list(org=org)), balance) if row.near_budget],
        "hours": calls_by_hour(org=org, since=now - timedelta(hours=CHART_HOURS - 1)),
        "has_keys": key_list(org=org).exists(),
    })


def _start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
