"""/api/v1/credits (balance and grants) and /api/v1/models (the catalog)."""

from decimal import Decimal

import pytest

from billing.services import credits_grant
from tests.analytics.factories import make_log

pytestmark = pytest.mark.django_db


def test_the_balance_is_the_grants_less_the_spend(admin_api, org, key, system_actor):
    credits_grant(org=org, amount=Decimal("10"), reason="top-up", actor=system_actor)
    make_log(key.org, key, cost=Decimal("1.250000"))

    body = admin_api.get("/api/v1/credits").json()

    assert body["balance"] == "13.750000"
    assert [(grant["amount"], grant["reason"]) for grant in body["grants"]] == [
        ("10.000000", "top-up"), ("5.000000", "sign-up credits")]


def test_credits_are_the_orgs_own(api, other_org, system_actor):
    credits_grant(org=other_org, amount=Decimal("100"), reason="theirs", actor=system_actor)

    assert api.get("/api/v1/credits").json()["balance"] == "5.000000"


def test_it_lists_the_catalog_with_prices_as_strings(admin_api):
    results = admin_api.get("/api/v1/models").json()["results"]

    flash = next(model for model in results if model["name"] == "gemini-2.5-flash")
    assert len(results) >= 20
    assert isinstance(flash["input_price"], str)
    assert flash["context_window"] > 0
