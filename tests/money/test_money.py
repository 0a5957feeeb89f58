from decimal import Decimal

import pytest

from money import from_micros, to_micros


@pytest.mark.parametrize("micros", [0, 1, 5, 999_999, 1_000_000, 5_000_000, -5, 123_456_789_012_345])
def test_from_micros_keeps_six_places_as_the_ledger_writes_them(micros):
    amount = from_micros(micros)
    assert amount.as_tuple() == (Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")).as_tuple()
    assert to_micros(amount) == micros


def test_a_cost_of_nothing_reads_as_six_zeros():
    assert str(from_micros(0)) == "0.000000"
    assert str(from_micros(5)) == "0.000005"
