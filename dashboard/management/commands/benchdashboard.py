"""benchdashboard: the dashboard's pages timed against an org with a large request log.

Makes an org of its own (``bench-…``) with a few keys and runs and ``--rows`` log rows spread over
the last ``--days`` days (one in 20 tagged ``customer:acme``, one in 997 ``customer:rare``;
written by one INSERT … SELECT generate_series, in the database's time),
signs in as its owner, times each page ``--repeat`` times through Django's test client (server
time, no network) and prints the median and the worst. The org and its rows are deleted at the
end unless ``--keep``; ``--reuse`` times the pages of the org a ``--keep`` run left. Point it at a
database of its own: it writes there.
"""

import statistics
import time
import uuid

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import Client
from django.test.utils import override_settings

from analytics.models import RequestLog
from analytics.services import ROLLUP_CLOCK_MARGIN, spend_rollup
from billing.services import budget_set, organization_create_with_credits
from dashboard.views.activity import RUN_STEPS_SHOWN
from keys.audit import Actor
from keys.models import Membership, Organization
from keys.services import virtual_key_create

PAGES = [
    "/overview/", "/keys/", "/log/", "/log/?status_class=errors", "/log/?fallback_only=on",
    "/log/?model=gemini-2.5-pro", "/log/?run=bench-run-1", "/log/?request_id={request_id}",
    "/log/?tag=customer:acme", "/log/?tag=customer:rare", "/log/?tag=customer:acme&status_class=errors",
    "/log/?tag=customer:nobody", "/log/{request_id}/", "/log/{request_id}/panel/", "/runs/", "/runs/bench-run-7",
    "/runs/bench-run-7?page={last_page}", "/playground/",
    "/spend/", "/teams/", "/settings/",
]
KEYS = 8
RUNS = 500
FILL = """
INSERT INTO analytics_requestlog (
    request_id, org_id, key_id, key_prefix, run_id, endpoint, model, deployment, provider, status, error,
    error_type, error_code, error_param, attempts, stream, latency_ms, prompt_tokens, completion_tokens,
    cached_tokens, cost, overshoot, finish_reason, tool_calls, tags, tools_offered, prompt_meta, cache, created)
SELECT
    %(tag)s || '-' || n, %(org)s, (%(keys)s::bigint[])[1 + n %% %(key_count)s],
    (%(prefixes)s::text[])[1 + n %% %(key_count)s],
    CASE WHEN n %% 3 = 0 THEN 'bench-run-' || (n %% %(runs)s) ELSE '' END,
    'chat.completions',
    CASE WHEN n %% 10 = 0 THEN 'gemini-2.5-pro' ELSE 'gemini-2.5-flash' END,
    'flash-vertex', 'vertex',
    CASE WHEN n %% 50 = 0 THEN 502 WHEN n %% 70 = 0 THEN 402 ELSE 200 END, '',
    CASE WHEN n %% 50 = 0 THEN 'upstream_error' WHEN n %% 70 = 0 THEN 'budget_exceeded' ELSE '' END,
    CASE WHEN n %% 50 = 0 THEN 'upstream_error' WHEN n %% 70 = 0 THEN 'budget_exceeded' ELSE '' END,
    CASE WHEN n %% 50 <> 0 AND n %% 70 = 0 THEN 'key' ELSE '' END,
    CASE WHEN n %% 40 = 0
         THEN '[{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
                {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 640}]'::jsonb
         ELSE '[{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 420}]'::jsonb END,
    false, 200 + n %% 900, 1200, 300, 0, 0.001110, 0, 'stop', '[]'::jsonb,
    CASE WHEN n %% 997 = 0 THEN '["customer:rare"]'::jsonb WHEN n %% 20 = 0 THEN '["eu", "customer:acme"]'::jsonb
         END,
    '[]'::jsonb, '{}'::jsonb, 'skip',
    now() - make_interval(secs => (n::double precision / %(rows)s) * %(days)s * 86400)
FROM generate_series(1, %(rows)s) AS n
"""


class Command(BaseCommand):
    help = "Times the dashboard's pages against an org with a large request log (writes to the database)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--repeat", type=int, default=5)
        parser.add_argument("--keep", action="store_true", help="Leave the org and its rows in the database.")
        parser.add_argument("--reuse", action="store_true",
                            help="Time the pages of the org an earlier --keep run left, without filling another.")

    def handle(self, *args, rows: int, days: int, repeat: int, keep: bool, reuse: bool, **options) -> None:
        if reuse:
            org = Organization.objects.filter(slug__startswith="bench-").latest("pk")
            owner = org.memberships.get(role=Membership.Role.OWNER).user
            self.stdout.write(f"reusing {org.slug}: {org.request_logs.count():,} log rows")
            self._time_pages(owner, f"{org.name}-1", repeat)
            return
        tag = f"bench-{uuid.uuid4().hex[:8]}"
        org, owner, keys = self._tenant(tag)
        started = time.monotonic()
        self._fill(tag, org, keys, rows, days)
        self.stdout.write(f"{rows:,} log rows over {days} days in {time.monotonic() - started:.0f} s")
        try:
            self._time_pages(owner, f"{tag}-1", repeat)
        finally:
            if not keep:
                self._remove(org, owner)

    def _tenant(self, tag: str):
        actor = Actor.system("command:benchdashboard")
        owner = get_user_model().objects.create_user(username=f"{tag}@example.com", email=f"{tag}@example.com")
        org = organization_create_with_credits(name=tag, owner=owner, actor=actor)
        keys = [virtual_key_create(org=org, name=f"agent-{number}", actor=actor)[0] for number in range(KEYS)]
        for key in keys[::2]:
            budget_set(org=org, key=key, amount=1000, period="monthly", actor=actor)
        return org, owner, keys

    def _fill(self, tag: str, org, keys, rows: int, days: int) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(FILL, {"tag": tag, "org": org.pk, "keys": [key.pk for key in keys],
                                  "prefixes": [key.prefix for key in keys], "key_count": len(keys),
                                  "runs": RUNS, "rows": rows, "days": days})
        with connection.cursor() as cursor:
            # What autovacuum does to a table that was inserted into: statistics, and the
            # visibility map that lets a count be read from an index alone.
            cursor.execute("VACUUM ANALYZE analytics_requestlog")
        # What the Celery beat does every minute: the rows are rolled up, as a live org's are (a
        # second rollup, past the first's clock margin, moves the floor that bounds the tail).
        spend_rollup()
        time.sleep(ROLLUP_CLOCK_MARGIN.total_seconds() + 0.1)
        spend_rollup()

    def _time_pages(self, owner, request_id: str, repeat: int) -> None:
        # The last page of a long run's steps: its bars are placed on the whole run's axis.
        org = owner.memberships.get().org
        last_page = max(-(-RequestLog.objects.filter(org=org, run_id="bench-run-7").count() // RUN_STEPS_SHOWN), 1)
        client = Client()
        client.force_login(owner)
        self.stdout.write(f"{'page':<40} {'median ms':>10} {'worst ms':>10}")
        with override_settings(DEBUG=False, ALLOWED_HOSTS=["*"]):
            for path in PAGES:
                path = path.format(request_id=request_id, last_page=last_page)
                timings = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = client.get(path)
                    timings.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{path} answered {response.status_code}")
                self.stdout.write(f"{path:<40} {statistics.median(timings):>10.0f} {max(timings):>10.0f}")

    def _remove(self, org, owner) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM analytics_requestlog WHERE org_id = %s", [org.pk])
        self.stdout.write(f"Left the org {org.slug} (orgs are never deleted); its log rows are removed.")
        owner.is_active = False
        owner.save(update_fields=["is_active"])
