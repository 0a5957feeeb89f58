"""A run's steps on a time axis: where each call starts in the run and how long it took, as
shares of the run's span for the page to draw, with the run's totals."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from analytics.models import RequestLog
from analytics.selectors import RunSummary

# A call of a few milliseconds in a run of minutes still shows as a sliver.
MIN_BAR_PERCENT = 0.6
TICKS = 4


@dataclass(frozen=True)
class TimelineStep:
    number: int
    row: RequestLog
    start_ms: int  # since the run's first call began
    left: float  # percent of the run's span before the call began
    width: float  # percent of the run's span the call took
    fell_back: bool
    failed: bool


@dataclass(frozen=True)
class Timeline:
    steps: list[TimelineStep]
    # (percent of the span, milliseconds since the run began) of each mark on the axis.
    ticks: list[tuple[float, int]]
    duration_ms: int  # from the first call's start to the last call's end
    prompt_tokens: int
    completion_tokens: int
    spend: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def run_timeline(run: RunSummary) -> Timeline:
    """A row's ``created`` is when its call arrived, its ``latency_ms`` how long it took to answer.

    The axis and totals span the whole run (its ``outline``); the bars are of the steps shown
    (``run.steps``, a page of a long run), each at its place in the whole run."""
    outline = run.outline
    began = outline[0].created
    duration = max(_start_ms(step.created, began) + step.latency_ms for step in outline)
    span = max(duration, 1)
    fell_back = set(run.fallback_steps)
    placed = []
    for number, step in enumerate(run.steps, start=run.first_step):
        start = _start_ms(step.created, began)
        left = 100 * start / span
        width = min(max(100 * step.latency_ms / span, MIN_BAR_PERCENT), 100 - left)
        placed.append(TimelineStep(number=number, row=step, start_ms=start, left=round(left, 2),
                                   width=round(max(width, 0), 2), fell_back=number in fell_back,
                                   failed=step.status >= 400))
    return Timeline(
        steps=placed,
        ticks=[(100 * mark / TICKS, round(duration * mark / TICKS)) for mark in range(TICKS + 1)],
        duration_ms=duration,
        prompt_tokens=sum(step.prompt_tokens for step in outline),
        completion_tokens=sum(step.completion_tokens for step in outline),
        spend=run.spend,
    )


def _start_ms(moment: datetime, began: datetime) -> int:
    return round((moment - began).total_seconds() * 1000)
