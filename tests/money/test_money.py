from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from money import call_cost_micros, from_micros, micros_of_picos, to_micros, token_cost_micros, whole_picos


@pytest.mark.parametrize("micros", [0, 1, 5, 999_999, 1_000_000, 5_000_000, -5, 123_456_789_012_345])
def test_from_micros_keeps_six_places_as_the_ledger_writes_them(micros):
    amount = from_micros(micros)
    assert amount.as_tuple() == (Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")).as_tuple()
    assert to_micros(amount) == micros


def test_a_cost_of_nothing_reads_as_six_zeros():
    assert str(from_micros(0)) == "0.000000"
    assert str(from_micros(5)) == "0.000005"


# Prices per million tokens as catalogs write them (up to six places: whole pico-dollars a token)
# and finer ones, which take the Decimal path.
_prices = st.one_of(*(st.decimals(min_value=0, max_value=10_000, places=places, allow_nan=False, allow_infinity=False)
                      for places in (2, 6, 9)))
_tokens = st.integers(min_value=0, max_value=10**9)


def _decimal_cost(*, prompt_tokens, cached_tokens, completion_tokens, cache_write_tokens, input_price,
                  cached_input_price, output_price, cache_write_price) -> int:
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    exact = (token_cost_micros(prompt_tokens - cached - written, input_price)
             + token_cost_micros(cached, cached_input_price)
             + token_cost_micros(written, input_price if cache_write_price is None else cache_write_price)
             + token_cost_micros(completion_tokens, output_price))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


@settings(max_examples=500, deadline=None)
@given(prompt=_tokens, cached=_tokens, completion=_tokens, written=_tokens, input_price=_prices,
       cached_price=_prices, output_price=_prices, write_price=st.none() | _prices)
def test_a_calls_cost_in_whole_picos_is_the_exact_decimal_rounded_up(prompt, cached, completion, written,
                                                                      input_price, cached_price, output_price,
                                                                      write_price):
    fields = dict(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion,
                  cache_write_tokens=written, input_price=input_price, cached_input_price=cached_price,
                  output_price=output_price, cache_write_price=write_price)
    assert call_cost_micros(**fields) == _decimal_cost(**fields)


def test_whole_picos_only_for_prices_of_six_places_or_fewer():
    assert whole_picos(Decimal("0.15")) == 150_000
    assert whole_picos(Decimal("0.150")) == whole_picos(Decimal("0.15"))
    assert whole_picos(Decimal("3")) == 3_000_000
    assert whole_picos(Decimal("0.000001")) == 1
    assert whole_picos(Decimal("0.0000001")) is None
    # A sub-pico price is charged by the Decimal path, to the micro-dollar above.
    assert call_cost_micros(prompt_tokens=3, cached_tokens=0, completion_tokens=0, input_price=Decimal("0.0000001"),
                            cached_input_price=Decimal(0), output_price=Decimal(0)) == 1
    assert micros_of_picos(0) == 0 and micros_of_picos(1) == 1 and micros_of_picos(1_000_000) == 1
    assert micros_of_picos(1_000_001) == 2
