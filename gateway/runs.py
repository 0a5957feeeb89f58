"""What holds a run (``X-Nemo-Run``) in: its envelope, its steps and its loop guard (CONTRACT.md,
"Budgets agents can use, and runaway protection").

The limits themselves are a level of the call's admission (billing.reservations.RunLimits, the
run's bucket in the counter store); this module reads them off the call and the key, and counts
the tool calls the run's answers asked for, which the loop guard weighs at the run's next call.
"""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal, InvalidOperation

import orjson

from billing.reservations import RunLimits
from counters import CounterStore
from gateway.auth import KeySnapshot
from gateway.errors import invalid_request
from money import to_micros

logger = logging.getLogger(__name__)

RUN_BUDGET_HEADER = "X-Nemo-Run-Budget"
# The most an envelope may say: a typo of a few digits should not read as "no limit".
MAX_RUN_BUDGET = Decimal("1000000")


def run_limits(snapshot: KeySnapshot, run_id: str, budget_header: str | None) -> RunLimits | None:
    """The run's limits for this call: the envelope it proposes (its header, but never above the
    key's ``run_budget``), the key's most steps and loop limit. None outside a run, or when
    nothing holds the run in."""
    if budget_header is not None and not run_id:
        raise invalid_request(f"{RUN_BUDGET_HEADER} caps a run: send it with X-Nemo-Run.", param=RUN_BUDGET_HEADER)
    if not run_id:
        return None
    envelope = snapshot.run_budget_micros
    if budget_header is not None:
        proposed = _envelope_micros(budget_header)
        envelope = proposed if envelope is None else min(envelope, proposed)
    limits = RunLimits(run_id=run_id, envelope=envelope, max_steps=snapshot.run_max_steps,
                       loop_limit=snapshot.loop_limit)
    return limits if limits.needed else None


def _envelope_micros(text: str) -> int:
    try:
        usd = Decimal(text.strip())
    except InvalidOperation:
        usd = None
    if usd is None or not usd.is_finite() or usd <= 0 or usd > MAX_RUN_BUDGET:
        raise invalid_request(f"{RUN_BUDGET_HEADER} must be an amount of USD above 0 and at most "
                              f"{MAX_RUN_BUDGET}, like 0.50; got {text[:40]!r}.", param=RUN_BUDGET_HEADER)
    return to_micros(usd)


def tool_call_signature(name: str, arguments: str) -> str:
    """The same tool call whatever the spacing or key order of its arguments (canonical JSON);
    arguments that are no JSON are taken as they are."""
    try:
        canonical = orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = arguments.encode()
    return hashlib.blake2b(name.encode() + b"\x00" + canonical, digest_size=12).hexdigest()


async def count_tool_calls(store: CounterStore, run_bucket: str, tool_calls: list[dict]) -> None:
    """The tool calls an answer of a guarded run asked for, counted for its next call's admission.
    A count the store did not take is lost (logged): the call itself is done and charged."""
    signatures = [tool_call_signature(c["name"] or "", c["arguments"] or "") for c in tool_calls]
    try:
        await store.run_tool_calls(run_bucket, signatures)
    except Exception:  # noqa: BLE001 - Redis away: the guard misses these, the answer still goes out
        logger.warning("the tool calls of run %s could not be counted for its loop guard", run_bucket, exc_info=True)
