"""Spend read from the rollup (DailySpend plus the rows past its horizon) is the log's exact sum.

Every read of spend is compared with a plain SUM over the log rows, for a varied log: several
orgs, teams, keys, models and days, rows rolled up and rows written after the last rollup
(some of them dated into days already rolled up), and windows that cut days in two.
"""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import import_module

import psycopg
import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate

from analytics.models import DailySpend, RequestLog, SpendRollup
from analytics.selectors import settled_spend_micros, spend_rows, spend_total, use_by_key
from analytics.services import daily_spend_settle, request_logs_prune, spend_rollup
from analytics.tasks import roll_up_spend
from dashboard.selectors import credit_balance
from keys.models import Team, VirtualKey
from keys.services import team_create
from money import to_micros
from tests.analytics.factories import make_key, make_log

pytestmark = pytest.mark.django_db

START = datetime(2026, 9, 1, tzinfo=UTC)
MODELS = ("gemini-2.5-flash", "gpt-4o", "claude-sonnet-4")
WINDOWS = [
    (None, None),
    (START + timedelta(days=3), START + timedelta(days=9)),
    (START + timedelta(days=2, hours=7, minutes=13), START + timedelta(days=8, hours=19, seconds=1)),
    (START + timedelta(days=4, hours=2), START + timedelta(days=4, hours=20)),
    (START + timedelta(days=5, hours=6), None),
    (None, START + timedelta(days=6, hours=1)),
    (START + timedelta(days=6), START + timedelta(days=6)),
]


def write_calls(orgs_keys: list, count: int, rng: random.Random, *, days: int = 12) -> None:
    for _ in range(count):
        org, key = rng.choice(orgs_keys)
        make_log(org, key, model=rng.choice(MODELS),
                 created=START + timedelta(seconds=rng.randrange(days * 86400)),
                 cost=Decimal(rng.randrange(0, 90_000)) / 1_000_000,
                 prompt_tokens=rng.randrange(1000), completion_tokens=rng.randrange(500))


def raw(org, group_by: str, since, until) -> list[dict]:
    """The answer as a SUM over every log row of the window: what the rollup must equal."""
    rows = RequestLog.objects.filter(org=org)
    if since is not None:
        rows = rows.filter(created__gte=since)
    if until is not None:
        rows = rows.filter(created__lt=until)
    group = {"day": TruncDate("created", tzinfo=UTC), "key": F("key_id"), "team": F("team_id"),
             "model": F("model")}[group_by]
    found = rows.values(group=group).annotate(cost=Sum("cost"), calls=Count("id"), prompt_tokens=Sum("prompt_tokens"),
                           completion_tokens=Sum("completion_tokens")).order_by()
    names = {key.pk: f"{key.name} ({key.prefix})" for key in VirtualKey.objects.filter(org=org)}
    teams = dict(Team.objects.filter(org=org).values_list("pk", "name"))
    label = {"day": lambda g: g.isoformat(), "model": lambda g: g,
             "key": lambda g: names.get(g, "(no key)"), "team": lambda g: teams.get(g, "(no team)")}[group_by]
    return [{"group": label(row["group"]), "cost": row["cost"].quantize(Decimal("0.000001")), "calls": row["calls"],
             "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]} for row in found]


def by_group(rows: list[dict]) -> dict:
    return {row["group"]: row for row in rows}


def assert_exact(orgs) -> None:
    for org in orgs:
        for since, until in WINDOWS:
            for group_by in ("day", "key", "team", "model"):
                assert by_group(spend_rows(org=org, group_by=group_by, since=since, until=until)) == by_group(
                    raw(org, group_by, since, until)), (org.name, group_by, since, until)
        everything = RequestLog.objects.filter(org=org).aggregate(total=Sum("cost"))["total"] or Decimal(0)
        assert spend_total(org_id=org.pk) == everything.quantize(Decimal("0.000001"))
        assert credit_balance(org=org) == Decimal("5.00") - everything


@pytest.fixture
def tenants(org, other_org, system_actor):
    research = team_create(org=org, name="research", actor=system_actor)
    ops = team_create(org=org, name="ops", actor=system_actor)
    keys = [make_key(org, "planner", team=research), make_key(org, "writer", team=research),
            make_key(org, "pager", team=ops), make_key(org, "loner"), make_key(other_org, "theirs")]
    return [(org, key) for key in keys[:4]] + [(org, None), (other_org, keys[4])]


def test_the_rollup_equals_a_sum_over_the_log_before_and_after_more_rows_arrive(org, other_org, tenants):
    rng = random.Random(24)
    write_calls(tenants, 400, rng)
    assert_exact([org, other_org])  # nothing rolled up yet: all of it is the tail

    assert roll_up_spend() > 0
    assert DailySpend.objects.filter(org=org).count() > 0
    assert_exact([org, other_org])

    write_calls(tenants, 150, rng)  # after the rollup, into days already rolled up too
    assert_exact([org, other_org])

    spend_rollup()
    write_calls(tenants, 60, rng, days=3)
    assert_exact([org, other_org])


def test_a_rollup_folds_only_the_rows_written_since_the_last_one(org, tenants):
    rng = random.Random(7)
    write_calls(tenants, 50, rng)
    spend_rollup()
    rolled = {(row.day, row.key_id, row.model): row.calls for row in DailySpend.objects.filter(org=org)}

    assert spend_rollup() == 0  # nothing new
    make_log(org, tenants[0][1], model="gpt-4o", created=START + timedelta(days=1), cost=Decimal("0.25"))
    assert spend_rollup() == 1

    after = {(row.day, row.key_id, row.model): row.calls for row in DailySpend.objects.filter(org=org)}
    cell = (START.date() + timedelta(days=1), tenants[0][1].pk, "gpt-4o")
    assert after[cell] == rolled.get(cell, 0) + 1
    assert {k: v for k, v in after.items() if k != cell} == {k: v for k, v in rolled.items() if k != cell}
    assert_exact([org])


def test_budget_counters_are_rebuilt_from_the_rollup(org, tenants):
    rng = random.Random(3)
    write_calls(tenants, 200, rng)
    spend_rollup()
    write_calls(tenants, 40, rng)
    since = START + timedelta(days=5)
    planner, team_id = tenants[0][1], tenants[0][1].team_id

    def raw_micros(**filters) -> int:
        return to_micros(RequestLog.objects.filter(org=org, **filters).aggregate(t=Sum("cost"))["t"] or 0)

    assert settled_spend_micros(org_id=org.pk, since=None) == raw_micros()
    assert settled_spend_micros(org_id=org.pk, since=since) == raw_micros(created__gte=since)
    assert settled_spend_micros(org_id=org.pk, since=since, key_id=planner.pk) == raw_micros(
        created__gte=since, key=planner)
    assert settled_spend_micros(org_id=org.pk, since=None, team_id=team_id) == raw_micros(team_id=team_id)


def test_pruned_days_stay_in_the_ledger_and_rows_past_the_horizon_are_kept(org, tenants, settings):
    settings.NEMO_LOG_RETENTION_MONTHS = 1
    rng = random.Random(5)
    write_calls(tenants, 120, rng)
    before = {group: spend_rows(org=org, group_by=group) for group in ("day", "key", "model")}

    assert request_logs_prune(now=START + timedelta(days=75)) > 0

    assert not RequestLog.objects.filter(org=org).exists()
    assert {group: spend_rows(org=org, group_by=group) for group in ("day", "key", "model")} == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_row_committed_after_a_rollup_began_is_not_lost(org, tenants):
    """A transaction that wrote a log row and is still open holds the horizon back: the row,
    invisible to the rollup, is counted from the tail once committed, and rolled up later."""
    rng = random.Random(11)
    write_calls(tenants, 30, rng)
    template = RequestLog.objects.filter(org=org).first()
    columns = [field.column for field in RequestLog._meta.concrete_fields if field.column not in ("id", "inserted")]
    copied = ", ".join("request_id || '-late'" if column == "request_id" else f'"{column}"' for column in columns)
    quoted = ", ".join(f'"{column}"' for column in columns)
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")},
                         autocommit=False) as other:
        other.execute(f"INSERT INTO analytics_requestlog ({quoted}) SELECT {copied} FROM analytics_requestlog "
                      "WHERE id = %s", [template.pk])
        spend_rollup()  # the other transaction is still open
        write_calls(tenants, 5, rng)
        spend_rollup()
        other.commit()
    assert RequestLog.objects.filter(request_id=f"{template.request_id}-late").exists()
    assert_exact([org])
    spend_rollup()
    state = SpendRollup.objects.get()
    assert not RequestLog.objects.filter(id__gt=state.floor_id, inserted__gte=state.horizon).exists()
    assert_exact([org])
    assert settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_prune_leaves_the_rows_past_the_horizon_for_the_next_one(org, tenants, settings):
    """A row of an old day written while another transaction was open is past the horizon: it is
    in no ledger row yet, so the prune keeps it, and the next prune takes it once rolled up."""
    settings.NEMO_LOG_RETENTION_MONTHS = 1
    write_calls(tenants, 40, random.Random(9))
    spend_rollup()
    before = spend_total(org_id=org.pk)
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")},
                         autocommit=False) as other:
        other.execute("SELECT 1")  # an open transaction holds the horizon at its start
        late = make_log(org, tenants[0][1], created=START + timedelta(days=2), cost=Decimal("0.5"))

        request_logs_prune(now=START + timedelta(days=75))

        assert list(RequestLog.objects.filter(org=org).values_list("pk", flat=True)) == [late.pk]
        assert spend_total(org_id=org.pk) == before + Decimal("0.5")
        other.rollback()
    request_logs_prune(now=START + timedelta(days=75))
    assert not RequestLog.objects.filter(org=org).exists()
    assert spend_total(org_id=org.pk) == before + Decimal("0.5")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_horizon_waits_while_another_roles_session_hides_its_transaction():
    """A role that may not see into another role's session (no pg_read_all_stats) cannot know
    when that session's transaction began: the horizon does not move past it, so no row it may
    still commit is skipped. The rollup's own role sees the session once it may."""
    from analytics.services import _sequence_then_horizon

    suffix = random.randrange(10**9)
    writer, reader = f"rollup_writer_{suffix}", f"rollup_reader_{suffix}"
    params = connection.get_connection_params()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {writer} LOGIN")
        cursor.execute(f"CREATE ROLE {reader}")
        cursor.execute(f"GRANT SELECT ON SEQUENCE {RequestLog._meta.db_table}_id_seq TO {reader}")
    try:
        with psycopg.connect(dbname=params["dbname"], host=params.get("host"), port=params.get("port"),
                             user=writer, autocommit=False) as other:
            other.execute("SELECT 1")  # a transaction open in the writer's session
            assert _sequence_then_horizon()[2] is not None  # (a superuser sees every session)
            with connection.cursor() as cursor:
                cursor.execute(f"SET ROLE {reader}")
            try:
                assert _sequence_then_horizon()[2] is None
            finally:
                with connection.cursor() as cursor:
                    cursor.execute("RESET ROLE")
            other.rollback()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"REVOKE ALL ON SEQUENCE {RequestLog._meta.db_table}_id_seq FROM {reader}")
            cursor.execute(f"DROP ROLE {reader}")
            cursor.execute(f"DROP ROLE {writer}")


def write_statuses(orgs_keys: list, count: int, rng: random.Random, *, days: int = 12) -> None:
    for _ in range(count):
        org, key = rng.choice(orgs_keys)
        make_log(org, key, model=rng.choice(MODELS), status=rng.choice((200, 200, 200, 402, 429, 502)),
                 created=START + timedelta(seconds=rng.randrange(days * 86400)), cost=Decimal("0.001"))


def assert_use_exact(org) -> None:
    """Each key's calls and failures since each window's start, as counted in the log."""
    key_ids = list(VirtualKey.objects.filter(org=org).values_list("pk", flat=True))
    for since, _ in WINDOWS:
        rows = RequestLog.objects.filter(org=org, key_id__in=key_ids)
        if since is not None:
            rows = rows.filter(created__gte=since)
        counted = {row["key_id"]: (row["calls"], row["errors"]) for row in rows.values("key_id").annotate(
            calls=Count("id"), errors=Count("id", filter=Q(status__gte=400))).order_by()}
        found = use_by_key(org=org, key_ids=key_ids, since=since)
        assert {key_id: (use.calls, use.errors) for key_id, use in found.items()} == {
            key_id: counted.get(key_id, (0, 0)) for key_id in key_ids}, since


def test_each_keys_calls_and_failures_are_the_logs_before_and_after_a_rollup_and_a_repair(org, tenants):
    rng = random.Random(23)
    write_statuses(tenants, 300, rng)
    assert_use_exact(org)

    spend_rollup()
    assert DailySpend.objects.filter(org=org, errors__gt=0).exists()
    write_statuses(tenants, 100, rng)  # past the horizon, into days rolled up too
    assert_use_exact(org)

    spend_rollup()
    assert daily_spend_settle(day=(START + timedelta(days=4)).date()) > 0
    assert_use_exact(org)


def test_the_migration_counts_the_failures_of_the_days_rolled_up_before_it(org, tenants):
    rng = random.Random(17)
    write_statuses(tenants, 200, rng)
    spend_rollup()
    write_statuses(tenants, 40, rng)  # past the horizon: no ledger row holds them yet
    rolled = dict(DailySpend.objects.values_list("pk", "errors"))
    DailySpend.objects.update(errors=0)  # as the column's default leaves every row

    import_module("analytics.migrations.0016_daily_spend_errors").count_rolled_up_failures(django_apps, None)

    assert dict(DailySpend.objects.values_list("pk", "errors")) == rolled
    assert_use_exact(org)
