"""Moved to the ``money`` package (below billing and analytics, which both count in it).

Kept only for the imports of ``gateway/`` and ``billing/reservations.py`` until they name
``money``; then this file goes.
"""

from money import MICROS_PER_USD, call_cost_micros, from_micros, to_micros, token_cost_micros

__all__ = ["MICROS_PER_USD", "call_cost_micros", "from_micros", "to_micros", "token_cost_micros"]
