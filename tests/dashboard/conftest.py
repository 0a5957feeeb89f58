"""Dashboard fixtures: signed-in clients for each role, keys, and request-log rows.

Log rows are written directly: these tests are about what the pages show, not about how the
gateway records a call.
"""

import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from analytics.models import RequestLog
from keys.models import Membership, VirtualKey
from keys.services import membership_add, virtual_key_create


@pytest.fixture
def admin_user(django_user_model, org, system_actor):
    user = django_user_model.objects.create_user(username="admin@example.com", email="admin@example.com",
                                                 password="pw-admin-123")
    membership_add(org=org, user=user, role=Membership.Role.ADMIN, actor=system_actor)
    return user


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner, org) -> Client:
    return _signed_in(owner)


@pytest.fixture
def admin_client(admin_user) -> Client:
    return _signed_in(admin_user)


@pytest.fixture
def member_client(teammate, org) -> Client:
    return _signed_in(teammate)


@pytest.fixture
def outsider_client(outsider, other_org) -> Client:
    return _signed_in(outsider)


@pytest.fixture
def key(org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=org, name="researcher", actor=system_actor)
    return key


@pytest.fixture
def other_key(other_org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=other_org, name="their-agent", actor=system_actor)
    return key


@pytest.fixture
def make_log() -> Callable[..., RequestLog]:
    """``make_log(key, **fields)``: one call of ``key`` in the request log."""
    made = [0]

    def make(key: VirtualKey, **fields) -> RequestLog:
        made[0] += 1
        values = {
            "request_id": f"req_{uuid.uuid4().hex[:20]}",
            "org": key.org,
            "team": key.team,
            "key": key,
            "key_prefix": key.prefix,
            "model": "gemini-2.5-flash",
            "deployment": "flash-vertex",
            "provider": "vertex",
            "status": 200,
            "attempts": [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 420}],
            "latency_ms": 420,
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "cost": Decimal("0.001110"),
            "finish_reason": "stop",
            # Rows a second apart keep the log's order the order they were made in.
            "created": timezone.now() - timedelta(minutes=5) + timedelta(seconds=made[0]),
        }
        values.update(fields)
        return RequestLog.objects.create(**values)

    return make

