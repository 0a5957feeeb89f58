"""The log's filters read through indexes: a key's prefix becomes the key's id, the cache
filter has its own (partial) index, so a filtered page costs what an unfiltered one does."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.models import RequestLog
from analytics.selectors import log_list
from keys.audit import Actor
from keys.services import virtual_key_rotate
from tests.analytics.factories import make_key, make_log

pytestmark = pytest.mark.django_db


def log_query(**filters) -> tuple[list[int], str]:
    with CaptureQueriesContext(connection) as queries:
        rows = [row.pk for row in log_list(**filters).rows]
    return rows, next(q["sql"] for q in queries.captured_queries if "analytics_requestlog" in q["sql"])


def test_a_key_prefix_is_read_as_the_keys_id(org, other_org):
    key, other, theirs = make_key(org), make_key(org, "reviewer"), make_key(other_org, "theirs")
    mine = make_log(org, key)
    make_log(org, other)
    make_log(other_org, theirs)

    rows, sql = log_query(org=org, key_prefix=key.prefix)

    assert rows == [mine.pk]
    assert f'"analytics_requestlog"."key_id" = {key.pk}' in sql
    assert log_list(org=org, key_prefix=theirs.prefix).rows == []  # another org's key: nothing


def test_a_rotated_keys_old_and_new_prefixes_each_find_their_own_rows(org):
    key = make_key(org)
    before = make_log(org, key)
    old_prefix = key.prefix
    virtual_key_rotate(key=key, actor=Actor.system("test"))
    key.refresh_from_db()
    after = make_log(org, key)

    assert [row.pk for row in log_list(org=org, key_prefix=key.prefix).rows] == [after.pk]
    assert [row.pk for row in log_list(org=org, key_prefix=old_prefix).rows] == [before.pk]


def _indexes_of(index: str) -> set[str]:
    """The index and, on a partitioned log, its partitions' (PostgreSQL names those itself; on
    an empty partition the planner may take any index, so only the rows' own is checked)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = to_regclass(%s)", [index])
        return {index} | {name for (name,) in cursor.fetchall()}


@pytest.mark.postgres
def test_the_cache_filter_has_an_index_for_hits_and_misses(org, other_org):
    key = make_key(org)
    hit, miss, skip = (make_log(org, key, cache=value) for value in ("hit", "miss", "skip"))
    # Most calls skip the cache: with a few thousand such rows, the org's own among them, the
    # planner weighs the indexes as on a real log, instead of taking any on a table of three rows
    # (with only another org's rows, what other tests had left in the table decided its choice).
    RequestLog.objects.bulk_create([RequestLog(org=owner, key=key if owner == org else None,
                                               request_id=f"req-skip-{owner.pk}-{n}", key_prefix="x", model="m",
                                               status=200, cache="skip", created=timezone.now() - timedelta(days=1))
                                    for owner in (org, other_org) for n in range(2000)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE analytics_requestlog")

    assert [row.pk for row in log_list(org=org, cache="hit").rows] == [hit.pk]
    assert [row.pk for row in log_list(org=org, cache="miss").rows] == [miss.pk]
    assert log_list(org=org, cache="skip").rows[0].pk == skip.pk
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN SELECT id FROM analytics_requestlog WHERE org_id = %s AND cache = 'hit' "
                       "ORDER BY created DESC, id DESC LIMIT 50", [org.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM analytics_requestlog WHERE id = %s", [hit.pk])
        (table,) = cursor.fetchone()
    (used,) = re.findall(rf" using (\w+) on {table} ", plan)
    assert used in _indexes_of("log_org_cache_created"), plan
