from datetime import timedelta

import pytest

from tests.analytics.factories import make_key


@pytest.fixture
def key(org, team):
    return make_key(org, "planner", team=team)


@pytest.fixture
def other_key(other_org):
    return make_key(other_org, "intruder")


@pytest.fixture
def no_lag(settings):
    """Rows are exportable as soon as they are written (the safety lag has its own tests)."""
    settings.NEMO_EXPORT_SAFETY_LAG = timedelta(0)


@pytest.fixture
def private_sinks(settings):
    """The fake services listen on 127.0.0.1 over http: the operator's choice lets sinks reach them
    (tests/analytics/test_destinations.py is about the refusals)."""
    settings.NEMO_SINK_ALLOW_PRIVATE = True
