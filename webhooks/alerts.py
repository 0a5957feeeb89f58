"""Finding budget alerts in the committed request log, off the hot path.

The gateway only writes log rows; a Celery task scans each org's new rows in id order through
the exporters' outbox (``analytics.services.outbox_batch``: committed rows past the safety lag,
so none is skipped), with the org's ``OrgAlerts`` row locked so one worker scans an org at a
time, and finds:

- ``run.stopped``: a row refused by its run's envelope (a 402 whose param is ``run``) or by the
  loop guard (a 429 ``run_loop_detected``); once per run.
- ``budget.threshold``: a key, team or org budget touched by the rows whose spend in its period
  reached 50, 80 or 100% of it; once per budget, period and threshold.
- ``credits.low``: the org's credit balance below its setting; once per crossing (it is sent
  again only after the balance rose back above the setting).

Each event is written with a delivery per subscribed webhook in the same transaction that moves
the scan's cursor; the event's ``dedupe_key`` is unique per org, so an event is never written twice
even if two scans ever overlapped.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analytics.models import RequestLog
from analytics.selectors import spend_total
from analytics.services import BATCH_SIZE, outbox_batch
from billing.models import Budget
from billing.periods import period_end, period_name, period_start
from billing.selectors import credits_granted
from keys.models import Organization
from webhooks.models import EventType, OrgAlerts, Webhook, WebhookDelivery, WebhookEvent
from webhooks.services import event_body

THRESHOLDS = (50, 80, 100)
MAX_BATCHES_PER_SCAN = 20
RUN_STOPPED_BY = {402: ("error_param", "run", "run_budget"), 429: ("error_code", "run_loop_detected", "loop_detected")}


@dataclass(frozen=True)
class Found:
    type: str
    dedupe_key: str
    data: dict


# --- run.stopped --------------------------------------------------------------------------------

def _stop_reason(row: RequestLog) -> str | None:
    """Why the row's run was stopped, if it was: by its envelope or by the loop guard."""
    rule = RUN_STOPPED_BY.get(row.status)
    if rule is None or not row.run_id:
        return None
    field, value, reason = rule
    return reason if getattr(row, field) == value else None


def runs_stopped(rows: list[RequestLog]) -> list[Found]:
    found = {}
    for row in rows:
        reason = _stop_reason(row)
        if reason and row.run_id not in found:
            found[row.run_id] = Found(EventType.RUN_STOPPED, f"run.stopped:{row.run_id}", {
                "run_id": row.run_id, "reason": reason, "request_id": row.request_id, "key": row.key_prefix,
                "status": row.status, "message": row.error, "stopped": row.created.isoformat(),
            })
    return list(found.values())


# --- budget.threshold ---------------------------------------------------------------------------

def _budgets_touched(org_id: int, rows: list[RequestLog]) -> list[Budget]:
    charged = [row for row in rows if row.cost > 0]
    if not charged:
        return []
    key_ids = {row.key_id for row in charged if row.key_id}
    team_ids = {row.team_id for row in charged if row.team_id}
    touched = Q(scope=Budget.Scope.ORG) | Q(scope=Budget.Scope.KEY, key_id__in=key_ids) | Q(
        scope=Budget.Scope.TEAM, team_id__in=team_ids)
    return list(Budget.objects.filter(touched, org_id=org_id).select_related("key").order_by("id"))


def _budget_spent(budget: Budget, at: datetime) -> Decimal:
    return spend_total(
        org_id=budget.org_id, since=period_start(budget.period, at), until=period_end(budget.period, at),
        key_id=budget.key_id if budget.scope == Budget.Scope.KEY else None,
        team_id=budget.team_id if budget.scope == Budget.Scope.TEAM else None,
    )


def budget_thresholds(org_id: int, rows: list[RequestLog]) -> list[Found]:
    """The thresholds reached by the budgets the rows were charged to, in the period of the
    latest row (a scan that runs after midnight still counts yesterday's calls to yesterday)."""
    if not rows:
        return []
    at = max(row.created for row in rows)
    found = []
    for budget in _budgets_touched(org_id, rows):
        if budget.amount <= 0:
            continue
        spent = _budget_spent(budget, at)
        period = period_name(budget.period, at)
        start = period_start(budget.period, at)
        for threshold in THRESHOLDS:
            if spent * 100 >= budget.amount * threshold:
                found.append(Found(EventType.BUDGET_THRESHOLD, f"budget.threshold:{budget.pk}:{period}:{threshold}", {
                    "budget": {"id": budget.pk, "scope": budget.scope, "key": budget.key.prefix if budget.key else None,
                               "team": budget.team_id, "amount": str(budget.amount), "period": budget.period},
                    "period": period, "period_start": start.isoformat() if start else None,
                    "threshold": threshold, "spent": str(spent),
                }))
    return found


# --- credits.low --------------------------------------------------------------------------------

def credits_low(alerts: OrgAlerts, rows: list[RequestLog]) -> list[Found]:
    """A crossing below the setting, and the state that re-arms it: read when the rows spent
    something, or while the balance is low (a grant may have lifted it)."""
    if not alerts.credits_low and not any(row.cost > 0 for row in rows):
        return []
    balance = credits_granted(org_id=alerts.org_id) - spend_total(org_id=alerts.org_id)
    low = balance < alerts.credits_low_below
    if low == alerts.credits_low:
        return []
    alerts.credits_low = low
    if not low:
        return []
    alerts.credits_low_crossings += 1
    return [Found(EventType.CREDITS_LOW, f"credits.low:{alerts.credits_low_crossings}", {
        "balance": str(balance), "threshold": str(alerts.credits_low_below)})]


# --- the scan -----------------------------------------------------------------------------------

def _fire(org: Organization, found: list[Found]) -> list[int]:
    """Writes the events not written before, with a delivery per webhook subscribed to each;
    returns the deliveries' ids."""
    known = set(WebhookEvent.objects.filter(org=org, dedupe_key__in=[each.dedupe_key for each in found])
                .values_list("dedupe_key", flat=True))
    now = timezone.now()
    events = []
    for each in found:
        if each.dedupe_key in known:
            continue
        known.add(each.dedupe_key)
        event = WebhookEvent(org=org, type=each.type, dedupe_key=each.dedupe_key, created=now)
        event.body = event_body(event_id=event.event_id, type=each.type, created=now, org=org, data=each.data)
        events.append(event)
    WebhookEvent.objects.bulk_create(events)
    webhooks = list(Webhook.objects.filter(org=org, enabled=True))
    deliveries = WebhookDelivery.objects.bulk_create([
        WebhookDelivery(webhook=webhook, event=event, next_attempt=now)
        for event in events for webhook in webhooks if event.type in webhook.events
    ])
    return [delivery.pk for delivery in deliveries]


def _scan_batch(org: Organization) -> tuple[int, list[int]]:
    """One batch of the org's log, in one transaction: (rows scanned, deliveries to send).
    (0, []) when another worker is scanning the org."""
    with transaction.atomic():
        alerts = OrgAlerts.objects.select_for_update(skip_locked=True).filter(org=org).first()
        if alerts is None:
            return 0, []
        rows = outbox_batch(org_id=org.pk, after_id=alerts.last_scanned_id)
        found = [*runs_stopped(rows), *budget_thresholds(org.pk, rows), *credits_low(alerts, rows)]
        if rows:
            alerts.last_scanned_id = rows[-1].pk
        alerts.save(update_fields=["last_scanned_id", "credits_low", "credits_low_crossings"])
        return len(rows), _fire(org, found)


def alerts_scan(*, org: Organization) -> list[int]:
    """Scans the org's new log rows (bounded per run) and returns the ids of the deliveries to
    send."""
    deliveries: list[int] = []
    for _ in range(MAX_BATCHES_PER_SCAN):
        scanned, due = _scan_batch(org)
        deliveries += due
        if scanned < BATCH_SIZE:
            break
    return deliveries
