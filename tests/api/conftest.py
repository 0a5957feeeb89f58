"""API clients for each kind of caller, and objects of the org and of the other org.

``admin_api`` runs a test twice, with an org token and with the owner signed in, because scripts
and the dashboard call the same endpoints: the happy path of every endpoint uses it. ``outsider_api``
likewise: the other org's token, or its owner signed in. ``api`` is the org's token alone.
"""

import pytest
from rest_framework.test import APIClient

from analytics.models import RequestLog
from billing.models import Budget
from billing.services import budget_set
from keys.audit import Actor
from keys.models import Organization, Team, VirtualKey
from keys.services import org_token_create, team_create, virtual_key_create
from tests.analytics.factories import make_log

RUN_ID = "agent-run"


def token_client(org: Organization) -> APIClient:
    _, secret = org_token_create(org=org, name="script", actor=Actor.system("test"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def session_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture(params=["token", "session"])
def admin_api(request, org, owner) -> APIClient:
    clients = {"token": lambda: token_client(org), "session": lambda: session_client(owner)}
    return clients[request.param]()


@pytest.fixture
def api(org) -> APIClient:
    """The org's token: for the tests that are about what an endpoint does, not who calls it."""
    return token_client(org)


@pytest.fixture
def owner_api(owner, org) -> APIClient:
    return session_client(owner)


@pytest.fixture
def member_api(teammate, org) -> APIClient:
    return session_client(teammate)


@pytest.fixture(params=["token", "session"])
def outsider_api(request, outsider, other_org) -> APIClient:
    clients = {"token": lambda: token_client(other_org), "session": lambda: session_client(outsider)}
    return clients[request.param]()


@pytest.fixture
def key(org, team, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=org, name="researcher", team=team, actor=system_actor)
    return key


@pytest.fixture
def budget(org, system_actor) -> Budget:
    return budget_set(org=org, amount="50.00", period=Budget.Period.MONTHLY, actor=system_actor)


@pytest.fixture
def log(key) -> RequestLog:
    return make_log(key.org, key, run_id=RUN_ID)


@pytest.fixture
def other_key(other_org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=other_org, name="their-agent", actor=system_actor)
    return key


@pytest.fixture
def other_team(other_org, system_actor) -> Team:
    return team_create(org=other_org, name="theirs", actor=system_actor)
