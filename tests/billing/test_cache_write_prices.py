"""Claude's prompt cache in the money: a call's cost prices its cache reads and writes apart, and
the reservation's worst case takes a prompt token at the dearer of input and cache write."""

from decimal import ROUND_CEILING, Decimal
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.reservations import worst_case_micros
from money import call_cost_micros

SONNET = {"input_price": Decimal("3.00"), "cached_input_price": Decimal("0.30"), "output_price": Decimal("15.00")}


def test_reads_and_writes_are_priced_apart():
    cost = call_cost_micros(prompt_tokens=1_000, cached_tokens=200, cache_write_tokens=300, completion_tokens=100,
                            cache_write_price=Decimal("3.75"), **SONNET)
    # 500 uncached at 3.00, 200 read at 0.30, 300 written at 3.75, 100 out at 15.00 (per million).
    assert cost == 1_500 + 60 + 1_125 + 1_500


def test_a_write_without_a_price_of_its_own_is_at_the_input_price():
    assert call_cost_micros(prompt_tokens=1_000, cached_tokens=0, cache_write_tokens=400, completion_tokens=0,
                            **SONNET) == 3_000


def test_the_written_tokens_never_exceed_the_prompt():
    # 80 read at 0.30, and only the 20 tokens left written at 3.75.
    assert call_cost_micros(prompt_tokens=100, cached_tokens=80, cache_write_tokens=500, completion_tokens=0,
                            cache_write_price=Decimal("3.75"), **SONNET) == 24 + 75


def test_the_worst_case_takes_the_dearer_of_input_and_cache_write():
    plain = SimpleNamespace(input=Decimal("3.00"), output=Decimal("15.00"))
    cached = SimpleNamespace(input=Decimal("3.00"), output=Decimal("15.00"), cache_write=Decimal("3.75"))
    assert worst_case_micros(prompt_tokens=1_000, output_tokens=0, prices=[plain]) == 3_000
    assert worst_case_micros(prompt_tokens=1_000, output_tokens=0, prices=[plain, cached]) == 3_750


_prices = st.one_of(*(st.decimals(min_value=0, max_value=10_000, places=places, allow_nan=False, allow_infinity=False)
                      for places in (2, 6, 9)))
_price = st.builds(SimpleNamespace, input=_prices, output=_prices, cache_write=st.none() | _prices)


@settings(max_examples=300, deadline=None)
@given(prices=st.lists(_price, min_size=1, max_size=4), prompt=st.integers(0, 10**9), output=st.integers(0, 10**9))
def test_the_worst_case_in_whole_picos_is_the_dearest_exact_decimal_rounded_up(prices, prompt, output):
    # Each link's exact cost in Decimal, the dearest rounded up once (the pico path's reference).
    dearest = max(Decimal(prompt) * max(p.input, p.cache_write if p.cache_write is not None else p.input)
                  + Decimal(output) * p.output for p in prices)
    assert worst_case_micros(prompt_tokens=prompt, output_tokens=output, prices=prices) == int(
        dearest.to_integral_value(rounding=ROUND_CEILING))
