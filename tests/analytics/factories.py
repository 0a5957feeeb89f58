"""Builds request-log rows directly, the way the gateway writes them. Reusable by any test."""

import itertools
from datetime import UTC, datetime
from decimal import Decimal

from analytics.models import RequestLog
from keys.audit import Actor
from keys.models import Organization, Team, VirtualKey
from keys.services import virtual_key_create

_numbers = itertools.count(1)


def make_key(org: Organization, name: str = "agent", team: Team | None = None) -> VirtualKey:
    key, _ = virtual_key_create(org=org, name=name, team=team, actor=Actor.system("test"))
    return key


def make_log(org: Organization, key: VirtualKey | None, **fields) -> RequestLog:
    """A settled call of the key (its team and prefix included); any field can be overridden."""
    number = next(_numbers)
    values = {
        "request_id": f"req-{number:06d}-{org.pk}",
        "org": org,
        "key": key,
        "team": key.team if key else None,
        "key_prefix": key.prefix if key else "",
        "model": "gemini-2.5-flash",
        "deployment": "flash-vertex",
        "provider": "vertex",
        "status": 200,
        "attempts": [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 180}],
        "latency_ms": 200,
        "ttft_ms": 90,
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "cost": Decimal("0.000150"),
        "finish_reason": "stop",
        "cache": "miss",
        "created": datetime.now(UTC),
    }
    values.update(fields)
    return RequestLog.objects.create(**values)
