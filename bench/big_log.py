"""``python -m bench.big_log``: the reads of a big request log, timed.

Fills the request log to ``--rows`` rows (one org over ``--days`` days holding all but the small
orgs' share, and ``--small-orgs`` orgs of ``--small-rows`` rows each), rolls it up, writes a
tail of rows after the rollup (what a minute of traffic leaves past the horizon), then times
the API's reads of spend, credits and the log, a counter rebuild, the dashboard's /spend/ and the
admin's request-log list (through Django's test client, signed in: server time), and prints a
table; ``--reuse`` times the log an earlier run left instead. Not a
test: nothing here asserts a time. See bench/README.md ("Reads of a big log").

It EMPTIES the request log, the daily ledger and the rollup of the database it is pointed at
(``--database-url``, default ``$DATABASE_URL``): point it at a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODELS = ("gemini-2.5-flash", "gpt-4o", "claude-sonnet-4", "gpt-4o-mini")
BATCH = 250_000
RARE_ROWS = 200


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.big_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="log rows in all (default 3,000,000)")
    parser.add_argument("--days", type=int, default=60, help="days the big org's rows span (default 60)")
    parser.add_argument("--small-orgs", type=int, default=20)
    parser.add_argument("--small-rows", type=int, default=2_000, help="rows of each small org")
    parser.add_argument("--tail", type=int, default=3_000, help="rows written after the last rollup")
    parser.add_argument("--keys", type=int, default=24, help="keys of the big org (over four teams)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each read (the median is shown)")
    parser.add_argument("--reuse", action="store_true",
                        help="time the log an earlier run filled (its big org) instead of emptying and filling it")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    return parser.parse_args()


def _django(database_url: str) -> None:
    if not database_url.startswith("postgres"):
        sys.exit("bench.big_log needs PostgreSQL: pass --database-url postgres://…")
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "bench-big-log-not-a-secret")
    os.environ.setdefault("CELERY_BROKER_URL", "")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nemo.settings")
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- filling the log ----------------------------------------------------------------------------

def _empty() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE analytics_requestlog, billing_dailyspend, analytics_spendrollup")


def _tenant(name: str, keys: int, teams: int):
    """An org with its sign-up credits, ``teams`` teams and ``keys`` keys spread over them."""
    from billing.services import credits_grant, organization_create_with_credits
    from keys.audit import Actor
    from keys.services import team_create, virtual_key_create

    actor = Actor.system("bench")
    org = organization_create_with_credits(name=name, actor=actor)
    credits_grant(org=org, amount=1_000_000, reason="bench", actor=actor)
    made = [team_create(org=org, name=f"team {n}", actor=actor) for n in range(teams)]
    return org, [virtual_key_create(org=org, name=f"key {n}", team=made[n % teams] if made else None,
                                    actor=actor)[0] for n in range(keys)]


def _tenant_key(org, name: str):
    from keys.audit import Actor
    from keys.services import virtual_key_create

    return virtual_key_create(org=org, name=name, actor=Actor.system("bench"))[0]


def _insert_sql() -> str:
    """One INSERT … SELECT over generate_series: every row built by the database itself, the
    key (and its team and prefix) and the model by the row's number, the time spread at random."""
    from analytics.models import RequestLog

    values = {
        "request_id": "'big-' || %(tag)s || '-' || g", "org_id": "%(org)s",
        "key_id": "(%(keys)s::bigint[])[1 + g %% %(nkeys)s]",
        "team_id": "(%(teams)s::bigint[])[1 + g %% %(nkeys)s]",
        "key_prefix": "(%(prefixes)s::text[])[1 + g %% %(nkeys)s]",
        "run_id": "CASE WHEN g %% 4 = 0 THEN 'run-' || (g / 40) ELSE '' END",
        "endpoint": "'chat.completions'", "model": "(%(models)s::text[])[1 + (g / 7) %% %(nmodels)s]",
        "deployment": "'dep-' || (g %% 3)", "provider": "'vertex'",
        "status": "CASE WHEN g %% 50 = 0 THEN 502 ELSE 200 END",
        "error": "''", "error_code": "''", "error_param": "''", "error_type": "''", "run_budget": "NULL",
        "attempts": "'[]'::jsonb", "stream": "g %% 2 = 0", "latency_ms": "100 + g %% 900", "ttft_ms": "50",
        "prompt_tokens": "100 + g %% 4000", "completion_tokens": "g %% 800", "cached_tokens": "0",
        "cost": "round((random() * 0.02)::numeric, 6)", "overshoot": "0", "finish_reason": "'stop'",
        "tool_calls": "'[]'::jsonb", "tools_offered": "'[]'::jsonb", "prompt_meta": "'{}'::jsonb",
        "cache": "CASE WHEN g %% 400 = 0 THEN 'hit' WHEN g %% 20 = 1 THEN 'miss' ELSE 'skip' END",
        "request_body": "NULL", "response_body": "NULL", "tags": "NULL",
        "created": "%(end)s::timestamptz - random() * (%(days)s * interval '1 day')",
    }
    columns = [field.column for field in RequestLog._meta.concrete_fields if field.column not in ("id", "inserted")]
    missing = set(columns) - set(values)
    if missing:
        raise SystemExit(f"bench.big_log does not know how to fill {sorted(missing)}")
    return (f"INSERT INTO {RequestLog._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values[column] for column in columns)} "
            "FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g")


def _fill(org, keys, rows: int, *, tag: str, end: datetime, days: float) -> None:
    from django.db import connection

    sql = _insert_sql()
    params = {"tag": tag, "org": org.pk, "keys": [k.pk for k in keys], "teams": [k.team_id for k in keys],
              "prefixes": [k.prefix for k in keys], "nkeys": len(keys), "models": list(MODELS),
              "nmodels": len(MODELS), "end": end, "days": days}
    for first in range(0, rows, BATCH):
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "first": first, "last": min(rows, first + BATCH) - 1})


# --- timing -------------------------------------------------------------------------------------

def _timed(run, repeat: int) -> list[float]:
    run()  # warm: the first read of a cold cache is not what a busy service sees
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        found.append((time.perf_counter() - started) * 1000)
    return found


def _api(client, headers):
    def get(path: str):
        def run():
            response = client.get(path, secure=True, **headers)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.content[:300]!r}")
            return response.json()
        return run
    return get


def _second_page(get, path: str):
    cursor = get(path)()["next"]

    def run():
        return get(f"{path}&cursor={cursor}")()
    return run


def _rebuild_all(names: list[str], now: datetime):
    """A first call after the counters are lost: CounterRebuilds reads them all at once."""
    from counters import MemoryCounterStore
    from gateway.rebuild import CounterRebuilds

    def run():
        asyncio.run(CounterRebuilds(MemoryCounterStore())(names, now))
    return run


def _raw_sum(org_id: int):
    """What a read of spend did before the rollup: a SUM over every log row of the org."""
    from django.db.models import Sum

    from analytics.models import RequestLog

    def run():
        return RequestLog.objects.filter(org_id=org_id).aggregate(total=Sum("cost"))
    return run


def _fill_and_roll_up(options: argparse.Namespace, now: datetime):
    """The big org (and its seldom-used key) and the small orgs filled, rolled up, a tail after."""
    from django.db import connection

    from analytics.services import spend_rollup

    small_total = options.small_orgs * options.small_rows
    big_rows = options.rows - small_total - options.tail - RARE_ROWS
    if big_rows < 1:
        raise SystemExit("--rows is smaller than the small orgs' rows and the tail")
    tag = now.strftime("%H%M%S")
    print(f"filling the log: {big_rows:,} rows in one org over {options.days} days, {options.small_orgs} orgs "
          f"of {options.small_rows:,}, then a tail of {options.tail:,}", flush=True)
    _empty()
    started = time.perf_counter()
    big, keys = _tenant(f"big {tag}", options.keys, 4)
    _fill(big, keys, big_rows, tag=f"{tag}b", end=now, days=options.days)
    # A key of the big org that is seldom used: its rows are far apart in the org's log.
    rare = _tenant_key(big, "rare")
    _fill(big, [rare], RARE_ROWS, tag=f"{tag}r", end=now, days=options.days)
    for n in range(options.small_orgs):
        org, small_keys = _tenant(f"small {n} {tag}", 3, 1)
        _fill(org, small_keys, options.small_rows, tag=f"{tag}s{n}", end=now, days=options.days)
    filled = time.perf_counter() - started
    with connection.cursor() as cursor:
        # What autovacuum does to a table that was inserted into: statistics and the visibility map.
        cursor.execute("VACUUM ANALYZE analytics_requestlog")
    started = time.perf_counter()
    spend_rollup()
    first_rollup = time.perf_counter() - started
    # As in service, where the rollup runs every minute: the floor the tail is read above moves
    # once a rollup's horizon is past the previous one's clock reading (by a second at least).
    for _ in range(2):
        time.sleep(1.5)
        spend_rollup()
    time.sleep(1.5)
    _fill(big, keys, options.tail, tag=f"{tag}t", end=now, days=1 / 1440)
    started = time.perf_counter()
    spend_rollup()
    minute_rollup = time.perf_counter() - started
    _fill(big, keys, options.tail, tag=f"{tag}u", end=now, days=1 / 1440)  # the tail the reads add
    print(f"{_rows():,} rows written in {filled:.1f} s; first rollup {first_rollup:.1f} s, "
          f"a minute's rollup ({options.tail:,} rows) {minute_rollup * 1000:.0f} ms", flush=True)
    return big, keys, rare


def _filled():
    """The big org of an earlier run (``--reuse``), its keys and its seldom-used key."""
    from keys.models import Organization

    big = Organization.objects.filter(name__startswith="big ").latest("pk")
    keys = list(big.keys.exclude(name="rare").order_by("pk"))
    print(f"reusing the log of {big.name!r}: {_rows():,} rows", flush=True)
    return big, keys, big.keys.get(name="rare")


def _rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM analytics_requestlog")
        return cursor.fetchone()[0]


def _pages(client):
    """A page of the dashboard or the admin, as its signed-in user gets it (server time)."""
    def get(path: str):
        def run():
            response = client.get(path, secure=True)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.content[:300]!r}")
            return response
        return run
    return get


def _signed_in(org, tag: str):
    """Clients of the org's owner (the dashboard) and of a superuser of the support site (the admin)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from keys.audit import Actor
    from keys.models import Membership
    from keys.services import membership_add

    users = get_user_model().objects
    owner = users.create_user(username=f"bench-owner-{tag}", email=f"bench-owner-{tag}@example.com")
    membership_add(org=org, user=owner, role=Membership.Role.OWNER, actor=Actor.system("bench"))
    staff = users.create_superuser(username=f"bench-staff-{tag}", email=f"bench-staff-{tag}@example.com",
                                   password=None)
    dashboard, support = Client(), Client()
    dashboard.force_login(owner)
    support.force_login(staff)
    return _pages(dashboard), _pages(support)


def main() -> None:
    options = _options()
    _django(options.database_url)
    from django.test import Client
    from django.test.utils import override_settings

    from billing.reservations import bucket_name, credits_bucket_name
    from keys.audit import Actor
    from keys.services import org_token_create

    now = datetime.now(UTC)
    big, keys, rare = _filled() if options.reuse else _fill_and_roll_up(options, now)

    _, secret = org_token_create(org=big, name="bench", actor=Actor.system("bench"))
    get = _api(Client(), {"HTTP_AUTHORIZATION": f"Bearer {secret}"})
    page, admin_page = _signed_in(big, now.strftime("%H%M%S%f"))
    since = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    since = since.replace("+00:00", "Z")
    # A window that cuts its first day in two: that day's rolled-up rows are read from the log.
    cut = (now - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    prefix = keys[0].prefix
    counters = [credits_bucket_name(big.pk), bucket_name(big.pk, "org", big.pk, "monthly", now),
                bucket_name(big.pk, "team", keys[0].team_id, "none", now),
                bucket_name(big.pk, "key", keys[0].pk, "daily", now)]
    a_call = big.request_logs.order_by("-id").values_list("request_id", "run_id").first()
    a_run = big.request_logs.exclude(run_id="").order_by("-id").values_list("run_id", flat=True).first()
    changelist = "/admin/analytics/requestlog/"
    reads = [
        ("/spend/ (the dashboard's page)", page("/spend/")),
        ("/api/v1/spend?group_by=day (30 days)", get(f"/api/v1/spend?group_by=day&since={since}")),
        ("/api/v1/spend?group_by=key (30 days)", get(f"/api/v1/spend?group_by=key&since={since}")),
        ("/api/v1/spend?group_by=model (30 days)", get(f"/api/v1/spend?group_by=model&since={since}")),
        ("/api/v1/spend?group_by=day (30 days from now, a cut day)", get(f"/api/v1/spend?group_by=day&since={cut}")),
        ("/api/v1/spend?group_by=team (all time)", get("/api/v1/spend?group_by=team")),
        ("/api/v1/credits", get("/api/v1/credits")),
        ("counter rebuild: credits, org, team, key at once", _rebuild_all(counters, now)),
        ("counter rebuild: the credits alone", _rebuild_all(counters[:1], now)),
        ("/api/v1/logs (first page)", get("/api/v1/logs")),
        ("/api/v1/logs?key=<prefix> (first page)", get(f"/api/v1/logs?key={prefix}")),
        ("/api/v1/logs?key=<prefix> (second page)", _second_page(get, f"/api/v1/logs?key={prefix}")),
        (f"/api/v1/logs?key=<prefix of a key with {RARE_ROWS} rows>", get(f"/api/v1/logs?key={rare.prefix}")),
        ("/api/v1/logs?cache=hit (first page; 1 row in 400)", get("/api/v1/logs?cache=hit")),
        ("/api/v1/logs?cache=miss (second page)", _second_page(get, "/api/v1/logs?cache=miss")),
        ("/api/v1/logs?cache=skip (first page)", get("/api/v1/logs?cache=skip")),
        ("admin request log: the list", admin_page(changelist)),
        ("admin request log: second page", admin_page(f"{changelist}?p=2")),
        ("admin request log: search a request id", admin_page(f"{changelist}?q={a_call[0]}")),
        ("admin request log: search a key as shown", admin_page(f"{changelist}?q=sk-nemo-{prefix}%E2%80%A6")),
        (f"admin request log: search a key with {RARE_ROWS} rows", admin_page(f"{changelist}?q={rare.prefix}")),
        ("admin request log: search a run id", admin_page(f"{changelist}?q={a_run}")),
        ("admin request log: search a model", admin_page(f"{changelist}?q={MODELS[1]}")),
        ("admin request log: search nothing found", admin_page(f"{changelist}?q=no-such-call")),
        ("admin request log: status=502", admin_page(f"{changelist}?status=502")),
        ("admin request log: cache=hit", admin_page(f"{changelist}?cache=hit")),
        ("admin request log: last 24 hours, model", admin_page(f"{changelist}?since=24h&model={MODELS[0]}")),
        ("admin request log: one call's page", admin_page(
            f"{changelist}{big.request_logs.order_by('-id').values_list('pk', flat=True).first()}/change/")),
        ("for comparison: a raw SUM over the org's rows", _raw_sum(big.pk)),
    ]
    width = max(len(name) for name, _ in reads)
    print(f"\n{'read':<{width}} | median ms | min ms | max ms")
    print(f"{'-' * width}-|-----------|--------|-------")
    with override_settings(DEBUG=False, ALLOWED_HOSTS=["*"]):
        for name, run in reads:
            found = _timed(run, options.repeat)
            print(f"{name:<{width}} | {statistics.median(found):9.1f} | {min(found):6.1f} | {max(found):6.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
