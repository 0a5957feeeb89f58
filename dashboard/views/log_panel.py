"""One call of the request log as a fragment of HTML: what the log's side panel shows, fetched
by static/js/log_panel.js without leaving the list."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from analytics.selectors import log_get
from dashboard.orgs import org_page
from dashboard.replay import conversation
from keys.models import Membership


@org_page()
def log_panel(request: HttpRequest, membership: Membership, request_id: str) -> HttpResponse:
    row = log_get(org=membership.org, request_id=request_id)
    return render(request, "dashboard/log_panel.html",
                  {"row": row, "turns": conversation(row.request_body, row.response_body)})
