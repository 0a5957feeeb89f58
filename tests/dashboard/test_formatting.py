from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dashboard.templatetags.nemo import day, duration_ms, money, percent_of, when


@pytest.mark.parametrize("amount, shown", [
    (Decimal("5"), "$5.00"),
    (Decimal("2.4"), "$2.40"),
    (Decimal("2.405"), "$2.405"),
    (Decimal("0.025055"), "$0.025055"),
    (Decimal("0.03"), "$0.03"),
    (Decimal("0.00001"), "$0.00001"),
    (Decimal("12.3456789"), "$12.345679"),
    (Decimal("1234.5"), "$1,234.50"),
    (Decimal("0"), "$0.00"),
    (Decimal("0.000375"), "$0.000375"),
    (Decimal("0.001110"), "$0.00111"),
    (Decimal("0.000001"), "$0.000001"),
    (Decimal("-1.5"), "-$1.50"),
    ("0.25", "$0.25"),
    (None, "—"),
])
def test_money_shows_every_micro_dollar_and_at_least_cents(amount, shown):
    assert money(amount) == shown


def test_durations_switch_to_seconds_from_one_second():
    assert (duration_ms(812), duration_ms(30000)) == ("812 ms", "30.00 s")


def test_a_budget_meter_is_capped_at_full():
    assert (percent_of(Decimal("2.40"), Decimal("5.00")), percent_of(Decimal("9"), Decimal("5"))) == (48, 100)


def test_two_amounts_that_differ_never_look_alike():
    amounts = [Decimal("0.025"), Decimal("0.03"), Decimal("0.035"), Decimal("0.0050"), Decimal("0.000055")]
    assert len({money(amount) for amount in amounts}) == len(amounts)


def test_a_moment_is_shown_in_utc_in_one_format_and_a_day_as_iso():
    moment = datetime(2026, 12, 3, 9, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert when(moment) == "2026-12-03 07:04:05 UTC"
    assert when(moment.astimezone(UTC)) == when(moment)
    assert day(date(2026, 1, 2)) == "2026-01-02"
