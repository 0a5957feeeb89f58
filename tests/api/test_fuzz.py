"""The management API fuzzed: every endpoint, with any method, random path ids (the org's own,
another org's, none at all, NUL, huge, odd unicode), random query parameters and random JSON
bodies, called with an org token. Whatever it gets, the API never answers a 5xx, and every error
is in its shape.

Each call is made on objects of its own (an earlier call may have deleted the org's team), named
symbolically by the generated call ("ours", "theirs") and looked up when it is made. Deterministic
(``derandomize``) and bounded, so the suite stays fast and never flaky. Requests run in
autocommit (``transactional_db``), as they do when served: a refused write must not spoil the
next request's transaction.
"""

import json
from dataclasses import dataclass
from itertools import count
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.services import budget_set, organization_create_with_credits
from keys.audit import Actor
from keys.models import Organization
from keys.services import team_create, virtual_key_create
from tests.analytics.factories import make_log
from tests.api.conftest import token_client

EXAMPLES = 500
ERROR_FIELDS = {"message", "type", "param", "code"}

# Every route, its methods, and the fields its query and body may name.
ROUTES = {
    "/api/v1/keys": ("GET", "POST"),
    "/api/v1/keys/{id}": ("GET", "PATCH", "DELETE"),
    "/api/v1/keys/{id}/rotate": ("POST",),
    "/api/v1/teams": ("GET", "POST"),
    "/api/v1/teams/{id}": ("GET", "PATCH", "DELETE"),
    "/api/v1/budgets": ("GET", "POST"),
    "/api/v1/budgets/{id}": ("GET", "PATCH", "DELETE"),
    "/api/v1/logs": ("GET",),
    "/api/v1/logs/{id}": ("GET",),
    "/api/v1/runs": ("GET",),
    "/api/v1/runs/{id}": ("GET",),
    "/api/v1/spend": ("GET",),
    "/api/v1/credits": ("GET",),
    "/api/v1/models": ("GET",),
}
# Routes that write come up three times as often: a write has more fields to get wrong.
WEIGHTED_ROUTES = [route for route, methods in sorted(ROUTES.items()) for _ in range(3 if methods != ("GET",) else 1)]
STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from([
        "", "\x00", "a\x00b", "\ud800", "\u202e", "\U0001f916", "x" * 300, "0", "-1", "1.5", "99999999999999999999",
        "1e309", "NaN", "Infinity", "-0", "key", "team", "org", "none", "daily", "monthly", "day", "model", "csv",
        "json", "hit", "2025-01-01", "2025-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
        "10000-01-01", "0.000001", "1000000000000", "WyJ4Il0", "MjAyNS0wMS0wMXwx",
    ]),
)
URL_STRINGS = STRINGS.filter(lambda text: "\ud800" not in text)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 1e308, 1e-300, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(STRINGS, inner, max_size=3)),
    max_leaves=8,
)


# Values a field may well take, so that calls get past the first check; each field takes any
# JSON value too.
QUERY_VALUES = {
    "cursor": st.sampled_from(["WyJ4Il0", "MjAyNS0wMS0wMXwx", "WyIyMDI1LTAxLTAxVDAwOjAwOjAwWiIsIDFd"]),
    "limit": st.integers(min_value=-5, max_value=300).map(str),
    "key": st.sampled_from(["1", "2", "sk-nemo-abc", "abc"]),
    "run": st.just("crew/run-1"),
    "model": st.just("gemini-2.5-flash"),
    "deployment": st.just("flash-vertex"),
    "status": st.sampled_from(["200", "99", "600", "429"]),
    "cache": st.sampled_from(["hit", "miss", "skip", "maybe"]),
    "since": st.sampled_from(["2025-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2025-13-01", "2025-01-01"]),
    "until": st.sampled_from(["2030-01-01T00:00:00+05:30", "0001-01-01T00:00:00Z", "yesterday"]),
    "group_by": st.sampled_from(["day", "key", "team", "model", "planet"]),
    # Not "api": the browsable API is a page for people, its errors too.
    "format": st.sampled_from(["json", "csv", "yaml"]),
}
LIMITS = st.one_of(st.none(), st.integers(min_value=1, max_value=2**64), st.sampled_from([2**31 - 1, 2**31, 2**63]))
MONEY = st.one_of(st.sampled_from(["1.00", "0", "-1", "1e309", "NaN", "0.0000001", "999999999999.999999",
                                   "9999999999999", "1E+3", " 2.50 "]), st.decimals(places=6).map(str), NUMBERS)
BODY_VALUES = {
    "name": STRINGS,
    "scope": st.sampled_from(["key", "team", "org", "planet"]),
    "amount": MONEY,
    "period": st.sampled_from(["none", "daily", "weekly", "monthly", "yearly"]),
    "budget": st.one_of(st.none(), MONEY),
    "budget_period": st.sampled_from(["none", "monthly", "hourly"]),
    "allowed_models": st.lists(STRINGS, max_size=3),
    "rpm_limit": LIMITS,
    "tpm_limit": LIMITS,
    "max_parallel": LIMITS,
    "expires": st.one_of(st.none(), st.sampled_from(["2030-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00",
                                                     "0001-01-01T00:00:00-14:00", "2030-01-01", "tomorrow"])),
    "metadata": st.dictionaries(STRINGS, JSON, max_size=3),
    "team": st.sampled_from(["ours:teams", "theirs:teams"]),
    "key": st.sampled_from(["ours:keys", "theirs:keys"]),
}
# A valid body of each kind of object to write, which a call changes a field or two of. Ids are
# symbolic (see Objects.resolve): "ours:teams" is the org's own team.
VALID_BODIES = {
    "keys": {"name": "writer", "team": "ours:teams", "allowed_models": ["gpt-4o"], "rpm_limit": 60, "tpm_limit": 10_000,
             "max_parallel": 4, "expires": "2030-01-01T00:00:00Z", "metadata": {"owner": "ana"}, "budget": "2.50",
             "budget_period": "monthly"},
    "teams": {"name": "writers"},
    "budgets": {"scope": "team", "team": "ours:teams", "amount": "10.00", "period": "weekly"},
}
# Nesting no recursive strategy reaches: as deep as a JSON parser takes, and deeper.
DEEP = json.loads("[" * 900 + "]" * 900)
FRAMINGS = ["fields"] * 12 + ["json", "bytes", "deep", "deeper than JSON parsers go"]
ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")


KINDS = ("teams", "keys", "budgets", "logs", "runs")
PATH_IDS = st.one_of(*[st.sampled_from([f"ours:{kind}" for kind in KINDS] + [f"theirs:{kind}" for kind in KINDS])] * 4,
                     URL_STRINGS, NUMBERS.map(str))


@dataclass(frozen=True)
class Objects:
    """An org's team, key, budget and logged call, by kind (as a path names them)."""

    ids: dict[str, str]

    @classmethod
    def create(cls, org: Organization, actor: Actor, number: int) -> "Objects":
        team = team_create(org=org, name=f"research-{number}", actor=actor)
        key, _ = virtual_key_create(org=org, name="agent", team=team, actor=actor)
        budget = budget_set(org=org, key=key, amount="5.00", actor=actor)
        log = make_log(org, key, run_id=f"crew/run-{number}")
        return cls({"teams": str(team.pk), "keys": str(key.pk), "budgets": str(budget.pk), "logs": log.request_id,
                    "runs": log.run_id})


def resolve(value, objects: dict[str, Objects]):
    """A generated value with its symbolic ids ("ours:keys") made real, wherever they are."""
    if isinstance(value, str) and value.partition(":")[0] in objects and value.partition(":")[2] in KINDS:
        whose, _, kind = value.partition(":")
        real = objects[whose].ids[kind]
        return int(real) if real.isdigit() else real
    if isinstance(value, dict):
        return {key: resolve(item, objects) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, objects) for item in value]
    return value


@dataclass(frozen=True)
class Call:
    method: str
    route: str
    path_id: str
    query: dict
    body: object
    framing: str

    def made(self, objects: dict[str, Objects]) -> tuple[str, bytes]:
        """The path with its query, and the bytes sent."""
        runs = self.route.startswith("/api/v1/runs")
        path_id = str(resolve(self.path_id, objects))
        # Only a run id may hold a slash (its route takes the rest of the path); elsewhere one
        # would make it another route, or none.
        path_id = path_id if runs else path_id.replace("/", "")
        path = self.route.replace("{id}", quote(path_id, safe="/") or "0")
        body = resolve(self.body, objects)
        content = {"json": lambda: json.dumps(body).encode(), "bytes": lambda: body,
                   "deep": lambda: json.dumps({**body, "metadata": {"x": DEEP}}).encode(),
                   "deeper than JSON parsers go": lambda: b"[" * 100_000}[self.framing]()
        return (f"{path}?{urlencode(self.query)}" if self.query else path), content


@st.composite
def api_calls(draw) -> Call:
    """Mostly a route's own methods and fields, now and then any method, any JSON or bytes that
    are not JSON."""
    route = draw(st.sampled_from(WEIGHTED_ROUTES))
    kind = route.split("/")[3]
    method = draw(st.sampled_from(ANY_METHOD if draw(st.integers(min_value=0, max_value=9)) == 0 else ROUTES[route]))
    query = {name: draw(st.one_of(QUERY_VALUES[name], URL_STRINGS))
             for name in draw(st.lists(st.sampled_from(sorted(QUERY_VALUES)), max_size=2, unique=True))}
    valid = VALID_BODIES.get(kind, {})
    body = dict(valid)
    # A field or two changed, mostly the object's own (to a value it may well take as often as
    # not); one maybe left out.
    own = st.sampled_from(sorted(valid) or sorted(BODY_VALUES))
    for name in draw(st.lists(st.one_of(own, own, own, st.sampled_from(sorted(BODY_VALUES))), min_size=1, max_size=2)):
        body[name] = draw(st.one_of(BODY_VALUES[name], JSON))
    for name in draw(st.lists(st.sampled_from(sorted(valid) or ["name"]), max_size=1)):
        body.pop(name, None)
    framing = draw(st.sampled_from(FRAMINGS))
    sent = {"fields": body, "json": draw(JSON), "bytes": draw(st.binary(max_size=20))}.get(framing, body)
    return Call(method=method, route=route, path_id=draw(PATH_IDS), query=query, body=sent,
                framing={"fields": "json"}.get(framing, framing))


@pytest.fixture
def orgs(transactional_db):
    """Makes the objects of a call: the org's own (fresh for each call) and another org's."""
    actor = Actor.system("test")
    ours = organization_create_with_credits(name="Acme", actor=actor)
    theirs = organization_create_with_credits(name="Other Inc", actor=actor)
    numbers = count()
    their_objects = Objects.create(theirs, actor, next(numbers))
    return lambda: {"ours": Objects.create(ours, actor, next(numbers)), "theirs": their_objects}, token_client(ours)


def test_no_call_of_the_management_api_gets_a_5xx(orgs):
    fresh_objects, api = orgs

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call=api_calls())
    def answers_within_the_contract(call: Call) -> None:
        path, content = call.made(fresh_objects())
        response = api.generic(call.method, path, data=content, content_type="application/json")

        assert response.status_code < 500
        assert response.status_code < 400 or set(response.json()["error"]) == ERROR_FIELDS

    answers_within_the_contract()
