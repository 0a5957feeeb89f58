from datetime import timedelta

import pytest

from tests.analytics.factories import make_key


@pytest.fixture
def key(org, team):
    return make_key(org, "planner", team=team)


@pytest.fixture
def no_lag(settings):
    """Log rows are scanned as soon as they are written (the outbox's lag has its own tests)."""
    settings.NEMO_EXPORT_SAFETY_LAG = timedelta(0)


@pytest.fixture
def private_receivers(settings):
    """The receivers listen on 127.0.0.1 over http: the operator's choice lets webhooks reach them."""
    settings.NEMO_SINK_ALLOW_PRIVATE = True
