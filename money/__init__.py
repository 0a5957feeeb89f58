"""Money arithmetic: Decimal USD at the edges, integer micro-dollars inside the hot path.

A package of its own, below every app: billing prices calls and holds budgets in these units,
analytics sums the request log (the ledger) and writes its rows in them, and the gateway
charges in them, while billing and analytics may not import each other. It imports nothing of ours.
"""

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

MICROS_PER_USD = 1_000_000
_MICRO = Decimal("0.000001")


def to_micros(usd: Decimal | str | int) -> int:
    return int((Decimal(usd) * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_micros(micros: int) -> Decimal:
    # The same Decimal as dividing by a million and quantizing to _MICRO, in half the time.
    return Decimal(micros).scaleb(-6)


# A price per million tokens as whole pico-dollars per token (None: it has finer digits), by price.
_PICOS: dict[Decimal, int | None] = {}
# Prices are a catalog's few; a process that sees this many distinct ones starts the cache again.
_PICOS_KEPT = 4096


def whole_picos(price_per_million: Decimal) -> int | None:
    """A price per million tokens in pico-dollars per token, if that is a whole number (every
    catalog price with up to six decimal places): then a cost in micro-dollars is integer
    arithmetic, the same as ``token_cost_micros``' exact Decimal, in a fifth of its time."""
    picos = _PICOS.get(price_per_million, -1)
    if picos == -1:
        scaled = Decimal(price_per_million).scaleb(6)
        picos = int(scaled) if scaled == scaled.to_integral_value() else None
        if len(_PICOS) >= _PICOS_KEPT:
            _PICOS.clear()
        _PICOS[price_per_million] = picos
    return picos


def micros_of_picos(picos: int) -> int:
    """Pico-dollars in whole micro-dollars, rounded up."""
    return -(-picos // 1_000_000)


def token_cost_micros(tokens: int, price_per_million: Decimal) -> Decimal:
    """Exact cost of tokens in micro-dollars (may be fractional; round once per call)."""
    return Decimal(tokens) * Decimal(price_per_million)


def call_cost_micros(
    *,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    input_price: Decimal,
    cached_input_price: Decimal,
    output_price: Decimal,
    cache_write_tokens: int = 0,
    cache_write_price: Decimal | None = None,
) -> int:
    """A call's cost in whole micro-dollars, rounded up once so the ledger never under-counts.
    ``prompt_tokens`` include the ``cached_tokens`` read from the upstream's prompt cache and the
    ``cache_write_tokens`` written to it (Claude's), each at its price (a write at the input
    price where none is given)."""
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    uncached = prompt_tokens - cached - written
    write_price = input_price if cache_write_price is None else cache_write_price
    picos = (whole_picos(input_price), whole_picos(cached_input_price), whole_picos(write_price),
             whole_picos(output_price))
    if None not in picos:
        return micros_of_picos(uncached * picos[0] + cached * picos[1] + written * picos[2]
                               + completion_tokens * picos[3])
    exact = (
        token_cost_micros(uncached, input_price)
        + token_cost_micros(cached, cached_input_price)
        + token_cost_micros(written, write_price)
        + token_cost_micros(completion_tokens, output_price)
    )
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def usd_text(amount: Decimal) -> str:
    """The one way an amount is shown to people (dashboard, its charts, the admin): dollars to the
    micro-dollar the ledger keeps, trailing zeros dropped but never fewer than cents (``$2.40``,
    ``$0.025055``, ``$1,234.50``), so a cheap call never shows as ``$0.00``, a total matches its
    CSV, and two different amounts never look alike. static/js/spend.js mirrors it for charts."""
    sign = "-" if amount < 0 else ""
    text = f"{abs(amount).quantize(_MICRO, rounding=ROUND_HALF_UP):,f}"
    whole, _, fraction = text.partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"
