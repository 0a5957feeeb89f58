from decimal import Decimal

import pytest

from dashboard.templatetags.nemo import duration_ms, money, percent_of


@pytest.mark.parametrize("amount, shown", [
    (Decimal("5"), "$5.00"),
    (Decimal("2.4"), "$2.40"),
    (Decimal("2.405"), "$2.41"),
    (Decimal("1234.5"), "$1,234.50"),
    (Decimal("0"), "$0.00"),
    (Decimal("0.000375"), "$0.000375"),
    (Decimal("0.001110"), "$0.00111"),
    (Decimal("0.000001"), "$0.000001"),
    (Decimal("-1.5"), "-$1.50"),
    ("0.25", "$0.25"),
    (None, "—"),
])
def test_money_shows_dollars_and_cents_and_keeps_tiny_amounts_visible(amount, shown):
    assert money(amount) == shown


def test_durations_switch_to_seconds_from_one_second():
    assert (duration_ms(812), duration_ms(30000)) == ("812 ms", "30.00 s")


def test_a_budget_meter_is_capped_at_full():
    assert (percent_of(Decimal("2.40"), Decimal("5.00")), percent_of(Decimal("9"), Decimal("5"))) == (48, 100)
