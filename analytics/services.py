"""Writes of the analytics app: export sinks, the export outbox, the daily ledger and retention.

The outbox
----------
An export sink's cursor (``last_exported_id``) says every log row of its org up to that id was
delivered. A worker claims the sink with a conditional UPDATE (a lease), reads the rows after the
cursor in id order, sends them, and only then moves the cursor with a conditional UPDATE
(``WHERE last_exported_id = <the cursor it read>``). A failure leaves the cursor where it was and
pins the batch's range, so the retry sends exactly the same rows: nothing is skipped, and a batch
is only ever resent after a failure (where the sinks' event ids and object keys absorb it).

Ids are not visible in order. The gateway inserts rows in group commits from several workers:
a transaction can take id 100 and commit after another transaction committed id 101. A reader
that saw 101, exported it and moved the cursor past 100 would skip 100 forever. So a batch stops
at the first row that is younger than ``EXPORT_SAFETY_LAG`` by the database's own clock
(``RequestLog.inserted``, set when the INSERT statement starts). If every transaction that
writes log rows commits within half the lag of its INSERT, any row still invisible has a larger
``inserted`` than (now - lag/2), and any row with a larger id than it has ``inserted`` above
(now - lag); so every row exported has all smaller ids already visible. Group commits take
milliseconds; the lag costs exports ten seconds of freshness.
"""

import logging
from datetime import UTC, date, datetime, time, timedelta
from itertools import takewhile

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, F, Max, OuterRef, Q, Sum
from django.db.models.functions import Now, TruncDate
from django.utils import timezone

from analytics.exporters import EXPORTERS, ExportError, clean_config, exporter_for, redacted_config
from analytics.ledger import read_with_snapshot
from analytics.models import DailySpend, ExportSink, RequestLog, SpendRollup, StoredResponse
from analytics.partitions import month_partitions, partition_drop, partition_lock
from analytics.selectors import not_rolled_up
from keys.audit import Actor, audit_record
from keys.models import Organization

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_BATCHES_PER_RUN = 20
EXPORT_SAFETY_LAG = timedelta(seconds=10)
# Longer than a batch can take to send (HTTP timeouts are 30 s per request), so a live worker never
# loses its lease; a dead worker's lease simply runs out.
EXPORT_LEASE = timedelta(minutes=5)
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)


# --- sinks --------------------------------------------------------------------------------------

@transaction.atomic
def sink_create(*, org: Organization, type: str, config: dict, actor: Actor) -> ExportSink:
    """A new sink; it starts at the beginning of the org's retained log."""
    sink = ExportSink.objects.create(org=org, type=type, config=clean_config(type, config))
    audit_record(org=org, actor=actor, action="sink.create", target=sink,
                 data={"type": type, "config": redacted_config(sink)})
    return sink


@transaction.atomic
def sink_update(
    *, sink: ExportSink, actor: Actor, config: dict | None = None, enabled: bool | None = None
) -> ExportSink:
    """Changes a sink's config (a secret left out or blank keeps its stored value, so forms never
    have to show secrets) or switches it on or off. A changed sink is retried at once."""
    changes: dict = {}
    if config is not None:
        kept = {name: sink.config[name] for name in EXPORTERS[sink.type].secrets
                if not config.get(name) and sink.config.get(name)}
        changes["config"] = clean_config(sink.type, {**config, **kept})
    if enabled is not None:
        changes["enabled"] = enabled
    for field, value in changes.items():
        setattr(sink, field, value)
    sink.consecutive_failures, sink.next_attempt, sink.last_error = 0, None, ""
    sink.save(update_fields=[*changes, "consecutive_failures", "next_attempt", "last_error"])
    audit_record(org=sink.org, actor=actor, action="sink.update", target=sink,
                 data={"enabled": sink.enabled, "config": redacted_config(sink)})
    return sink


@transaction.atomic
def sink_delete(*, sink: ExportSink, actor: Actor) -> None:
    audit_record(org=sink.org, actor=actor, action="sink.delete", target=sink, data={"type": sink.type})
    sink.delete()


# --- the outbox ---------------------------------------------------------------------------------

def backoff(failures: int, *, base: timedelta = BACKOFF_BASE, cap: timedelta = BACKOFF_CAP) -> timedelta:
    """How long to wait after ``failures`` failures in a row: ``base``, doubling, up to ``cap``."""
    return min(base * 2 ** min(failures - 1, 16), cap)


def outbox_batch(*, org_id: int, after_id: int, up_to_id: int | None = None) -> list[RequestLog]:
    """The org's next log rows after ``after_id`` in id order (at most up to ``up_to_id``) that
    a cursor can move past: those older than the safety lag, up to the first that is not. What
    the exporters send and the budget alerts (webhooks) scan."""
    rows = RequestLog.objects.filter(org_id=org_id, id__gt=after_id)
    if up_to_id is not None:
        rows = rows.filter(id__lte=up_to_id)
    lag = getattr(settings, "NEMO_EXPORT_SAFETY_LAG", EXPORT_SAFETY_LAG)
    rows = rows.annotate(
        ripe=ExpressionWrapper(Q(inserted__lte=Now() - lag), output_field=BooleanField())
    ).order_by("id")[:BATCH_SIZE]
    # Stop at the first row still inside the lag, never skip over it: see the module docstring.
    return list(takewhile(lambda row: row.ripe, rows))


def _next_batch(sink: ExportSink) -> list[RequestLog]:
    return outbox_batch(org_id=sink.org_id, after_id=sink.last_exported_id, up_to_id=sink.pending_last_id)


def sink_export_batch(sink: ExportSink) -> int:
    """Sends the next batch of the sink's outbox; returns how many rows the sink accepted.

    Returns 0 when there is nothing ripe to send, when another worker holds the sink, or when the
    send failed (recorded on the sink with its backoff).
    """
    now = timezone.now()
    claimed = (
        ExportSink.objects.filter(pk=sink.pk, enabled=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + EXPORT_LEASE)
    )
    if not claimed:
        return 0
    sink.refresh_from_db()
    cursor = sink.last_exported_id
    held = ExportSink.objects.filter(pk=sink.pk, last_exported_id=cursor)
    batch = _next_batch(sink)
    if not batch:
        held.update(lease_until=None)
        return 0
    try:
        exporter_for(sink).send(batch)
    except Exception as exc:
        # Whatever went wrong (the sink's answer or a bug of ours), the batch stays in the outbox
        # and the failure is shown on the sink; an exception here would only hold the lease.
        logger.warning("export of %s rows %s-%s to sink %s failed: %s",
                       len(batch), batch[0].pk, batch[-1].pk, sink.pk, exc, exc_info=not isinstance(exc, ExportError))
        held.update(
            consecutive_failures=F("consecutive_failures") + 1,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            next_attempt=timezone.now() + backoff(sink.consecutive_failures + 1),
            pending_last_id=batch[-1].pk,
            lease_until=None,
        )
        return 0
    advanced = held.update(
        last_exported_id=batch[-1].pk,
        pending_last_id=None,
        consecutive_failures=0,
        last_error="",
        last_success=timezone.now(),
        next_attempt=None,
        lease_until=None,
    )
    if not advanced:
        logger.error("sink %s: the cursor moved while rows %s-%s were sent (lease outlived?)",
                     sink.pk, batch[0].pk, batch[-1].pk)
    return len(batch)


def sink_export(sink: ExportSink) -> int:
    """Drains the sink's outbox batch by batch (bounded per run) unless it is off or backing off."""
    if not sink.enabled or sink.next_attempt is not None and sink.next_attempt > timezone.now():
        return 0
    sent = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        count = sink_export_batch(sink)
        sent += count
        if count < BATCH_SIZE:
            break
    return sent


# --- the daily ledger and retention -------------------------------------------------------------

def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


# The rollup's floor moves only once its horizon is this far past the clock reading that went
# with the sequence value it moves to (a margin: a row's id is taken after its statement starts).
ROLLUP_CLOCK_MARGIN = timedelta(seconds=1)
_SPEND_TOTALS = {"cost": Sum("cost"), "calls": Count("id"), "errors": Count("id", filter=Q(status__gte=400)),
                 "prompt_tokens": Sum("prompt_tokens"),
                 "completion_tokens": Sum("completion_tokens")}
_LEDGER_TOTALS = tuple(_SPEND_TOTALS)
_SEQUENCE_VALUE_SQL = (
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
    f"FROM {RequestLog._meta.db_table}_id_seq"
)
# The database's clock, the start of the oldest transaction still open in this database other
# than this one (every row written before both was committed, or rolled back, by now), and how
# many sessions this role may not see into (another role's, without pg_read_all_stats: their
# state, transaction start and even backend type read as NULL). Clients only: the autovacuum
# writes no log rows.
_HORIZON_SQL = (
    "SELECT clock_timestamp(), min(xact_start), count(*) FILTER (WHERE backend_type IS NULL) "
    "FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND (backend_type = 'client backend' OR backend_type IS NULL)"
)


def _rollup_state() -> SpendRollup:
    """The rollup's one row, locked: rollups and repairs of the ledger take turns on it."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    SpendRollup.objects.get_or_create(pk=1, defaults={"horizon": epoch, "last_read": epoch})
    return SpendRollup.objects.select_for_update().get(pk=1)


def _sequence_then_horizon() -> tuple[int, datetime, datetime | None]:
    """The id sequence's value, then the clock and the horizon read after it (None: it cannot be
    known). (``inserted`` is when the writing statement started, and its id is taken after that.)"""
    if connection.vendor != "postgresql":
        # One process, whose commits of log rows take turns with this read: none is half done.
        def read() -> tuple[int, datetime, datetime]:
            now = timezone.now()
            return RequestLog.objects.aggregate(last=Max("id"))["last"] or 0, now, now
        return read_with_snapshot(read)[0]
    with connection.cursor() as cursor:
        cursor.execute(_SEQUENCE_VALUE_SQL)
        sequence = cursor.fetchone()[0]
        cursor.execute(_HORIZON_SQL)
        clock, oldest, hidden = cursor.fetchone()
    if hidden:
        # A session whose transaction may be older than any seen could still commit rows below
        # the horizon: it does not move (reads stay exact, adding more rows past it).
        logger.warning("the spend rollup waits: %d sessions of the database are another role's, which this one "
                       "may not see (grant it pg_read_all_stats, or use one role)", hidden)
        return sequence, clock, None
    return sequence, clock, min(clock, oldest) if oldest else clock


def _add_to_ledger(increments: list[dict]) -> int:
    """Adds each (org, day, team, key, model) total to its DailySpend row, or writes a new one."""
    found = {}
    for org_id, day in {(each["org_id"], each["day"]) for each in increments}:
        for row in DailySpend.objects.filter(org_id=org_id, day=day):
            found.setdefault((row.org_id, row.day, row.team_id, row.key_id, row.model), row)
    changed, new = [], []
    for each in increments:
        row = found.get((each["org_id"], each["day"], each["team_id"], each["key_id"], each["model"]))
        if row is None:
            new.append(DailySpend(**each))
            continue
        for name in _LEDGER_TOTALS:
            setattr(row, name, getattr(row, name) + each[name])
        changed.append(row)
    DailySpend.objects.bulk_update(changed, list(_LEDGER_TOTALS))
    DailySpend.objects.bulk_create(new)
    return len(increments)


@transaction.atomic
def spend_rollup() -> int:
    """Rolls the log rows written since the last rollup into DailySpend (added to their org,
    team, key, model and UTC day) and moves the horizon (SpendRollup); returns how many groups it
    added to. Reads of spend add the rows past the horizon, so they are exact at any moment.

    The horizon is the database's clock, or the start of the oldest other transaction still open
    if earlier: a row written before it was committed, so it is rolled up now or never was. The
    rows read are those above the floor id, through the primary key: the few written since the
    last rollup. Run inside a transaction that writes log rows, it counts that transaction's rows
    written so far (they are visible to it), and the later ones stay past the horizon.
    """
    state = _rollup_state()
    sequence, clock, horizon = _sequence_then_horizon()
    if horizon is None or horizon <= state.horizon:
        return 0
    rows = RequestLog.objects.filter(id__gt=state.floor_id, inserted__gte=state.horizon, inserted__lt=horizon)
    increments = list(
        rows.values("org_id", "team_id", "key_id", "model", day=TruncDate("created", tzinfo=UTC))
        .annotate(**_SPEND_TOTALS).order_by()
    )
    added = _add_to_ledger(increments)
    # A row at or after the new horizon was written by a statement that started after last_read,
    # so it took an id above last_seq, read before last_read.
    if horizon > state.last_read + ROLLUP_CLOCK_MARGIN:
        state.floor_id = state.last_seq
    state.horizon, state.last_seq, state.last_read = horizon, sequence, clock
    state.save()
    return added


@transaction.atomic
def daily_spend_settle(*, day: date, org_ids: list[int] | None = None) -> int:
    """Rolls up (spend_rollup), then replaces a UTC day's rows of the daily ledger (DailySpend)
    with the request log's totals per org, team, key and model of its rows behind the horizon, and
    returns how many rows it wrote: a repair, which running again writes the same rows.

    Orgs without log rows that day are left alone: either they had no calls, or the day was pruned
    and the ledger is all that is left of it. So is a day before the retention cutoff, which a
    prune may have taken part of (it keeps the rows past the horizon). Repairs and prunes take
    turns on the rollup's row, locked by spend_rollup.
    """
    spend_rollup()
    if _day_bounds(day)[0] < retention_cutoff():
        return 0
    state = _rollup_state()
    start, end = _day_bounds(day)
    logs = RequestLog.objects.filter(created__gte=start, created__lt=end)
    # Found org by org through the (org, created) index rather than by scanning the day's rows.
    orgs = Organization.objects.filter(Exists(logs.filter(org=OuterRef("pk"))))
    if org_ids is not None:
        orgs = orgs.filter(pk__in=org_ids)
    active = list(orgs.values_list("pk", flat=True))
    DailySpend.objects.filter(day=day, org_id__in=active).delete()
    rolled = logs.filter(org_id__in=active).exclude(not_rolled_up(state))
    totals = rolled.values("org_id", "team_id", "key_id", "model").annotate(**_SPEND_TOTALS).order_by()
    return len(DailySpend.objects.bulk_create([DailySpend(day=day, **group) for group in totals]))


def retention_cutoff(now: datetime | None = None) -> datetime:
    """The start of the month NEMO_LOG_RETENTION_MONTHS months before this one (UTC)."""
    now = (now or timezone.now()).astimezone(UTC)
    months = now.year * 12 + now.month - 1 - settings.NEMO_LOG_RETENTION_MONTHS
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def request_logs_prune(*, now: datetime | None = None) -> int:
    """Deletes log rows older than the retention period and returns how many went: on
    PostgreSQL each month wholly past it as a partition dropped whole (``_old_months_drop``), the
    rest (a month that cannot go whole yet, rows of the DEFAULT partition, SQLite) a whole UTC day
    of one org at a time, oldest first.

    A day goes only when every enabled sink of its org has exported all its rows. The log is
    rolled up first, and only a day's rows behind the rollup's horizon go (those are in
    DailySpend; one written since stays for the next prune), under the rollup's lock, so the
    ledger covers exactly what left the log, and spend, credits and the dashboard read the same
    before and after.
    """
    cutoff = retention_cutoff(now)
    spend_rollup()
    deleted = _old_months_drop(cutoff)
    old = RequestLog.objects.filter(created__lt=cutoff)
    for org_id in Organization.objects.filter(Exists(old.filter(org=OuterRef("pk")))).values_list("pk", flat=True):
        cursors = ExportSink.objects.filter(org_id=org_id, enabled=True).values_list("last_exported_id", flat=True)
        exported_up_to = min(cursors, default=None)
        days = list(
            old.filter(org_id=org_id).annotate(day=TruncDate("created", tzinfo=UTC))
            .values_list("day", flat=True).distinct().order_by("day")
        )
        for day in days:
            start, end = _day_bounds(day)
            day_rows = RequestLog.objects.filter(org_id=org_id, created__gte=start, created__lt=end)
            if exported_up_to is not None and day_rows.filter(id__gt=exported_up_to).exists():
                break  # days go in order, so the log always starts with a whole day
            with transaction.atomic():
                deleted += day_rows.exclude(not_rolled_up(_rollup_state())).delete()[0]
    stored_responses_prune(cutoff)
    return deleted


def _old_months_drop(cutoff: datetime) -> int:
    """Drops the partitions of the months wholly before ``cutoff``, oldest first, while each one's
    rows are all rolled up and exported by every enabled sink of their org (as the day-by-day
    prune asks of each day), and returns how many rows went. A month that cannot go yet stops it:
    the day-by-day prune takes what it may of that month. Checked with the month's partition
    locked against inserts and under the rollup's lock, so no row goes unaccounted."""
    cursors: dict[int, int] = {}
    for org_id, exported_up_to in ExportSink.objects.filter(enabled=True).values_list("org_id", "last_exported_id"):
        cursors[org_id] = min(exported_up_to, cursors.get(org_id, exported_up_to))
    deleted = 0
    for partition in month_partitions():
        if partition.end > cutoff:
            break
        month = RequestLog.objects.filter(created__gte=partition.start, created__lt=partition.end)
        try:
            with transaction.atomic():
                state = _rollup_state()
                partition_lock(partition)
                if month.filter(not_rolled_up(state)).exists() or any(
                        month.filter(org_id=org_id, id__gt=exported_up_to).exists()
                        for org_id, exported_up_to in cursors.items()):
                    break
                deleted += partition_drop(partition)
        except OperationalError as exc:
            logger.warning("the request log's partition %s was not dropped (%s): the next prune tries again",
                           partition.name, exc)
            break
    return deleted


def stored_responses_prune(cutoff: datetime) -> int:
    """Stored Responses API responses are kept no longer than the log's retention."""
    return StoredResponse.objects.filter(created__lt=cutoff).delete()[0]
