"""Shared fixtures: an owner, a teammate and an outsider for every test that needs tenants.

Tests that are about PostgreSQL or Redis are marked; outside CI they skip when the environment
does not have them, in CI they must run.
"""

import os
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings

from billing.services import organization_create_with_credits
from keys.audit import Actor
from keys.models import Membership, Team
from keys.services import membership_add, team_create
from tests.promises.faults.servers import PostgresCluster, RedisClusterServers, RedisServer

IN_CI = bool(os.environ.get("CI"))


def pytest_collection_modifyitems(config, items):
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    for item in items:
        if "postgres" in item.keywords and not on_postgres and not IN_CI:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)"))
        if "redis" in item.keywords and not settings.REDIS_URL and not IN_CI:
            item.add_marker(pytest.mark.skip(reason="needs Redis (set REDIS_URL)"))


def _delete_instead_of_truncate() -> None:
    """A test on the real database ends with a flush of every table. PostgreSQL's TRUNCATE makes
    each table and index a new file (about a third of a second for all of ours, most of a
    gateway test's time); a test's few rows go faster with DELETE. The foreign keys Django makes
    are deferred, and the flush runs in one transaction, so the order of the tables does not
    matter. A flush that resets sequences keeps TRUNCATE."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in tables]

    DatabaseOperations.sql_flush = sql_flush


_delete_instead_of_truncate()


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[PostgresCluster]:
    """A migrated PostgreSQL cluster of the test session's own, for tests that stop or restart it
    (a test that stops it starts it again); never the shared one."""
    cluster = PostgresCluster().create()
    cluster.migrate()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of the test session's own (three primaries, a replica each), for the tests
    of the counters and the gateway on a cluster; never the shared Redis."""
    try:
        cluster = RedisClusterServers().start()
    except RuntimeError:  # a spare port taken meanwhile by someone else: once more, on others
        cluster = RedisClusterServers().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, restart or flush it."""
    server = RedisServer().start()
    yield server
    server.destroy()


@pytest.fixture(autouse=True)
def cache_of_its_own(settings) -> None:
    """Each test gets a namespace of its own in Django's cache (Redis when configured): the failed
    sign-ins one test counted must not refuse another's."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"nemo-test-{uuid.uuid4().hex[:10]}"}}


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("test")


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user(username="owner@example.com", email="owner@example.com",
                                                 password="pw-owner-123")


@pytest.fixture
def teammate(django_user_model):
    return django_user_model.objects.create_user(username="mate@example.com", email="mate@example.com",
                                                 password="pw-mate-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user(username="outsider@example.com", email="outsider@example.com",
                                                 password="pw-outsider-123")


@pytest.fixture
def org(owner, teammate, system_actor):
    org = organization_create_with_credits(name="Acme", owner=owner, actor=system_actor)
    membership_add(org=org, user=teammate, role=Membership.Role.MEMBER, actor=system_actor)
    return org


@pytest.fixture
def team(org, system_actor) -> Team:
    return team_create(org=org, name="research", actor=system_actor)


@pytest.fixture
def other_org(outsider, system_actor):
    return organization_create_with_credits(name="Other Inc", owner=outsider, actor=system_actor)
