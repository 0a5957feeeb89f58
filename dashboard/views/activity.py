"""What the keys did: the request log, one call, the runs, and one run as a timeline."""

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone

from analytics.selectors import TOTALS_SCAN_ROWS, log_get, log_list, log_totals, run_get, run_list
from dashboard.forms import LogFilterForm, RunFilterForm
from dashboard.orgs import org_page, render_page
from dashboard.playground import client_request, playground_request
from dashboard.replay import as_curl, as_python, conversation
from dashboard.selectors import calls_histogram
from dashboard.timeline import run_timeline
from keys.models import Membership

STALE_CURSOR = "That page link is no longer valid; showing the newest calls."
LOG_PAGE = 50
RUNS_SHOWN = 50
# A run's steps drawn a page at a time: a long agent run is thousands of calls.
RUN_STEPS_SHOWN = 100


@org_page()
def log(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = LogFilterForm(request.GET, org=membership.org)
    if not form.is_valid():
        return render_page(request, membership, "dashboard/log.html", {"form": form, "page": None}, status=400)
    filters = form.filters()
    notice = None
    try:
        page = log_list(org=membership.org, cursor=request.GET.get("cursor") or None,
                        newer_than=request.GET.get("newer") or None, limit=LOG_PAGE, **filters)
    except ValueError:
        notice = STALE_CURSOR
        page = log_list(org=membership.org, limit=LOG_PAGE, **filters)
    totals = log_totals(org=membership.org, **filters)
    # The bars span the window the totals read, or from the oldest call they counted where it
    # has no start.
    end = filters.get("until") or timezone.now()
    start = totals.narrowed_to or filters.get("since") or totals.oldest
    bars = calls_histogram(totals.hours, start=start, end=end) if start is not None else []
    return render_page(request, membership, "dashboard/log.html",
                       {"form": form, "page": page, "notice": notice, "filtered": bool(filters),
                        "totals": totals, "bars": bars, "totals_from": start, "totals_to": filters.get("until"),
                        "scan_rows": TOTALS_SCAN_ROWS})


@org_page()
def log_detail(request: HttpRequest, membership: Membership, request_id: str) -> HttpResponse:
    row = log_get(org=membership.org, request_id=request_id)
    base_url = f"{request.scheme}://{request.get_host()}"
    # The call again in its client API's shape (the log keeps the Chat Completions request a
    # Responses or Messages call went upstream as).
    body = client_request(row.endpoint, row.request_body) if isinstance(row.request_body, dict) else row.request_body
    again = {"base_url": base_url, "endpoint": row.endpoint, "body": body}
    return render_page(request, membership, "dashboard/log_detail.html", {
        "row": row,
        "turns": conversation(row.request_body, row.response_body),
        "curl": as_curl(**again) if isinstance(row.request_body, dict) else None,
        "python": as_python(**again) if isinstance(row.request_body, dict) else None,
        "in_playground": playground_request(row) is not None,
    })


@org_page()
def runs(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = RunFilterForm(request.GET, org=membership.org)
    chosen = form.cleaned_data if form.is_valid() else {}
    items = run_list(org=membership.org, key_id=chosen.get("key"), run_prefix=chosen.get("run") or None,
                     active_before=chosen.get("before"), limit=RUNS_SHOWN)
    older = items[-1].ended.isoformat() if len(items) == RUNS_SHOWN else None
    return render_page(request, membership, "dashboard/runs.html",
                       {"form": form, "runs": items, "older": older, "paged": bool(chosen.get("before"))},
                       status=200 if form.is_valid() else 400)


@org_page()
def run_detail(request: HttpRequest, membership: Membership, run_id: str) -> HttpResponse:
    # The run's spend stands on its own: the key's whole period budget is not the run's.
    page = _page_number(request.GET.get("page"))
    run = run_get(org=membership.org, run_id=run_id, offset=(page - 1) * RUN_STEPS_SHOWN, limit=RUN_STEPS_SHOWN)
    if not run.steps:
        raise Http404("The run has fewer steps than that page.")
    pages = -(-run.steps_count // RUN_STEPS_SHOWN)
    return render_page(request, membership, "dashboard/run_detail.html", {
        "run": run, "timeline": run_timeline(run), "page": page, "pages": pages,
        "shown_to": run.first_step + len(run.steps) - 1,
    })


def _page_number(value: str | None) -> int:
    """A page of a run's steps, from 1; anything else (a hand-edited link) is the first page."""
    try:
        return max(int(value or 1), 1)
    except ValueError:
        return 1
